"""Replay: run an emitted Workflow's DAG on this machine and compare with a local run.

Each task's container command runs in dependency order, with ``{{…}}`` substituted as Argo
does and every volume's mountPath mapped to a temporary folder.
"""

import graphlib
import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import JH_POD_FILE, NOTEBOOKS, SAMPLE_NAMES, SAMPLES, probe_notebook
from helpers import emit_manifest as emit
from helpers import pod_replay_or_skip as _pod_replay_or_skip

import nb2flow
from nb2flow.argo import dump
from nb2flow.cluster import prepare, resolve_target
from nb2flow.config import ClusterConfig

pytestmark = pytest.mark.slow  # the pod-faithful replay: CI runs it (pytest -m slow)

FIXTURE = JH_POD_FILE
SUBST = re.compile(r"\{\{\s*([^}]+?)\s*\}\}")


def replay(manifest: dict, mounts: dict, name: str = "wf-replay") -> dict:
    """Run the DAG; returns task -> exit code (None for tasks skipped after a failure)."""
    import yaml

    manifest = yaml.safe_load(dump(manifest))  # replay what a user would apply, not the dict
    spec = manifest["spec"]
    templates = {t["name"]: t for t in spec["templates"]}
    dag = templates[spec["entrypoint"]]["dag"]["tasks"]
    global_params = {p["name"]: p["value"] for p in spec.get("arguments", {}).get("parameters", [])}
    order = graphlib.TopologicalSorter({t["name"]: t.get("dependencies", []) for t in dag}).static_order()
    tasks = {t["name"]: t for t in dag}
    ordered_mounts = sorted(mounts.items(), key=lambda kv: -len(kv[0]))

    def local(path: str) -> str:
        for mount, folder in ordered_mounts:
            if path == mount or path.startswith(mount + "/"):
                return str(folder) + path[len(mount):]
        return path

    results: dict = {}
    for task_name in order:
        task = tasks[task_name]
        if any(results.get(d) != 0 for d in task.get("dependencies", [])):
            results[task_name] = None
            continue
        template = templates[task["template"]]
        inputs = {p["name"]: p["value"] for p in task.get("arguments", {}).get("parameters", [])}

        def substitute(text: str) -> str:
            def one(m):
                key = m.group(1)
                if key == "workflow.name":
                    return name
                if key.startswith("workflow.parameters."):
                    return global_params[key.split(".", 2)[2]]
                if key.startswith("inputs.parameters."):
                    return inputs[key.split(".", 2)[2]]
                raise AssertionError(f"unexpected Argo expression {{{{{key}}}}}")
            return SUBST.sub(one, text)

        container = template["container"]
        cmd = [local(substitute(a)) for a in container["command"] + container.get("args", [])]
        assert cmd[0] in ("python3", "python")
        cmd[0] = sys.executable
        env = dict(os.environ)
        env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
        proc = subprocess.run(cmd, cwd=local(container["workingDir"]), env=env, capture_output=True, text=True, timeout=300)
        results[task_name] = proc.returncode
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return results


@pytest.fixture
def volumes(tmp_path):
    home = tmp_path / "home"
    (home / "work").mkdir(parents=True)
    mounts = {"/home/jovyan": home, "/dev/shm": tmp_path / "shm", "/mnt/datasets": tmp_path / "datasets"}
    for folder in mounts.values():
        folder.mkdir(exist_ok=True)
    return home / "work", mounts


@pytest.mark.parametrize("name", [pytest.param("analysis.ipynb", marks=pytest.mark.slow), "kale_pipeline.ipynb"])
def test_replayed_workflow_equals_a_local_run(volumes, name):
    work, mounts = volumes
    nb = work / name
    probe_notebook(SAMPLES / name, nb, SAMPLE_NAMES[name])
    manifest = emit(nb, {"probe_path": "probe-argo.pkl"})
    results = replay(manifest, mounts)
    assert set(results.values()) == {0}
    run_dir = work / ".nb2flow" / "runs" / "wf-replay"
    assert (run_dir / "steps").is_dir() and (run_dir / "values").is_dir()
    r = subprocess.run([sys.executable, "-m", "nb2flow", "run", name, "-q", "-r", "probe_path", "probe-local.pkl"], cwd=work,
                       capture_output=True, text=True, env=dict(os.environ, NO_COLOR="1"))
    assert r.returncode == 0, r.stderr
    argo = pickle.loads((work / "probe-argo.pkl").read_bytes())
    assert argo == pickle.loads((work / "probe-local.pkl").read_bytes())
    assert set(argo) == set(SAMPLE_NAMES[name])


def test_hostile_parameters_reach_the_step_exactly_through_argo(volumes):
    work, mounts = volumes
    from nbutil import cell, write

    values = {"text": "{{workflow.name}} $(id) `x` 'q' \"dq\"\n--- &a *a ü", "n": 3, "items": ["{{a}}", {"k": "}}"}]}
    write(work / "h.ipynb", cell("text = ''\nn = 0\nitems = []", "parameters"),
          cell("import json\nwith open('seen.json', 'w') as fh:\n    json.dump({'text': text, 'n': n, 'items': items}, fh)", "step:a"))
    results = replay(emit(work / "h.ipynb", values), mounts, name="wf-hostile")
    assert results == {"a": 0}
    assert json.loads((work / "seen.json").read_text()) == values


TYPED = {"m": {1: "a", "k": [1, {2.5: None, True: "t"}], "__nb2flow__": "mapping"}, "t": [[1, 2], "x"]}


def test_a_mapping_with_number_keys_reaches_the_step_typed_as_given_through_argo(volumes):
    """YAML's ``{1: a}`` is a mapping with an int key (papermill injects ``{1: 'a'}``); JSON has no such thing,
    so the value travels in nb2flow's wire form and the step gets it as given."""
    work, mounts = volumes
    from nbutil import cell, write

    write(work / "t.ipynb", cell("m = {}\nt = []", "parameters"),
          cell("with open('seen.txt', 'w') as fh:\n    fh.write(repr((m, t)))", "step:a"))
    assert replay(emit(work / "t.ipynb", TYPED), mounts, name="wf-typed") == {"a": 0}
    assert (work / "seen.txt").read_text() == repr((TYPED["m"], TYPED["t"]))


def test_hostile_cell_contents_stay_out_of_the_manifest_and_run_exactly(volumes):
    work, mounts = volumes
    from nbutil import cell, write

    source = "s = '{{workflow.name}} {{inputs.parameters.step}} $(id) `x`'\nt = '''\n---\n...\n&a *a\n'''"
    write(work / "c.ipynb", cell(source, "step:a"),
          cell("import json\njson.dump({'s': s, 't': t}, open('cells.json', 'w'))", "step:b"))
    manifest = emit(work / "c.ipynb", {})
    text = dump(manifest)
    assert "$(id)" not in text and "&a *a" not in text and "inputs.parameters.step}} $(" not in text
    assert replay(manifest, mounts, name="wf-cells") == {"a": 0, "b": 0}
    assert json.loads((work / "cells.json").read_text()) == {"s": "{{workflow.name}} {{inputs.parameters.step}} $(id) `x`", "t": "\n---\n...\n&a *a\n"}


def test_kale_pipeline_parameters_take_the_workflows_values(volumes):
    """Argo passes the run's values as --param; they land after Kale's pipeline-parameters cell."""
    work, mounts = volumes
    name = "kale-parameters-functions.ipynb"
    (work / name).write_bytes((NOTEBOOKS / name).read_bytes())
    manifest = emit(work / name, {"n": 5, "label": "run"})
    assert {p["name"]: p["value"] for p in manifest["spec"]["arguments"]["parameters"]} == {"n": "5", "label": '"run"'}
    assert set(replay(manifest, mounts, name="wf-kale").values()) == {0}
    assert json.loads((work / "result.json").read_text()) == {"n": 5, "label": "run", "data": [0, 2, 4, 6, 8], "mean": 4}


# ------------------------------------------------------------------ pods, replayed faithfully (podreplay.py)


def test_pods_run_the_steps_from_the_home_volume_as_the_notebook_user(tmp_path):
    """Each task as its pod: volumes at their mountPaths, the container's env and workingDir, uid 1000 and fsGroup 100."""
    from nbutil import cell, write
    from podreplay import kubelet_fs_group, manifest_from_yaml, run_pods

    from helpers import JH_CLAIM

    _pod_replay_or_skip()
    claim = tmp_path / "claim"  # the home volume, mounted at /home/jovyan in the pod
    (claim / "work").mkdir(parents=True)
    nb = write(claim / "work" / "p.ipynb", cell("n = 2", "parameters"),
               cell("import os\nvalues = [n, os.getuid(), os.getcwd(), os.environ.get('MLFLOW_TRACKING_URI')]", "step:make"),
               cell("import json\nprint('writing', values)\nwith open('out.json', 'w') as fh:\n    json.dump({'values': values, 'token': os.environ.get('JUPYTERHUB_API_TOKEN')}, fh)", "step:write"))
    manifest = manifest_from_yaml(dump(emit(Path(nb), {"n": 5})))
    kubelet_fs_group(claim, 100)
    results = run_pods(manifest, {JH_CLAIM: claim}, name="wf-pods")
    assert {t: r.exit_code for t, r in results.items()} == {"make": 0, "write": 0, "onExit": 0}, [r.log for r in results.values()]
    out = json.loads((claim / "work" / "out.json").read_text())
    assert out == {"values": [5, 1000, "/home/jovyan/work", "http://mlflow.mlops.svc.cluster.local:5000"], "token": None}
    run_dir = claim / "work" / ".nb2flow" / "runs" / "wf-pods"
    assert json.loads((run_dir / "steps" / "write" / "status.json").read_text())["state"] == "succeeded"
    assert (run_dir / "values" / "make" / "values.pkl").stat().st_uid == 1000
    # the pod log shows the cells' output, framed by the cell it came from
    assert "----- cell 3 (step:write) -----\nwriting [5, 1000, '/home/jovyan/work'" in results["write"].log


def test_a_failing_pod_says_which_cell_in_its_log_and_its_termination_message(tmp_path):
    from nbutil import cell, write
    from podreplay import kubelet_fs_group, manifest_from_yaml, run_pods

    from helpers import JH_CLAIM

    _pod_replay_or_skip()
    claim = tmp_path / "claim"
    (claim / "work").mkdir(parents=True)
    nb = write(claim / "work" / "f.ipynb", cell("x = 1", "step:a"), cell("print('about to divide')\ny = x / 0", "step:b"),
               cell("z = 3", "step:c", "after:a"))
    manifest = manifest_from_yaml(dump(emit(Path(nb), {})))
    kubelet_fs_group(claim, 100)
    results = run_pods(manifest, {JH_CLAIM: claim}, name="wf-fail")
    assert {t: r.exit_code for t, r in results.items()} == {"a": 0, "b": 1, "c": 0, "onExit": 0}  # failFast false: c finished
    log = results["b"].log
    assert "----- cell 2 (step:b) -----\nabout to divide" in log
    assert "nb2flow: cell 2 (step:b): ZeroDivisionError: division by zero" in log and "cell 2, line 2" in log
    assert results["b"].termination_message == "cell 2 (step:b): ZeroDivisionError: division by zero"


def test_step_files_written_off_the_volume_fail_every_pod_as_on_a_cluster(tmp_path):
    """The replay is strict: a bundle written where the pods cannot see it fails them, as a real cluster does."""
    from nbutil import cell, write
    from podreplay import kubelet_fs_group, manifest_from_yaml, run_pods

    from helpers import JH_CLAIM

    _pod_replay_or_skip()
    laptop, claim = tmp_path / "laptop" / "work", tmp_path / "claim"
    laptop.mkdir(parents=True)
    (claim / "work").mkdir(parents=True)
    nb = write(laptop / "p.ipynb", cell("x = 1", "step:a"))
    manifest = manifest_from_yaml(dump(emit(Path(nb), {})))  # the bundle lands in laptop/, not on the volume
    kubelet_fs_group(claim, 100)
    results = run_pods(manifest, {JH_CLAIM: claim}, name="wf-off")
    assert results["a"].exit_code != 0 and "nb2flow_step.py" in results["a"].log


def _failing_run(tmp_path, name="wf-fail", **replay):
    from nbutil import cell, write
    from podreplay import kubelet_fs_group, manifest_from_yaml, run_pods

    from helpers import JH_CLAIM

    _pod_replay_or_skip()
    claim = tmp_path / "claim"
    (claim / "work").mkdir(parents=True)
    nb = write(claim / "work" / "f.ipynb", cell("n = 1", "parameters"), cell("x = n\nprint('x is', x)", "step:a"),
               cell("print('about to divide')\ny = x / 0", "step:b"), cell("z = 3", "step:c", "after:a"),
               cell("print(y)", "step:d", "after:b"))
    manifest = manifest_from_yaml(dump(emit(Path(nb), {"n": 2})))
    kubelet_fs_group(claim, 100)
    return claim / "work", run_pods(manifest, {JH_CLAIM: claim}, name=name, **replay)


def test_the_final_task_writes_the_record_and_merged_notebook_of_a_failed_run(tmp_path):
    """Argo's exit handler runs the step runner's --finalize: run.json in the local schema, the merged
    notebook in the run folder and beside the notebook, an HTML rendering; the pod log says the outcome."""
    work, results = _failing_run(tmp_path)
    assert {t: r.exit_code for t, r in results.items()} == {"a": 0, "b": 1, "c": 0, "d": None, "onExit": 0}
    run_dir = work / ".nb2flow" / "runs" / "wf-fail"
    record = json.loads((run_dir / "run.json").read_text())
    assert record["backend"] == "argo" and record["state"] == "failed" and record["run_id"] == "wf-fail"
    assert record["workflow"] == {"name": "wf-fail", "namespace": "jhub", "uid": "00000000-0000-4000-8000-000000000000",
                                  "phase": "Failed"}
    assert record["notebook"] == "/home/jovyan/work/f.ipynb" and record["parameters"] == {"n": 2}
    states = {name: s["state"] for name, s in record["steps"].items()}
    assert states == {"a": "succeeded", "b": "failed", "c": "succeeded", "d": "skipped"}
    assert record["steps"]["b"]["error"]["cell"] == 3 and record["steps"]["b"]["error"]["ename"] == "ZeroDivisionError"
    assert all(len(s["fingerprint"].split(":")) == 2 for s in record["steps"].values())
    merged = json.loads((run_dir / "f.out.ipynb").read_text())
    outputs = {"".join(c["source"]): c.get("outputs") for c in merged["cells"]}
    assert "".join(outputs["x = n\nprint('x is', x)"][0]["text"]) == "x is 2\n"
    assert outputs["print('about to divide')\ny = x / 0"][-1]["ename"] == "ZeroDivisionError"
    visible = work / "nb2flow-runs" / "wf-fail.ipynb"
    assert json.loads(visible.read_text()) == merged and record["visible_notebook"] == "/home/jovyan/work/nb2flow-runs/wf-fail.ipynb"
    html = (run_dir / "f.out.html").read_text()
    assert "about to divide" in html and (work / "nb2flow-runs" / "wf-fail.html").is_file()
    assert "nb2flow run wf-fail of f.ipynb: failed; cell 3 (step:b): ZeroDivisionError: division by zero" in results["onExit"].log
    assert (run_dir / "run.json").stat().st_uid == 1000  # written as the notebook's user, on the volume


def test_status_and_list_read_a_cluster_run_from_its_folder_with_no_cluster(tmp_path):
    work, _ = _failing_run(tmp_path, name="wf-gone")
    env = dict(os.environ, NO_COLOR="1", KUBECONFIG=str(tmp_path / "none"))
    env.pop("KUBERNETES_SERVICE_HOST", None)
    status = subprocess.run([sys.executable, "-m", "nb2flow", "status", "wf-gone"], cwd=work, capture_output=True, text=True, env=env)
    assert status.returncode == 0, status.stderr
    assert "run wf-gone: failed (argo workflow jhub/wf-gone; from its run folder)" in status.stdout
    assert re.search(r"\nb\s+failed\s+1\s+\S+\s+cell 3: ZeroDivisionError: division by zero", status.stdout)
    assert re.search(r"\nd\s+skipped\s", status.stdout)
    listing = subprocess.run([sys.executable, "-m", "nb2flow", "list"], cwd=work, capture_output=True, text=True, env=env)
    assert re.search(r"wf-gone\s+f.ipynb\s+argo failed", listing.stdout), listing.stdout + listing.stderr


def test_a_stopped_run_is_recorded_as_interrupted(tmp_path):
    work, results = _failing_run(tmp_path, name="wf-stop", stop_after="a")
    record = json.loads((work / ".nb2flow" / "runs" / "wf-stop" / "run.json").read_text())
    assert results["b"].exit_code is None and record["state"] == "interrupted"
    assert {n: s["state"] for n, s in record["steps"].items()} == {"a": "succeeded", "b": "cancelled", "c": "cancelled", "d": "cancelled"}


def test_the_end_of_a_failed_run_is_posted_to_the_notify_webhook_from_a_secret(tmp_path):
    """notify: SECRET/KEY puts the webhook's URL in the final pod's env from the Secret (never in the manifest);
    the final task posts the outcome, the failing step and cell, and the links."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from nbutil import cell, write
    from podreplay import kubelet_fs_group, manifest_from_yaml, run_pods

    from helpers import JH_CLAIM

    _pod_replay_or_skip()
    posts = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            posts.append((self.path, json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/hooks/T000/secret-part"
    claim = tmp_path / "claim"
    (claim / "work").mkdir(parents=True)
    nb = write(claim / "work" / "n.ipynb", cell("x = 1", "step:a"), cell("y = x / 0", "step:b"))
    config = ClusterConfig(workdir="/home/jovyan/work", notify="team-hooks/slack", argo_ui="https://argo.example.org")
    target = resolve_target(str(nb), config, pod_spec=str(FIXTURE))
    manifest = manifest_from_yaml(dump(prepare(nb2flow.load(nb), target, {})[0]))
    assert "secret-part" not in json.dumps(manifest)
    kubelet_fs_group(claim, 100)
    results = run_pods(manifest, {JH_CLAIM: claim}, name="wf-notify", secrets={("team-hooks", "slack"): url})
    server.shutdown()
    assert results["onExit"].exit_code == 0 and url not in results["onExit"].log
    assert len(posts) == 1 and posts[0][0] == "/hooks/T000/secret-part"
    body = posts[0][1]
    assert body["text"] == ("nb2flow run wf-notify of n.ipynb: failed; cell 2 (step:b): ZeroDivisionError: division by zero "
                            "(https://argo.example.org/workflows/jhub/wf-notify)")
    assert (body["state"], body["failed_step"], body["cell"]) == ("failed", "b", 2)
    assert body["merged_notebook"] == "/home/jovyan/work/nb2flow-runs/wf-notify.ipynb"
    assert body["argo_ui"] == "https://argo.example.org/workflows/jhub/wf-notify"
    record = json.loads((claim / "work" / ".nb2flow" / "runs" / "wf-notify" / "run.json").read_text())
    assert record["notified"] == "sent" and url not in json.dumps(record)


def test_resume_of_an_argo_run_reruns_only_failed_and_never_run_steps_reading_the_saved_values(tmp_path):
    """`nb2flow run --resume RUN` of a failed Argo run: a new workflow of the failed and never-run steps only; the
    others' values come from the earlier run's folder on the volume; the record says which were reused."""
    from kubeserver import FakeKube
    from podreplay import kubelet_fs_group, manifest_from_yaml, run_pods

    from helpers import JH_CLAIM, run_in_process

    work, first = _failing_run(tmp_path, name="wf-first")
    assert first["b"].exit_code == 1
    nb = work / "f.ipynb"
    doc = json.loads(nb.read_text())
    doc["cells"][2]["source"] = "print('dividing by two')\ny = x / 2"  # the fix, in step b's cell
    nb.write_text(json.dumps(doc))
    (work / "nb2flow.yaml").write_text("workdir: /home/jovyan/work\nshared_workdir: true\n")
    with FakeKube() as kube:
        config = kube.kubeconfig(tmp_path / "kubeconfig")
        from nb2flow.keys import user_key

        # the same user as the one whose pods wrote the earlier run (their key, from this home)
        env = {"NO_COLOR": "1", "KUBECONFIG": config, "HOME": str(tmp_path), "KUBERNETES_SERVICE_HOST": None,
               "NB2FLOW_KEY": user_key().hex()}
        r = run_in_process(["run", "--resume", "wf-first", "--pod-spec", str(FIXTURE)], cwd=work, env=env)
        assert r.returncode == 0, r.stderr
        assert "resuming wf-first: reusing a, c (saved values); running b, d" in r.stderr
        name = r.stdout.strip()
        manifest = kube.objects[("workflows", "jhub", name)]
    assert [t["name"] for t in manifest["spec"]["templates"][0]["dag"]["tasks"]] == ["b", "d"]
    assert manifest["metadata"]["annotations"]["nb2flow.io/resumed-from"] == "wf-first"
    kubelet_fs_group(tmp_path / "claim", 100)  # nb2flow ran as root here; in the notebook pod it is the notebook's user
    results = run_pods(manifest_from_yaml(dump(manifest)), {JH_CLAIM: tmp_path / "claim"}, name=name)
    assert {t: r.exit_code for t, r in results.items()} == {"b": 0, "d": 0, "onExit": 0}, results["b"].log
    assert "1.0" in results["d"].log  # d printed y = x / 2 with x = 2 from the reused step a
    record = json.loads((work / ".nb2flow" / "runs" / name / "run.json").read_text())
    assert record["state"] == "succeeded" and record["resumed"] == "wf-first"
    assert {n: (s["state"], s["reused"]) for n, s in record["steps"].items()} == {
        "a": ("reused", True), "b": ("succeeded", False), "c": ("reused", True), "d": ("succeeded", False)}
    merged = json.loads((work / "nb2flow-runs" / f"{name}.ipynb").read_text())
    texts = ["".join(o.get("text", "")) for c in merged["cells"] for o in c.get("outputs", [])]
    assert "x is 2\n" in texts and "dividing by two\n" in texts  # a's outputs kept from the earlier run


def test_a_scheduled_run_gives_the_notebook_its_scheduled_time(tmp_path):
    """A parameter named scheduled_time takes Argo's {{workflow.scheduledTime}} in a schedule's runs (and in a run
    triggered from the schedule, whose scheduled-time annotation Argo reads); other parameters keep their values."""
    from nbutil import cell, write
    from podreplay import kubelet_fs_group, manifest_from_yaml, run_pods

    from helpers import JH_CLAIM
    from nb2flow.cluster import workflow_from_schedule

    _pod_replay_or_skip()
    claim = tmp_path / "claim"
    (claim / "work").mkdir(parents=True)
    nb = write(claim / "work" / "daily.ipynb", cell("scheduled_time = None\ndays = 1", "parameters"),
               cell("import datetime, json\nday = datetime.datetime.fromisoformat(scheduled_time.replace('Z', '+00:00')).date()"
                    "\njson.dump({'when': scheduled_time, 'day': str(day - datetime.timedelta(days=days))}, open('day.json', 'w'))", "step:load"))
    target = resolve_target(str(nb), ClusterConfig(workdir="/home/jovyan/work"), pod_spec=str(FIXTURE))
    cron = prepare(nb2flow.load(nb), target, {"days": 2}, schedule={"name": "daily-ren", "cron": "0 3 * * *"})[0]
    cron["metadata"]["uid"] = "0b5e6f9a-0000-4000-8000-00000000cafe"
    assert [p["name"] for p in cron["spec"]["workflowSpec"]["arguments"]["parameters"]] == ["days"]
    run = manifest_from_yaml(dump(workflow_from_schedule(cron, "2026-11-30T03:00:00Z")))
    kubelet_fs_group(claim, 100)
    results = run_pods(run, {JH_CLAIM: claim}, name="daily-ren-1764471600",
                       scheduled_time=run["metadata"]["annotations"]["workflows.argoproj.io/scheduled-time"])
    assert results["load"].exit_code == 0, results["load"].log
    assert json.loads((claim / "work" / "day.json").read_text()) == {"when": "2026-11-30T03:00:00Z", "day": "2026-11-28"}
    record = json.loads((claim / "work" / ".nb2flow" / "runs" / "daily-ren-1764471600" / "run.json").read_text())
    assert record["parameters"] == {"days": 2, "scheduled_time": "2026-11-30T03:00:00Z"}
