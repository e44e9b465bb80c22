#!/usr/bin/env python3
"""nb2flow benchmarks: each case against a peer in the same run, alternating A B A B.

    python bench/run.py [--quick] [--runs N] [--only CASE ...] [--json FILE]

Inputs are generated into a temporary folder. Peers run from their own virtual
environments under bench/.venvs/ (created on first use from the package index); a peer
that cannot be installed is reported as skipped. Ratios, not absolute times, are what the
targets mean: the machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VENVS = HERE / ".venvs"
sys.path.insert(0, str(ROOT / "tests"))

from nbutil import cell, write  # noqa: E402


# ----------------------------------------------------------------------------- measuring


@dataclass
class Sample:
    wall: float
    maxrss_mb: float
    code: int


def run_once(cmd: list[str], cwd: Path, env: dict | None = None) -> Sample:
    """Wall time and peak RSS (the largest single process, children included once reaped)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{err[-2000:]}")
    return Sample(wall, usage.ru_maxrss / 1024, proc.returncode)


@dataclass
class CaseResult:
    case: str
    a_name: str
    b_name: str | None
    a: list = field(default_factory=list)  # wall seconds
    b: list = field(default_factory=list)
    a_rss: list = field(default_factory=list)
    b_rss: list = field(default_factory=list)
    target: str = ""
    note: str = ""
    skipped: str | None = None

    @property
    def a_median(self):
        return statistics.median(self.a) if self.a else None

    @property
    def b_median(self):
        return statistics.median(self.b) if self.b else None

    @property
    def ratio(self):
        pairs = [x / y for x, y in zip(self.a, self.b) if y]
        return statistics.median(pairs) if pairs else None

    def to_json(self):
        d = asdict(self)
        d.update(a_median=self.a_median, b_median=self.b_median, ratio=self.ratio)
        return d


def alternate(case: CaseResult, a_cmd, b_cmd, runs: int, cwd: Path, warmup: int = 1, a_env=None, b_env=None, a_measure=None, b_measure=None):
    """Run A and B in turn; ``*_measure`` can replace wall time with a figure read after the run.
    A command that fails marks the case skipped, with its error, instead of stopping the suite."""
    try:
        _alternate(case, a_cmd, b_cmd, runs, cwd, warmup, a_env, b_env, a_measure, b_measure)
    except RuntimeError as exc:
        case.skipped = str(exc).strip().splitlines()[0] + " ... " + str(exc).strip().splitlines()[-1]


def _alternate(case, a_cmd, b_cmd, runs, cwd, warmup, a_env, b_env, a_measure, b_measure):
    for i in range(warmup + runs):
        sa = run_once(a_cmd, cwd, a_env)
        va = a_measure() if a_measure else sa.wall
        if b_cmd is not None:
            sb = run_once(b_cmd, cwd, b_env)
            vb = b_measure() if b_measure else sb.wall
        if i < warmup:
            continue
        case.a.append(va)
        case.a_rss.append(sa.maxrss_mb)
        if b_cmd is not None:
            case.b.append(vb)
            case.b_rss.append(sb.maxrss_mb)


# ----------------------------------------------------------------------------- peers


def peer_python(name: str, packages: list[str]) -> str | None:
    """The interpreter of a virtual environment with ``packages``, created on first use."""
    venv = VENVS / name
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    if marker.exists() and marker.read_text() == " ".join(packages):
        return str(python)
    shutil.rmtree(venv, ignore_errors=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *packages], check=True, capture_output=True, timeout=1800)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        print(f"  peer {name}: cannot install {' '.join(packages)}: {getattr(exc, 'stderr', b'')[-500:]!r}", file=sys.stderr)
        return None
    marker.write_text(" ".join(packages))
    return str(python)


def nb2flow_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "nb2flow", *args]


def stop_warm_servers() -> None:
    """End the bench's warm servers (every environment's): the next run starts cold, as a user's first one does."""
    subprocess.run(nb2flow_cmd("server", "stop"), capture_output=True)


COLD = dict(os.environ, NB2FLOW_WARM_SERVER="off")  # a run that starts its own fork server, as without a warm server


# ----------------------------------------------------------------------------- inputs


def linear_notebook(path: Path, steps: int = 5) -> Path:
    cells = [cell("x0 = 0", "step:s0")]
    for i in range(1, steps):
        cells.append(cell(f"x{i} = x{i - 1} + 1", f"step:s{i}"))
    return Path(write(path, *cells))


def diamond_notebook(path: Path, sleep: float = 3.0) -> Path:
    return Path(write(
        path,
        cell("import time", "setup"),
        cell("a = 1", "step:a"),
        cell(f"time.sleep({sleep})\nb = a + 1", "step:b"),
        cell(f"time.sleep({sleep})\nc = a + 2", "step:c", "after:a"),
        cell("d = b + c", "step:d", "after:b", "after:c"),
    ))


def big_notebook(path: Path, cells_n: int = 1000, steps: int = 100) -> Path:
    per = cells_n // steps
    cells = [cell("import math\nimport os", "setup")]
    for s in range(steps):
        for j in range(per):
            tags = [f"step:s{s}"] if j == 0 else []
            parent = s - 1
            if j == 0 and s > 1 and s % 3 == 0:
                parent = s - 2  # every third step branches off, so some steps run in parallel
                tags.append(f"after:s{parent}")
            src = f"v{s}_{j} = {'v' + str(parent) + '_0' if s and j == 0 else j} + 1\n"
            src += f"def f{s}_{j}(x):\n    return math.sqrt(abs(x)) + v{s}_{j}\n" if j % 4 == 0 else f"w{s}_{j} = [i * {j} for i in range(3)]\n"
            cells.append(cell(src, *tags))
    return Path(write(path, *cells))


def transfer_notebook(path: Path, kind: str, size: int) -> Path:
    """Two steps passing one value; the imports sit in a setup cell, as in a real notebook,
    so the timed load does not include importing pandas (the raw baseline imports it first too)."""
    if kind == "numpy":
        make = f"value = np.ones({size} // 8, dtype=np.float64)"
    else:
        make = f"value = pd.DataFrame({{'a': np.arange({size}), 'b': np.arange({size}) * 0.5, 'c': np.arange({size}) % 7}})"
    return Path(write(path, cell("import numpy as np\nimport pandas as pd", "setup"), cell(make, "step:make"), cell("n = len(value)", "step:use")))


def raw_transfer_script(path: Path, kind: str, size: int) -> Path:
    """The baseline: save and load the same value with the library's own calls, timed inside.

    It writes a new file each run, as a pipeline run does (each run has its own folder):
    on this machine's filesystem, overwriting one file again and again is several times
    faster than writing a new one, which would flatter the baseline.
    """
    if kind == "numpy":
        body = f"""
import numpy as np, time, os
value = np.ones({size} // 8, dtype=np.float64)
name = f'raw-{{os.getpid()}}.npy'
t0 = time.perf_counter(); np.save(name, value); v = np.load(name); t = time.perf_counter() - t0
"""
    else:
        body = f"""
import numpy as np, pandas as pd, time, os
value = pd.DataFrame({{'a': np.arange({size}), 'b': np.arange({size}) * 0.5, 'c': np.arange({size}) % 7}})
name = f'raw-{{os.getpid()}}.pkl'
t0 = time.perf_counter(); value.to_pickle(name); v = pd.read_pickle(name); t = time.perf_counter() - t0
"""
    path.write_text(body + "os.unlink(name)\nopen('raw.time', 'w').write(str(t))\n")
    return path


def transfer_seconds(folder: Path) -> float:
    """Save-cell time of the producing step plus load-cell time of the consumer, from nbclient's timing."""
    from datetime import datetime

    run = max((folder / ".nb2flow" / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
    total = 0.0
    for task, role in (("make", "save"), ("use", "load")):
        nb = json.loads((run / "steps" / task / f"{task}.ipynb").read_text())
        for c in nb["cells"]:
            if c["metadata"].get("nb2flow", {}).get("role") == role:
                ex = c["metadata"]["execution"]
                start = datetime.fromisoformat(ex["iopub.execute_input"].replace("Z", "+00:00"))
                end = datetime.fromisoformat(ex["shell.execute_reply"].replace("Z", "+00:00"))
                total += (end - start).total_seconds()
    shutil.rmtree(folder / ".nb2flow", ignore_errors=True)
    return total


# ----------------------------------------------------------------------------- cases


def case_help(work: Path, runs: int, quick: bool) -> list[CaseResult]:
    out = []
    pm = peer_python("papermill", ["papermill", "ipykernel"])
    c = CaseResult("nb2flow --help vs papermill --help", "nb2flow", "papermill" if pm else None, target="--help <= 0.15 s")
    alternate(c, nb2flow_cmd("--help"), [pm, "-m", "papermill", "--help"] if pm else None, runs * 2, work)
    out.append(c)
    sample = ROOT / "sample_notebooks" / "analysis.ipynb"
    c = CaseResult("nb2flow check analysis.ipynb", "nb2flow", None, target="instant; no heavy imports")
    alternate(c, nb2flow_cmd("check", str(sample)), None, runs * 2, work)
    out.append(c)
    return out


def case_big(work: Path, runs: int, quick: bool) -> list[CaseResult]:
    nb = big_notebook(work / "big.ipynb")
    c = CaseResult("check a 1,000-cell, 100-step notebook", "nb2flow", None, target="<= 0.5 s whole process")
    alternate(c, nb2flow_cmd("check", str(nb)), None, runs, work)
    return [c]


def _vs_papermill(title: str, nb: Path, work: Path, runs: int, target: str) -> list[CaseResult]:
    """``nb2flow run`` against papermill executing the same notebook top to bottom."""
    c = CaseResult(title, "nb2flow", "papermill", target=target)
    pm = peer_python("papermill", ["papermill", "ipykernel"])
    if not pm:
        c.skipped = "papermill could not be installed"
        return [c]
    papermill = [pm, "-m", "papermill", str(nb), str(work / "pm-out.ipynb"), "--no-progress-bar", "-k", "python3"]
    alternate(c, nb2flow_cmd("run", str(nb), "-q"), papermill, runs, work)
    return [c]


def case_linear(work: Path, runs: int, quick: bool) -> list[CaseResult]:
    nb = linear_notebook(work / "linear5.ipynb")
    out = _vs_papermill("linear, 5 trivial steps: nb2flow run vs papermill", nb, work, runs, "<= 0.9x papermill")
    cold = CaseResult("linear, 5 trivial steps, without the warm server (NB2FLOW_WARM_SERVER=off): nb2flow vs papermill",
                      "nb2flow", "papermill", target="reported")
    pm = peer_python("papermill", ["papermill", "ipykernel"])
    if pm:
        papermill = [pm, "-m", "papermill", str(nb), str(work / "pm-out.ipynb"), "--no-progress-bar", "-k", "python3"]
        alternate(cold, nb2flow_cmd("run", str(nb), "-q"), papermill, runs, work, a_env=COLD)
    else:
        cold.skipped = "papermill could not be installed"
    return out + [cold]


def environments() -> dict:
    """The two environments users have, each with nb2flow and papermill: JupyterHub's (JupyterLab installed, whose
    dependencies make importing nbformat's schema checker slow) and a plain one. Created on first use."""
    nb2flow_pkg = f"{ROOT}[samples]"
    pythons = {"with JupyterLab": peer_python("env-jupyterlab", [nb2flow_pkg, "papermill", "jupyterlab>=4.1"]),
               "without JupyterLab": peer_python("env-plain", [nb2flow_pkg, "papermill"])}
    for python in filter(None, pythons.values()):  # this tree's nb2flow, not the one installed when the environment was made
        subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(ROOT)], check=True,
                       capture_output=True)
    return pythons


def case_environments(work: Path, runs: int, quick: bool) -> list[CaseResult]:
    """Linear and diamond against papermill in both environments, in one run (nb2flow and papermill from the same one)."""
    out = []
    for env_name, python in environments().items():
        for title, nb, target in (("linear, 5 trivial steps", linear_notebook(work / "linear5.ipynb"), "<= 0.9x papermill"),
                                  ("diamond a->(b,c)->d, 3 s branches", diamond_notebook(work / "diamond.ipynb"), "<= 0.5x papermill")):
            c = CaseResult(f"{title}, {env_name}: nb2flow vs papermill", "nb2flow", "papermill", target=target)
            if not python:
                c.skipped = f"the environment {env_name!r} could not be installed"
            else:
                papermill = [python, "-m", "papermill", str(nb), str(work / "pm-out.ipynb"), "--no-progress-bar", "-k", "python3"]
                alternate(c, [python, "-m", "nb2flow", "run", str(nb), "-q"], papermill, runs if "linear" in title else max(2, runs // 2),
                          work)
            out.append(c)
    return out


def case_diamond(work: Path, runs: int, quick: bool) -> list[CaseResult]:
    return _vs_papermill("diamond a->(b,c)->d, b and c sleep 3 s: nb2flow vs papermill", diamond_notebook(work / "diamond.ipynb"),
                         work, max(2, runs // 2), "<= 0.5x papermill")


def case_transfer(work: Path, runs: int, quick: bool) -> list[CaseResult]:
    out = []
    sizes = {"numpy": (100 if quick else 500) * 10**6, "pandas": (400_000 if quick else 2_000_000)}
    for kind, size in sizes.items():
        folder = work / f"transfer-{kind}"
        folder.mkdir()
        nb = transfer_notebook(folder / f"{kind}.ipynb", kind, size)
        script = raw_transfer_script(folder / "raw.py", kind, size)
        label = f"{size // 10**6} MB float64 array" if kind == "numpy" else f"{size:,}-row DataFrame"
        raw = "numpy.save+load" if kind == "numpy" else "to_pickle+read_pickle"
        c = CaseResult(f"pass a {label} between two steps vs {raw}", "nb2flow", raw, target="<= 2x raw",
                       note="save cell + load cell time, from the executed step notebooks")
        alternate(c, nb2flow_cmd("run", str(nb), "-q"), [sys.executable, str(script)], max(2, runs // 2), folder,
                  a_measure=lambda f=folder: transfer_seconds(f), b_measure=lambda f=folder: float((f / "raw.time").read_text()))
        out.append(c)
    return out


def realistic_notebook(path: Path, rows: int = 3000) -> Path:
    """A notebook shaped like the tagged notebooks people publish: an install cell, set-up imports of numpy,
    pandas, matplotlib and scikit-learn, load -> features -> four models in parallel -> report."""
    return Path(write(
        path,
        cell("%pip install -q scikit-learn"),
        cell("import numpy as np\nimport pandas as pd\nimport matplotlib.pyplot as plt\nfrom sklearn.model_selection import train_test_split\n"
             "from sklearn.linear_model import LogisticRegression\nfrom sklearn.ensemble import RandomForestClassifier, GradientBoostingClassifier\n"
             "from sklearn.svm import SVC\nfrom sklearn.metrics import accuracy_score"),
        cell(f"n_rows = {rows}\nseed = 0", "parameters"),
        cell("rng = np.random.default_rng(seed)\ndf = pd.DataFrame(rng.normal(size=(n_rows, 8)), columns=[f'x{i}' for i in range(8)])\n"
             "df['y'] = (df.x0 + df.x1 * df.x2 + rng.normal(scale=0.5, size=n_rows) > 0).astype(int)", "step:load"),
        cell("X = df.drop(columns='y').assign(x01=df.x0 * df.x1)\nX_train, X_test, y_train, y_test = train_test_split(X, df.y, random_state=seed)",
             "step:features"),
        cell("acc_logreg = accuracy_score(y_test, LogisticRegression(max_iter=500).fit(X_train, y_train).predict(X_test))", "step:logreg", "after:features"),
        cell("acc_forest = accuracy_score(y_test, RandomForestClassifier(n_estimators=60, random_state=seed).fit(X_train, y_train).predict(X_test))",
             "step:forest", "after:features"),
        cell("acc_boost = accuracy_score(y_test, GradientBoostingClassifier(n_estimators=60, random_state=seed).fit(X_train, y_train).predict(X_test))",
             "step:boost", "after:features"),
        cell("acc_svm = accuracy_score(y_test, SVC().fit(X_train, y_train).predict(X_test))", "step:svm", "after:features"),
        cell(REPORT_CELL, "step:report", "after:logreg", "after:forest", "after:boost", "after:svm"),
    ))


REPORT_CELL = ("scores = {'logreg': acc_logreg, 'forest': acc_forest, 'boost': acc_boost, 'svm': acc_svm}\n"
               "fig, ax = plt.subplots()\nax.bar(list(scores), list(scores.values()))\nprint(scores)")


def papermill_with_the_libraries() -> str | None:
    """An interpreter with papermill and the realistic notebook's libraries: this one when it has them (the
    same kernel nb2flow's steps use), else a peer environment."""
    probe = subprocess.run([sys.executable, "-c", "import papermill, sklearn, pandas, matplotlib"], capture_output=True)
    if probe.returncode == 0:
        return sys.executable
    return peer_python("papermill-sklearn", ["papermill", "ipykernel", "numpy", "pandas", "matplotlib", "scikit-learn"])


def case_realistic(work: Path, runs: int, quick: bool) -> list[CaseResult]:
    nb = realistic_notebook(work / "realistic.ipynb")
    c = CaseResult("realistic notebook (%pip cell, sklearn set-up, load -> features -> 4 models -> report): nb2flow vs papermill",
                   "nb2flow", "papermill", target="<= 0.8x papermill")
    pm = papermill_with_the_libraries()
    if not pm:
        c.skipped = "papermill with scikit-learn could not be installed"
        return [c]
    papermill = [pm, "-m", "papermill", str(nb), str(work / "pm-out.ipynb"), "--no-progress-bar", "-k", "python3"]
    alternate(c, nb2flow_cmd("run", str(nb), "-q"), papermill, runs, work)
    c.note = profile_note(work)
    return [c]


def case_incremental(work: Path, runs: int, quick: bool) -> list[CaseResult]:
    """A first run, then the last step's cell edited and `nb2flow run --reuse`: the re-run against the first run —
    a first run as a user's first one (no warm server yet: it starts and imports the set-up's libraries), and a first
    run of the notebook while the server is up with them."""
    nb = realistic_notebook(work / "incremental.ipynb")
    c = CaseResult("incremental: re-run after editing only the last step's cell (--reuse) vs the first run (no warm server yet)",
                   "re-run", "first run", target="<= 0.25x the first run")
    w = CaseResult("incremental: the same re-run vs a first run of the notebook with the warm server up", "re-run",
                   "first run, server up", target="reported")
    doc = json.loads(nb.read_text())
    for i in range(runs + 1):
        stop_warm_servers()
        shutil.rmtree(work / ".nb2flow", ignore_errors=True)
        doc["cells"][-1]["source"] = REPORT_CELL
        nb.write_text(json.dumps(doc))
        first = run_once(nb2flow_cmd("run", str(nb), "-q"), work)
        shutil.rmtree(work / ".nb2flow", ignore_errors=True)
        warm_first = run_once(nb2flow_cmd("run", str(nb), "-q"), work)
        doc["cells"][-1]["source"] = REPORT_CELL + f"\nprint('edit {i}')"
        nb.write_text(json.dumps(doc))
        again = run_once(nb2flow_cmd("run", str(nb), "-q", "--reuse"), work)
        if i:
            c.a.append(again.wall)
            c.b.append(first.wall)
            c.a_rss.append(again.maxrss_mb)
            c.b_rss.append(first.maxrss_mb)
            w.a.append(again.wall)
            w.b.append(warm_first.wall)
    c.note = "re-run: " + profile_note(work)
    return [c, w]


def profile_note(folder: Path) -> str:
    """Where the newest run's step time went (summed over steps): kernel start, set-up cells, waiting for parents,
    loading values, the steps' cells, saving values; and the run's one-off work (installs, warm imports)."""
    run = max((folder / ".nb2flow" / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
    record = json.loads((run / "run.json").read_text())
    totals: dict = {}
    for entry in record["steps"].values():
        if entry.get("reused"):
            continue
        status = json.loads((run / "steps" / entry["task"] / "status.json").read_text())
        for key, value in (status.get("timings") or {}).items():
            totals[key] = totals.get(key, 0.0) + value
    parts = [f"{k} {totals[k]:.2f}s" for k in ("kernel", "setup", "wait", "load", "cells", "save") if k in totals]
    once = []
    for inst in record.get("installs") or []:
        once.append(f"install {inst['seconds']:.2f}s" + (" (already satisfied, pip not run)" if inst.get("pip") else ""))
    warm = record.get("warm_imports") or {}
    if warm.get("kept"):
        once.append("set-up imports kept by the warm server")
    elif warm:
        once.append(f"warm imports {warm.get('seconds', 0):.2f}s" + ("" if warm.get("ok") else f" (declined: {warm.get('why')})"))
    ran = sum(1 for e in record["steps"].values() if not e.get("reused"))
    return f"profile of the last run, {ran} step(s) summed: " + ", ".join(parts) + ("; once per run: " + ", ".join(once) if once else "")


def kale_notebook(path: Path) -> Path:
    return Path(write(
        path,
        cell("import math", "imports"),
        cell("N = 10", "pipeline-parameters"),
        cell("data = [math.sqrt(i) for i in range(N)]", "step:load"),
        cell("total = sum(data)", "step:total", "prev:load"),
        cell("print(total)", "step:report", "prev:total"),
    ))


def explicit_settings(folder: Path) -> None:
    """nb2flow.yaml with explicit step-pod settings, so export needs no cluster and no pod dump."""
    (folder / "nb2flow.yaml").write_text(
        "image: quay.io/jupyter/scipy-notebook:2024-10-07\n"
        f"workdir: {folder}\n"
        "volumes: [{name: work, persistentVolumeClaim: {claimName: work}}]\n"
        f"volume_mounts: [{{name: work, mountPath: {folder}}}]\n"
    )


def case_kale(work: Path, runs: int, quick: bool) -> list[CaseResult]:
    nb = kale_notebook(work / "kale3.ipynb")
    explicit_settings(work)
    c = CaseResult("compile a Kale-tagged 3-step notebook: nb2flow export vs kale", "nb2flow", "kale", target=">= 10x faster than Kale")
    kale = peer_python("kale", ["kubeflow-kale==2.3.0"])
    if not kale:
        c.skipped = "kubeflow-kale could not be installed"
        return [c]
    kale_bin = str(Path(kale).parent / "kale")
    alternate(c, nb2flow_cmd("export", str(nb)), [kale_bin, "--nb", str(nb)], runs, work)
    c.note = "kale --nb compiles the notebook to a Kubeflow Pipelines package; nb2flow export writes the step files and prints the Workflow"
    return [c]


def ploomber_project(folder: Path, sleep: float = 3.0) -> Path:
    folder.mkdir(exist_ok=True)
    tasks = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}
    for name, ups in tasks.items():
        body = f"import time\ntime.sleep({sleep})\n" if name in ("b", "c") else ""
        body += "from pathlib import Path\nPath(product['data']).write_text('" + name + "')\n"
        (folder / f"{name}.py").write_text(
            "# %% tags=[\"parameters\"]\n"
            f"upstream = {ups if ups else None!r}\nproduct = None\n\n# %%\n" + body)
    lines = ["executor: parallel", "tasks:"]
    for name in tasks:
        lines += [f"  - source: {name}.py", "    product:", f"      nb: out/{name}.ipynb", f"      data: out/{name}.txt"]
    (folder / "pipeline.yaml").write_text("\n".join(lines) + "\n")
    return folder


def case_ploomber(work: Path, runs: int, quick: bool) -> list[CaseResult]:
    nb = diamond_notebook(work / "diamond.ipynb")
    project = ploomber_project(work / "ploomber")
    c = CaseResult("diamond, b and c sleep 3 s: nb2flow run vs Ploomber's parallel executor", "nb2flow", "ploomber", target="faster than Ploomber")
    ploomber = peer_python("ploomber", ["ploomber==0.23.3", "ipykernel"])
    if not ploomber:
        c.skipped = "ploomber could not be installed"
        return [c]
    cmd = [str(Path(ploomber).parent / "ploomber"), "build", "--entry-point", str(project / "pipeline.yaml"), "--force"]
    alternate(c, nb2flow_cmd("run", str(nb), "-q"), cmd, max(2, runs // 2), project,
              b_env=dict(os.environ, PLOOMBER_STATS_ENABLED="false"))
    return [c]


def case_memory(work: Path, runs: int, quick: bool) -> list[CaseResult]:
    n = 30 if quick else 100
    cells = [cell("import numpy as np", "setup"), cell("x0 = np.ones(10**6)", "step:s0")]
    cells += [cell(f"x{i} = x{i - 1} + 1", f"step:s{i}") for i in range(1, n)]
    nb = Path(write(work / f"steps{n}.ipynb", *cells))
    c = CaseResult(f"nb2flow run, {n} steps each passing an 8 MB array: peak memory", "nb2flow", None,
                   target="reported; no step's data held in the parent process",
                   note="peak RSS is the largest single process: the parent never loads step values")
    alternate(c, nb2flow_cmd("run", str(nb), "-q"), None, 1, work, warmup=0)
    return [c]


def case_manifest(work: Path, runs: int, quick: bool) -> list[CaseResult]:
    """Manifest bytes for 10, 100 and 1,000 linear steps (size, not time)."""
    explicit_settings(work)
    c = CaseResult("manifest size (YAML bytes) for 10 / 100 / 1,000 steps", "nb2flow", None,
                   target="1,000 steps < 1 MiB, linear growth")
    sizes = {}
    for n in (10, 100, 1000):
        cells = [cell("x0 = 0", "step:s0")] + [cell(f"x{i} = x{i - 1} + 1", f"step:s{i}") for i in range(1, n)]
        nb = write(work / f"m{n}.ipynb", *cells)
        out = subprocess.run(nb2flow_cmd("export", str(nb)), cwd=work, capture_output=True, check=True).stdout
        sizes[n] = len(out)
    c.note = ", ".join(f"{n} steps: {b:,} bytes" for n, b in sizes.items()) + f"; {(sizes[1000] - sizes[100]) / 900:.0f} bytes per step"
    c.a = [float(sizes[1000])]
    return [c]


def case_export(work: Path, runs: int, quick: bool) -> list[CaseResult]:
    """``nb2flow export`` of the 1,000-cell, 100-step notebook (whole process), and of one ten times its size."""
    explicit_settings(work)
    out = []
    for cells_n, steps, target in ((1000, 100, "<= 0.3 s whole process"), (10000, 1000, "linear: about 10x the 1,000-cell figure")):
        nb = big_notebook(work / f"big{cells_n}.ipynb", cells_n, steps)
        c = CaseResult(f"export a {cells_n:,}-cell, {steps}-step notebook", "nb2flow", None, target=target)
        alternate(c, nb2flow_cmd("export", str(nb)), None, runs if cells_n == 1000 else max(1, runs // 2), work)
        out.append(c)
    if out[0].a and out[1].a:
        out[1].note = f"{out[1].a_median / out[0].a_median:.1f}x the 1,000-cell export for 10x the cells"
    return out


def _first_cell_seconds(cmd: list, stamp: Path, cwd: Path) -> float:
    """From starting ``cmd`` to the notebook's first cell writing the time into ``stamp``."""
    stamp.unlink(missing_ok=True)
    t0 = time.time()
    run_once(cmd, cwd)
    return float(stamp.read_text()) - t0


def case_first_cell(work: Path, runs: int, quick: bool) -> list[CaseResult]:
    """Time to first cell: from `nb2flow run` to the first step's first cell running, vs papermill to its first cell;
    with no warm server yet (a user's first run) and with one up."""
    stamp = work / "first.txt"
    nb = Path(write(work / "first.ipynb", cell(f"import time\nopen({str(stamp)!r}, 'w').write(repr(time.time()))", "step:first"),
                    cell("x = 1", "step:second")))
    cold = CaseResult("time to first cell, no warm server yet: nb2flow run vs papermill", "nb2flow", "papermill", target="<= 1.0x")
    warm = CaseResult("time to first cell, warm server up: nb2flow run vs papermill", "nb2flow", "papermill", target="<= 0.3x")
    pm = peer_python("papermill", ["papermill", "ipykernel"])
    if not pm:
        cold.skipped = warm.skipped = "papermill could not be installed"
        return [cold, warm]
    papermill = [pm, "-m", "papermill", str(nb), str(work / "pm-out.ipynb"), "--no-progress-bar", "-k", "python3"]
    for i in range(1 + runs):
        stop_warm_servers()
        a_cold = _first_cell_seconds(nb2flow_cmd("run", str(nb), "-q"), stamp, work)
        a_warm = _first_cell_seconds(nb2flow_cmd("run", str(nb), "-q"), stamp, work)
        b = _first_cell_seconds(papermill, stamp, work)
        if i:
            cold.a.append(a_cold)
            cold.b.append(b)
            warm.a.append(a_warm)
            warm.b.append(b)
    return [cold, warm]


def case_overhead(work: Path, runs: int, quick: bool) -> list[CaseResult]:
    """What a step costs beyond its cells: 100 trivial steps in a chain against 1, per step."""
    steps = 30 if quick else 100
    many, one = linear_notebook(work / f"linear{steps}.ipynb", steps), linear_notebook(work / "linear1.ipynb", 1)
    c = CaseResult(f"{steps} trivial steps in a chain vs 1 step: nb2flow run", f"{steps} steps", "1 step",
                   target="<= 50 ms a step")
    alternate(c, nb2flow_cmd("run", str(many), "-q"), nb2flow_cmd("run", str(one), "-q"), max(2, runs // 2), work)
    if c.a and c.b:
        c.note = f"{(c.a_median - c.b_median) / (steps - 1) * 1000:.0f} ms a step; " + profile_note(work)
    return [c]


def case_commands(work: Path, runs: int, quick: bool) -> list[CaseResult]:
    """A pipeline of five scripts (JupyterFlow's kind): `nb2flow run -c "python s1.py >> ..."` vs running them by hand."""
    names = [f"s{i}.py" for i in range(1, 6)]
    for n in names:
        (work / n).write_text(f"print({n!r})\n")
    chain = " >> ".join(f"python {n}" for n in names)
    c = CaseResult("five scripts: nb2flow run -c \"python s1.py >> ...\" vs the same commands in sh", "nb2flow", "sh",
                   target="reported")
    alternate(c, nb2flow_cmd("run", "-c", chain, "-q"), ["sh", "-c", " && ".join(f"{sys.executable} {n}" for n in names)],
              runs, work, a_env=dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"))
    return [c]


CASES = {"manifest": case_manifest, "help": case_help, "big": case_big, "export": case_export, "linear": case_linear,
         "environments": case_environments,
         "diamond": case_diamond, "first-cell": case_first_cell, "overhead": case_overhead, "commands": case_commands,
         "realistic": case_realistic, "incremental": case_incremental, "transfer": case_transfer,
         "kale": case_kale, "ploomber": case_ploomber, "memory": case_memory}


def fmt(v, unit="s"):
    return "-" if v is None else (f"{v:.3f}{unit}" if unit == "s" else f"{v:.0f}{unit}")


def _cases(args, runs: int, tmp: str, results: list) -> None:
    for name in args.only or list(CASES):
        work = Path(tmp) / name
        work.mkdir()
        for c in CASES[name](work, runs, args.quick):
            results.append(c)
            if c.skipped:
                print(f"\n{c.case}: skipped ({c.skipped})")
                continue
            print(f"\n{c.case}   [target: {c.target}]")
            if c.a:
                print(f"  {c.a_name:<24} median {fmt(c.a_median)}   peak RSS {fmt(max(c.a_rss) if c.a_rss else None, ' MB')}")
            if c.b_name and c.b:
                print(f"  {c.b_name:<24} median {fmt(c.b_median)}   peak RSS {fmt(max(c.b_rss) if c.b_rss else None, ' MB')}")
                print(f"  ratio nb2flow/{c.b_name}: {c.ratio:.2f}x (median of pairwise ratios)")
            if c.note:
                print(f"  ({c.note})")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer runs and smaller inputs (about two minutes)")
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--only", nargs="*", choices=sorted(CASES), default=None)
    parser.add_argument("--json", default=str(HERE / "results" / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"))
    args = parser.parse_args(argv)
    runs = args.runs or (3 if args.quick else 5)
    results: list[CaseResult] = []
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; {runs} runs per case after a warm-up")
    runtime = tempfile.mkdtemp(prefix="nb2flow-rt-", dir="/tmp")  # the bench's own warm servers (a short socket path)
    os.environ["XDG_RUNTIME_DIR"] = runtime
    with tempfile.TemporaryDirectory(prefix="nb2flow-bench-") as tmp:
        try:
            _cases(args, runs, tmp, results)
        finally:
            stop_warm_servers()
            shutil.rmtree(runtime, ignore_errors=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "when": time.time(), "runs": runs, "quick": args.quick, "cases": [c.to_json() for c in results],
    }, indent=2))
    print(f"\nresults written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
