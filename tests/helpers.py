"""Helpers shared by the tests: running nb2flow, reading run folders, the probe notebooks."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from nbutil import cell

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_notebooks"
SHARED = ROOT.parent / "shared"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
NOTEBOOKS = Path(__file__).resolve().parent / "notebooks"  # notebooks written here, one style or behaviour each


BLOCKER = str(Path(__file__).resolve().parent / "blocker")


def nb2flow(*args, cwd, env=None, timeout=180):
    full_env = dict(os.environ, NO_COLOR="1")
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "nb2flow", *args], capture_output=True, text=True,
                          cwd=cwd, env=full_env, timeout=timeout)


def only_run_dir(folder) -> Path:
    runs = sorted(Path(folder, ".nb2flow", "runs").iterdir())
    assert len(runs) == 1, runs
    return runs[0]


def record(run_dir) -> dict:
    return json.loads(Path(run_dir, "run.json").read_text())


def digest(path) -> tuple:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest(), os.stat(path).st_mtime_ns


def probe_notebook(src: Path, dst: Path, names: list[str]) -> None:
    """A copy of ``src`` with a last step that pickles ``names`` to the file given by a parameter."""
    doc = json.loads(src.read_text())
    has_params = any("parameters" in c.get("metadata", {}).get("tags", []) or "pipeline-parameters" in c.get("metadata", {}).get("tags", []) for c in doc["cells"])
    body = "import pickle as _p\nwith open(probe_path, 'wb') as _fh:\n    _p.dump({%s}, _fh)\n" % ", ".join(f"{n!r}: _norm({n})" for n in names)
    norm = cell(
        "def _norm(v):\n"
        "    import pandas, numpy\n"
        "    if isinstance(v, (pandas.DataFrame, pandas.Series)):\n        return ('pandas', v.to_json())\n"
        "    if isinstance(v, numpy.ndarray):\n        return ('numpy', v.tolist())\n"
        "    if hasattr(v, 'get_params') and hasattr(v, 'predict'):\n        return ('model', repr(v), sorted(vars(v)))\n"
        "    return v\n", "setup")
    leaves = [c for c in doc["cells"] if any(t.startswith(("step:", "block:", "pipeline-metrics")) for t in c.get("metadata", {}).get("tags", []))]
    after_tags = []
    step_names = [t.split(":", 1)[1] for c in leaves for t in c["metadata"]["tags"] if t.startswith(("step:", "block:"))]
    uses_prev = any(t.startswith("prev:") for c in doc["cells"] for t in c.get("metadata", {}).get("tags", []))
    if uses_prev:
        after_tags = [f"prev:{n}" for n in step_names]
    probe = cell(body, "step:zz_probe", *after_tags)
    if has_params:
        # papermill injects after the parameters cell; probe_path is a parameter too
        for c in doc["cells"]:
            tags = c.get("metadata", {}).get("tags", [])
            if "parameters" in tags or "pipeline-parameters" in tags:
                c["source"] = "".join(c["source"]) + "\nprobe_path = 'probe.pkl'\n"
                if "parameters" not in tags:
                    tags.append("parameters")  # so papermill finds Kale's parameters cell too
        doc["cells"] = doc["cells"][:1] + [norm] + doc["cells"][1:] + [probe]
    else:
        doc["cells"] = [cell("probe_path = 'probe.pkl'", "parameters"), norm] + doc["cells"] + [probe]
    dst.write_text(json.dumps(doc))


def top_to_bottom(nb: Path, probe: Path, cwd: Path) -> dict:
    import pickle

    import papermill

    papermill.execute_notebook(str(nb), str(cwd / "papermill.out.ipynb"), parameters={"probe_path": str(probe)},
                               cwd=str(cwd), progress_bar=False, kernel_name="python3")
    return pickle.loads(probe.read_bytes())


def split_run(nb: Path, probe: Path, cwd: Path, *extra) -> dict:
    import pickle

    r = nb2flow("run", nb.name, "-r", "probe_path", str(probe), "-q", *extra, cwd=cwd)
    assert r.returncode == 0, r.stderr
    return pickle.loads(probe.read_bytes())


SAMPLE_NAMES = {
    "analysis.ipynb": ["df", "features", "X_train", "X_test", "y_train", "y_test", "logreg", "logreg_accuracy",
                       "forest", "forest_accuracy", "results", "best", "test_size", "n_estimators"],
    "linear.ipynb": ["count", "values", "scaled", "summary", "report"],
    "kale_pipeline.ipynb": ["data", "noisy_data", "mean", "spread", "SEED", "N"],
}


def processes_mentioning(text: str) -> list[str]:
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path("/proc", pid, "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd:
            out.append(f"{pid}: {cmd}")
    return out


def invoke(argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            from nb2flow.cli import main

            main(argv)
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def run_in_process(argv: list, *, cwd=None, env: dict | None = None) -> subprocess.CompletedProcess:
    """``nb2flow ARGV`` through its entry point in this process, in ``cwd`` with ``env`` changes (None unsets)."""
    saved_env = {k: os.environ.get(k) for k in env or {}}
    saved_cwd = os.getcwd()
    try:
        for k, v in (env or {}).items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if cwd:
            os.chdir(cwd)
        code, out, err = invoke(argv)
    finally:
        os.chdir(saved_cwd)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return subprocess.CompletedProcess(["nb2flow", *argv], code, out, err)


def wait_for(predicate, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


def step_status(run_dir, task):
    try:
        return json.loads((run_dir / "steps" / task / "status.json").read_text())
    except (OSError, ValueError):
        return {}


# ------------------------------------------------------------------ pod fixtures (tests/fixtures, the project's own)
JH_POD_FILE = FIXTURES / "jupyterhub-pod.json"
JH_POD = "jupyter-ren-ito-example-org---3b9e1a2c"
JH_CLAIM = "claim-ren-ito-example-org---3b9e1a2c"
JH_HOME_VOLUME = "volume-ren-ito-example-org---3b9e1a2c"
JH_NODE = "user-pool-8f2a1-node-q7m4z"
JH_TOKEN = "c0ffee00c0ffee00c0ffee00c0ffee00"
KF_POD_FILE = FIXTURES / "kubeflow-notebook-pod.json"


def jupyterhub_pod() -> dict:
    return json.loads(JH_POD_FILE.read_text())


def kubeflow_pod() -> dict:
    return json.loads(KF_POD_FILE.read_text())


def assert_gone(text: str, timeout: float = 5.0) -> None:
    """No process mentions ``text`` (a run folder) within ``timeout`` seconds (the kernel reaps its zombies)."""
    deadline = time.monotonic() + timeout
    while (left := processes_mentioning(text)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert left == [], left


@contextlib.contextmanager
def jupyter_server_running(tmp_path: Path, app: str = "jupyter_server", *args: str, extra_env: dict | None = None):
    """A real ``python -m APP`` (jupyter_server or jupyterlab) on 127.0.0.1 with jupyter-scheduler, serving
    ``tmp_path/root``, configured only by nb2flow's server-config file (read from the repository: an editable
    install has no data files; the wheel installs it into etc/jupyter). Yields (root, base URL, token)."""
    import secrets
    import signal
    import socket
    import subprocess
    import urllib.request

    root = tmp_path / "root"
    root.mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = secrets.token_hex(16)
    env = dict(os.environ, HOME=str(tmp_path), JUPYTER_CONFIG_DIR=str(tmp_path / "cfg"), JUPYTER_DATA_DIR=str(tmp_path / "data"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "rt"), NO_COLOR="1", JUPYTER_CONFIG_PATH=str(ROOT / "jupyter-config"))
    env.update(extra_env or {})
    env.pop("JPY_SESSION_NAME", None)
    env.pop("KUBERNETES_SERVICE_HOST", None)
    log = tmp_path / "server.log"
    proc = subprocess.Popen([sys.executable, "-m", app, f"--ServerApp.port={port}", "--ServerApp.ip=127.0.0.1",
                             f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--ServerApp.open_browser=False",
                             "--ServerApp.allow_root=True", f"--SchedulerApp.db_url=sqlite:///{tmp_path}/scheduler.sqlite", *args],
                            env=env, stdout=subprocess.DEVNULL, stderr=open(log, "w"), start_new_session=True,
                            cwd=root)  # jupyter-scheduler downloads a job's files to paths relative to the server's folder
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5).read()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise AssertionError(log.read_text()[-3000:])
            time.sleep(0.3)
    try:
        yield root, base, token
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def emit_manifest(notebook: Path, params: dict) -> dict:
    """The Workflow of ``notebook`` as exported for the Zero-to-JupyterHub pod fixture (the folder at /home/jovyan/work)."""
    import nb2flow
    from nb2flow.cluster import prepare, resolve_target
    from nb2flow.config import ClusterConfig

    pipeline = nb2flow.load(notebook)
    target = resolve_target(str(notebook), ClusterConfig(workdir="/home/jovyan/work"), pod_spec=str(JH_POD_FILE))
    return prepare(pipeline, target, params)[0]


def pod_replay_or_skip() -> None:
    """Skip, saying why, where the pod-faithful replay cannot run (no unshare, or an interpreter uid 1000 cannot run)."""
    import pytest
    from podreplay import interpreter_problem
    from podsim import unshare_problem

    problem = unshare_problem() or interpreter_problem(1000, 0)
    if problem:
        pytest.skip(f"no pod-faithful replay here: {problem}")
