"""A pod-faithful replay of an Argo Workflow: each DAG task runs as its pod would run it.

Per task: Argo's substitution of ``{{…}}``; a private mount namespace (``unshare``) in which the
manifest's volumes are mounted at their mountPaths (a claim is a folder standing for the volume, an
emptyDir a fresh one per pod); the container's workingDir; exactly the env the container spec gives
plus what Kubernetes adds; the user, group and fsGroup from the securityContexts; stdout and stderr
kept as the pod log. The notebook's folder is reachable only through the mounted volume, so step
files written anywhere else are not found, as in a real pod.
"""

from __future__ import annotations

import graphlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

SUBST = re.compile(r"\{\{\s*([^}]+?)\s*\}\}")
SAFE_TO_COVER = ("/home", "/mnt", "/srv", "/opt", "/data", "/workspace")  # top folders a tmpfs may hide in the pod


@dataclass
class PodResult:
    task: str
    exit_code: int | None  # None: not run (a dependency failed)
    log: str = ""
    termination_message: str = ""  # what the container wrote to /dev/termination-log (Argo's node message)


def container_dev(scratch: Path) -> list:
    """Shell lines giving the pod its own /dev, as a container runtime does: a tmpfs with the usual
    device nodes, and the kubelet's /dev/termination-log file."""
    hold = scratch / "host-dev"
    lines = [f"mkdir -p {hold} && mount --rbind /dev {hold}", "mount -t tmpfs -o mode=755 tmpfs /dev"]
    for node in ("null", "zero", "full", "random", "urandom", "tty"):
        lines.append(f"touch /dev/{node} && mount --bind {hold}/{node} /dev/{node}")
    lines += ["mkdir -p /dev/shm /dev/pts", "ln -s /proc/self/fd /dev/fd", "ln -s /proc/self/fd/0 /dev/stdin",
              "ln -s /proc/self/fd/1 /dev/stdout", "ln -s /proc/self/fd/2 /dev/stderr",
              f"touch /dev/termination-log && mount --bind {scratch / 'termination-log'} /dev/termination-log"]
    return lines


def interpreter_mounts(stage: Path) -> list:
    """Shell lines that let the pod's user reach this interpreter, as an image's python is reachable:
    a folder on its way that only root may enter (a pyenv under /root, a private temp folder) is
    covered, in the pod only, by a world-readable tmpfs that holds just the interpreter's tree."""
    lines, done = [], set()
    for prefix in sorted({os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix)}):
        parts = Path(prefix).parts
        for i in range(1, len(parts) - 1):
            folder, child = Path(*parts[: i + 1]), Path(*parts[: i + 2])
            if folder.stat().st_mode & 0o001 or str(child) in done:
                continue
            hold = stage / f"hold-{len(done)}"
            lines += [f"mkdir -p {hold} && mount --bind {child} {hold}", f"mount -t tmpfs -o mode=755 tmpfs {folder}",
                      f"mkdir -p {child} && mount --move {hold} {child}"]
            done.add(str(child))
            break
    return lines


def interpreter_problem(uid: int, gid: int) -> str | None:
    """Why this interpreter cannot run as the pod's user even so (None when it can)."""
    stage = Path(tempfile.mkdtemp(prefix="nb2flow-probe-"))
    script = " && ".join(interpreter_mounts(stage) + ['exec "$@"'])
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", "env", "-i", "PATH=/usr/bin:/bin",
                        "setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", sys.executable, "-c", "import nb2flow"],
                       capture_output=True, text=True)
    subprocess.run(["rm", "-rf", str(stage)])
    return None if r.returncode == 0 else f"{sys.executable} cannot run as uid {uid}: {r.stderr.strip()[-200:]}"


def kubelet_fs_group(folder: Path, gid: int) -> None:
    """What the kubelet does with a pod's fsGroup: the volume's files in that group, group-writable, setgid dirs."""
    for path in [folder, *folder.rglob("*")]:
        os.chown(path, -1, gid, follow_symlinks=False)
        if path.is_dir() and not path.is_symlink():
            path.chmod(path.stat().st_mode | 0o2070)
        elif path.is_file():
            path.chmod(path.stat().st_mode | 0o060)


def _substitute(text: str, values: dict) -> str:
    def one(m):
        key = m.group(1)
        if key not in values:
            raise AssertionError(f"Argo cannot resolve {{{{{key}}}}}")
        return values[key]
    return SUBST.sub(one, text)


def run_pods(manifest: dict, claims: dict, *, name: str = "wf-replay", secrets: dict | None = None, timeout: float = 300,
             scheduled_time: str | None = None, stop_after: str | None = None) -> dict:
    """Replay the workflow's DAG, then its exit handler (``spec.onExit``, under the key ``"onExit"``) as Argo
    does whatever the outcome, with ``workflow.status`` and ``workflow.failures`` (failed nodes as Argo's
    operator.go lists them, the message being the container's termination message). ``claims`` maps a claim
    name to the folder standing for its volume; ``scheduled_time``: the run is one a CronWorkflow started;
    ``stop_after``: `argo stop` once that task ends (later tasks are not started). Returns task ->
    :class:`PodResult`. Independent tasks go on after a failure (``failFast: false``)."""
    spec = manifest["spec"]
    env_secret = next((e["valueFrom"]["secretKeyRef"]["name"] for t in manifest["spec"]["templates"]
                       for e in (t.get("container") or {}).get("env") or []
                       if (e.get("valueFrom") or {}).get("secretKeyRef", {}).get("key") == "NB2FLOW_KEY"), None)
    if env_secret and (env_secret, "NB2FLOW_KEY") not in (secrets or {}):
        from nb2flow.keys import user_key  # the key `nb2flow run --argo` puts in the run's Secret

        secrets = {**(secrets or {}), (env_secret, "NB2FLOW_KEY"): user_key().hex()}
    templates = {t["name"]: t for t in spec["templates"]}
    dag = templates[spec["entrypoint"]]["dag"]
    tasks = {t["name"]: t for t in dag["tasks"]}
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    globals_ = {"workflow.name": name, "workflow.namespace": manifest["metadata"].get("namespace", "default"),
                "workflow.uid": "00000000-0000-4000-8000-000000000000", "workflow.creationTimestamp": created}
    if scheduled_time:
        globals_["workflow.scheduledTime"] = scheduled_time
    globals_ |= {f"workflow.parameters.{p['name']}": p["value"] for p in (spec.get("arguments") or {}).get("parameters") or []}
    pod_security = spec.get("securityContext") or {}
    results: dict[str, PodResult] = {}
    failed = stopped = False
    for task_name in graphlib.TopologicalSorter({t: tasks[t].get("dependencies", []) for t in tasks}).static_order():
        task = tasks[task_name]
        if stopped or any(results[d].exit_code != 0 for d in task.get("dependencies", [])) or (failed and dag.get("failFast", True)):
            results[task_name] = PodResult(task_name, None)
            continue
        template = templates[task["template"]]
        values = dict(globals_) | {f"inputs.parameters.{p['name']}": p["value"] for p in (task.get("arguments") or {}).get("parameters") or []}
        results[task_name] = _run_pod(f"{name}-{task_name}", template["container"], spec.get("volumes") or [], claims,
                                      pod_security, values, secrets or {}, timeout, _automount(spec, template))
        failed = failed or results[task_name].exit_code != 0
        stopped = stopped or task_name == stop_after
    if spec.get("onExit"):
        failures = [{"displayName": t, "message": r.termination_message or f"Error (exit code {r.exit_code})",
                     "templateName": tasks[t]["template"], "phase": "Failed", "podName": f"{name}-{t}", "finishedAt": created}
                    for t, r in results.items() if r.exit_code not in (0, None)]
        if stopped:
            failures += [{"displayName": t, "message": "Stopped with strategy 'Stop'", "templateName": tasks[t]["template"],
                          "phase": "Failed", "podName": "", "finishedAt": created} for t, r in results.items() if r.exit_code is None]
        values = dict(globals_) | {"workflow.status": "Failed" if failures else "Succeeded", "workflow.failures": json.dumps(failures)}
        results["onExit"] = _run_pod(f"{name}-onexit", templates[spec["onExit"]]["container"], spec.get("volumes") or [], claims,
                                     pod_security, values, secrets or {}, timeout, _automount(spec, templates[spec["onExit"]]))
    return results


SA_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
REPLAY_TOKEN = "eyJhbGciOiJSUzI1NiJ9.replay-service-account-token.sig"


def _automount(spec: dict, template: dict) -> bool:
    """Whether Kubernetes mounts the service-account token in the main container: unless the template, else the
    workflow, says automountServiceAccountToken: false (Argo copies it to the pod; the executor's containers get
    the executor account's token on their own mounts, which the main container does not see)."""
    value = template.get("automountServiceAccountToken", spec.get("automountServiceAccountToken"))
    return value is not False


def _run_pod(pod_name, container, volumes, claims, pod_security, values, secrets, timeout, automount=True) -> PodResult:
    by_name = {v["name"]: v for v in volumes}
    scratch = Path(tempfile.mkdtemp(prefix="nb2flow-pod-"))
    os.chmod(scratch, 0o777)
    (scratch / "termination-log").touch()
    os.chmod(scratch / "termination-log", 0o666)  # writable by the container's user, as the kubelet makes it
    lines, covered = container_dev(scratch), set()
    if automount:  # the kubelet's projected token volume, at the path every client reads
        (scratch / "sa").mkdir()
        (scratch / "sa" / "token").write_text(REPLAY_TOKEN)
        os.chmod(scratch / "sa", 0o755)
        os.chmod(scratch / "sa" / "token", 0o644)
        real_run = os.path.realpath("/var/run")
        lines += [f"mount -t tmpfs -o mode=755 tmpfs {real_run}", f"mkdir -p {SA_PATH} && mount --bind {scratch / 'sa'} {SA_PATH}"]
    for m in sorted(container.get("volumeMounts") or [], key=lambda m: len(m["mountPath"])):
        volume = by_name[m["name"]]
        if "persistentVolumeClaim" in volume:
            source = claims[volume["persistentVolumeClaim"]["claimName"]]
        else:  # emptyDir (fresh per pod), and an nfs or configMap volume stands for an empty one here
            source = scratch / m["name"]
            source.mkdir(mode=0o777)
        target = m["mountPath"]
        if not os.path.exists(target):
            top = "/" + target.strip("/").split("/")[0]
            assert top in SAFE_TO_COVER, f"{target}: cannot make this mount point in a replay"
            if top not in covered:
                lines.append(f"mount -t tmpfs tmpfs {top}")
                covered.add(top)
        lines.append(f"mkdir -p {target} && mount --bind {source} {target}")
        if m.get("readOnly"):
            lines.append(f"mount -o remount,bind,ro {target}")
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin", "HOSTNAME": pod_name,
           "KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443", "HOME": "/home/jovyan"}
    for e in container.get("env") or []:
        if "value" in e:
            env[e["name"]] = _substitute(e["value"], values)
        elif "secretKeyRef" in (e.get("valueFrom") or {}):
            ref = e["valueFrom"]["secretKeyRef"]
            env[e["name"]] = secrets.get((ref["name"], ref["key"]), f"secret:{ref['name']}/{ref['key']}")
    security = container.get("securityContext") or {}
    uid = security.get("runAsUser", pod_security.get("runAsUser", 0))
    gid = security.get("runAsGroup", pod_security.get("runAsGroup", 0))
    groups = [str(pod_security["fsGroup"])] if "fsGroup" in pod_security else []
    command = [_substitute(a, values) for a in container["command"] + container.get("args", [])]
    assert command[0] in ("python3", "python"), command
    command[0] = sys.executable
    workdir = container.get("workingDir", "/")
    user = ["setpriv", f"--reuid={uid}", f"--regid={gid}", f"--groups={','.join(groups)}" if groups else "--clear-groups"]
    script = " && ".join(interpreter_mounts(scratch) + lines + [f"cd {workdir}", 'exec "$@"'])
    argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
            "env", "-i", *[f"{k}={v}" for k, v in env.items()], *user, *command]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        message = (scratch / "termination-log").read_text()
    finally:
        subprocess.run(["rm", "-rf", str(scratch)])
    return PodResult(pod_name, proc.returncode, proc.stdout + proc.stderr, message)


def manifest_from_yaml(text: str) -> dict:
    import yaml

    return json.loads(json.dumps(yaml.safe_load(text)))
