"""The cluster commands through the real kubernetes client, against a small API server on 127.0.0.1."""

import json
import os
import re
import subprocess
import sys
import time

import pytest

from helpers import JH_CLAIM, JH_NODE, JH_POD, JH_TOKEN, SAMPLES, SHARED, jupyterhub_pod, run_in_process, wait_for
from kubeserver import FakeKube

TOKEN = JH_TOKEN
POD = JH_POD
SCHEDULE = "analysis-ren-ito-example-org"  # the notebook's name and its owner's (JupyterHub's username label)


@pytest.fixture
def kube(tmp_path):
    with FakeKube() as server:
        server.add("pods", jupyterhub_pod())
        server.add("persistentvolumeclaims", {"metadata": {"name": JH_CLAIM, "namespace": "jhub"},
                                              "spec": {"accessModes": ["ReadWriteOnce"]}, "status": {"accessModes": ["ReadWriteOnce"]}})
        server.config_path = server.kubeconfig(tmp_path / "kubeconfig")
        yield server


@pytest.fixture
def home(tmp_path):
    """The notebook in a folder whose pod path is /home/jovyan/work."""
    folder = tmp_path / "work"
    folder.mkdir()
    (folder / "analysis.ipynb").write_bytes((SAMPLES / "analysis.ipynb").read_bytes())
    # a laptop whose folder is the pod's home volume, mounted here
    (folder / "nb2flow.yaml").write_text("workdir: /home/jovyan/work\nshared_workdir: true\nargo_ui: https://argo.example.org\n")
    return folder


def cli(kube, *args, cwd=None):
    """``nb2flow ARGS`` in this process (the kubernetes client imported once), with the kubeconfig and HOME set."""
    env = {"NO_COLOR": "1", "KUBECONFIG": kube.config_path, "HOME": str(cwd or os.getcwd()), "KUBERNETES_SERVICE_HOST": None}
    return run_in_process(list(args), cwd=cwd, env=env)


def workflows(kube):
    return {k[2]: v for k, v in kube.objects.items() if k[0] == "workflows"}


def test_submit_reads_the_pod_and_pvc_and_creates_the_workflow_strictly(kube, home):
    r = cli(kube, "run", "analysis.ipynb", "--argo", "--from-pod", POD, "-n", "jhub", "-p", "n_estimators", "10", cwd=home)
    assert r.returncode == 0, r.stderr
    name = r.stdout.strip()
    assert name.startswith("analysis-")
    assert f"workflow {name} submitted in namespace jhub" in r.stderr
    assert f"https://argo.example.org/workflows/jhub/{name}" in r.stderr
    wf = workflows(kube)[name]
    assert wf["spec"]["arguments"]["parameters"][2] == {"name": "n_estimators", "value": "10"}
    paths = [(m, p) for m, p, q in kube.requests]
    assert ("GET", f"/api/v1/namespaces/jhub/pods/{POD}") in paths
    assert ("GET", f"/api/v1/namespaces/jhub/persistentvolumeclaims/{JH_CLAIM}") in paths
    post = next(q for m, p, q in kube.requests if m == "POST" and p.endswith("/workflows"))
    assert post.get("fieldValidation") == "Strict"
    assert TOKEN not in json.dumps(wf) + r.stderr + r.stdout
    # the PVC said ReadWriteOnce: steps are pinned to the notebook's node
    assert JH_NODE in json.dumps(wf["spec"]["affinity"])
    assert (home / ".nb2flow" / "bundles").is_dir()


def test_rwx_claim_is_not_pinned(kube, home):
    kube.objects[("persistentvolumeclaims", "jhub", JH_CLAIM)]["status"]["accessModes"] = ["ReadWriteMany"]
    r = cli(kube, "run", "analysis.ipynb", "--argo", "--from-pod", POD, "-n", "jhub", cwd=home)
    assert r.returncode == 0, r.stderr
    wf = workflows(kube)[r.stdout.strip()]
    assert "requiredDuringScheduling" not in json.dumps(wf["spec"].get("affinity", {}))


def _finish(kube, name, phases):
    wf = workflows(kube)[name]
    nodes = {}
    for i, (task, phase) in enumerate(phases.items()):
        nodes[f"{name}-{i}"] = {"id": f"{name}-{i}", "displayName": task, "type": "Pod", "phase": phase,
                                "startedAt": "2026-11-28T10:00:00Z", "finishedAt": "2026-11-28T10:00:05Z",
                                **({"message": "Error (exit code 1)"} if phase == "Failed" else {})}
        kube.add("pods", {"metadata": {"name": f"{name}-step-{i}", "namespace": "jhub",
                                       "labels": {"workflows.argoproj.io/workflow": name},
                                       "annotations": {"workflows.argoproj.io/node-id": f"{name}-{i}", "workflows.argoproj.io/node-name": f"{name}.{task}"}}})
        kube.logs[("jhub", f"{name}-step-{i}")] = f"log of {task}\n"
    wf["status"] = {"phase": "Failed" if "Failed" in phases.values() else "Succeeded", "nodes": nodes,
                    "startedAt": "2026-11-28T10:00:00Z", "finishedAt": "2026-11-28T10:00:30Z"}


def test_status_logs_list_stop_delete(kube, home):
    r = cli(kube, "run", "analysis.ipynb", "--argo", "--from-pod", POD, "-n", "jhub", cwd=home)
    name = r.stdout.strip()
    _finish(kube, name, {"load": "Succeeded", "clean": "Succeeded", "train-logreg": "Failed", "train-forest": "Succeeded", "compare": "Omitted"})
    r = cli(kube, "status", name, "-n", "jhub", cwd=home)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == f"workflow {name}: Failed (namespace jhub)"
    assert any(l.startswith("train-logreg") and "failed" in l and "Error (exit code 1)" in l for l in lines)
    assert any(l.startswith("compare") and "skipped" in l for l in lines)
    r = cli(kube, "logs", name, "clean", "-n", "jhub", cwd=home)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "log of clean\n"
    r = cli(kube, "logs", name, "-n", "jhub", cwd=home)
    assert "[load] log of load" in r.stdout.splitlines() and "[compare] log of compare" in r.stdout.splitlines()
    assert ("GET", f"/api/v1/namespaces/jhub/pods/{name}-step-1/log", {"container": "main"}) in kube.requests
    r = cli(kube, "list", "-n", "jhub", cwd=home)
    assert r.returncode == 0, r.stderr
    assert any(l.startswith(name) and "argo failed" in l for l in r.stdout.splitlines())
    # outside the notebook pod nb2flow cannot tell who the user is: acting needs --force, and says whose it is
    r = cli(kube, "stop", name, "-n", "jhub", cwd=home)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == (
        f"nb2flow: workflow {name} is made by ren-ito-example-org---3b9e1a2c (outside a notebook pod nb2flow cannot tell "
        "who you are); not going to stop it (pass --force to stop it anyway)")
    assert "shutdown" not in workflows(kube)[name]["spec"]
    r = cli(kube, "stop", name, "--force", "-n", "jhub", cwd=home)
    assert r.returncode == 0 and f"stop workflow {name}, made by ren-ito-example-org---3b9e1a2c (--force)" in r.stderr
    assert workflows(kube)[name]["spec"]["shutdown"] == "Stop"
    assert cli(kube, "delete", name, "-n", "jhub", cwd=home).returncode == 2
    assert cli(kube, "delete", name, "--force", "-n", "jhub", cwd=home).returncode == 0
    assert name not in workflows(kube)


def test_compressed_nodes_are_read(kube, home):
    import base64
    import gzip

    r = cli(kube, "run", "analysis.ipynb", "--argo", "--from-pod", POD, "-n", "jhub", cwd=home)
    name = r.stdout.strip()
    _finish(kube, name, {"load": "Succeeded", "clean": "Running"})
    wf = workflows(kube)[name]
    wf["status"]["compressedNodes"] = base64.b64encode(gzip.compress(json.dumps(wf["status"].pop("nodes")).encode())).decode()
    r = cli(kube, "status", name, "-n", "jhub", cwd=home)
    assert any(l.startswith("clean") and "running" in l for l in r.stdout.splitlines()), r.stdout


def _start_watch(kube, home, *flags):
    """Start `run --argo --watch` in the background; return it and the workflow it submitted."""
    import time

    env = dict(os.environ, NO_COLOR="1", KUBECONFIG=kube.config_path, HOME=str(home))
    proc = subprocess.Popen([sys.executable, "-m", "nb2flow", "run", "analysis.ipynb", "--argo", "--watch", "--from-pod", POD, "-n", "jhub", *flags],
                            cwd=home, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 30
    while not workflows(kube) and time.time() < deadline:
        time.sleep(0.1)
    return proc, next(iter(workflows(kube)))


@pytest.mark.slow  # CI runs it (pytest -m slow)
def test_watch_follows_to_the_end_and_survives_a_dropped_connection(kube, home):

    # two drops: nb2flow's own watch rides them out (the client is told not to retry by itself)
    kube.fail += [("GET", r"/workflows/analysis-", "drop"), ("GET", r"/workflows/analysis-", "drop")]
    proc, name = _start_watch(kube, home, "--no-progress")
    wait_for(lambda: not kube.fail and sum(1 for m, p, q in kube.requests if m == "GET" and "/workflows/" in p) >= 3)
    _finish(kube, name, {"load": "Succeeded", "clean": "Succeeded", "train-logreg": "Succeeded", "train-forest": "Succeeded", "compare": "Succeeded"})
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert f"workflow {name}: Succeeded" in err
    assert "compare: done" in err
    assert "the API server is struggling (no answer ×2), still watching" in err  # nb2flow's own retry ran
    posts = [p for m, p, q in kube.requests if m == "POST" and p.endswith("/workflows")]
    assert len(posts) == 1  # nothing submitted twice


@pytest.mark.slow  # CI runs it (pytest -m slow)
def test_watch_exit_status_reflects_a_failed_workflow(kube, home):
    proc, name = _start_watch(kube, home, "-q")
    _finish(kube, name, {"load": "Failed"})
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "ended Failed" in err


def test_schedule_creates_then_updates_and_unschedule(kube, home):
    r = cli(kube, "schedule", "analysis.ipynb", "--cron", "0 3 * * *", "--timezone", "Asia/Seoul", "--from-pod", POD, "-n", "jhub", cwd=home)
    assert r.returncode == 0, r.stderr
    assert f"schedule {SCHEDULE} created in namespace jhub: 0 3 * * * (Asia/Seoul)" in r.stderr
    cron = kube.objects[("cronworkflows", "jhub", SCHEDULE)]
    assert cron["spec"]["schedules"] == ["0 3 * * *"]
    r = cli(kube, "schedule", "analysis.ipynb", "--cron", "30 4 * * 1", "--from-pod", POD, "-n", "jhub", "-p", "C", "0.5", cwd=home)
    assert r.returncode == 0, r.stderr
    assert f"schedule {SCHEDULE} updated" in r.stderr
    cron = kube.objects[("cronworkflows", "jhub", SCHEDULE)]
    assert cron["spec"]["schedules"] == ["30 4 * * 1"] and cron["metadata"]["resourceVersion"] == "2"
    r = cli(kube, "list", "-n", "jhub", cwd=home)
    assert any(l.startswith(SCHEDULE + " ") and "schedule 30 4 * * 1" in l for l in r.stdout.splitlines()), r.stdout
    assert cli(kube, "unschedule", SCHEDULE, "--force", "-n", "jhub", cwd=home).returncode == 0
    assert ("cronworkflows", "jhub", SCHEDULE) not in kube.objects


@pytest.mark.parametrize(
    "failure, message",
    [
        ((401, "Unauthorized"), "does not accept these credentials (401)"),
        ((403, 'workflows.argoproj.io is forbidden: User "system:serviceaccount:jhub:default" cannot create resource'), "permission denied in namespace jhub (403)"),
        ((422, "Workflow.argoproj.io is invalid", [{"field": "spec.templates[0].name", "message": "Invalid value"}]), "rejected the manifest (422): spec.templates[0].name: Invalid value"),
    ],
)
def test_api_errors_are_one_line_with_the_fix(kube, home, failure, message):
    kube.fail.append(("POST", r"/workflows$", failure))
    r = cli(kube, "run", "analysis.ipynb", "--argo", "--from-pod", POD, "-n", "jhub", cwd=home)
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert message in last and "Traceback" not in r.stderr
    if failure[0] == 403:
        assert "`nb2flow rbac`" in last


def test_argo_not_installed(kube, home):
    kube.argo_installed = False
    r = cli(kube, "run", "analysis.ipynb", "--argo", "--from-pod", POD, "-n", "jhub", cwd=home)
    assert r.returncode == 2
    assert "Argo Workflows is not installed in this cluster (no workflows.argoproj.io resource) (install Argo Workflows, or run with --local)" in r.stderr


def test_missing_pod_and_unreachable_server(kube, home, tmp_path):
    r = cli(kube, "run", "analysis.ipynb", "--argo", "--from-pod", "nope", "-n", "jhub", cwd=home)
    assert r.returncode == 2 and 'reading pod nope: not found in namespace jhub (404): pods "nope" not found' in r.stderr
    kube.httpd.server_close()
    cfg = (tmp_path / "kubeconfig").read_text().replace(kube.url, "http://127.0.0.1:9")
    (tmp_path / "kubeconfig").write_text(cfg)
    r = cli(kube, "run", "analysis.ipynb", "--argo", "--from-pod", POD, "-n", "jhub", cwd=home)
    assert r.returncode == 2
    assert "cannot reach the Kubernetes API server at http://127.0.0.1:9" in r.stderr and "network policy" in r.stderr


def test_a_409_for_a_name_nobody_holds_is_asked_again_and_creates_one(kube, home):
    kube.fail.append(("POST", r"/workflows$", (409, "workflows.argoproj.io \"analysis-x\" already exists")))
    r = cli(kube, "run", "analysis.ipynb", "--argo", "--from-pod", POD, "-n", "jhub", cwd=home)
    assert r.returncode == 0, r.stderr
    assert list(workflows(kube)) == [r.stdout.strip()]
    assert [m for m, p, q in kube.requests if "/workflows" in p] == ["POST", "GET", "POST"]


def test_schedule_on_argo_before_3_6_uses_the_single_schedule_field(tmp_path, home):
    with FakeKube(argo_version="3.5") as server:
        server.add("pods", jupyterhub_pod())
        server.config_path = server.kubeconfig(tmp_path / "kubeconfig")
        r = cli(server, "schedule", "analysis.ipynb", "--cron", "0 3 * * *", "--from-pod", POD, "-n", "jhub", cwd=home)
        assert r.returncode == 0, r.stderr
        spec = server.objects[("cronworkflows", "jhub", SCHEDULE)]["spec"]
        assert spec["schedule"] == "0 3 * * *" and "schedules" not in spec
        assert "(Argo before v3.6: spec.schedule)" in r.stderr
        first = [q for m, p, q in server.requests if m == "POST" and "/cronworkflows" in p]
        assert len(first) == 2  # schedules refused (400, unknown field), then schedule accepted


def test_a_schedule_argos_controller_reports_as_wrong_is_an_error(kube, home):
    def controller(plural, obj):
        if plural == "cronworkflows":
            obj["status"] = {"conditions": [{"type": "SpecError", "status": "True",
                                             "message": "invalid timezone \"Asia/Seoul\": unknown time zone Asia/Seoul"}]}

    kube.on_create = controller
    r = cli(kube, "schedule", "analysis.ipynb", "--cron", "0 3 * * *", "--timezone", "Asia/Seoul", "--from-pod", POD, "-n", "jhub", cwd=home)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1] == (
        f"nb2flow: schedule {SCHEDULE} was created, but Argo's controller will not run it: invalid timezone \"Asia/Seoul\": unknown time"
        f" zone Asia/Seoul (fix the schedule and run nb2flow schedule again, or nb2flow unschedule {SCHEDULE})")


def test_a_read_write_once_pod_claim_is_refused(kube, home):
    kube.objects[("persistentvolumeclaims", "jhub", JH_CLAIM)]["status"]["accessModes"] = ["ReadWriteOncePod"]
    r = cli(kube, "run", "analysis.ipynb", "--argo", "--from-pod", POD, "-n", "jhub", cwd=home)
    assert r.returncode == 2 and workflows(kube) == {}
    assert r.stderr.strip().splitlines()[-1] == (
        f"nb2flow: /home/jovyan/work is on claim {JH_CLAIM}, which is ReadWriteOncePod: only the notebook's pod may mount it"
        " (ask your admin for a ReadWriteOnce or ReadWriteMany home volume, or run with --local)")


def test_flags_argo_cannot_honour_are_refused(kube, home):
    r = cli(kube, "run", "analysis.ipynb", "--argo", "--python", "/usr/bin/python3", "--from-pod", POD, "-n", "jhub", cwd=home)
    assert r.returncode == 2 and workflows(kube) == {}
    assert r.stderr.strip().splitlines()[-1] == ("nb2flow: --python names an interpreter on this machine; step pods run `python:` "
                                                 "from nb2flow.yaml (default python3)")


def test_schedule_that_exists_but_cannot_be_read_says_permission_denied(kube, home):
    kube.fail.append(("POST", r"/cronworkflows$", (409, "already exists")))
    kube.fail.append(("GET", rf"/cronworkflows/{SCHEDULE}$", (403, "forbidden")))
    r = cli(kube, "schedule", "analysis.ipynb", "--cron", "@daily", "--from-pod", POD, "-n", "jhub", cwd=home)
    assert r.returncode == 2 and "permission denied" in r.stderr


def test_rbac_prints_role_and_binding():
    import yaml

    r = subprocess.run([sys.executable, "-m", "nb2flow", "rbac", "-n", "jhub", "--service-account", "notebook-workflows", "--runner", "argo-runner"],
                       capture_output=True, text=True)
    docs = list(yaml.safe_load_all(r.stdout))
    assert [d["kind"] for d in docs] == ["Role", "RoleBinding", "Role", "RoleBinding", "NetworkPolicy"]
    policy = docs[4]["spec"]
    assert policy["podSelector"] == {"matchLabels": {"app.kubernetes.io/managed-by": "nb2flow"}} and policy["ingress"] == []
    assert policy["egress"][0]["to"][0]["ipBlock"]["except"] == ["169.254.169.254/32"]  # no cloud metadata endpoint
    verbs = {tuple(rule["resources"]): rule["verbs"] for rule in docs[0]["rules"]}
    assert set(verbs[("workflows", "cronworkflows")]) >= {"create", "get", "list", "watch", "patch", "delete"}
    assert verbs[("pods",)] == ["get", "list", "watch"] and verbs[("pods/log",)] == ["get"]
    assert set(verbs[("secrets",)]) == {"create", "get", "update", "patch", "delete"}  # each run's Secret (no list: none of others')
    assert docs[1]["subjects"] == [{"kind": "ServiceAccount", "name": "notebook-workflows", "namespace": "jhub"}]
    assert docs[2]["rules"] == [{"apiGroups": ["argoproj.io"], "resources": ["workflowtaskresults"], "verbs": ["create", "patch"]}]
    assert docs[3]["subjects"][0]["name"] == "argo-runner"


def test_no_credentials_in_the_pod(tmp_path, home):
    env = dict(os.environ, NO_COLOR="1", KUBERNETES_SERVICE_HOST="10.0.0.1", HOME=str(tmp_path))
    r = subprocess.run([sys.executable, "-m", "nb2flow", "run", "analysis.ipynb", "--argo"], cwd=home, capture_output=True, text=True, env=env)
    assert r.returncode == 2
    assert "no Kubernetes credentials in this pod: no service-account token is mounted at /var/run/secrets/kubernetes.io/serviceaccount" in r.stderr


def test_the_test_server_refuses_what_a_real_one_refuses(kube):
    """The double is as strict as the API server: bad names, labels and unknown fields are refused."""
    import urllib.request

    def post(body, strict=True):
        url = f"{kube.url}/apis/argoproj.io/v1alpha1/namespaces/jhub/workflows" + ("?fieldValidation=Strict" if strict else "")
        req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Authorization": f"Bearer {kube.token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    good = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "metadata": {"generateName": "ok-"},
            "spec": {"entrypoint": "main", "templates": [{"name": "main", "container": {"image": "python:3.11"}}]}}
    assert post(good)[0] == 201
    for meta in ({"generateName": "My Analysis (v2)-"}, {"generateName": "한글 분석-"}, {"name": "a" * 254},
                 {"generateName": "ok-", "labels": {"nb2flow.io/notebook": "my analysis"}},
                 {"generateName": "ok-", "labels": {"bad key!": "x"}}, {"generateName": "ok-", "labels": {"k": "x" * 64}}):
        status, answer = post(dict(good, metadata=meta))
        assert status == 422, (meta, answer)
    if (SHARED / "schemas").is_dir():
        status, answer = post(dict(good, spec=dict(good["spec"], entrypiont="main")))
        assert status == 400 and 'unknown field "spec.entrypiont"' in answer["message"]
        assert post(dict(good, spec=dict(good["spec"], entrypiont="main")), strict=False)[0] == 201  # pruned, not refused


@pytest.mark.parametrize("notebook", ["My Analysis (v2).ipynb", "한글 분석.ipynb"])
def test_notebooks_with_names_kubernetes_refuses_are_submitted_and_scheduled(kube, home, notebook):
    from nbutil import cell, write

    write(home / notebook, cell("x = 1", "step:1_load"), cell("y = x", "step:Train_A"))
    r = cli(kube, "run", notebook, "--argo", "--from-pod", POD, "-n", "jhub", cwd=home)
    assert r.returncode == 0, r.stderr
    wf = workflows(kube)[r.stdout.strip()]
    tasks = wf["spec"]["templates"][0]["dag"]["tasks"]
    assert [t["name"] for t in tasks] == ["step-1-load", "train-a"] and tasks[1]["dependencies"] == ["step-1-load"]
    r = cli(kube, "schedule", notebook, "--cron", "@daily", "--from-pod", POD, "-n", "jhub", cwd=home)
    assert r.returncode == 0, r.stderr
    names = [k[2] for k in kube.objects if k[0] == "cronworkflows"]
    assert len(names) == 1 and len(names[0]) <= 52


def test_outside_the_pod_step_files_the_pods_cannot_see_are_refused(kube, home):
    (home / "nb2flow.yaml").write_text("workdir: /home/jovyan/work\n")
    r = cli(kube, "run", "analysis.ipynb", "--argo", "--from-pod", POD, "-n", "jhub", cwd=home)
    assert r.returncode == 2 and workflows(kube) == {}
    assert r.stderr.strip().splitlines()[-1] == (
        f"nb2flow: the step files would be written to {home}, on this machine, but the step pods read them from /home/jovyan/work on"
        " the notebook pod's volume (run nb2flow in the notebook's pod (its terminal), or, if this folder is that volume mounted here,"
        " set shared_workdir: true in nb2flow.yaml)")
    r = cli(kube, "schedule", "analysis.ipynb", "--cron", "@daily", "--from-pod", POD, "-n", "jhub", cwd=home)
    assert r.returncode == 2 and not [k for k in kube.objects if k[0] == "cronworkflows"]
    r = cli(kube, "export", "analysis.ipynb", "--from-pod", POD, "-n", "jhub", cwd=home)
    assert r.returncode == 0 and "nb2flow: warning: the step files would be written to" in r.stderr


def test_logs_fall_back_to_the_run_folder_once_the_pods_are_gone(kube, tmp_path):
    """Argo's default podGC deletes succeeded pods; the cells' output stays in the run folder on the volume."""
    notebook_folder = tmp_path / "home"  # the volume, reachable here as in the notebook's pod
    run_dir = notebook_folder / ".nb2flow" / "runs" / "analysis-abcde"
    for task, text in (("load", "loaded 150 rows\n"), ("clean", "dropped 3 rows\n")):
        (run_dir / "steps" / task).mkdir(parents=True)
        (run_dir / "steps" / task / "output.log").write_text(text)
    kube.add("workflows", {"kind": "Workflow", "metadata": {"name": "analysis-abcde", "namespace": "jhub",
                                                             "annotations": {"nb2flow.io/notebook-path": str(notebook_folder / "analysis.ipynb")}},
                           "spec": {"entrypoint": "pipeline", "templates": [{"name": "pipeline", "dag": {"tasks": []}}]}})
    r = cli(kube, "logs", "analysis-abcde", "-n", "jhub", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["[clean] dropped 3 rows", "[load] loaded 150 rows"]
    assert "the pods are gone" in r.stderr
    r = cli(kube, "logs", "analysis-abcde", "load", "-n", "jhub", cwd=tmp_path)
    assert r.stdout == "loaded 150 rows\n"


def _pending(kube, name, task, i, *, pod_status=None, events=(), node_message=None):
    """Controller-like state: a Pending node for ``task`` and its Pending pod with the status and events given."""
    wf = workflows(kube)[name]
    status = wf.setdefault("status", {"phase": "Running", "nodes": {}, "startedAt": "2026-11-30T10:00:00Z"})
    status["nodes"][f"{name}-{i}"] = {"id": f"{name}-{i}", "displayName": task, "type": "Pod", "phase": "Pending",
                                      **({"message": node_message} if node_message else {})}
    if pod_status is None:
        return
    pod = f"{name}-step-{i}"
    kube.add("pods", {"metadata": {"name": pod, "namespace": "jhub", "labels": {"workflows.argoproj.io/workflow": name},
                                   "annotations": {"workflows.argoproj.io/node-id": f"{name}-{i}"}},
                      "status": {"phase": "Pending", **pod_status}})
    for j, (reason, message) in enumerate(events):
        kube.add("events", {"metadata": {"name": f"{pod}.{j}", "namespace": "jhub"}, "type": "Warning", "reason": reason,
                            "message": message, "involvedObject": {"kind": "Pod", "name": pod, "namespace": "jhub"},
                            "lastTimestamp": f"2026-11-30T10:00:0{j}Z"})


def test_a_waiting_step_says_why_from_its_pod_conditions_events_and_argo(kube, home):
    """Unschedulable (the scheduler's message), image pull errors, volume attach errors (events), quota refusals
    (Argo's node message when the pod cannot even be created)."""
    name = cli(kube, "run", "analysis.ipynb", "--argo", "--from-pod", POD, "-n", "jhub", cwd=home).stdout.strip()
    _pending(kube, name, "load", 0, pod_status={"conditions": [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
         "message": "0/5 nodes are available: 5 Insufficient nvidia.com/gpu."}]})
    _pending(kube, name, "clean", 1, pod_status={"containerStatuses": [
        {"name": "main", "image": "jupyter/scipy:bad", "state": {"waiting": {"reason": "ImagePullBackOff",
                                                                            "message": 'Back-off pulling image "jupyter/scipy:bad"'}}}]})
    _pending(kube, name, "train-logreg", 2, pod_status={"conditions": [{"type": "PodScheduled", "status": "True"}]},
             events=[("FailedAttachVolume", "Multi-Attach error for volume \"pvc-1\" Volume is already used by pod(s) jupyter-ana")])
    _pending(kube, name, "train-forest", 3, node_message='pods "x" is forbidden: exceeded quota: compute, requested: cpu=2, used: cpu=8, limited: cpu=8')
    r = cli(kube, "status", name, "-n", "jhub", cwd=home)
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0]: line for line in r.stdout.splitlines()[2:]}
    assert rows["load"].split()[1] == "waiting" and rows["load"].endswith("Unschedulable: 0/5 nodes are available: 5 Insufficient nvidia.com/gpu.")
    assert rows["clean"].endswith('ImagePullBackOff: Back-off pulling image "jupyter/scipy:bad"')
    assert "FailedAttachVolume: Multi-Attach error for volume" in rows["train-logreg"]
    assert "exceeded quota: compute" in rows["train-forest"]
    assert ("GET", "/api/v1/namespaces/jhub/events", {"fieldSelector": f"involvedObject.kind=Pod,involvedObject.name={name}-step-2"}) in kube.requests


def test_no_word_from_argos_controller_is_said_instead_of_waiting_forever(kube, home):
    def backdate(plural, obj):  # a workflow created two minutes ago that no controller has touched
        obj["metadata"]["creationTimestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 120))

    kube.on_create = backdate
    r = cli(kube, "run", "analysis.ipynb", "--argo", "--watch", "--no-progress", "--from-pod", POD, "-n", "jhub", cwd=home)
    assert r.returncode == 2 and "Traceback" not in r.stderr  # as every cluster error
    last = r.stderr.strip().splitlines()[-1]
    assert "has had no word from Argo's workflow controller for 1" in last and "watching namespace jhub?" in last, r.stderr
    r = cli(kube, "status", r.stdout.strip(), "-n", "jhub", cwd=home)
    assert r.returncode == 0 and "no word from Argo's workflow controller" in r.stderr


def test_status_of_a_running_step_shows_its_cell_from_the_run_folder(kube, home):
    name = cli(kube, "run", "analysis.ipynb", "--argo", "--from-pod", POD, "-n", "jhub", cwd=home).stdout.strip()
    wf = workflows(kube)[name]
    wf["status"] = {"phase": "Running", "startedAt": "2026-11-30T10:00:00Z", "nodes": {
        f"{name}-0": {"id": f"{name}-0", "displayName": "load", "type": "Pod", "phase": "Running", "startedAt": "2026-11-30T10:00:00Z"}}}
    status_file = home / ".nb2flow" / "runs" / name / "steps" / "load" / "status.json"
    status_file.parent.mkdir(parents=True)
    status_file.write_text(json.dumps({"step": "load", "state": "running", "cell": 3}))
    r = cli(kube, "status", name, "-n", "jhub", cwd=home)
    assert r.returncode == 0, r.stderr
    load = next(line for line in r.stdout.splitlines() if line.startswith("load"))
    source = json.loads((SAMPLES / "analysis.ipynb").read_text())["cells"][2]["source"]
    assert load.split()[1] == "running" and f"cell 3: {''.join(source).strip().splitlines()[0]}" in load


def test_two_users_notebooks_of_one_name_get_two_schedules_and_replacing_another_users_needs_replace(kube, home):
    r = cli(kube, "schedule", "analysis.ipynb", "--cron", "0 3 * * *", "--from-pod", POD, "-n", "jhub", cwd=home)
    assert r.returncode == 0, r.stderr
    other = jupyterhub_pod()
    other["metadata"]["name"] = "jupyter-mia-chen"
    other["metadata"]["labels"]["hub.jupyter.org/username"] = "mia-chen"
    kube.add("pods", other)
    r = cli(kube, "schedule", "analysis.ipynb", "--cron", "0 4 * * *", "--from-pod", "jupyter-mia-chen", "-n", "jhub", cwd=home)
    assert r.returncode == 0, r.stderr
    names = sorted(k[2] for k in kube.objects if k[0] == "cronworkflows")
    assert names == ["analysis-mia-chen", SCHEDULE]
    r = cli(kube, "schedule", "analysis.ipynb", "--cron", "0 5 * * *", "--name", SCHEDULE, "--from-pod", "jupyter-mia-chen", "-n", "jhub", cwd=home)
    assert r.returncode == 2 and kube.objects[("cronworkflows", "jhub", SCHEDULE)]["spec"]["schedules"] == ["0 3 * * *"]
    assert r.stderr.strip().splitlines()[-1] == (
        f"nb2flow: schedule {SCHEDULE} already exists in namespace jhub, made by ren-ito-example-org---3b9e1a2c for "
        "/home/jovyan/work/analysis.ipynb; not replacing it (pass --replace to overwrite it, or --name to schedule under another name)")
    r = cli(kube, "schedule", "analysis.ipynb", "--cron", "0 5 * * *", "--name", SCHEDULE, "--replace", "--from-pod", "jupyter-mia-chen",
            "-n", "jhub", cwd=home)
    assert r.returncode == 0 and kube.objects[("cronworkflows", "jhub", SCHEDULE)]["spec"]["schedules"] == ["0 5 * * *"]


def test_schedules_list_pause_resume_and_trigger(kube, home):
    r = cli(kube, "schedule", "analysis.ipynb", "--cron", "0 3 * * *", "--timezone", "Asia/Seoul", "--from-pod", POD, "-n", "jhub", cwd=home)
    assert r.returncode == 0, r.stderr
    cron = kube.objects[("cronworkflows", "jhub", SCHEDULE)]
    assert (cron["spec"]["successfulJobsHistoryLimit"], cron["spec"]["failedJobsHistoryLimit"]) == (3, 5)
    r = cli(kube, "schedules", "trigger", SCHEDULE, "--force", "-n", "jhub", cwd=home)
    assert r.returncode == 0, r.stderr
    run = workflows(kube)[r.stdout.strip()]
    assert run["metadata"]["name"].startswith(SCHEDULE + "-") and run["spec"] == cron["spec"]["workflowSpec"]
    assert run["metadata"]["labels"]["workflows.argoproj.io/cron-workflow"] == SCHEDULE
    assert run["metadata"]["ownerReferences"][0] == {"apiVersion": "argoproj.io/v1alpha1", "kind": "CronWorkflow", "name": SCHEDULE,
                                                     "uid": cron["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}
    assert "workflows.argoproj.io/scheduled-time" in run["metadata"]["annotations"]
    assert run["metadata"]["annotations"]["nb2flow.io/notebook-path"] == "/home/jovyan/work/analysis.ipynb"
    assert "status" not in run  # Argo's validation rules accept it (the test API server ran them)
    run["status"] = {"phase": "Failed"}
    r = cli(kube, "schedules", "-n", "jhub", cwd=home)
    assert r.returncode == 0, r.stderr
    header, row = r.stdout.splitlines()
    assert header.split() == ["SCHEDULE", "CRON", "STATE", "LAST", "RUN", "RESULT", "NEXT", "RUN", "NOTEBOOK"]
    assert re.match(rf"{SCHEDULE}\s+0 3 \* \* \* \(Asia/Seoul\)\s+active\s+{run['metadata']['name']}\s+failed\s+20\d\d-\d\d-\d\dT03:00:00\+09:00\s", row), row
    assert cli(kube, "schedules", "pause", SCHEDULE, "--force", "-n", "jhub", cwd=home).returncode == 0
    assert kube.objects[("cronworkflows", "jhub", SCHEDULE)]["spec"]["suspend"] is True
    rows = json.loads(cli(kube, "schedules", "--json", "-n", "jhub", cwd=home).stdout)
    assert rows[0]["suspended"] is True and rows[0]["next_run"] is None
    assert cli(kube, "schedules", "resume", SCHEDULE, "--force", "-n", "jhub", cwd=home).returncode == 0
    assert kube.objects[("cronworkflows", "jhub", SCHEDULE)]["spec"]["suspend"] is False


# ------------------------------------------------------------------ a bad day at the API server (faults per request)

def _policy(home, connect=1.0, read=1.0, retry_for=3.0):
    """Short timeouts and retry spells, so no test waits more than a few seconds for what it set itself (the
    test server's admission reads Argo's CRDs first, once: a slow first answer is not a fault under test)."""
    from admission import crd_validator

    crd_validator("workflows"), crd_validator("cronworkflows")
    folder = home / ".config" / "nb2flow"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(f"api_connect_timeout: {connect}\napi_read_timeout: {read}\napi_retry_for: {retry_for}\n")


def _submit(kube, home, *flags):
    return cli(kube, "run", "analysis.ipynb", "--argo", "--from-pod", POD, "-n", "jhub", *flags, cwd=home)


def test_a_create_whose_answer_is_lost_is_found_not_submitted_twice(kube, home):
    _policy(home)
    kube.fault("POST", r"/workflows$", "drop-after")  # created, then the connection drops before the answer
    r = _submit(kube, home)
    assert r.returncode == 0, r.stderr
    name = r.stdout.strip()
    assert list(workflows(kube)) == [name]  # one workflow, the one nb2flow named
    methods = [m for m, p, q in kube.requests if "/workflows" in p]
    assert methods == ["POST", "GET"]  # looked up by its name instead of being sent again
    record = json.loads((home / ".nb2flow" / "runs" / name / "run.json").read_text())
    assert record["workflow"]["uid"] == workflows(kube)[name]["metadata"]["uid"] and record["workflow"]["phase"] == "Pending"


def test_a_create_that_hangs_or_fails_with_5xx_is_asked_again_within_the_timeout(kube, home):
    _policy(home, read=1, retry_for=5)
    kube.fault("POST", r"/workflows$", "hang")
    kube.fault("POST", r"/workflows$", (503, "the server is currently unable to handle the request"))
    started = time.monotonic()
    r = _submit(kube, home)
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - started < 8
    assert len(workflows(kube)) == 1
    assert "no answer from the API server" in r.stderr and "asking again for up to 5s" in r.stderr


def test_an_unknown_outcome_keeps_the_record_and_says_how_to_find_out(kube, home):
    _policy(home, read=1, retry_for=1)
    kube.fault("POST", r"/workflows$", "drop-after")
    kube.fault("GET", r"/workflows/analysis-", 500, times=20)  # and the look-up fails too
    r = _submit(kube, home)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    name = next(iter(workflows(kube)))
    last = r.stderr.strip().splitlines()[-1]
    assert f"workflow {name} may or may not have been created" in last and f"`nb2flow status {name}` tells" in last
    record = json.loads((home / ".nb2flow" / "runs" / name / "run.json").read_text())
    assert record["state"] == "running" and record["workflow"]["phase"] == "Submitting"
    kube.fail.clear()
    r = cli(kube, "status", name, "-n", "jhub", cwd=home)
    assert r.returncode == 0 and r.stdout.startswith(f"workflow {name}: Pending"), r.stderr


def test_a_refused_create_leaves_no_record(kube, home):
    kube.fault("POST", r"/workflows$", (403, "forbidden"))
    r = _submit(kube, home)
    assert r.returncode == 2 and "(403)" in r.stderr
    runs = home / ".nb2flow" / "runs"
    assert not runs.exists() or list(runs.iterdir()) == []


def test_a_server_that_never_answers_times_out_with_one_line(kube, home):
    r = _submit(kube, home)  # admission checks the whole schema: slower than 0.4 s
    assert r.returncode == 0, r.stderr
    name = r.stdout.strip()
    _policy(home, read=0.4, retry_for=1)
    kube.fault("GET", r"/workflows/", "hang", times=10)
    started = time.monotonic()
    r = cli(kube, "status", name, "-n", "jhub", cwd=home)  # the run folder answers instead
    assert r.returncode == 0 and r.stdout.startswith(f"run {name}: running")
    assert f"no answer from the API server at {kube.url} within 0.4s (api_read_timeout)); showing its run folder" in r.stderr
    r = cli(kube, "stop", name, "--force", "-n", "jhub", cwd=home)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert time.monotonic() - started < 8
    assert r.stderr.strip().splitlines()[-1].startswith(
        f"nb2flow: reading workflow {name}: no answer from the API server at {kube.url} within 0.4s (api_read_timeout)")


@pytest.mark.slow  # CI runs it (pytest -m slow)
def test_watch_rides_out_5xx_and_429_honouring_retry_after(kube, home):
    _policy(home, read=1, retry_for=30)
    proc, name = _start_watch(kube, home, "--no-progress")
    kube.fault("GET", rf"/workflows/{name}$", 500, times=3)
    kube.fault("GET", rf"/workflows/{name}$", (429, "slow down", None, {"Retry-After": "2"}))
    wait_for(lambda: not kube.fail, timeout=30)
    _finish(kube, name, {"load": "Succeeded", "clean": "Succeeded", "train-logreg": "Succeeded", "train-forest": "Succeeded", "compare": "Succeeded"})
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "the API server is struggling (500 ×3), still watching" in err
    assert "the API server is struggling (500 ×3, 429 ×1), still watching" in err
    gets = [t for (m, p, q), t in zip(kube.requests, kube.times) if m == "GET" and p.endswith(f"/workflows/{name}")]
    # the workflow finished as the 429 was taken: the last read is the one after it, which waited its Retry-After
    assert gets[-1] - gets[-2] >= 1.9
    assert [m for m, p, q in kube.requests if m == "POST" and p.endswith("/workflows")] == ["POST"]


@pytest.mark.slow  # CI runs it (pytest -m slow)
def test_a_lasting_failure_ends_the_watch_with_the_command_that_resumes_it(kube, home):
    _policy(home, read=1, retry_for=2)
    proc, name = _start_watch(kube, home, "--no-progress")
    kube.fault("GET", rf"/workflows/{name}$", (502, "bad gateway"), times=1000)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, err
    last = err.strip().splitlines()[-1]
    assert f"stopped watching workflow {name}: the API server has failed for" in last and "502 ×" in last
    assert f"`nb2flow status --watch {name}` watches it again" in last
    kube.fail.clear()
    _finish(kube, name, {"load": "Succeeded", "clean": "Succeeded", "train-logreg": "Succeeded", "train-forest": "Succeeded", "compare": "Succeeded"})
    r = cli(kube, "status", name, "--watch", "-n", "jhub", cwd=home)
    assert r.returncode == 0, r.stderr
    assert f"workflow {name}: Succeeded" in r.stderr


def test_a_stale_409_on_update_or_stop_is_read_again_and_retried(kube, home):
    assert cli(kube, "schedule", "analysis.ipynb", "--cron", "0 3 * * *", "--from-pod", POD, "-n", "jhub", cwd=home).returncode == 0
    kube.fault("PUT", r"/cronworkflows/", "stale")
    r = cli(kube, "schedule", "analysis.ipynb", "--cron", "0 4 * * *", "--from-pod", POD, "-n", "jhub", cwd=home)
    assert r.returncode == 0, r.stderr
    assert f"schedule {SCHEDULE} updated" in r.stderr and "already exists" not in r.stderr
    assert [m for m, p, q in kube.requests if p.endswith(f"/cronworkflows/{SCHEDULE}")].count("PUT") == 2
    assert kube.objects[("cronworkflows", "jhub", SCHEDULE)]["spec"]["schedules"] == ["0 4 * * *"]
    name = _submit(kube, home).stdout.strip()
    kube.fault("PATCH", rf"/workflows/{name}$", "stale")
    r = cli(kube, "stop", name, "--force", "-n", "jhub", cwd=home)
    assert r.returncode == 0, r.stderr
    assert workflows(kube)[name]["spec"]["shutdown"] == "Stop"


@pytest.mark.parametrize("fault, said", [
    ("html", "answered not JSON (text/html: '<!DOCTYPE html><html><body><h1>Sign in to continue</h1>"),
    ("null", "answered JSON null instead of an object (application/json: 'null')"),
    ("status", "answered a Status instead of a Workflow (application/json: '{\"kind\": \"Status\""),
])
def test_an_answer_that_is_not_the_json_expected_is_one_line(kube, home, fault, said):
    name = _submit(kube, home).stdout.strip()
    kube.fault("GET", rf"/workflows/{name}$", fault)
    r = cli(kube, "logs", name, "-n", "jhub", cwd=home)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "bug in nb2flow" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert f"the API server at {kube.url} {said}" in last


def test_a_null_node_is_skipped(kube, home):
    name = _submit(kube, home).stdout.strip()
    _finish(kube, name, {"load": "Succeeded"})
    workflows(kube)[name]["status"]["nodes"]["broken"] = None
    r = cli(kube, "status", name, "-n", "jhub", cwd=home)
    assert r.returncode == 0, r.stderr
    assert any(l.startswith("load") and "done" in l for l in r.stdout.splitlines()), r.stdout


def test_create_tells_its_own_object_from_another_with_the_same_name(kube):
    """Through the real client: the object under the chosen name is this submission's only when it carries
    this submission's value; anything else is a true "already exists"."""
    from nb2flow.argo import SUBMISSION
    from nb2flow.errors import ClusterConflict
    from nb2flow.kube import Kube

    os.environ["KUBECONFIG"] = kube.config_path
    try:
        client = Kube()
    finally:
        del os.environ["KUBECONFIG"]
    body = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
            "metadata": {"name": "wf-a", "namespace": "jhub", "annotations": {SUBMISSION: "mine"}},
            "spec": {"entrypoint": "main", "templates": [{"name": "main", "container": {"image": "python:3.11"}}]}}
    kube.add("workflows", {**body, "metadata": {**body["metadata"], "uid": "u1"}})
    assert client.create("workflows", "jhub", body, identity=SUBMISSION)["metadata"]["uid"] == "u1"
    kube.add("workflows", {**body, "metadata": {"name": "wf-a", "namespace": "jhub", "annotations": {SUBMISSION: "theirs"}}})
    with pytest.raises(ClusterConflict, match="already exists in namespace jhub"):
        client.create("workflows", "jhub", body, identity=SUBMISSION)
