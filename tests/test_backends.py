"""One contract over every registered backend: start a run from a request, then find it, read its record and
status, its logs, list it, and refuse to stop what has ended — through the backend and through the CLI.

Each backend has a world here: the local one is a folder; Argo's is the test API server with the JupyterHub pod,
and the pod-faithful replay of the submitted Workflow standing for Argo's controller. A backend registered
without a world fails ``test_every_backend_has_a_contract_world``.
"""

import json
import os

import pytest

from helpers import JH_CLAIM, JH_POD, jupyterhub_pod, run_in_process
from nbutil import cell, write

from nb2flow import backends
from nb2flow.errors import UsageError


def _notebook(folder):
    return write(folder / "contract.ipynb", cell("n = 1", "parameters"), cell("x = n * 2\nprint('a says', x)", "step:a"),
                 cell("y = x + 1\nprint('b says', y)", "step:b"))


class LocalWorld:
    def __init__(self, tmp_path, monkeypatch):
        self.folder = tmp_path / "work"
        self.folder.mkdir()
        self.where = backends.Where()
        self.env = {"HOME": str(tmp_path)}
        monkeypatch.setenv("HOME", str(tmp_path))

    def finish(self, outcome):
        assert outcome.state == "succeeded"


class ArgoWorld:
    """The notebook pod's home volume is ``claim/``; its folder ``/home/jovyan/work`` is ``claim/work`` here."""

    def __init__(self, tmp_path, monkeypatch):
        from helpers import pod_replay_or_skip
        from kubeserver import FakeKube

        pod_replay_or_skip()
        self.claim = tmp_path / "claim"
        self.folder = self.claim / "work"
        self.folder.mkdir(parents=True)
        (self.folder / "nb2flow.yaml").write_text("workdir: /home/jovyan/work\nshared_workdir: true\n")
        self.server = FakeKube().__enter__()
        self.server.add("pods", jupyterhub_pod())
        self.server.add("persistentvolumeclaims", {"metadata": {"name": JH_CLAIM, "namespace": "jhub"},
                                                   "spec": {"accessModes": ["ReadWriteMany"]},
                                                   "status": {"accessModes": ["ReadWriteMany"]}})
        config = self.server.kubeconfig(tmp_path / "kubeconfig")
        self.env = {"HOME": str(tmp_path), "KUBECONFIG": config}
        for k, v in self.env.items():
            monkeypatch.setenv(k, v)
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        self.where = backends.Where(namespace="jhub", from_pod=JH_POD)

    def finish(self, outcome):
        """Argo's part: run the pods (the final task writes the record), then say the workflow succeeded."""
        from podreplay import kubelet_fs_group, run_pods

        assert outcome.state == "submitted"
        manifest = self.server.objects[("workflows", "jhub", outcome.run_id)]
        kubelet_fs_group(self.claim, 100)  # the kubelet's fsGroup on the volume: the pods run as uid 1000
        results = run_pods(json.loads(json.dumps(manifest)), {JH_CLAIM: self.claim}, name=outcome.run_id)
        assert {t: r.exit_code for t, r in results.items()} == {"a": 0, "b": 0, "onExit": 0}, results
        manifest["status"] = {"phase": "Succeeded", "nodes": {}}

    def close(self):
        self.server.__exit__(None, None, None)


WORLDS = {"local": LocalWorld, "argo": ArgoWorld}


def test_every_backend_has_a_contract_world():
    assert set(backends.names()) <= set(WORLDS), "a new backend needs its world in tests/test_backends.py"


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "argo" else n for n in backends.names()])
def test_a_backend_runs_a_request_and_every_command_reads_the_run(name, tmp_path, monkeypatch):
    world = WORLDS[name](tmp_path, monkeypatch)
    try:
        _contract(name, world)
    finally:
        getattr(world, "close", lambda: None)()


def _contract(name, world):
    import nb2flow
    from nb2flow.progress import EventReporter
    from nb2flow.runs import list_runs

    backend = backends.get(name)
    assert backend.name == name and backends.get(name) is backend
    nb = _notebook(world.folder)
    events, said = [], []
    console = backends.Console(say=said.append, sink=events.append)
    request = backends.RunRequest(pipeline=nb2flow.load(nb), parameters={"n": 3}, progress=EventReporter(events.append, name),
                                  where=world.where)
    backend.validate(request)
    outcome = backend.start(request, console)
    assert outcome.failure is None and outcome.run_id
    assert any(e["event"] in ("run-started", "submitted") for e in events)
    world.finish(outcome)

    # the record: found by its id, naming its backend, with the request's parameters and every step's end
    ref = backends.find(outcome.run_id, world.where, console, search=[str(world.folder)])
    assert (ref.backend, ref.record["backend"], ref.record["state"]) == (name, name, "succeeded")
    assert ref.record["parameters"] == {"n": 3}
    assert {s: e["state"] for s, e in ref.record["steps"].items()} == {"a": "succeeded", "b": "succeeded"}

    report = backend.status(ref, world.where, console)
    assert report.headline.startswith(f"run {outcome.run_id}: succeeded")
    assert [(r.name, r.state) for r in report.steps] == [("a", "done"), ("b", "done")]
    shown = next(line.split(": ", 1)[1] for line in report.lines if line.startswith("notebook: "))
    merged = json.loads(open(shown, encoding="utf-8").read())
    assert "a says 6\n" in ["".join(o.get("text", "")) for c in merged["cells"] for o in c.get("outputs", [])]

    logs = list(backend.logs(ref, None, False, world.where, console))
    assert [step for step, _ in logs] == ["a", "b"] and "a says 6" in logs[0][1] and "b says 7" in logs[1][1]
    assert [(step, "b says 7" in text) for step, text in backend.logs(ref, "b", False, world.where, console)] == [(None, True)]
    with pytest.raises(UsageError, match="has no step 'c'"):
        list(backend.logs(ref, "c", False, world.where, console))

    listed = {r["run_id"]: backend.list_state(r) for r in list_runs([str(world.folder)])}
    assert "succeeded" in listed[outcome.run_id]
    with pytest.raises(UsageError, match="has ended"):
        backend.stop(ref, False, world.where, console)

    # the same through the CLI, in the notebook's folder: dispatched on the record's backend
    env = {**world.env, "NO_COLOR": "1", "KUBERNETES_SERVICE_HOST": None}
    r = run_in_process(["status", outcome.run_id], cwd=world.folder, env=env)
    assert r.returncode == 0 and r.stdout.startswith(f"run {outcome.run_id}: succeeded"), r.stderr
    r = run_in_process(["logs", outcome.run_id, "b"], cwd=world.folder, env=env)
    assert r.returncode == 0 and "b says 7" in r.stdout, r.stderr
    r = run_in_process(["stop", outcome.run_id], cwd=world.folder, env=env)
    assert r.returncode == 2 and f"run {outcome.run_id} has ended (succeeded): nothing to stop" in r.stderr


def test_an_unknown_backend_is_one_line_naming_the_known_ones(tmp_path):
    nb = _notebook(tmp_path)
    r = run_in_process(["run", str(nb), "--backend", "kubeflow"], cwd=tmp_path, env={"HOME": str(tmp_path)})
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("nb2flow: no backend 'kubeflow' (backends: local, argo")
    (tmp_path / "nb2flow.yaml").write_text("backend: kubeflow\n")
    r = run_in_process(["run", str(nb)], cwd=tmp_path, env={"HOME": str(tmp_path)})
    assert r.returncode == 2 and "backend must be auto or one of: local, argo" in r.stderr
    (tmp_path / "nb2flow.yaml").unlink()
    r = run_in_process(["run", str(nb), "--local", "--argo"], cwd=tmp_path, env={"HOME": str(tmp_path)})
    assert r.returncode == 2 and "--local and --argo exclude each other" in r.stderr


def test_a_registered_backend_is_what_run_and_status_dispatch_to(tmp_path):
    """A backend is one class and one registry entry: `run --backend NAME` starts runs with it, and `status` of a
    record naming it asks it."""

    class Echo(backends.Backend):
        name, title = "echo", "echoing"
        started = []

        def start(self, request, console):
            from nb2flow.runs import create_run_dir, runs_root_for, write_record

            run_id, run_dir = create_run_dir(runs_root_for(request.pipeline.path), "echo")
            write_record(run_dir, {"run_id": run_id, "backend": "echo", "notebook": request.pipeline.path, "state": "succeeded",
                                   "parameters": request.parameters, "steps": {}})
            self.started.append(request)
            console.result(run_id)
            return backends.Outcome(run_id=run_id, run_dir=run_dir, state="succeeded")

        def status(self, ref, where, console):
            return backends.Report(headline=f"echo of {ref.run_id}")

    backends.register("echo", Echo)
    try:
        nb = _notebook(tmp_path)
        r = run_in_process(["run", str(nb), "--backend", "echo", "-p", "n", "4"], cwd=tmp_path, env={"HOME": str(tmp_path)})
        assert r.returncode == 0, r.stderr
        assert "nb2flow: echoing (--backend echo)" in r.stderr
        assert Echo.started[0].parameters == {"n": 4} and [s.name for s in Echo.started[0].pipeline.steps] == ["a", "b"]
        run_id = r.stdout.strip()
        r = run_in_process(["status", run_id], cwd=tmp_path, env={"HOME": str(tmp_path)})
        assert r.stdout.splitlines()[0] == f"echo of {run_id}"
    finally:
        backends._REGISTRY.pop("echo")
        backends._LOADED.pop("echo", None)


def test_a_local_run_whose_process_is_gone_is_abandoned_and_stop_interrupts_a_live_one(tmp_path, monkeypatch):
    import subprocess
    import sys

    from helpers import wait_for

    nb = write(tmp_path / "slow.ipynb", cell("import time\ntime.sleep(60)", "step:a"), cell("print('never')", "step:b"))
    env = dict(os.environ, HOME=str(tmp_path), NO_COLOR="1")
    proc = subprocess.Popen([sys.executable, "-m", "nb2flow", "run", str(nb), "--no-progress"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    runs = tmp_path / ".nb2flow" / "runs"

    def running():
        for d in runs.glob("*/run.json") if runs.is_dir() else []:
            rec = json.loads(d.read_text())
            if rec.get("steps", {}).get("a", {}).get("state") == "running":
                return rec
        return None

    rec = wait_for(running, timeout=60)
    assert rec["owner"]["pid"] == proc.pid
    r = subprocess.run([sys.executable, "-m", "nb2flow", "stop", rec["run_id"]], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 0 and f"run {rec['run_id']} stopping" in r.stderr
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    after = json.loads((runs / rec["run_id"] / "run.json").read_text())
    assert after["state"] == "interrupted"

    # a record left "running" by a process that is gone (kill -9) reads as abandoned
    after["state"] = "running"
    from nb2flow.runs import write_record

    monkeypatch.setenv("HOME", str(tmp_path))  # signed with this user's key, as nb2flow signs it
    write_record(str(runs / rec["run_id"]), after)
    listing = subprocess.run([sys.executable, "-m", "nb2flow", "list"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert f"{rec['run_id']}" in listing.stdout and "abandoned" in listing.stdout, listing.stdout + listing.stderr
    status = subprocess.run([sys.executable, "-m", "nb2flow", "status", rec["run_id"]], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert status.stdout.startswith(f"run {rec['run_id']}: abandoned"), status.stdout + status.stderr
    r = subprocess.run([sys.executable, "-m", "nb2flow", "stop", rec["run_id"]], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 2 and "abandoned" in r.stderr and f"nb2flow run --resume {rec['run_id']}" in r.stderr
