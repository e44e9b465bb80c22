"""`nb2flow run` on this machine: real kernels, real processes, real files."""

import glob
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import (BLOCKER, SAMPLE_NAMES, SAMPLES, assert_gone, digest, nb2flow, only_run_dir, probe_notebook,
                     record, split_run, top_to_bottom)
from nbutil import cell, write


# ------------------------------------------------------------------ the sample, end to end


@pytest.fixture(scope="module")
def analysis_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("analysis")
    nb = folder / "analysis.ipynb"
    nb.write_bytes((SAMPLES / "analysis.ipynb").read_bytes())
    before = digest(nb)
    r = nb2flow("run", "analysis.ipynb", "-p", "n_estimators", "25", "--no-progress", cwd=folder)
    return folder, nb, before, r


def test_sample_runs_end_to_end(analysis_run):
    folder, nb, before, r = analysis_run
    assert r.returncode == 0, r.stderr
    run_dir = only_run_dir(folder)
    rec = record(run_dir)
    assert rec["state"] == "succeeded"
    assert {n: s["state"] for n, s in rec["steps"].items()} == {
        "load": "succeeded", "clean": "succeeded", "train_logreg": "succeeded", "train_forest": "succeeded", "compare": "succeeded"}
    assert rec["parameters"] == {"n_estimators": 25}
    assert rec["notebook_sha256"] == hashlib.sha256(nb.read_bytes()).hexdigest()
    assert rec["nb2flow_version"]
    for s in rec["steps"].values():
        assert s["started"] and s["ended"] and s["exit_code"] == 0
    assert digest(nb) == before  # the user's notebook is never modified
    assert "running on this machine" in r.stderr.splitlines()[0]


def test_run_folder_layout(analysis_run):
    folder, *_ = analysis_run
    run_dir = only_run_dir(folder)
    assert run_dir.name.startswith("analysis-")
    assert (run_dir / "bundle" / "nb2flow_step.py").is_file()
    assert json.loads((run_dir / "parameters.json").read_text()) == {"n_estimators": 25}
    for task in ("load", "clean", "train-logreg", "train-forest", "compare"):
        assert (run_dir / "bundle" / "steps" / f"{task}.ipynb").is_file()
        assert (run_dir / "steps" / task / f"{task}.ipynb").is_file()
        assert (run_dir / "steps" / task / "output.log").is_file()
    # only values a later step reads are saved
    assert sorted(p.name for p in (run_dir / "values" / "clean").iterdir()) == [
        "X_test.pkl", "X_test.pkl.sig", "X_train.pkl", "X_train.pkl.sig", "y_test.pkl", "y_test.pkl.sig", "y_train.pkl", "y_train.pkl.sig"]
    assert oct(run_dir.stat().st_mode & 0o777) == "0o700" and oct((run_dir / "values").stat().st_mode & 0o777) == "0o700"
    assert oct((run_dir / "values" / "clean" / "X_test.pkl").stat().st_mode & 0o777) == "0o600"
    assert not (run_dir / "values" / "compare").exists()
    assert not list(run_dir.rglob("*.tmp-*"))


def test_executed_step_notebook_shows_injected_parameters(analysis_run):
    folder, *_ = analysis_run
    executed = json.loads((only_run_dir(folder) / "steps" / "train-forest" / "train-forest.ipynb").read_text())
    tags = [c["metadata"].get("tags", []) for c in executed["cells"]]
    params_at = tags.index(["parameters"])
    assert tags[params_at + 1] == ["injected-parameters"]
    assert "".join(executed["cells"][params_at + 1]["source"]) == "# Parameters\nn_estimators = 25\n"


def test_merged_output_notebook(analysis_run):
    folder, nb, *_ = analysis_run
    run_dir = only_run_dir(folder)
    merged = json.loads((run_dir / "analysis.out.ipynb").read_text())
    original = json.loads(nb.read_text())
    sources = ["".join(c["source"]) for c in merged["cells"] if "injected-parameters" not in c["metadata"].get("tags", [])]
    assert sources == ["".join(c["source"]) for c in original["cells"]]
    by_tag = {t: c for c in merged["cells"] for t in c["metadata"].get("tags", [])}
    assert "".join(by_tag["injected-parameters"]["source"]) == "# Parameters\nn_estimators = 25\n"
    compare = by_tag["step:compare"]
    kinds = {k for o in compare["outputs"] for k in o.get("data", {})}
    assert "image/png" in kinds and "text/html" in kinds  # the plot and the table
    forest = "".join("".join(o.get("text", "")) for o in by_tag["step:train_forest"]["outputs"])
    assert forest.startswith("random forest: ")
    assert by_tag["skip"]["outputs"] == []
    counts = [c["execution_count"] for c in merged["cells"] if c["cell_type"] == "code" and c["execution_count"]]
    assert counts == list(range(1, len(counts) + 1))


def test_the_merged_notebook_is_also_where_jupyterlab_shows_it(analysis_run, tmp_path):
    from nb2flow.runner.files import write_new

    folder, nb, before, r = analysis_run
    run_dir = only_run_dir(folder)
    visible = folder / "nb2flow-runs" / f"{run_dir.name}.ipynb"  # not in a dot-folder
    assert visible.read_text() == (run_dir / "analysis.out.ipynb").read_text()
    assert record(run_dir)["visible_notebook"] == str(visible)
    assert r.stderr.strip().splitlines()[-1].endswith(f"output notebook nb2flow-runs/{run_dir.name}.ipynb")
    mine = tmp_path / "x.ipynb"
    mine.write_text("the user's own")
    assert write_new(str(mine), "a run's") == str(tmp_path / "x-2.ipynb")  # never overwrites anything
    assert mine.read_text() == "the user's own" and (tmp_path / "x-2.ipynb").read_text() == "a run's"


# ------------------------------------------------------------------ equivalence with papermill


@pytest.mark.slow  # CI runs it (pytest -m slow)
@pytest.mark.parametrize("name", sorted(SAMPLE_NAMES))
def test_split_run_sees_what_top_to_bottom_sees(tmp_path, name):
    nb = tmp_path / name
    probe_notebook(SAMPLES / name, nb, SAMPLE_NAMES[name])
    reference = top_to_bottom(nb, tmp_path / "reference.pkl", tmp_path)
    split = split_run(nb, tmp_path / "split.pkl", tmp_path)
    assert split == reference
    assert set(split) == set(SAMPLE_NAMES[name])


@pytest.mark.slow  # CI runs it (pytest -m slow)
@pytest.mark.parametrize("name", ["linear.ipynb", "kale_pipeline.ipynb"])
def test_script_mode_sees_the_same(tmp_path, name):
    nb = tmp_path / name
    probe_notebook(SAMPLES / name, nb, SAMPLE_NAMES[name])
    reference = top_to_bottom(nb, tmp_path / "reference.pkl", tmp_path)
    assert split_run(nb, tmp_path / "split.pkl", tmp_path, "--mode", "script") == reference


# ------------------------------------------------------------------ parameters


@pytest.fixture
def echo_nb(tmp_path):
    write(
        tmp_path / "echo.ipynb",
        cell("alpha = 0.5\ncount = 3\nname = 'x'\nflag = False\nextra = None\nitems = []", "parameters"),
        cell("import json\nseen = {'alpha': alpha, 'count': count, 'name': name, 'flag': flag, 'extra': extra, 'items': items}", "step:a"),
        cell("with open('seen.json', 'w') as fh:\n    json.dump(seen, fh)", "step:b"),
    )
    return tmp_path


def seen(folder):
    return json.loads(Path(folder, "seen.json").read_text())


def test_parameters_typed_raw_yaml_file_with_papermill_precedence(echo_nb):
    (echo_nb / "p.yaml").write_text("count: 10\nname: from-file\nitems: [1, 2]\n")
    r = nb2flow("run", "echo.ipynb", "-q", "-p", "alpha", "2.5", "-p", "flag", "True", "-r", "count", "7",
                "-y", "name: from-yaml\nextra: 2024-01-01", "-f", "p.yaml", "-p", "name", "None", cwd=echo_nb)
    assert r.returncode == 0, r.stderr
    # files < yaml < typed -p < raw -r, whatever the order on the command line
    assert seen(echo_nb) == {"alpha": 2.5, "count": "7", "name": None, "flag": True, "extra": "2024-01-01", "items": [1, 2]}


def test_defaults_apply_without_overrides(echo_nb):
    assert nb2flow("run", "echo.ipynb", "-q", cwd=echo_nb).returncode == 0
    assert seen(echo_nb) == {"alpha": 0.5, "count": 3, "name": "x", "flag": False, "extra": None, "items": []}


HOSTILE = [
    "it's \"quoted\"",
    "line one\nline two\r\n\ttabbed",
    "$(rm -rf /) `whoami` ${HOME}",
    "{{workflow.name}} {{inputs.parameters.x}}",
    "ünïcødé ✓ 日本語 \U0001F600",
    "back\\slash\\n",
    "--- \n... &a *a !!python/object",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_values_survive_the_injection_code(value):
    from nb2flow.argo import argo_json
    from nb2flow.runner.params import parameters_source, read_params

    ns: dict = {}
    exec(parameters_source({"name": value, "items": [value, {value: value}]}), ns)
    assert ns["name"] == value and ns["items"] == [value, {value: value}]
    assert read_params(None, [f"name={json.dumps(value)}", f"other={argo_json(value)}"]) == {"name": value, "other": value}


@pytest.mark.parametrize("mode", ["notebook", "script"])
def test_hostile_values_round_trip_exactly(echo_nb, mode):
    import yaml

    (echo_nb / "hostile.yaml").write_text(yaml.safe_dump({"items": HOSTILE, "name": HOSTILE[3]}))
    r = nb2flow("run", "echo.ipynb", "-q", "--mode", mode, "-f", "hostile.yaml", "-r", "alpha", HOSTILE[2], cwd=echo_nb)
    assert r.returncode == 0, r.stderr
    assert seen(echo_nb) | {"alpha": None} == {"alpha": None, "count": 3, "name": HOSTILE[3], "flag": False, "extra": None, "items": HOSTILE}
    assert seen(echo_nb)["alpha"] == HOSTILE[2]


@pytest.mark.parametrize("mode", ["notebook", "script"])
def test_a_mapping_with_number_keys_reaches_the_step_as_papermill_injects_it_and_resume_keeps_it(tmp_path, mode):
    """``-y '{m: {1: a}}'``: papermill injects ``m = {1: 'a'}``; so does every step, and --resume's default."""
    nb = Path(write(tmp_path / "k.ipynb", cell("m = {}", "parameters"),
               cell("with open('seen.txt', 'w') as fh:\n    fh.write(repr(m))", "step:a"), cell("1 / 0", "step:b")))
    r = nb2flow("run", str(nb), "-q", "--mode", mode, "-y", "{m: {1: a, 2.5: [b, {3: c}], k: null}}", cwd=tmp_path)
    assert r.returncode == 1
    expected = repr({1: "a", 2.5: ["b", {3: "c"}], "k": None})
    assert (tmp_path / "seen.txt").read_text() == expected
    run_id = json.loads(next((tmp_path / ".nb2flow" / "runs").glob("*/run.json")).read_text())["run_id"]
    (tmp_path / "seen.txt").unlink()
    doc = json.loads(nb.read_text())
    doc["cells"][1]["source"] = "with open('seen.txt', 'w') as fh:\n    fh.write(repr(m))\n"  # edited: a re-runs
    doc["cells"][2]["source"] = "print(m[1])"
    nb.write_text(json.dumps(doc))
    r = nb2flow("run", "--resume", run_id, "-q", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "seen.txt").read_text() == expected


def test_unknown_parameter_is_an_error_with_did_you_mean(echo_nb):
    r = nb2flow("run", "echo.ipynb", "-p", "alpah", "1", cwd=echo_nb)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == "nb2flow: echo.ipynb: unknown parameter 'alpah' (did you mean alpha?)"
    assert not Path(echo_nb, ".nb2flow").exists()  # nothing ran


def test_bad_yaml_parameters(echo_nb):
    r = nb2flow("run", "echo.ipynb", "-y", "a: [1", cwd=echo_nb)
    assert r.returncode == 2
    assert r.stderr.strip().startswith("nb2flow: -y: not valid YAML at line")


# ------------------------------------------------------------------ failures


@pytest.fixture
def failing_nb(tmp_path):
    write(
        tmp_path / "fail.ipynb",
        cell("import os", "setup"),
        cell("x = 1", "step:a"),
        cell("def f(v):\n    return 1 / v\n\ny = f(0)", "step:b"),
        cell("z = x + 1\nopen('c-ran', 'w').close()", "step:c", "after:a"),
        cell("w = y + z", "step:d", "after:b", "after:c"),
    )
    return tmp_path


def test_failure_names_step_cell_and_user_traceback(failing_nb):
    r = nb2flow("run", "fail.ipynb", "--no-progress", cwd=failing_nb)
    assert r.returncode == 1
    lines = r.stderr.splitlines()
    error_line = next(l for l in lines if l.startswith("nb2flow: fail.ipynb"))
    assert error_line.startswith("nb2flow: fail.ipynb: cell 3 (step:b): `def f(v):`: ZeroDivisionError: division by zero (run folder ")
    tb = "\n".join(lines[lines.index(error_line) + 1:])
    assert "cell 3, line 4" in tb and "cell 3, line 2, in f" in tb and "----> 2     return 1 / v" in tb
    assert "ipykernel" not in tb and "nb2flow_step" not in tb and "site-packages" not in tb
    rec = record(only_run_dir(failing_nb))
    states = {n: s["state"] for n, s in rec["steps"].items()}
    assert states == {"a": "succeeded", "b": "failed", "c": "succeeded", "d": "skipped"}  # independent c finished
    assert rec["state"] == "failed"
    assert rec["steps"]["b"]["error"]["cell"] == 3
    assert Path(failing_nb, "c-ran").exists()
    merged = json.loads(next(only_run_dir(failing_nb).glob("*.out.ipynb")).read_text())
    assert any(o.get("output_type") == "error" for o in merged["cells"][2]["outputs"])


@pytest.mark.parametrize("mode", ["notebook", "script"])
def test_a_failure_inside_a_library_shows_the_users_frames_and_counts_the_others(tmp_path, mode):
    """A KeyError raised deep in pandas (a chained exception in IPython's report): the cell's frame, a count of
    the library frames left out, and the exception, not pandas' internals."""
    write(tmp_path / "lib.ipynb", cell("import pandas as pd\ns = pd.Series({'north': 1})", "step:a"),
          cell("share = s['east']", "step:b"))
    r = nb2flow("run", "lib.ipynb", "--no-progress", "--mode", mode, cwd=tmp_path)
    assert r.returncode == 1
    tb = record(only_run_dir(tmp_path))["steps"]["b"]["error"]["traceback"]
    text = "\n".join(tb)
    assert "cell 2, line 1" in text and tb[-1] == "KeyError: 'east'", text
    assert "site-packages" not in text and "pandas/_libs" not in text and "The above exception" not in text
    if mode == "notebook":
        assert "frames inside libraries left out)" in tb[-2]


def test_resume_reruns_failed_and_skipped_and_changed_steps_only(failing_nb):
    r = nb2flow("run", "fail.ipynb", "-q", cwd=failing_nb)
    assert r.returncode == 1
    run_dir = only_run_dir(failing_nb)
    Path(failing_nb, "c-ran").unlink()
    nb_path = failing_nb / "fail.ipynb"
    doc = json.loads(nb_path.read_text())
    doc["cells"][2]["source"] = "def f(v):\n    return 1 / v\n\ny = f(4)"  # the user fixes step b
    nb_path.write_text(json.dumps(doc))
    r = nb2flow("run", "--resume", run_dir.name, "--no-progress", cwd=failing_nb)
    assert r.returncode == 0, r.stderr
    rec = record(run_dir)
    assert {n: s["state"] for n, s in rec["steps"].items()} == {"a": "reused", "b": "succeeded", "c": "reused", "d": "succeeded"}
    assert not Path(failing_nb, "c-ran").exists()  # c was not run again
    assert "a: reused from the earlier run" in r.stderr
    # a further change to c's code re-runs c and its descendant d, nothing else
    doc["cells"][3]["source"] = "z = x + 2\nopen('c-ran', 'w').close()"
    nb_path.write_text(json.dumps(doc))
    r = nb2flow("run", "--resume", run_dir.name, "-q", cwd=failing_nb)
    assert r.returncode == 0, r.stderr
    rec = record(run_dir)
    assert {n: s["state"] for n, s in rec["steps"].items()} == {"a": "reused", "b": "reused", "c": "succeeded", "d": "succeeded"}
    assert Path(failing_nb, "c-ran").exists()


def test_fail_fast_stops_other_steps(tmp_path):
    write(
        tmp_path / "ff.ipynb",
        cell("import time", "setup"),
        cell("time.sleep(60)\nslow = 1", "step:slow"),
        cell("raise ValueError('boom')", "step:bad", "after:none"),
    )
    t0 = time.monotonic()
    r = nb2flow("run", "ff.ipynb", "-q", "--fail-fast", cwd=tmp_path)
    assert r.returncode == 1
    assert time.monotonic() - t0 < 40
    states = {n: s["state"] for n, s in record(only_run_dir(tmp_path))["steps"].items()}
    assert states == {"slow": "cancelled", "bad": "failed"}


def test_retry_and_timeout(tmp_path):
    write(
        tmp_path / "rt.ipynb",
        cell("import os, time", "setup"),
        cell("n = len(os.listdir('tries')) if os.path.isdir('tries') else 0\nos.makedirs('tries', exist_ok=True)\n"
             "open(f'tries/{n}', 'w').close()\nif n < 2:\n    raise RuntimeError(f'flaky {n}')", "step:flaky", "retry:2"),
        cell("time.sleep(30)", "step:hang", "timeout:2s", "after:none"),
    )
    r = nb2flow("run", "rt.ipynb", "--no-progress", cwd=tmp_path)
    assert r.returncode == 1
    rec = record(only_run_dir(tmp_path))
    assert rec["steps"]["flaky"]["state"] == "succeeded" and rec["steps"]["flaky"]["attempts"] == 3
    assert rec["steps"]["hang"]["state"] == "timed-out"
    assert "the step ran longer than timeout:2s" in r.stderr


def test_kernel_death_is_reported(tmp_path):
    write(tmp_path / "kd.ipynb", cell("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)", "step:die"))
    r = nb2flow("run", "kd.ipynb", "-q", cwd=tmp_path)
    assert r.returncode == 3
    assert "nb2flow: kd.ipynb: cell 1 (step:die): `import os, signal`: DeadKernelError: the kernel died from signal SIGKILL (killed: out of memory?)" in r.stderr
    assert record(only_run_dir(tmp_path))["steps"]["die"]["state"] == "kernel-died"


def test_unpicklable_value_names_variable_type_steps_and_fix(tmp_path):
    write(tmp_path / "u.ipynb", cell("import threading\nlock = threading.Lock()", "step:make"), cell("with lock:\n    pass", "step:use"))
    r = nb2flow("run", "u.ipynb", "-q", cwd=tmp_path)
    assert r.returncode == 1
    assert ("cannot pass `lock` (a thread lock, _thread.lock) from step make to step use: "
            "re-create it in step use, or move the cell that creates it to a setup cell") in r.stderr


def test_ctrl_c_stops_every_step_and_kernel(tmp_path):
    write(
        tmp_path / "cc.ipynb",
        cell("import time", "setup"),
        cell("time.sleep(120)", "step:a"),
        cell("time.sleep(120)", "step:b", "after:none"),
        cell("x = 1", "step:c", "after:a"),
    )
    env = dict(os.environ, NO_COLOR="1")
    proc = subprocess.Popen([sys.executable, "-m", "nb2flow", "run", "cc.ipynb", "--no-progress"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 60
    run_dir = None
    while time.monotonic() < deadline:
        runs = glob.glob(str(tmp_path / ".nb2flow" / "runs" / "*" / "steps" / "*" / "status.json"))
        states = []
        for s in runs:
            try:
                states.append(json.loads(Path(s).read_text()).get("state"))
            except ValueError:
                pass
        if states.count("running") >= 2:
            run_dir = Path(runs[0]).parents[2]
            break
        time.sleep(0.1)
    assert run_dir is not None, "steps never started"
    kernels = [json.loads(Path(s).read_text()).get("kernel_pid") for s in glob.glob(str(run_dir / "steps" / "*" / "status.json"))]
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted; run" in err and "nb2flow run --resume" in err
    rec = record(run_dir)
    assert rec["state"] == "interrupted"
    assert {rec["steps"]["a"]["state"], rec["steps"]["b"]["state"]} == {"interrupted"}
    assert_gone(str(run_dir))
    for pid in filter(None, kernels):
        assert not Path("/proc", str(pid)).exists() or "zombie" in Path("/proc", str(pid), "status").read_text().lower()


@pytest.mark.slow  # CI runs it (pytest -m slow)
def test_two_runs_of_one_notebook_at_once_share_nothing(tmp_path):
    write(tmp_path / "two.ipynb", cell("import os\nv = os.getpid()", "step:a"), cell("w = v", "step:b"))
    env = dict(os.environ, NO_COLOR="1")
    procs = [subprocess.Popen([sys.executable, "-m", "nb2flow", "run", "two.ipynb", "-q"], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)]
    for p in procs:
        p.communicate(timeout=120)
        assert p.returncode == 0
    runs = list((tmp_path / ".nb2flow" / "runs").iterdir())
    assert len(runs) == 3
    assert all(record(r)["state"] == "succeeded" for r in runs)


def test_steps_run_without_nb2flow_or_papermill_importable(tmp_path):
    probe = subprocess.run([sys.executable, "-c", "import nb2flow"], env=dict(os.environ, PYTHONPATH=BLOCKER), capture_output=True)
    assert probe.returncode != 0  # the blocker works
    write(
        tmp_path / "iso.ipynb",
        cell("import sys", "setup"),
        cell("mods = sorted(m for m in ('nb2flow', 'papermill') if m in sys.modules)\nx = [1, 2]", "step:a"),
        cell("import json\ntry:\n    import nb2flow\n    importable = True\nexcept ImportError:\n    importable = False\n"
             "json.dump({'x': x, 'mods': mods, 'importable': importable}, open('iso.json', 'w'))", "step:b"),
    )
    python = tmp_path / "python-without-nb2flow"
    python.write_text(f'#!/bin/sh\nPYTHONPATH={BLOCKER} exec {sys.executable} "$@"\n')
    python.chmod(0o755)
    for mode in ("notebook", "script"):
        r = nb2flow("run", "iso.ipynb", "-q", "--mode", mode, "--python", str(python), cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert json.loads((tmp_path / "iso.json").read_text()) == {"x": [1, 2], "mods": [], "importable": False}


def test_list_and_status(failing_nb):
    nb2flow("run", "fail.ipynb", "-q", cwd=failing_nb)
    run_dir = only_run_dir(failing_nb)
    r = nb2flow("list", cwd=failing_nb)
    assert r.returncode == 0
    header, row = r.stdout.splitlines()[:2]
    assert header.split() == ["RUN", "NOTEBOOK", "STATE", "STARTED", "DURATION"]
    assert row.split()[:3] == [run_dir.name, "fail.ipynb", "failed"]
    r = nb2flow("status", run_dir.name, cwd=failing_nb)
    assert r.returncode == 0
    assert r.stdout.splitlines()[0] == f"run {run_dir.name}: failed (fail.ipynb)"
    b_row = next(l for l in r.stdout.splitlines() if l.startswith("b "))
    assert "failed" in b_row and "cell 3: ZeroDivisionError: division by zero" in b_row
    r = nb2flow("status", "no-such-run", cwd=failing_nb, env={"KUBECONFIG": str(failing_nb / "missing-kubeconfig")})
    assert r.returncode == 2 and r.stderr.startswith("nb2flow: no run 'no-such-run' here, and no workflow of that name (no usable kubeconfig")
    assert "`nb2flow list` shows recent runs" in r.stderr


def test_run_refuses_a_notebook_with_problems(tmp_path):
    write(tmp_path / "bad.ipynb", cell("y = ghost", "step:a"))
    r = nb2flow("run", "bad.ipynb", cwd=tmp_path)
    assert r.returncode == 2
    assert "`ghost` is read but never defined above" in r.stderr
    assert r.stderr.strip().splitlines()[-1] == "nb2flow: bad.ipynb: 1 problem(s) found; nothing was run (see `nb2flow check bad.ipynb`)"


@pytest.mark.slow  # CI runs it (pytest -m slow)
def test_script_mode_rejects_magics_with_the_cell(tmp_path):
    write(tmp_path / "m.ipynb", cell("%matplotlib inline\nx = 1", "step:a"), cell("!echo hi\ny = x", "step:b"))
    r = nb2flow("run", "m.ipynb", "-q", "--mode", "script", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip() == ("nb2flow: m.ipynb: cell 2 (step:b): uses IPython syntax (a %magic, !shell command or magic "
                                "without %) that plain python cannot run (run with --mode notebook)")
    assert nb2flow("run", "m.ipynb", "-q", cwd=tmp_path).returncode == 0


@pytest.mark.parametrize("name", ["class", "1x", "a-b", "a b"])
def test_parameter_names_that_are_not_identifiers_are_refused(echo_nb, name):
    r = nb2flow("run", "echo.ipynb", "-p", name, "1", cwd=echo_nb)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == f"nb2flow: echo.ipynb: parameter name {name!r} is not a Python identifier"


def test_logs_of_a_local_run_read_its_step_logs_with_no_cluster(tmp_path):
    write(tmp_path / "l.ipynb", cell("print('made', 1)", "step:make"), cell("print('used', 2)", "step:use"))
    assert nb2flow("run", "l.ipynb", "-q", cwd=tmp_path).returncode == 0
    run_id = only_run_dir(tmp_path).name
    env = {"KUBECONFIG": str(tmp_path / "nowhere")}  # no cluster is asked
    r = nb2flow("logs", run_id, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert "[make] made 1" in r.stdout.splitlines() and "[use] used 2" in r.stdout.splitlines()
    r = nb2flow("logs", run_id, "use", cwd=tmp_path, env=env)
    assert r.stdout == "used 2\n"
    r = nb2flow("logs", run_id, "nope", cwd=tmp_path, env=env)
    assert r.returncode == 2 and r.stderr.strip() == f"nb2flow: run {run_id} has no step 'nope' (its steps: make, use)"


def test_a_step_imports_its_libraries_while_it_waits_for_its_parents(tmp_path):
    """`from slowlib import f` in a step's cell: imported in the waiting kernel, so the step's own cells do not pay
    it after the parent ends; a library imported after a configuring statement (which it may read) is not."""
    import json as _json

    from helpers import nb2flow as run_nb2flow
    from nbutil import cell, write

    lib = tmp_path / "site"
    lib.mkdir()
    (lib / "slowlib.py").write_text("import os, time\nSTARTED = time.time()\ntime.sleep(1.5)\nLOADED = time.time()\n"
                                    "MODE = os.environ.get('SLOWLIB_MODE')\n")
    (lib / "configured.py").write_text("import os, time\nLOADED = time.time()\nMODE = os.environ.get('SLOWLIB_MODE')\n")
    work = tmp_path / "work"
    work.mkdir()
    nb = write(work / "w.ipynb", cell("import time\ntime.sleep(2)\nt_parent = time.time()", "step:a"),
               cell("from slowlib import STARTED, LOADED\nprint('imported ahead:', STARTED < t_parent)", "step:b"),
               cell("import os\nos.environ['SLOWLIB_MODE'] = 'fast'\nimport configured\nprint('mode', configured.MODE)", "step:c",
                    "after:a"))
    proc = run_nb2flow("run", str(nb), "-q", "-j", "3", cwd=work, env={"PYTHONPATH": str(lib)})
    assert proc.returncode == 0, proc.stderr
    run_dir = next((work / ".nb2flow" / "runs").iterdir())
    texts = ["".join(o.get("text", "")) for c in _json.loads(next(run_dir.glob("*.out.ipynb")).read_text())["cells"]
             for o in c.get("outputs", [])]
    assert "imported ahead: True\n" in texts and "mode fast\n" in texts
    cells = _json.loads((run_dir / "bundle" / "steps" / "c.ipynb").read_text())["cells"]
    ahead = "".join(c["source"] for c in cells if c["metadata"]["nb2flow"]["role"] == "preimport")
    assert "'os'" in ahead and "configured" not in ahead  # after os.environ: imported where the notebook imports it
