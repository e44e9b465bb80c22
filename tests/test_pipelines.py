"""Pipelines of several notebooks and scripts: JupyterFlow's command chain and workflow.yaml, with nb2flow's features.

Each run is compared with running the same commands (and notebooks, with papermill's parameter injection) by
hand, in order, in a copy of the folder.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import SAMPLES, nb2flow, only_run_dir, record, run_in_process

from nb2flow.workflow import WorkflowError, from_chain, from_file, parse_chain

# JupyterFlow's get-started example (docs/get-started.md): its scripts and its workflow.yaml, unchanged
JOB1 = "print('hello')\n"
JOB2 = "import sys\nprint('world %s!' % sys.argv[1])\n"
JOB3 = "print('again!')\n"
GET_STARTED = """# workflow.yaml
jobs:
- python job1.py 
- python job2.py foo
- python job2.py bar
- python job3.py

# Job index starts at 1.
dags:
- 1 >> 2
- 1 >> 3
- 2 >> 4
- 3 >> 4
"""


def _jupyterflow_folder(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "job1.py").write_text(JOB1)
    (folder / "job2.py").write_text(JOB2)
    (folder / "job3.py").write_text(JOB3)
    (folder / "workflow.yaml").write_text(GET_STARTED)
    return folder


def _by_hand(folder: Path, commands: list) -> list:
    """Each command's stdout, run in ``folder`` one after the other (what JupyterFlow's user would type)."""
    return [subprocess.run(c, cwd=folder, shell=True, capture_output=True, text=True, check=True).stdout for c in commands]


def _went(step: dict) -> float:
    """When a step was given go (its parents done): its record's end less the time it added."""
    return step["ended"] - step["duration"]


def _step_output(run_dir: Path, task: str) -> str:
    return (run_dir / "steps" / task / "output.log").read_text()


# ------------------------------------------------------------------ the grammar
def test_a_chain_splits_as_a_shell_quotes():
    jobs, edges = parse_chain("echo 'good bye' >> echo '>>' \">>\" & python b.py >> echo a\\ b")
    assert [j.text for j in jobs] == ["echo 'good bye'", "echo '>>' '>>'", "python b.py", "echo 'a b'"]
    assert edges == [(1, 2, None), (1, 3, None), (2, 4, None), (3, 4, None)]  # & : side by side, both before the next
    wf = from_chain("echo 'good bye' >> echo again", "/tmp")
    assert [s.command["argv"] for s in wf.steps] == [["echo", "good bye"], ["echo", "again"]]


@pytest.mark.parametrize("chain, message", [
    ("python a.py >> >> python b.py", "an empty job at position 2"),
    (">> python a.py", "an empty job before the first `>>`"),
    ("python a.py >>", "an empty job after the last `>>`"),
    ("python a.py | grep x", "`|` is shell syntax"),
    ("python a.py && python b.py", "`&&` is shell syntax"),
    ("echo 'unclosed", "no closing quotation"),
    ("   ", "no command given"),
])
def test_a_bad_chain_is_one_line(chain, message):
    with pytest.raises(WorkflowError, match=message.replace("(", r"\(")):
        parse_chain(chain)


# ------------------------------------------------------------------ bad workflow files: one line with the line, exit 2
BAD_FILES = {
    "index out of range": ("jobs:\n- echo a\n- echo b\ndags:\n- 1 >> 3\n", "line 5: job index 3 is out of range"),
    "cycle": ("jobs:\n- echo a\n- echo b\n- echo c\ndags:\n- 1 >> 2\n- 2 >> 3\n- 3 >> 2\n", "line 7: the jobs form a cycle: 2 >> 3 >> 2"),
    "duplicate edge": ("jobs:\n- echo a\n- echo b\ndags:\n- 1 >> 2\n- 1 >> 2\n", "line 6: `1 >> 2` is given twice (also line 5)"),
    "duplicate name": ("jobs:\n- name: a\n  run: echo a\n- name: a\n  run: echo b\n", "line 4: job name 'a' is used twice"),
    "missing script": ("jobs:\n- python job1.py\n- python nothere.py\n", "line 3: job 2: `python nothere.py` names nothere.py, which is not in"),
    "missing notebook": ("jobs:\n- python job1.py\n- gone.ipynb\n", "line 3: job 2: notebook gone.ipynb not found"),
    "unknown key": ("jobs:\n- echo a\ndag:\n- 1 >> 1\n", "line 3: unknown key `dag` (did you mean `dags`?)"),
    "self edge": ("jobs:\n- echo a\ndags:\n- 1 >> 1\n", "line 4: job echo cannot run after itself"),
    "not a dag line": ("jobs:\n- echo a\n- echo b\ndags:\n- 1 > 2\n", "line 5: `1 > 2` is not `A >> B`"),
    "empty job": ("jobs:\n- echo a\n- ''\n", "line 3: an empty job"),
    "no jobs": ("name: x\n", "no `jobs:` list"),
    "bad yaml": ("jobs:\n- echo a\n- [unclosed\n", "not valid YAML"),
    "bad cmd_mode": ("jobs:\n- echo a\ncmd_mode: bash\n", "line 3: cmd_mode 'bash' is not exec or shell"),
    "bad schedule": ("jobs:\n- echo a\nschedule: '61 * * * *'\n", "line 3: schedule '61 * * * *'"),
    "bad option": ("jobs:\n- run: echo a\n  cpu: lots\n", "line 3: 'cpu: lots' is not a Kubernetes quantity"),
    "bad version": ("version: 2\njobs:\n- echo a\n", "line 1: version 2 is not one nb2flow reads"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_bad_workflow_file_is_one_line_with_its_line_and_exit_2(tmp_path, case):
    text, message = BAD_FILES[case]
    folder = _jupyterflow_folder(tmp_path)
    (folder / "workflow.yaml").write_text(text)
    for command in (["check", "workflow.yaml"], ["run", "-f", "workflow.yaml"]):
        proc = run_in_process(command, cwd=folder, env={"NO_COLOR": "1"})  # the CLI's entry point, as a process has it
        assert proc.returncode == 2, (command, proc.stderr)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and message in lines[0] and "Traceback" not in proc.stderr, (command, proc.stderr)
        assert "workflow.yaml" in lines[0]
    assert not (folder / ".nb2flow" / "runs").exists()


# ------------------------------------------------------------------ JupyterFlow's examples, unchanged
def test_jupyterflows_hello_world_chain_runs_as_by_hand(tmp_path):
    folder = tmp_path / "work"
    folder.mkdir()
    (folder / "hello.py").write_text("print('hello')\nopen('trace.txt', 'a').write('hello\\n')\n")
    (folder / "world.py").write_text("print('world')\nopen('trace.txt', 'a').write('world\\n')\n")
    proc = nb2flow("run", "-c", "python hello.py >> python world.py", "--no-progress", cwd=folder)
    assert proc.returncode == 0, proc.stderr
    run_dir = only_run_dir(folder)
    assert [_step_output(run_dir, t) for t in ("hello", "world")] == ["hello\n", "world\n"]
    assert (folder / "trace.txt").read_text() == "hello\nworld\n"  # world ran after hello
    rec = record(run_dir)
    assert rec["state"] == "succeeded" and rec["chain"] == "python hello.py >> python world.py"
    assert _went(rec["steps"]["world"]) >= rec["steps"]["hello"]["ended"] - 0.05
    logs = nb2flow("logs", run_dir.name, cwd=folder)
    assert logs.stdout.splitlines() == ["[hello] hello", "[world] world"], logs.stderr
    assert nb2flow("logs", run_dir.name, "job-2", cwd=folder).stdout == "world\n"  # JupyterFlow's name for the 2nd job


@pytest.mark.slow
def test_jupyterflows_get_started_workflow_file_runs_as_by_hand(tmp_path):
    folder = _jupyterflow_folder(tmp_path / "work")
    by_hand = _by_hand(_jupyterflow_folder(tmp_path / "hand"),
                       ["python job1.py", "python job2.py foo", "python job2.py bar", "python job3.py"])
    for command in (["run", "workflow.yaml"], ["run", "-f", "workflow.yaml"]):  # jupyterflow run -f workflow.yaml
        proc = nb2flow(*command, "-q", cwd=folder)
        assert proc.returncode == 0, proc.stderr
    runs = sorted((folder / ".nb2flow" / "runs").iterdir())
    assert len(runs) == 2
    for run_dir in runs:
        assert [_step_output(run_dir, t) for t in ("job1", "job2", "job2-2", "job3")] == by_hand
        steps = record(run_dir)["steps"]
        assert _went(steps["job3"]) >= max(steps["job2"]["ended"], steps["job2_2"]["ended"]) - 0.05  # fan-in
        assert min(_went(steps["job2"]), _went(steps["job2_2"])) >= steps["job1"]["ended"] - 0.05  # fan-out
    graph = nb2flow("graph", "workflow.yaml", cwd=folder).stdout
    assert "job3    [$ python job3.py]  <- job2, job2_2" in graph and "(2 steps at this level may run in parallel)" in graph


def test_without_dags_every_job_runs_side_by_side_as_in_jupyterflow(tmp_path):
    folder = _jupyterflow_folder(tmp_path)
    (folder / "workflow.yaml").write_text("jobs:\n- echo hello\n- echo world\n- echo again\n")
    wf = from_file(str(folder / "workflow.yaml"))
    assert [(s.name, s.parents) for s in wf.steps] == [("echo", ()), ("echo_2", ()), ("echo_3", ())]
    (folder / "workflow.yaml").write_text("cmd_mode: shell\njobs:\n- echo hello > out.txt && echo more >> out.txt\n")
    proc = nb2flow("run", "workflow.yaml", "-q", cwd=folder)
    assert proc.returncode == 0, proc.stderr
    assert (folder / "out.txt").read_text() == "hello\nmore\n"  # shell mode: /bin/sh -c, as JupyterFlow's


# ------------------------------------------------------------------ notebooks and scripts in one pipeline
def _mixed(tmp_path: Path, name: str = "work") -> Path:
    folder = tmp_path / name
    shutil.copytree(SAMPLES / "pipeline", folder)
    return folder


def _papermill_by_hand(folder: Path, alpha: float, rows: int) -> None:
    """The mixed pipeline run by hand in order: papermill for the notebooks, python for the scripts."""
    import papermill

    papermill.execute_notebook(str(folder / "prepare.ipynb"), str(folder / "prepare.out.ipynb"), parameters={"rows": rows},
                               cwd=str(folder), progress_bar=False, kernel_name="python3")
    for name in ("a", "b"):
        subprocess.run([sys.executable, "train.py", name, str(alpha)], cwd=folder, check=True, capture_output=True)
    papermill.execute_notebook(str(folder / "report.ipynb"), str(folder / "report.out.ipynb"), cwd=str(folder), progress_bar=False,
                               kernel_name="python3")


def _cell_texts(path: Path) -> list:
    nb = json.loads(path.read_text())
    return ["".join(o.get("text", "")) for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]


@pytest.mark.slow
def test_a_mixed_pipeline_equals_running_each_by_hand(tmp_path):
    folder, hand = _mixed(tmp_path), _mixed(tmp_path, "hand")
    _papermill_by_hand(hand, alpha=2.0, rows=50)
    proc = nb2flow("run", "workflow.yaml", "-p", "alpha", "2", "-p", "rows", "50", "--no-progress", cwd=folder)
    assert proc.returncode == 0, proc.stderr
    for f in ("data.csv", "model_a.json", "model_b.json"):
        assert (folder / f).read_text() == (hand / f).read_text(), f
    run_dir = only_run_dir(folder)
    rec = record(run_dir)
    assert set(rec["steps"]) == {"prepare", "train_a", "train_b", "report.collect", "report.summary"}
    # each notebook job has its merged notebook beside it, with its own parameters only; the report's is the run's
    prepare_nb = folder / "nb2flow-runs" / f"{run_dir.name}-prepare.ipynb"
    report_nb = folder / "nb2flow-runs" / f"{run_dir.name}-report.ipynb"
    assert _cell_texts(prepare_nb) == _cell_texts(hand / "prepare.out.ipynb") == ["wrote 50 rows to data.csv\n"]
    assert _cell_texts(report_nb) == _cell_texts(hand / "report.out.ipynb")
    assert json.loads(prepare_nb.read_text())["metadata"]["nb2flow"]["parameters"] == {"rows": 50}
    assert json.loads(report_nb.read_text())["metadata"]["nb2flow"]["parameters"] == {}
    assert rec["visible_notebook"] == str(report_nb) and set(rec["outputs"]) == {"prepare", "report"}
    assert "train_a: done" in proc.stderr and f"output notebook nb2flow-runs/{run_dir.name}-report.ipynb" in proc.stderr
    status = nb2flow("status", run_dir.name, cwd=folder)
    assert status.returncode == 0 and "report.summary" in status.stdout
    logs = nb2flow("logs", run_dir.name, "train_b", cwd=folder)
    assert logs.returncode == 0 and logs.stdout.startswith("model b: a=") and "(alpha 2.0)" in logs.stdout, logs.stderr
    logs = nb2flow("logs", run_dir.name, "report.summary", cwd=folder)
    assert logs.stdout.startswith("Models: best is")
    logs = nb2flow("logs", run_dir.name, "report", cwd=folder)  # a notebook job: each of its steps
    assert logs.stdout.splitlines()[0] == "[report.collect] ['a', 'b']" and "[report.summary] Models: best is" in logs.stdout


@pytest.mark.slow
def test_a_parameter_reaches_the_notebooks_that_have_it_and_the_commands_that_name_it(tmp_path):
    folder = _mixed(tmp_path)
    wf = from_file(str(folder / "workflow.yaml"))
    assert {p.name for p in wf.parameters} == {"rows", "seed", "alpha", "title"}
    proc = nb2flow("run", "workflow.yaml", "-p", "alpah", "1", cwd=folder)
    assert proc.returncode == 2 and "unknown parameter 'alpah'" in proc.stderr and "did you mean alpha?" in proc.stderr
    proc = nb2flow("run", "workflow.yaml", "-q", "-p", "title", "Ridge", cwd=folder)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((folder / "model_a.json").read_text())["alpha"] == 0.5  # the file's default
    assert any("Ridge: best is" in t for t in _cell_texts(folder / "nb2flow-runs" / f"{only_run_dir(folder).name}-report.ipynb"))


def test_resume_after_a_failing_script_reruns_only_it_and_what_follows(tmp_path):
    folder = _mixed(tmp_path)
    train = folder / "train.py"  # fails for model b while a file it does not name is there (changed data, a full disk...)
    train.write_text(train.read_text().replace(
        'name, alpha = sys.argv[1], float(sys.argv[2])',
        'name, alpha = sys.argv[1], float(sys.argv[2])\nimport os\nif name == "b" and os.path.exists("block_b"):\n    sys.exit("no data for b")'))
    (folder / "block_b").write_text("")
    proc = nb2flow("run", "workflow.yaml", "--no-progress", cwd=folder)
    assert proc.returncode == 1 and "`python train.py b 0.5` exited with status 1" in proc.stderr, proc.stderr
    # no step of the report ran: no merged notebook of it; the run's is the last notebook that ran
    assert "-report.ipynb" not in proc.stderr and "-prepare.ipynb" in proc.stderr
    run_dir = only_run_dir(folder)
    states = {n: s["state"] for n, s in record(run_dir)["steps"].items()}
    assert states == {"prepare": "succeeded", "train_a": "succeeded", "train_b": "failed", "report.collect": "skipped",
                      "report.summary": "skipped"}
    assert "no data for b" in record(run_dir)["steps"]["train_b"]["error"]["traceback"][-1]
    data, model_a = (folder / "data.csv").stat().st_mtime_ns, (folder / "model_a.json").stat().st_mtime_ns
    (folder / "block_b").unlink()
    proc = nb2flow("run", "--resume", run_dir.name, "--no-progress", cwd=folder)
    assert proc.returncode == 0, proc.stderr
    steps = record(run_dir)["steps"]
    assert {n for n, s in steps.items() if s.get("reused")} == {"prepare", "train_a"}
    assert {n for n, s in steps.items() if s["state"] == "succeeded"} == {"train_b", "report.collect", "report.summary"}
    assert (folder / "data.csv").stat().st_mtime_ns == data and (folder / "model_a.json").stat().st_mtime_ns == model_a
    assert (folder / "model_b.json").exists()


@pytest.mark.slow
def test_reuse_keeps_unchanged_jobs_and_reruns_a_changed_script_and_what_follows(tmp_path):
    folder = _mixed(tmp_path)
    assert nb2flow("run", "workflow.yaml", "-q", cwd=folder).returncode == 0
    (folder / "train.py").write_text((folder / "train.py").read_text() + "# a comment changes the script\n")
    proc = nb2flow("run", "workflow.yaml", "--reuse", "--no-progress", cwd=folder)
    assert proc.returncode == 0, proc.stderr
    newest = sorted((folder / ".nb2flow" / "runs").iterdir())[-1]
    steps = record(newest)["steps"]
    assert {n for n, s in steps.items() if s.get("reused")} == {"prepare"}
    proc = nb2flow("run", "workflow.yaml", "--reuse", "--no-progress", cwd=folder)  # nothing changed since
    newest = sorted((folder / ".nb2flow" / "runs").iterdir())[-1]
    assert {n for n, s in record(newest)["steps"].items() if s.get("reused")} == set(record(newest)["steps"]), proc.stderr
    proc = nb2flow("run", "workflow.yaml", "--reuse", "-p", "title", "Other", "--no-progress", cwd=folder)
    newest = sorted((folder / ".nb2flow" / "runs").iterdir())[-1]  # a parameter only the report has: only it re-runs
    assert {n for n, s in record(newest)["steps"].items() if not s.get("reused")} == {"report.collect", "report.summary"}


def test_a_tagged_notebook_joins_as_its_steps_between_the_jobs_around_it(tmp_path):
    folder = _mixed(tmp_path)
    wf = from_file(str(folder / "workflow.yaml"))
    assert [(s.name, s.parents) for s in wf.steps] == [
        ("prepare", ()), ("train_a", ("prepare",)), ("train_b", ("prepare",)),
        ("report.collect", ("train_a", "train_b")), ("report.summary", ("report.collect",))]
    check = nb2flow("check", "--json", "workflow.yaml", cwd=folder)
    data = json.loads(check.stdout)
    assert [j["kind"] for j in data["jobs"]] == ["notebook", "command", "command", "notebook"]
    assert data["jobs"][3]["steps"] == ["report.collect", "report.summary"] and data["ok"]


def test_a_notebook_problem_names_the_notebook_and_cell(tmp_path):
    folder = _mixed(tmp_path)
    nb = json.loads((folder / "report.ipynb").read_text())
    nb["cells"][3]["source"] = "print(undefined_name)"
    (folder / "report.ipynb").write_text(json.dumps(nb))
    proc = nb2flow("run", "workflow.yaml", cwd=folder)
    assert proc.returncode == 2
    assert "report.ipynb: cell 4, line 1 (step:report.summary)" in proc.stderr and "undefined_name" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_a_failing_notebook_job_names_its_notebook_and_cell(tmp_path):
    folder = _mixed(tmp_path)
    nb = json.loads((folder / "report.ipynb").read_text())
    nb["cells"][3]["source"] = "best = 1 / 0"
    (folder / "report.ipynb").write_text(json.dumps(nb))
    proc = nb2flow("run", "workflow.yaml", "--no-progress", cwd=folder)
    assert proc.returncode == 1
    assert "report.ipynb: cell 4 (step:report.summary)" in proc.stderr and "ZeroDivisionError" in proc.stderr


def test_a_pipeline_of_commands_schedules_as_a_cron_workflow(tmp_path):
    from helpers import JH_POD_FILE

    folder = _jupyterflow_folder(tmp_path / "home" / "work")
    (folder / "workflow.yaml").write_text(GET_STARTED + "schedule: '*/30 * * * *'\nname: nightly\n")
    proc = nb2flow("schedule", "workflow.yaml", "--dry-run", "--pod-spec", str(JH_POD_FILE), cwd=folder,
                   env={"NB2FLOW_WORKDIR": ""})
    if proc.returncode == 2 and "not on a volume" in proc.stderr:
        proc = nb2flow("schedule", "workflow.yaml", "--dry-run", "--pod-spec", str(JH_POD_FILE), "--workdir", "/home/jovyan/work",
                       cwd=folder)
    assert proc.returncode == 0, proc.stderr
    import yaml

    cron = yaml.safe_load(proc.stdout)
    assert cron["kind"] == "CronWorkflow" and (cron["spec"].get("schedules") or [cron["spec"].get("schedule")]) == ["*/30 * * * *"]
    tasks = {t["name"]: t.get("dependencies", []) for t in cron["spec"]["workflowSpec"]["templates"][0]["dag"]["tasks"]}
    assert tasks == {"job1": [], "job2": ["job1"], "job2-2": ["job1"], "job3": ["job2", "job2-2"]}


@pytest.mark.slow
def test_the_magic_runs_a_workflow_file_from_any_notebook_in_the_folder(tmp_path):
    from nbutil import cell, write

    from test_jupyterlab import _execute, _outputs

    folder = _mixed(tmp_path)
    path = folder / "driver.ipynb"
    write(path, cell("%load_ext nb2flow"), cell("%nb2flow run -f workflow.yaml -p alpha 1"),
          cell("_nb2flow_magics.runs[-1][0].join(240)", "skip"), cell("%nb2flow run -c 'python train.py c 3'"),
          cell("_nb2flow_magics.runs[-1][0].join(240)", "skip"))
    before = path.read_bytes()
    nb = _execute(path)
    text = _outputs(nb, 1, "text/plain")[0]
    assert text.startswith("run models-") and ": succeeded" in text.splitlines()[0], text
    assert "-report.ipynb" in text
    assert json.loads((folder / "model_a.json").read_text())["alpha"] == 1
    assert json.loads((folder / "model_c.json").read_text())["alpha"] == 3
    runs = sorted(p.name for p in (folder / ".nb2flow" / "runs").iterdir())
    assert len(runs) == 2 and any(r.startswith("pipeline-") for r in runs)
    assert "driver" not in " ".join(runs) and path.read_bytes() == before  # the calling notebook is not what ran


# ------------------------------------------------------------------ on Argo: the exported Workflow, replayed pod by pod
def _emit_workflow(path: Path, params: dict, chain: str | None = None) -> dict:
    from helpers import JH_POD_FILE

    from nb2flow.cluster import prepare, resolve_target
    from nb2flow.config import ClusterConfig

    wf = from_chain(chain, str(path)) if chain else from_file(str(path))
    target = resolve_target(wf.path, ClusterConfig(workdir="/home/jovyan/work"), pod_spec=str(JH_POD_FILE))
    return prepare(wf, target, params)[0]


@pytest.mark.slow
def test_jupyterflows_examples_replayed_as_argo_pods_equal_running_by_hand(tmp_path):
    from helpers import JH_CLAIM, pod_replay_or_skip
    from podreplay import kubelet_fs_group, manifest_from_yaml, run_pods

    from nb2flow.argo import dump

    pod_replay_or_skip()
    claim = tmp_path / "claim"
    work = _jupyterflow_folder(claim / "work")
    (work / "hello.py").write_text("print('hello')\n")
    (work / "world.py").write_text("print('world')\n")
    by_hand = _by_hand(_jupyterflow_folder(tmp_path / "hand"),
                       ["python job1.py", "python job2.py foo", "python job2.py bar", "python job3.py"])
    manifest = manifest_from_yaml(dump(_emit_workflow(work / "workflow.yaml", {})))
    chain = manifest_from_yaml(dump(_emit_workflow(work, {}, chain="python hello.py >> python world.py")))
    kubelet_fs_group(claim, 100)  # the pods' uid 1000 reads the step files through the volume's group
    tasks = {t["name"]: t.get("dependencies", []) for t in manifest["spec"]["templates"][0]["dag"]["tasks"]}
    assert tasks == {"job1": [], "job2": ["job1"], "job2-2": ["job1"], "job3": ["job2", "job2-2"]}
    results = run_pods(manifest, {JH_CLAIM: claim}, name="wf-jf")
    assert {t: r.exit_code for t, r in results.items()} == {"job1": 0, "job2": 0, "job2-2": 0, "job3": 0, "onExit": 0}, \
        [r.log for r in results.values()]
    assert [results[t].log for t in ("job1", "job2", "job2-2", "job3")] == by_hand  # the pod log is the command's output
    run_dir = work / ".nb2flow" / "runs" / "wf-jf"
    assert record(run_dir)["state"] == "succeeded" and set(record(run_dir)["steps"]) == {"job1", "job2", "job2_2", "job3"}
    results = run_pods(chain, {JH_CLAIM: claim}, name="wf-hello")
    assert [results[t].log for t in ("hello", "world")] == ["hello\n", "world\n"]


@pytest.mark.slow
def test_a_mixed_pipeline_replayed_as_argo_pods_equals_running_each_by_hand(tmp_path):
    from helpers import JH_CLAIM, pod_replay_or_skip
    from podreplay import kubelet_fs_group, manifest_from_yaml, run_pods

    from nb2flow.argo import dump

    pod_replay_or_skip()
    claim = tmp_path / "claim"
    claim.mkdir()
    work = _mixed(claim)
    hand = _mixed(tmp_path, "hand")
    _papermill_by_hand(hand, alpha=2.0, rows=50)
    manifest = manifest_from_yaml(dump(_emit_workflow(work / "workflow.yaml", {"alpha": 2.0, "rows": 50})))
    kubelet_fs_group(claim, 100)
    results = run_pods(manifest, {JH_CLAIM: claim}, name="wf-mixed")
    assert all(r.exit_code == 0 for r in results.values()), {t: r.log for t, r in results.items()}
    for f in ("data.csv", "model_a.json", "model_b.json"):
        assert (work / f).read_text() == (hand / f).read_text(), f
    run_dir = work / ".nb2flow" / "runs" / "wf-mixed"
    rec = record(run_dir)
    assert rec["state"] == "succeeded" and set(rec["outputs"]) == {"prepare", "report"}
    report = work / "nb2flow-runs" / "wf-mixed-report.ipynb"
    assert rec["visible_notebook"].endswith("nb2flow-runs/wf-mixed-report.ipynb")
    assert _cell_texts(report) == _cell_texts(hand / "report.out.ipynb")
    assert _cell_texts(work / "nb2flow-runs" / "wf-mixed-prepare.ipynb") == ["wrote 50 rows to data.csv\n"]
    assert "model b: a=" in results["train-b"].log and "(alpha 2.0)" in results["train-b"].log


def test_a_jobs_options_reach_its_pods(tmp_path):
    """cpu, memory, gpu, retry, timeout and image on a job: its task's pod, as a step's tags do."""
    folder = _jupyterflow_folder(tmp_path / "home" / "work")
    (folder / "workflow.yaml").write_text(
        "jobs:\n- name: big\n  run: python job1.py\n  cpu: 2\n  memory: 4Gi\n  gpu: 1\n  retry: 2\n  timeout: 30m\n"
        "  image: ghcr.io/org/cuda:1\n- name: small\n  run: python job3.py\n  after: big\n")
    manifest = _emit_workflow(folder / "workflow.yaml", {})
    templates = {t["name"]: t for t in manifest["spec"]["templates"]}
    tasks = {t["name"]: t for t in templates["pipeline"]["dag"]["tasks"]}
    big, small = templates[tasks["big"]["template"]], templates[tasks["small"]["template"]]
    assert big["container"]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert big["container"]["resources"]["requests"] == {"cpu": "2", "memory": "4Gi"} | {
        k: v for k, v in big["container"]["resources"]["requests"].items() if k not in ("cpu", "memory")}
    assert big["retryStrategy"]["limit"] == "2" and big["timeout"] == "1800s" and big["container"]["image"] == "ghcr.io/org/cuda:1"
    assert "nvidia.com/gpu" not in (small["container"].get("resources") or {}).get("limits", {})
    assert tasks["small"]["dependencies"] == ["big"]


@pytest.mark.parametrize("name", ["local", pytest.param("argo", marks=pytest.mark.slow)])
def test_every_backend_runs_a_pipeline_of_a_script_and_a_notebook(name, tmp_path, monkeypatch):
    """The backends' contract (tests/test_backends.py) for a pipeline: submitted or run, then record, status, logs."""
    from test_backends import WORLDS, _notebook

    from nb2flow import backends

    world = WORLDS[name](tmp_path, monkeypatch)
    try:
        _notebook(world.folder)
        (world.folder / "first.py").write_text("import sys\nprint('first got', sys.argv[1])\nopen('first.txt', 'w').write(sys.argv[1])\n")
        (world.folder / "workflow.yaml").write_text("jobs:\n- python first.py {n}\n- contract.ipynb\ndags:\n- 1 >> 2\n")
        wf = from_file(str(world.folder / "workflow.yaml"))
        console = backends.Console(say=lambda text: None, sink=lambda ev: None)
        request = backends.RunRequest(pipeline=wf, parameters={"n": 3}, progress="quiet", where=world.where)
        backend = backends.get(name)
        backend.validate(request)
        outcome = backend.start(request, console)
        assert outcome.failure is None
        if name == "argo":
            from podreplay import kubelet_fs_group, run_pods

            from helpers import JH_CLAIM

            manifest = world.server.objects[("workflows", "jhub", outcome.run_id)]
            kubelet_fs_group(world.claim, 100)
            results = run_pods(json.loads(json.dumps(manifest)), {JH_CLAIM: world.claim}, name=outcome.run_id)
            assert {t: r.exit_code for t, r in results.items()} == {"first": 0, "contract-a": 0, "contract-b": 0, "onExit": 0}, \
                {t: r.log for t, r in results.items()}
            manifest["status"] = {"phase": "Succeeded", "nodes": {}}
        assert (world.folder / "first.txt").read_text() == "3"  # {n} of the command got the run's value
        ref = backends.find(outcome.run_id, world.where, console, search=[str(world.folder)])
        assert ref.record["state"] == "succeeded" and set(ref.record["steps"]) == {"first", "contract.a", "contract.b"}
        report = backend.status(ref, world.where, console)
        assert [r.name for r in report.steps] == ["first", "contract.a", "contract.b"]
        logs = dict(backend.logs(ref, None, False, world.where, console))
        assert logs["first"].strip() == "first got 3" and "a says 6" in logs["contract.a"]  # n reached the notebook too
        shown = next(line.split(": ", 1)[1] for line in report.lines if line.startswith("notebook: "))
        merged = json.loads(Path(shown).read_text())  # the pods' path, as this machine sees it
        assert "b says 7\n" in ["".join(o.get("text", "")) for c in merged["cells"] for o in c.get("outputs", [])]
    finally:
        getattr(world, "close", lambda: None)()


def test_check_of_a_chain_speaks_of_it_as_written(tmp_path):
    folder = _mixed(tmp_path)
    proc = nb2flow("check", "-c", "prepare.ipynb >> python train.py a {alpha} & python train.py 'b c' 1", cwd=folder)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout + proc.stderr
    assert "-c: step train: warning: `python train.py a {alpha}` names {alpha}, which has no default" in out
    assert "-c: 3 steps, 3 parameters: 1 warning" in out and str(folder) not in out
    nb = json.loads((folder / "report.ipynb").read_text())
    nb["cells"][3]["source"] = "print(undefined_name)"
    (folder / "report.ipynb").write_text(json.dumps(nb))
    proc = nb2flow("run", "-c", "python train.py a 1 >> report.ipynb", cwd=folder)
    assert proc.returncode == 2 and "report.ipynb: cell 4, line 1 (step:report.summary)" in proc.stderr
    assert "see `nb2flow check -c 'python train.py a 1 >> report.ipynb'`" in proc.stderr


def test_a_job_gives_its_own_parameters_so_one_notebook_runs_twice_two_ways(tmp_path):
    folder = _mixed(tmp_path)
    (folder / "workflow.yaml").write_text(
        "parameters:\n  alpha: 0.5\njobs:\n"
        "- name: small\n  notebook: prepare.ipynb\n  parameters: {rows: 10, seed: 1}\n"
        "- name: large\n  notebook: prepare.ipynb\n  parameters: {rows: 30}\n  after: small\n"
        "- name: fit\n  run: python train.py {name} {alpha}\n  parameters: {name: z}\n  after: large\n")
    proc = nb2flow("run", "workflow.yaml", "-p", "rows", "99", "-p", "alpha", "3", "--no-progress", cwd=folder)
    assert proc.returncode == 0, proc.stderr
    run_dir = only_run_dir(folder)
    texts = {job: _cell_texts(folder / "nb2flow-runs" / f"{run_dir.name}-{job}.ipynb") for job in ("small", "large")}
    assert texts == {"small": ["wrote 10 rows to data.csv\n"], "large": ["wrote 30 rows to data.csv\n"]}  # the job's own win
    assert len((folder / "data.csv").read_text().splitlines()) == 31
    model = json.loads((folder / "model_z.json").read_text())
    assert model["alpha"] == 3.0  # -p reaches what the job leaves open
    params = json.loads((folder / "nb2flow-runs" / f"{run_dir.name}-small.ipynb").read_text())["metadata"]["nb2flow"]["parameters"]
    assert params == {"rows": 10, "seed": 1}
    (folder / "workflow.yaml").write_text("jobs:\n- notebook: prepare.ipynb\n  parameters: {row: 10}\n")
    proc = nb2flow("check", "workflow.yaml", cwd=folder)
    assert proc.returncode == 2 and "line 2: job prepare: 'row' is not a parameter of it (did you mean rows?)" in proc.stderr


def test_a_notebook_in_a_subfolder_runs_there_and_its_merged_notebook_lands_beside_it(tmp_path):
    from nbutil import cell, write

    sub = tmp_path / "sub dir"
    sub.mkdir()
    write(sub / "nb one.ipynb", cell("n = 1", "parameters"), cell("import os\nprint('cwd', os.path.basename(os.getcwd()), n)", "step:a"))
    (tmp_path / "w.yaml").write_text('jobs:\n- "sub dir/nb one.ipynb"\n- python -c "print(42)"\n')
    proc = nb2flow("run", "w.yaml", "-p", "n", "5", "-q", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    run_dir = only_run_dir(tmp_path)
    assert _cell_texts(sub / "nb2flow-runs" / f"{run_dir.name}-nb_one.ipynb") == ["cwd sub dir 5\n"]
    assert _step_output(run_dir, "python") == "42\n"


def test_the_python_api_runs_a_workflow_file_and_streams_its_events(tmp_path):
    import nb2flow.api

    folder = _jupyterflow_folder(tmp_path)
    events = []
    outcome = nb2flow.api.run(folder / "workflow.yaml", on_event=events.append)
    assert outcome.state == "succeeded"
    done = [e["step"] for e in events if e["event"] == "step" and e["state"] == "succeeded"]
    assert done[0] == "job1" and done[-1] == "job3" and set(done) == {"job1", "job2", "job2_2", "job3"}
    assert events[0]["event"] == "run-started" and any(e["event"] == "run-finished" for e in events)
