"""The first thing a user does on the cluster: `nb2flow run analysis.ipynb` typed in the notebook
pod's terminal, with no flags — run as it runs in the pod (see podsim.py), against the test API
server over TLS, with controller-like states written by the test."""

import json
import re
import socket

import pytest

from helpers import JH_CLAIM, JH_POD, SAMPLES, jupyterhub_pod, wait_for
from kubeserver import FakeKube
from nbutil import cell, write
from podsim import Pod, make_pki, service_account_token, unshare_problem

NAMESPACE, ACCOUNT = "jhub", "notebook-workflows"
OWNER = "ren-ito-example-org"  # JupyterHub's username label of the pod, without its ---HASH
TOKEN = service_account_token(NAMESPACE, ACCOUNT)

pytestmark = pytest.mark.skipif(bool(unshare_problem()), reason=f"cannot be the pod here: {unshare_problem()}")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    pytest.importorskip("cryptography", reason="the test API server's TLS certificates are made with cryptography")
    return make_pki(tmp_path_factory.mktemp("pki"))


def start_server(pki, which="cluster") -> FakeKube:
    _, cert, key = pki[which]
    server = FakeKube(token=TOKEN, tls=(str(cert), str(key)))
    server.add("pods", jupyterhub_pod())
    server.add("persistentvolumeclaims", {"metadata": {"name": JH_CLAIM, "namespace": NAMESPACE},
                                          "spec": {"accessModes": ["ReadWriteOnce"]}, "status": {"accessModes": ["ReadWriteOnce"]}})
    return server


@pytest.fixture
def kube(pki):
    with start_server(pki) as server:
        yield server


def make_pod(tmp_path, pki, port, *, token=TOKEN) -> Pod:
    pod = Pod(tmp_path / "pod", name=JH_POD, namespace=NAMESPACE, token=token, ca_crt=pki["cluster"][0], port=port)
    (pod.home / "analysis.ipynb").write_bytes((SAMPLES / "analysis.ipynb").read_bytes())
    write(pod.home / "tiny.ipynb", cell("x = 40", "step:a"), cell("print(x + 2)", "step:b"))
    return pod


def workflows(kube) -> dict:
    return {k[2]: v for k, v in kube.objects.items() if k[0] == "workflows"}


def set_phases(kube, name, phases: dict, workflow_phase="Running", messages=None) -> None:
    wf = workflows(kube)[name]
    nodes = {name: {"id": name, "displayName": name, "type": "DAG", "phase": workflow_phase}}
    for i, (task, phase) in enumerate(phases.items()):
        nodes[f"{name}-{i}"] = {"id": f"{name}-{i}", "displayName": task, "type": "Pod", "phase": phase,
                                "startedAt": "2026-11-30T10:00:00Z", **({"message": messages[task]} if task in (messages or {}) else {}),
                                **({"finishedAt": "2026-11-30T10:00:09Z"} if phase in ("Succeeded", "Failed") else {})}
    wf["status"] = {"phase": workflow_phase, "startedAt": "2026-11-30T10:00:00Z", "nodes": nodes,
                    **({"finishedAt": "2026-11-30T10:01:00Z"} if workflow_phase in ("Succeeded", "Failed") else {})}


def reads_of(kube, name) -> int:
    return sum(1 for m, p, q in kube.requests if m == "GET" and p.endswith(f"/workflows/{name}"))


def test_first_run_with_no_flags_submits_to_argo_and_says_why(tmp_path, pki, kube):
    pod = make_pod(tmp_path, pki, kube.port)
    r = pod.run("run", "analysis.ipynb")
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert lines[0] == ("nb2flow: submitting to Argo Workflows: this is a pod with a service account "
                        "(--local, or backend: local in nb2flow.yaml, runs here instead)")
    name = r.stdout.strip()
    assert f"workflow {name} submitted in namespace {NAMESPACE}" in r.stderr
    wf = workflows(kube)[name]
    paths = [(m, p) for m, p, q in kube.requests]
    assert ("GET", f"/api/v1/namespaces/{NAMESPACE}/pods/{JH_POD}") in paths  # its own Pod, by HOSTNAME and the namespace file
    assert next(q for m, p, q in kube.requests if m == "POST" and p.endswith("/workflows")).get("fieldValidation") == "Strict"
    assert wf["spec"]["templates"][1]["container"]["workingDir"] == "/home/jovyan"
    assert "c0ffee00" not in json.dumps(wf)  # the pod's JUPYTERHUB_API_TOKEN stays in the pod
    assert (pod.home / ".nb2flow" / "bundles").is_dir()  # step files on the home volume the step pods mount


@pytest.mark.slow  # CI runs it (pytest -m slow)
def test_watch_follows_a_step_that_waits_unschedulable_then_runs_then_fails(tmp_path, pki, kube):
    pod = make_pod(tmp_path, pki, kube.port)
    proc = pod.popen("run", "analysis.ipynb", "--watch", "--no-progress")
    wait_for(lambda: workflows(kube) or proc.poll() is not None)  # the first state may reach its first read too
    assert workflows(kube), proc.communicate()[1]
    name = next(iter(workflows(kube)))
    why = "Unschedulable: 0/5 nodes are available: 5 Insufficient nvidia.com/gpu."
    for phases, wf_phase, messages in [
        ({"load": "Pending"}, "Running", {"load": why}),
        ({"load": "Running"}, "Running", None),
        ({"load": "Succeeded", "clean": "Failed"}, "Failed", {"clean": "cell 7 (step:clean): KeyError: 'label'"}),
    ]:
        seen = reads_of(kube, name)
        set_phases(kube, name, phases, wf_phase, messages)
        wait_for(lambda: reads_of(kube, name) > seen or proc.poll() is not None)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert f"load: waiting: {why}" in err
    assert "load: running" in err
    assert "clean: failed: cell 7 (step:clean): KeyError: 'label'" in err
    assert err.strip().splitlines()[-1] == f"nb2flow: workflow {name} ended Failed (nb2flow logs {name})"


@pytest.mark.slow  # CI runs it (pytest -m slow)
def test_list_status_logs_schedule_and_rbac_need_no_flags_either(tmp_path, pki, kube):
    pod = make_pod(tmp_path, pki, kube.port)
    name = pod.run("run", "analysis.ipynb").stdout.strip()
    set_phases(kube, name, {"load": "Succeeded", "clean": "Running"})
    kube.add("pods", {"metadata": {"name": f"{name}-load-1", "namespace": NAMESPACE, "labels": {"workflows.argoproj.io/workflow": name},
                                   "annotations": {"workflows.argoproj.io/node-id": f"{name}-0", "workflows.argoproj.io/node-name": f"{name}.load"}}})
    kube.logs[(NAMESPACE, f"{name}-load-1")] = "loaded 150 rows\n"
    r = pod.run("list")
    assert r.returncode == 0 and any(line.startswith(name) and "argo running" in line for line in r.stdout.splitlines()), r.stdout + r.stderr
    r = pod.run("status", name)
    assert r.returncode == 0 and r.stdout.splitlines()[0] == f"workflow {name}: Running (namespace {NAMESPACE})", r.stderr
    r = pod.run("logs", name, "load")
    assert r.returncode == 0 and r.stdout == "loaded 150 rows\n", r.stderr
    r = pod.run("schedule", "analysis.ipynb", "--cron", "0 3 * * *")
    assert r.returncode == 0, r.stderr
    assert [k[2] for k in kube.objects if k[0] == "cronworkflows"] == [f"analysis-{OWNER}"]
    r = pod.run("rbac")
    assert r.returncode == 0, r.stderr
    assert r.stderr.startswith(f"nb2flow: the Role and RoleBinding for service account {NAMESPACE}/{ACCOUNT} (this pod's)")
    binding = [d for d in __import__("yaml").safe_load_all(r.stdout) if d["kind"] == "RoleBinding"][0]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": ACCOUNT, "namespace": NAMESPACE}]


def test_no_token_mounted_runs_here_and_says_how_an_admin_enables_argo(tmp_path, pki, kube):
    pod = make_pod(tmp_path, pki, kube.port, token=None)
    r = pod.run("run", "tiny.ipynb", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines()[0] == (
        "nb2flow: running on this machine: this pod has no service-account token (JupyterHub mounts none by default: "
        "an admin sets singleuser.serviceAccountName (and applies the Role `nb2flow rbac` prints))")
    r = pod.run("run", "tiny.ipynb", "--argo")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == (
        "nb2flow: no Kubernetes credentials in this pod: no service-account token is mounted at "
        "/var/run/secrets/kubernetes.io/serviceaccount (JupyterHub mounts none by default: an admin sets "
        "singleuser.serviceAccountName (and applies the Role `nb2flow rbac` prints); `nb2flow run --local` runs here meanwhile)")
    assert workflows(kube) == {}


def test_permission_denied_names_the_account_and_nb2flow_rbac(tmp_path, pki, kube):
    kube.fail.append(("POST", r"/workflows$", (403, f'workflows.argoproj.io is forbidden: User "system:serviceaccount:{NAMESPACE}:{ACCOUNT}" cannot create resource "workflows"')))
    r = make_pod(tmp_path, pki, kube.port).run("run", "analysis.ipynb")
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert re.match(r"nb2flow: creating Workflow analysis-[a-z0-9]{5}: permission denied in namespace jhub \(403\): ", last)
    assert last.endswith(f"(service account {NAMESPACE}/{ACCOUNT} needs the Role `nb2flow rbac` prints: an admin runs `nb2flow rbac | kubectl apply -f -`)")


def test_argo_not_installed(tmp_path, pki, kube):
    kube.argo_installed = False
    r = make_pod(tmp_path, pki, kube.port).run("run", "analysis.ipynb")
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert re.fullmatch(r"nb2flow: creating Workflow analysis-[a-z0-9]{5}: Argo Workflows is not installed in this cluster "
                        r"\(no workflows\.argoproj\.io resource\) \(install Argo Workflows, or run with --local\)", last)
    assert not list(tmp_path.rglob("run.json"))  # nothing was created: no record says otherwise


def test_api_server_out_of_reach_points_at_the_network_policy(tmp_path, pki):
    with socket.socket() as s:  # a port nobody listens on: what a network policy's dropped connection looks like
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = make_pod(tmp_path, pki, port).run("run", "analysis.ipynb")
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(f"nb2flow: cannot reach the Kubernetes API server at https://127.0.0.1:{port} (")
    assert last.endswith("(JupyterHub's network policy often blocks notebook pods from the API server: ask your admin to allow egress to it)")


def test_a_certificate_the_pods_ca_does_not_sign_is_named(tmp_path, pki):
    with start_server(pki, "other") as kube:
        r = make_pod(tmp_path, pki, kube.port).run("run", "analysis.ipynb")
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(f"nb2flow: the API server at https://127.0.0.1:{kube.port} presented a certificate that "
                           "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt does not vouch for (")
    assert "certificate verify failed" in last or "unable to get local issuer" in last
    assert kube.requests == []  # nothing was sent


@pytest.mark.slow  # CI runs it (pytest -m slow)
def test_backend_local_setting_keeps_runs_here_in_a_pod_with_credentials(tmp_path, pki, kube):
    pod = make_pod(tmp_path, pki, kube.port)
    (pod.home / "nb2flow.yaml").write_text("backend: local\n")
    r = pod.run("run", "tiny.ipynb", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines()[0] == "nb2flow: running on this machine (backend: local in nb2flow.yaml)"
    assert "b: done" in r.stderr and workflows(kube) == {}
    r = pod.run("run", "tiny.ipynb", "--argo")  # a flag still wins
    assert r.returncode == 0 and workflows(kube), r.stderr


def test_a_module_the_image_lacks_says_what_happened_and_the_fix(tmp_path, pki, kube):
    pod = make_pod(tmp_path, pki, kube.port, token=None)  # no token: the run goes here, in the pod
    write(pod.home / "missing.ipynb", cell("import nb2flow_surely_not_installed", "step:a"))
    r = pod.run("run", "missing.ipynb", "-q")
    assert r.returncode == 1
    assert ("ModuleNotFoundError: No module named 'nb2flow_surely_not_installed' (a step pod starts from the notebook's image:"
            " a package pip-installed into the running notebook server is not in it; install it under the home volume") in r.stderr


@pytest.mark.slow  # CI runs it (pytest -m slow)
def test_management_commands_act_on_your_own_objects_only(tmp_path, pki, kube):
    """Every user is in one namespace: stop, delete, unschedule and the schedule commands refuse another user's
    workflows and schedules (the owner label, against the user JupyterHub labelled this pod with) unless --force."""
    import copy

    pod = make_pod(tmp_path, pki, kube.port)
    mine = pod.run("run", "analysis.ipynb").stdout.strip()
    assert pod.run("schedule", "analysis.ipynb", "--cron", "0 3 * * *").returncode == 0
    theirs = copy.deepcopy(workflows(kube)[mine])
    theirs["metadata"].update(name="analysis-dana", labels={**theirs["metadata"]["labels"], "nb2flow.io/owner": "dana-lee"})
    kube.add("workflows", theirs)
    cron = copy.deepcopy(kube.objects[("cronworkflows", NAMESPACE, f"analysis-{OWNER}")])
    cron["metadata"].update(name="analysis-dana-lee", labels={**cron["metadata"]["labels"], "nb2flow.io/owner": "dana-lee"})
    kube.add("cronworkflows", cron)
    for args in (["stop", "analysis-dana"], ["delete", "analysis-dana"], ["unschedule", "analysis-dana-lee"],
                 ["schedules", "pause", "analysis-dana-lee"], ["schedules", "resume", "analysis-dana-lee"],
                 ["schedules", "trigger", "analysis-dana-lee"]):
        r = pod.run(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert "is made by dana-lee (you are ren-ito-example-org---3b9e1a2c); not going to" in r.stderr, r.stderr
    assert "shutdown" not in workflows(kube)["analysis-dana"]["spec"] and "suspend" not in cron["spec"]
    assert ("cronworkflows", NAMESPACE, "analysis-dana-lee") in kube.objects and len(workflows(kube)) == 2
    r = pod.run("stop", "analysis-dana", "--force")
    assert r.returncode == 0 and "stop workflow analysis-dana, made by dana-lee (--force)" in r.stderr
    assert pod.run("stop", mine).returncode == 0  # your own: no flag, no word
    assert workflows(kube)[mine]["spec"]["shutdown"] == "Stop"
    assert pod.run("schedules", "pause", f"analysis-{OWNER}").returncode == 0
