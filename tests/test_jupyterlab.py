"""nb2flow inside Jupyter: the ``%nb2flow`` magics through a real kernel, on the notebook that calls them."""

import contextlib
import json
import os

import pytest

from nbutil import cell, write

from nb2flow.ipython import NotebookNotFound, find_notebook


def _execute(path, env_session: bool = True, timeout: int = 300, allow_errors: bool = False):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    env = dict(os.environ)
    if env_session:
        env["JPY_SESSION_NAME"] = str(path)  # as jupyter_server >= 2 starts a notebook's kernel
    else:
        env.pop("JPY_SESSION_NAME", None)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}},
                            allow_errors=allow_errors)
    old = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        client.execute()
    finally:
        os.environ.clear()
        os.environ.update(old)
    return nb


def _outputs(nb, index, mime):
    return ["".join(o.get("data", {}).get(mime, "")) for o in nb.cells[index].outputs if o.get("data", {}).get(mime)]


def _stream(nb, index, name):
    return "".join(o.get("text", "") for o in nb.cells[index].outputs if o.get("output_type") == "stream" and o.get("name") == name)


def test_the_magics_check_draw_run_and_report_on_their_own_notebook(tmp_path):
    path = tmp_path / "magic.ipynb"
    write(path,
          cell("%load_ext nb2flow"),
          cell("%nb2flow check"),
          cell("%nb2flow graph --vars"),
          cell("n = 2", "parameters"),
          cell("x = n * 10\nprint('x is', x)", "step:a"),
          cell("y = x + 1", "step:b"),
          cell("%nb2flow run -p n 3"),
          cell("_nb2flow_magics.runs[-1][0].join(240)", "skip"),
          cell("%nb2flow status"))
    before = path.read_bytes()
    nb = _execute(path)
    check = _outputs(nb, 1, "text/markdown")
    assert check == ["**magic.ipynb: 2 steps, no problems**\n"]
    graph_md = _outputs(nb, 2, "text/markdown")[0]
    assert graph_md.startswith("```mermaid\n") and graph_md.rstrip().endswith("```") and 's0 -- "x" --> s1' in graph_md
    assert "a" in _outputs(nb, 2, "text/plain")[0]
    run_text = _outputs(nb, 6, "text/plain")[0]  # the display, updated in place until the run ended
    assert run_text.startswith("run magic-") and ": succeeded" in run_text.splitlines()[0]
    assert "merged notebook: nb2flow-runs/magic-" in run_text
    html = _outputs(nb, 6, "text/html")[0]
    assert '<a href="nb2flow-runs/magic-' in html and "<td>done</td>" in html
    assert "warning" not in _stream(nb, 6, "stderr")  # every cell that ran is in the file as saved: nothing to warn of
    status = _stream(nb, 8, "stdout")
    assert status.startswith("run magic-") and "succeeded" in status.splitlines()[0]
    run_dir = next((tmp_path / ".nb2flow" / "runs").iterdir())
    record = json.loads((run_dir / "run.json").read_text())
    assert record["parameters"] == {"n": 3} and set(record["steps"]) == {"a", "b"}  # the magic cells are not steps
    merged = json.loads(next(run_dir.glob("*.out.ipynb")).read_text())
    assert any("x is 30" in "".join(o.get("text", "")) for c in merged["cells"] for o in c.get("outputs", []))
    assert path.read_bytes() == before  # the user's notebook is never modified


def test_the_unsaved_warning_compares_the_code_that_ran_with_the_saved_file(tmp_path, capsys):
    """Only code that ran since the save and that the saved file does not hold (an edit) is warned of: not a
    `%nb2flow status` cell, not a saved cell run again."""
    import os
    import types

    from nb2flow.ipython import Magics

    path = tmp_path / "m.ipynb"
    write(path, cell("x = 1", "step:a"), cell("print(x)", "step:b"))
    os.utime(path, (1, 1))  # saved long ago
    magics = Magics(shell=None)

    def ran(source):
        magics.post_run_cell(types.SimpleNamespace(info=types.SimpleNamespace(raw_cell=source)))

    for source in ("x = 1", "print(x)  \n", "%nb2flow status", "%nb2flow graph --vars"):
        ran(source)
    magics._warn_unsaved(str(path))
    assert capsys.readouterr().err == ""
    ran("x = 2")  # edited in the browser, run, not saved
    magics._warn_unsaved(str(path))
    assert "m.ipynb as saved does not have the code of 1 cell(s) you ran since its last save" in capsys.readouterr().err


def test_without_the_front_end_naming_the_notebook_the_magic_says_how_to(tmp_path):
    path = tmp_path / "anon.ipynb"
    write(path, cell("%load_ext nb2flow"), cell("%nb2flow check"), cell(f"%nb2flow check --notebook {path.name}"),
          cell("x = 1", "step:a"))
    nb = _execute(path, env_session=False)
    assert "which notebook is this? the kernel was not told" in _stream(nb, 1, "stderr")
    assert _outputs(nb, 2, "text/markdown") == ["**anon.ipynb: 1 step, no problems**\n"]


def test_the_notebook_is_found_where_each_front_end_says():
    with pytest.raises(NotebookNotFound, match="pass it: %nb2flow check --notebook"):
        find_notebook({})
    with pytest.raises(NotebookNotFound, match="no such notebook"):
        find_notebook({}, "missing.ipynb")


def test_loading_the_extension_imports_nothing_heavy():
    import subprocess
    import sys

    code = ("import sys\nfrom IPython.core.interactiveshell import InteractiveShell\nbefore = set(sys.modules)\n"
            "shell = InteractiveShell.instance()\nshell.run_line_magic('load_ext', 'nb2flow')\n"
            "new = sorted(m for m in set(sys.modules) - before if m.startswith('nb2flow') or m.split('.')[0] in "
            "('nbformat', 'nbclient', 'jupyter_client', 'yaml', 'click', 'kubernetes', 'rich'))\nprint(new)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "['nb2flow', 'nb2flow.ipython']"


# ------------------------------------------------------------------ JupyterLab's scheduler, through a real jupyter_server


@pytest.fixture
def jupyter_server(tmp_path):
    with _server(tmp_path) as server:
        yield server


@contextlib.contextmanager
def _server(tmp_path, extra_env=None):
    """jupyter_server with jupyter-scheduler and nb2flow's server extension; yields (root, call(method, path, body))."""
    import urllib.request

    from helpers import jupyter_server_running

    pytest.importorskip("jupyter_scheduler", reason="jupyter-scheduler is not installed (pip install 'nb2flow[jupyterlab]')")
    with jupyter_server_running(tmp_path, extra_env=extra_env) as (root, base, token):
        def call(method, path, body=None):
            data = json.dumps(body).encode() if body is not None else None
            req = urllib.request.Request(base + path, data=data, method=method,
                                         headers={"Authorization": f"token {token}", "Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as resp:
                text = resp.read()
                return json.loads(text) if text else None

        yield root, call


def _wait_job(call, job_id, timeout=240):
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        job = call("GET", f"/scheduler/jobs/{job_id}")
        # a new job reads STOPPED until its process starts it (jupyter-scheduler's ORM default)
        if job["status"] in ("COMPLETED", "FAILED") or (job["status"] == "STOPPED" and job.get("start_time")):
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not finish: {job}")


@pytest.mark.slow  # CI runs it (pytest -m slow)
def test_the_schedulers_create_job_runs_the_notebook_as_a_pipeline(jupyter_server):
    import time

    root, call = jupyter_server
    environments = call("GET", "/scheduler/runtime_environments")
    # no notebook pod here and no kubeconfig: argo is not offered (the scheduled-argo test has a kubeconfig)
    assert [(e["name"], e["compute_types"]) for e in environments] == [("nb2flow", ["local"])]
    write(root / "job.ipynb", cell("n = 2", "parameters"), cell("x = n * 10\nprint('x is', x)", "step:a"),
          cell("y = x + 1\nprint('y is', y)", "step:b"))
    job_id = call("POST", "/scheduler/jobs", {"input_uri": "job.ipynb", "input_filename": "job.ipynb", "name": "pipeline job",
                                              "runtime_environment_name": "nb2flow", "compute_type": "local",
                                              "output_formats": ["ipynb", "html"], "parameters": {"n": "5"},
                                              "package_input_folder": True})["job_id"]
    job = _wait_job(call, job_id)
    assert job["status"] == "COMPLETED", job
    call("GET", f"/scheduler/jobs/{job_id}/download_files?redownload=true")  # copies in a process of its own
    deadline = time.time() + 30
    while True:
        described = call("GET", f"/scheduler/jobs/{job_id}")
        files = {f["file_format"]: f["file_path"] for f in described["job_files"] if f.get("file_path")}
        side_folder = (root / files["ipynb"]).parent / "nb2flow-run" if "ipynb" in files else None
        # jupyter-scheduler's download copies the job's files, then its packaged ones (the side folder), in a process
        # of its own: wait for both
        if ({"ipynb", "html"} <= set(files) and side_folder.is_dir() and len(list(side_folder.iterdir())) >= 3) \
                or time.time() > deadline:
            break
        time.sleep(0.3)
    assert {"ipynb", "html"} <= set(files), described
    merged = json.loads((root / files["ipynb"]).read_text())
    texts = ["".join(o.get("text", "")) for c in merged["cells"] for o in c.get("outputs", [])]
    assert "x is 50\n" in texts and "y is 51\n" in texts  # the merged notebook, the job's parameters injected
    assert merged["cells"][1]["metadata"]["tags"] == ["injected-parameters"]
    assert "y is 51" in (root / files["html"]).read_text()
    out_dir = (root / files["ipynb"]).parent
    side = sorted(p.name for p in (out_dir / "nb2flow-run").iterdir())
    assert side == ["run.json", "step-a.ipynb", "step-b.ipynb"]  # the record and each step's notebook, nothing internal
    assert not (out_dir / ".nb2flow").exists()


@pytest.mark.slow  # CI runs it (pytest -m slow)
def test_the_scheduler_is_wired_by_its_documented_configuration_and_a_users_own_choice_is_kept(tmp_path):
    """nb2flow sets SchedulerApp.scheduler_class and environment_manager_class (no object's class is swapped); a
    user who configures their own environment manager keeps it, and the server's log says nb2flow is not wired."""
    import inspect
    import urllib.request

    from helpers import jupyter_server_running

    pytest.importorskip("jupyter_scheduler", reason="jupyter-scheduler is not installed (pip install 'nb2flow[jupyterlab]')")
    import nb2flow.jupyter_scheduler as js

    assert "__class__" not in inspect.getsource(js)
    own = "--SchedulerApp.environment_manager_class=jupyter_scheduler.environments.CondaEnvironmentManager"
    with jupyter_server_running(tmp_path, "jupyter_server", own) as (root, base, token):
        with urllib.request.urlopen(f"{base}/scheduler/runtime_environments?token={token}", timeout=30) as resp:
            names = [e["name"] for e in json.loads(resp.read())]
    assert "nb2flow" not in names
    assert "not nb2flow's: set c.SchedulerApp.scheduler_class" in (tmp_path / "server.log").read_text()


@pytest.mark.slow  # CI runs it (pytest -m slow)
@pytest.mark.slow  # CI runs it (pytest -m slow)
def test_enable_scheduler_switches_the_backend_on_where_an_editable_install_laid_no_config(tmp_path):
    """`nb2flow enable-scheduler --user` writes the wheel's config file where jupyter_server reads it; a server that
    reads no other nb2flow config then runs notebooks as nb2flow pipelines."""
    import subprocess
    import sys
    import urllib.request

    from helpers import ROOT, jupyter_server_running

    pytest.importorskip("jupyter_scheduler", reason="jupyter-scheduler is not installed (pip install 'nb2flow[jupyterlab]')")
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp_path / "cfg"))
    r = subprocess.run([sys.executable, "-m", "nb2flow", "enable-scheduler", "--user"], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    written = tmp_path / "cfg" / "jupyter_server_config.d" / "nb2flow-scheduler.json"
    assert json.loads(written.read_text()) == json.loads((ROOT / "jupyter-config" / "jupyter_server_config.d" /
                                                          "nb2flow-scheduler.json").read_text())  # what the wheel lays
    with jupyter_server_running(tmp_path, extra_env={"JUPYTER_CONFIG_PATH": str(tmp_path / "no-such-folder")}) as (_, base, token):
        with urllib.request.urlopen(f"{base}/scheduler/runtime_environments?token={token}", timeout=30) as resp:
            assert [e["name"] for e in json.loads(resp.read())] == ["nb2flow"]


def test_an_argo_job_that_cannot_run_here_says_why_in_the_dialogs_words(tmp_path, monkeypatch):
    """The run's error event carries a code; the job's message speaks of compute types and nb2flow.yaml, not flags."""
    pytest.importorskip("jupyter_scheduler", reason="jupyter-scheduler is not installed (pip install 'nb2flow[jupyterlab]')")
    from nb2flow.cluster import resolve_target
    from nb2flow.config import ClusterConfig
    from nb2flow.errors import UsageError
    from nb2flow.events import error
    from nb2flow.jupyter_scheduler import argo_reachable, run_outcome

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    nb = write(tmp_path / "nb.ipynb", cell("x = 1", "step:a"))
    with pytest.raises(UsageError) as caught:
        resolve_target(str(nb), ClusterConfig())
    _, said = run_outcome(json.dumps(error(caught.value)))
    assert said.startswith("compute type argo runs the steps as pods copied from the notebook's own pod") and "--" not in said
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))
    assert not argo_reachable()
    (tmp_path / "kubeconfig").write_text("apiVersion: v1\n")
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    assert argo_reachable()


def test_run_job_with_input_folder_takes_the_folder_without_earlier_runs_records(tmp_path):
    import types

    pytest.importorskip("jupyter_scheduler", reason="jupyter-scheduler is not installed (pip install 'nb2flow[jupyterlab]')")
    from nb2flow.jupyter_scheduler import Scheduler

    root = tmp_path / "root"
    for rel in ("work/nb.ipynb", "work/data/x.csv", "work/.nb2flow/runs/nb-1/values/a/x.pkl", "work/nb2flow-runs/nb-1.ipynb",
                "work/data/.nb2flow/bundles/b/nb2flow_step.py", "work/helper.py"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x")
    staging = tmp_path / "staging" / "job-id"  # not made yet, as jupyter-scheduler calls it
    copied = Scheduler.copy_input_folder(types.SimpleNamespace(root_dir=str(root)), "work/nb.ipynb", str(staging / "nb.ipynb"))
    assert copied == ["data/x.csv", "helper.py", "nb.ipynb"]
    assert sorted(str(p.relative_to(staging)) for p in staging.rglob("*") if p.is_file()) == copied


@pytest.mark.slow  # CI runs it (pytest -m slow); the default run keeps under 3 minutes
def test_a_failed_jobs_status_names_the_step_and_cell(jupyter_server):
    root, call = jupyter_server
    write(root / "bad.ipynb", cell("x = 1", "step:a"), cell("y = x / 0", "step:b"))
    job_id = call("POST", "/scheduler/jobs", {"input_uri": "bad.ipynb", "input_filename": "bad.ipynb", "name": "bad",
                                              "runtime_environment_name": "nb2flow", "compute_type": "local", "output_formats": ["ipynb"]})["job_id"]
    job = _wait_job(call, job_id)
    assert job["status"] == "FAILED"
    assert job["status_message"].startswith("bad.ipynb: cell 2 (step:b): `y = x / 0`: ZeroDivisionError: division by zero")


@pytest.mark.slow  # CI runs it (pytest -m slow)
def test_stopping_a_job_stops_every_step_process_and_kernel(jupyter_server):
    import time

    from helpers import processes_mentioning

    root, call = jupyter_server
    write(root / "slow.ipynb", cell("import time", "setup"), cell("time.sleep(120)", "step:a"), cell("time.sleep(120)", "step:b"))
    job_id = call("POST", "/scheduler/jobs", {"input_uri": "slow.ipynb", "input_filename": "slow.ipynb", "name": "slow",
                                              "runtime_environment_name": "nb2flow", "compute_type": "local", "output_formats": ["ipynb"]})["job_id"]
    mine = str(root.parent)  # this test's server: its staging area is under the same folder

    def runs():  # the fork server, its warm-up child, each step and its kernel (forks: the server's command line)
        return processes_mentioning(f"{mine}/data")

    deadline = time.time() + 60
    while len(runs()) < 6 and time.time() < deadline:
        time.sleep(0.3)
    assert len(runs()) == 6, runs()
    call("PATCH", f"/scheduler/jobs/{job_id}", {"status": "STOPPED"})
    deadline = time.time() + 30
    while processes_mentioning(f"{mine}/data") and time.time() < deadline:
        time.sleep(0.3)
    assert processes_mentioning(f"{mine}/data") == []  # nb2flow, its fork server, the steps and their kernels


def test_check_shows_each_finding_with_its_cell(tmp_path):
    path = tmp_path / "bad.ipynb"
    write(path, cell("%load_ext nb2flow\n%nb2flow check"), cell("x = 1", "step:a"), cell("print(y)", "step:b"))
    nb = _execute(path, allow_errors=True)  # the notebook's own error, run top to bottom, is what check foresees
    md = _outputs(nb, 0, "text/markdown")[0]
    assert md.startswith("**bad.ipynb: 2 steps, 1 error(s), 0 warning(s)**")
    assert "- ❌ **cell 3** (step:b) `print(y)`:" in md and "`y`" in md
    assert "bad.ipynb: cell 3, line 1 (step:b) `print(y)`: error:" in _outputs(nb, 0, "text/plain")[0]


@pytest.mark.slow  # CI runs it (pytest -m slow)
def test_a_scheduled_argo_job_definition_becomes_a_cron_workflow(tmp_path):
    """"Run on a schedule" with compute type argo: nb2flow schedule makes an Argo CronWorkflow (here on the test API
    server), and the server's own task runner does not also start it."""
    from kubeserver import FakeKube

    (tmp_path / ".config" / "nb2flow").mkdir(parents=True)
    (tmp_path / ".config" / "nb2flow" / "config.yaml").write_text(  # explicit step-pod settings: no notebook pod here
        "image: quay.io/jupyter/scipy-notebook:2024-10-07\nnamespace: jhub\nshared_workdir: true\n"
        "volumes: [{name: home, persistentVolumeClaim: {claimName: home}}]\n"
        f"volume_mounts: [{{name: home, mountPath: {tmp_path}}}]\n")
    with FakeKube() as kube:
        config = kube.kubeconfig(tmp_path / "kubeconfig")
        with _server(tmp_path, {"KUBECONFIG": config}) as (root, call):
            write(root / "daily.ipynb", cell("scheduled_time = None\nregion = 'north'", "parameters"), cell("x = region", "step:a"))
            made = call("POST", "/scheduler/job_definitions", {
                "input_uri": "daily.ipynb", "input_filename": "daily.ipynb", "name": "daily report", "runtime_environment_name": "nb2flow",
                "compute_type": "argo", "output_formats": ["ipynb"], "schedule": "0 3 * * *", "timezone": "Asia/Seoul",
                "parameters": {"region": "'south'"}})
            assert made["job_definition_id"]
            crons = {k[2]: v for k, v in kube.objects.items() if k[0] == "cronworkflows"}
            assert len(crons) == 1 and next(iter(crons)).startswith("daily-report-"), (tmp_path / "server.log").read_text()[-2000:]
            spec = next(iter(crons.values()))["spec"]
            assert spec["schedules"] == ["0 3 * * *"] and spec["timezone"] == "Asia/Seoul"
            params = {p["name"]: p["value"] for p in spec["workflowSpec"]["arguments"]["parameters"]}
            assert params == {"region": '"south"'}  # scheduled_time comes from Argo at each run
            definition = call("GET", f"/scheduler/job_definitions/{made['job_definition_id']}")
            assert definition["schedule"] == "0 3 * * *"  # jupyter-scheduler keeps the definition, its runner does not start it


def test_the_servers_own_runner_leaves_argo_schedules_to_argo(monkeypatch):
    """After a restart jupyter-scheduler's task runner reads every scheduled definition: an argo one must not also run
    here (Argo's cron controller runs it); a local one still does."""
    pytest.importorskip("jupyter_scheduler", reason="jupyter-scheduler is not installed")
    from types import SimpleNamespace

    from jupyter_scheduler.task_runner import TaskRunner as Default

    from nb2flow.jupyter_scheduler import TaskRunner

    started = []
    monkeypatch.setattr(Default, "create_job", lambda self, definition_id: started.append(definition_id))
    runner = TaskRunner.__new__(TaskRunner)
    definitions = {"on-argo": SimpleNamespace(compute_type="argo"), "here": SimpleNamespace(compute_type="local")}
    runner.scheduler = SimpleNamespace(get_job_definition=definitions.get)
    runner.create_job("on-argo")
    runner.create_job("here")
    assert started == ["here"]


@pytest.mark.slow  # CI runs it (pytest -m slow)
def test_a_run_started_from_a_kernel_outlives_the_kernels_restart_and_completes_its_record(tmp_path):
    """`%nb2flow run`, then the kernel restarts (its process group is killed): the run goes on, its output pipe closed,
    and finishes its record and merged notebook; `nb2flow status` shows it done."""
    import subprocess
    import sys

    from jupyter_client.manager import start_new_kernel

    from helpers import wait_for

    nb = write(tmp_path / "k.ipynb", cell("import time\ntime.sleep(4)\nx = 1", "step:a"), cell("print('b saw', x)", "step:b"))
    km, kc = start_new_kernel(kernel_name="python3", cwd=str(tmp_path), env=dict(os.environ, HOME=str(tmp_path)))
    try:
        kc.execute_interactive(f"%load_ext nb2flow\n%nb2flow run --notebook {nb}", timeout=60)
        runs = tmp_path / ".nb2flow" / "runs"
        wait_for(lambda: runs.is_dir() and any(runs.glob("*/run.json")), timeout=60)
        km.restart_kernel(now=True)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    record_file = next(runs.glob("*/run.json"))
    wait_for(lambda: json.loads(record_file.read_text()).get("state") == "succeeded", timeout=120)
    record = json.loads(record_file.read_text())
    assert os.path.isfile(record["visible_notebook"])
    status = subprocess.run([sys.executable, "-m", "nb2flow", "status", record["run_id"]], cwd=tmp_path, capture_output=True,
                            text=True, env=dict(os.environ, HOME=str(tmp_path), NO_COLOR="1"))
    assert status.stdout.startswith(f"run {record['run_id']}: succeeded"), status.stdout + status.stderr
