"""A record you can trust: a run's record never says "running" for a run nobody runs, never holds another run's
result, and careless or unlucky input is one line, never "a bug in nb2flow"."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import nb2flow, processes_mentioning, wait_for
from nbutil import cell, write


def _env(tmp_path):
    return dict(os.environ, HOME=str(tmp_path), NO_COLOR="1")


def _cli(tmp_path, *args):
    """``nb2flow ARGS`` as the same user (the same key) as the runs the test starts."""
    return nb2flow(*args, cwd=tmp_path, env={"HOME": str(tmp_path)})


def _records(folder: Path) -> list:
    return [json.loads(p.read_text()) for p in sorted((folder / ".nb2flow" / "runs").glob("*/run.json"))]


def _slow_notebook(tmp_path, name="slow.ipynb", seconds=60):
    return write(tmp_path / name, cell(f"import time\ntime.sleep({seconds})", "step:a"), cell("print('b ran')", "step:b"))


def _start(tmp_path, nb, *extra, **popen):
    return subprocess.Popen([sys.executable, "-m", "nb2flow", "run", str(nb), "--no-progress", *extra], cwd=tmp_path,
                            env=_env(tmp_path), **popen)


def _running(tmp_path):
    def step_a_running():
        for rec in _records(tmp_path) if (tmp_path / ".nb2flow" / "runs").is_dir() else []:
            if rec.get("steps", {}).get("a", {}).get("state") == "running":
                return rec
        return None
    return wait_for(step_a_running, timeout=60)


@pytest.mark.slow  # CI runs it (pytest -m slow)
def test_a_closed_output_pipe_never_kills_a_run(tmp_path):
    """`nb2flow run nb.ipynb 2>&1 | head -1` (or a restarted kernel that started it): the run completes its record."""
    nb = write(tmp_path / "p.ipynb", cell("x = 1", "step:a"), cell("import time\ntime.sleep(1)\nprint(x)", "step:b"))
    shell = f"{sys.executable} -m nb2flow run {nb} --no-progress 2>&1 | head -1; echo \"status=${{PIPESTATUS[0]}}\""
    r = subprocess.run(["bash", "-c", shell], cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert "status=0" in r.stdout, r.stdout + r.stderr
    (record,) = _records(tmp_path)
    assert record["state"] == "succeeded" and Path(record["visible_notebook"]).is_file()
    r = subprocess.run(["bash", "-c", f"{sys.executable} -m nb2flow run {nb} --events json | head -1"], cwd=tmp_path,
                       env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert json.loads(r.stdout)["event"] == "message"
    assert [rec["state"] for rec in _records(tmp_path)] == ["succeeded", "succeeded"]


@pytest.mark.parametrize("sig", [signal.SIGHUP, pytest.param(signal.SIGTERM, marks=pytest.mark.slow)])
def test_a_closed_terminal_stops_a_run_as_cleanly_as_sigterm(tmp_path, sig):
    nb = _slow_notebook(tmp_path)
    proc = _start(tmp_path, nb, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    record = _running(tmp_path)
    proc.send_signal(sig)
    assert proc.wait(timeout=60) == 130
    (after,) = _records(tmp_path)
    assert after["state"] == "interrupted" and after["steps"]["a"]["state"] == "interrupted"
    wait_for(lambda: not processes_mentioning(record["run_id"]), timeout=15)


def test_a_run_killed_without_a_word_is_abandoned_and_resume_completes_it(tmp_path):
    nb = _slow_notebook(tmp_path, seconds=3)
    proc = _start(tmp_path, nb, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    record = _running(tmp_path)
    os.killpg(proc.pid, signal.SIGKILL)  # nb2flow, its fork server and the step: the OOM killer's way
    proc.wait(timeout=30)
    listing = _cli(tmp_path, "list")
    assert record["run_id"] in listing.stdout and "abandoned" in listing.stdout, listing.stdout
    assert _cli(tmp_path, "status", record["run_id"]).stdout.startswith(f"run {record['run_id']}: abandoned")
    r = _cli(tmp_path, "run", "--resume", record["run_id"], "-q")
    assert r.returncode == 0, r.stderr
    (after,) = _records(tmp_path)
    assert after["state"] == "succeeded" and after["owner"]["pid"] != record["owner"]["pid"]


def test_resume_refuses_another_notebooks_run_a_live_run_and_an_empty_id(tmp_path):
    nb = _slow_notebook(tmp_path)
    other = write(tmp_path / "other.ipynb", cell("x = 1", "step:a"))
    proc = _start(tmp_path, nb, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        record = _running(tmp_path)
        r = _cli(tmp_path, "run", "--resume", record["run_id"])
        assert r.returncode == 2 and f"nb2flow: run {record['run_id']} is still running (nb2flow, pid {proc.pid})" in r.stderr
        r = _cli(tmp_path, "run", str(other), "--resume", record["run_id"])
        assert r.returncode == 2 and f"run {record['run_id']} is a run of slow.ipynb, not of other.ipynb" in r.stderr
        r = _cli(tmp_path, "run", "--resume", "")
        assert r.returncode == 2 and "--resume needs a run id" in r.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    assert [rec["notebook"] for rec in _records(tmp_path)] == [str(nb)]  # nothing written into the other run's folder


@pytest.mark.slow  # CI runs it (pytest -m slow)
def test_two_processes_resuming_one_run_at_once_do_not_race(tmp_path):
    nb = Path(write(tmp_path / "r.ipynb", cell("x = 1", "step:a"), cell("import time\ntime.sleep(4)\n1 / 0", "step:b")))
    assert _cli(tmp_path, "run", str(nb), "-q").returncode == 1
    run_id = _records(tmp_path)[0]["run_id"]
    doc = json.loads(nb.read_text())
    doc["cells"][1]["source"] = "import time\ntime.sleep(4)\nprint('fixed')"
    nb.write_text(json.dumps(doc))
    first = subprocess.Popen([sys.executable, "-m", "nb2flow", "run", "--resume", run_id, "-q"], cwd=tmp_path, env=_env(tmp_path),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: _records(tmp_path)[0].get("owner", {}).get("pid") == first.pid, timeout=60)
    second = _cli(tmp_path, "run", "--resume", run_id, "-q")
    assert second.returncode == 2 and f"run {run_id} is " in second.stderr
    assert first.wait(timeout=120) == 0, first.communicate()[1]
    assert _records(tmp_path)[0]["state"] == "succeeded"


@pytest.mark.parametrize("mode", ["notebook", pytest.param("script", marks=pytest.mark.slow)])
def test_sys_exit_in_a_step_is_its_failure_in_both_modes_and_never_a_done_step(tmp_path, mode):
    nb = write(tmp_path / "e.ipynb", cell("x = 1\nimport sys\nsys.exit(0)", "step:a"), cell("print(x)", "step:b"))
    r = nb2flow("run", str(nb), "-q", "--mode", mode, cwd=tmp_path)
    assert r.returncode == 1 and "SystemExit: 0" in r.stderr, r.stderr
    (record,) = _records(tmp_path)
    assert record["steps"]["a"]["state"] == "failed" and record["steps"]["b"]["state"] == "skipped"


def test_careless_input_is_one_line_not_a_bug_in_nb2flow(tmp_path):
    nb = write(tmp_path / "p.ipynb", cell("s = 'x'", "parameters"), cell("print(s)", "step:a"))
    cases = [
        (["run", str(nb), "--python", "/nonexistent"], "--python /nonexistent: no such interpreter"),
        (["run", str(nb), "-r", "s", b"caf\xe9".decode("utf-8", "surrogateescape")], "parameter 's': b'caf\\xe9' is not UTF-8 text"),
        (["check", "/dev/zero"], "/dev/zero: not a regular file"),
    ]
    for argv, said in cases:
        r = subprocess.run([sys.executable, "-m", "nb2flow", *argv], cwd=tmp_path, env=_env(tmp_path), capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 2 and said in r.stderr and "bug in nb2flow" not in r.stderr, (argv, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1
    write(tmp_path / "t.ipynb", cell("x = 1", "step:a", "timeout:99999999999999999999d"))
    r = nb2flow("check", "t.ipynb", cwd=tmp_path)
    assert r.returncode == 1 and "longer than a duration can be" in r.stdout
    assert not _records(tmp_path)


def test_a_notebook_with_a_very_long_name_gets_its_merged_notebook(tmp_path):
    name = "a" * 240 + ".ipynb"
    write(tmp_path / name, cell("print('long')", "step:a"))
    r = nb2flow("run", name, "-q", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    (record,) = _records(tmp_path)
    assert Path(record["output_notebook"]).is_file() and Path(record["visible_notebook"]).is_file()
    assert "long" in Path(record["visible_notebook"]).read_text()


@pytest.mark.parametrize("mode", [pytest.param("notebook", marks=pytest.mark.slow), "script"])
def test_text_that_is_not_utf8_is_shown_as_a_kernel_shows_it_never_lost(tmp_path, mode):
    """A file name os.fsdecode made from a non-UTF-8 byte, printed and raised: in the merged notebook and the record."""
    nb = write(tmp_path / "s.ipynb", cell("import os\nname = os.fsdecode(b'caf\\xe9.csv')\nprint(name)", "step:a"),
               cell("raise ValueError(name)", "step:b"))
    r = _cli(tmp_path, "run", str(nb), "-q", "--mode", mode)
    assert r.returncode == 1 and "ValueError: caf\ufffd.csv" in r.stderr, r.stderr
    (record,) = _records(tmp_path)
    assert record["state"] == "failed" and record["steps"]["b"]["error"]["evalue"] == "caf\ufffd.csv"
    merged = json.loads(Path(record["visible_notebook"]).read_text())
    assert "caf\ufffd.csv\n" in ["".join(o.get("text", "")) for c in merged["cells"] for o in c.get("outputs", [])]


@pytest.mark.parametrize("mode", ["notebook", pytest.param("script", marks=pytest.mark.slow)])
def test_a_child_that_leaves_the_steps_session_ends_with_the_run(tmp_path, mode):
    nb = write(tmp_path / "d.ipynb", cell("import subprocess\np = subprocess.Popen(['sleep', '300'], start_new_session=True)\n"
                                          "open('child.pid', 'w').write(str(p.pid))", "step:a"), cell("print('b')", "step:b"))
    r = _cli(tmp_path, "run", str(nb), "-q", "--mode", mode)
    assert r.returncode == 0, r.stderr
    pid = int((tmp_path / "child.pid").read_text())
    wait_for(lambda: not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z",
             timeout=10)


def test_a_disk_too_small_for_the_runs_files_is_one_line_and_no_run_says_running(tmp_path):
    nb = write(tmp_path / "f.ipynb", cell("x = 1", "step:a"))
    shell = f"ulimit -f 40; exec {sys.executable} -m nb2flow run {nb} -q"  # files of at most 20 KiB: the runner is larger
    r = subprocess.run(["bash", "-c", shell], cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "cannot write the run's files: File too large" in r.stderr and "bug in nb2flow" not in r.stderr
    assert all(rec["state"] != "running" for rec in _records(tmp_path))


@pytest.mark.slow  # CI runs it (pytest -m slow)
def test_a_run_folder_deleted_under_a_run_stops_it_with_one_line_never_a_hang(tmp_path):
    import shutil

    nb = _slow_notebook(tmp_path)
    proc = _start(tmp_path, nb, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    record = _running(tmp_path)
    shutil.rmtree(tmp_path / ".nb2flow" / "runs" / record["run_id"])
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "the run folder was deleted while the run went on; every step was stopped" in err, err
    assert "bug in nb2flow" not in err
    wait_for(lambda: not processes_mentioning(record["run_id"]), timeout=15)


# ------------------------------------------------------------------ what the merged notebook and the logs hold
def _merged(folder: Path) -> dict:
    return json.loads(next((folder / "nb2flow-runs").glob("*.ipynb")).read_text())


def test_in_and_out_numbers_agree_in_the_merged_notebook(tmp_path):
    nb = write(tmp_path / "e.ipynb", cell("import os", "setup"), cell("x = 1\nx", "step:a"), cell("y = 2\nprint(y)\ny", "step:b"))
    assert nb2flow("run", str(nb), "-q", cwd=tmp_path).returncode == 0
    for c in _merged(tmp_path)["cells"]:
        for out in c["outputs"]:
            if out["output_type"] == "execute_result":
                assert out["execution_count"] == c["execution_count"], c  # In [3] shows Out[3], not Out[2]
    assert [c["execution_count"] for c in _merged(tmp_path)["cells"]] == [1, 2, 3]


@pytest.mark.parametrize("mode", ["notebook", pytest.param("script", marks=pytest.mark.slow)])
def test_a_value_nested_deeper_than_the_recursion_limit_reaches_the_next_step(tmp_path, mode):
    nb = write(tmp_path / "deep.ipynb", cell("x = []\nfor _ in range(100_000):\n    x = [x]", "step:a"),
               cell("depth = 0\nwhile x:\n    x, depth = x[0], depth + 1\nprint('depth', depth)", "step:b"))
    proc = nb2flow("run", str(nb), "-q", "--mode", mode, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr  # as top to bottom: no RecursionError, no dead kernel
    assert "depth 100000\n" in ["".join(o.get("text", "")) for c in _merged(tmp_path)["cells"] for o in c["outputs"]]


@pytest.mark.parametrize("mode", ["notebook", pytest.param("script", marks=pytest.mark.slow)])
def test_a_huge_output_is_stored_once_and_the_notebooks_keep_its_start_and_end(tmp_path, mode):
    from nb2flow.runner.tracebacks import KEEP_HEAD

    nb = write(tmp_path / "big.ipynb", cell("import sys\nfor i in range(120_000):\n    sys.stdout.write(f'{i:099d}\\n')\nprint('the end')",
                                           "step:a"))
    proc = nb2flow("run", str(nb), "-q", "--mode", mode, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    run_dir = next((tmp_path / ".nb2flow" / "runs").iterdir())
    log = (run_dir / "steps" / "a" / "output.log").read_text()
    assert len(log) == 120_000 * 100 + len("the end\n") and log.endswith("the end\n")  # all of it, once
    assert not (run_dir / "steps" / "a" / "runner.log").exists() or (run_dir / "steps" / "a" / "runner.log").stat().st_size < 10_000
    texts = ["".join(o.get("text", "")) for o in _merged(tmp_path)["cells"][0]["outputs"]]
    joined = "".join(texts)
    assert joined.startswith(f"{0:099d}\n") and joined.endswith("the end\n")
    assert any("MB of this cell's output left out here; all of it is in" in t and "output.log" in t for t in texts)
    for notebook in [*(tmp_path / "nb2flow-runs").glob("*.ipynb"), *run_dir.glob("*.out.ipynb"), run_dir / "steps" / "a" / "a.ipynb"]:
        assert notebook.stat().st_size < 2 * KEEP_HEAD, notebook  # 12 MB printed; each notebook keeps under 8 MB


def test_the_magics_view_tells_a_run_whose_process_was_killed_as_abandoned(tmp_path):
    import socket

    from nb2flow.ipython import FollowState, progress_view

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that ran nb2flow and is gone
    run_dir = tmp_path / ".nb2flow" / "runs" / "r-1"
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({
        "run_id": "r-1", "backend": "local", "state": "running", "owner": {"pid": dead.pid, "host": socket.gethostname(), "since": "x"},
        "steps": {"a": {"state": "running", "attempts": 1, "duration": None}}}))
    state = FollowState()
    state.run_dir = str(run_dir)
    assert progress_view(state, done=False)["text/plain"].startswith("run r-1: running")
    view = progress_view(state, done=True, code=-9)["text/plain"]
    assert view.startswith("run r-1: abandoned") and "%nb2flow run --resume r-1" in view
