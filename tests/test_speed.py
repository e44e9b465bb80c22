"""What makes real notebooks fast split, and what must not change because of it: install lines made once per
run, the set-up's imports made once in the fork server (each step still a fresh process in every other way),
--reuse of unchanged steps, and where each step's time went."""

import json
import os
import sys
from pathlib import Path

import pytest

from helpers import nb2flow, only_run_dir, record
from nbutil import cell, write

from nb2flow.installs import install_of, split_installs


@pytest.mark.parametrize("line, tool, args", [
    ("%pip install -q scikit-learn==1.5.2", "pip", ("-q", "scikit-learn==1.5.2")),
    ("!pip install pandas 'numpy<3'", "pip", ("pandas", "numpy<3")),
    ("!python -m pip install --user seaborn", "pip", ("--user", "seaborn")),
    ("!{sys.executable} -m pip install xgboost", "pip", ("xgboost",)),
    ("%conda install -c conda-forge lightgbm", "conda", ("-c", "conda-forge", "lightgbm")),
    ("%pip install -q tqdm  # progress bars", "pip", ("-q", "tqdm")),
])
def test_install_lines_are_recognised(line, tool, args):
    found = install_of(line, 1)
    assert found is not None and (found.tool, found.args) == (tool, args)


@pytest.mark.parametrize("line", ["%pip install {package}", "!pip install $PKG", "!pip install x && rm -rf y",
                                  "%pip list", "print('pip install x')", "!pip install -r requirements.txt > log"])
def test_lines_that_do_more_than_install_fixed_packages_stay_in_the_cell(line):
    assert install_of(line, 1) is None


def test_install_lines_become_comments_so_line_numbers_stay():
    installs, rest = split_installs("%pip install -q tqdm\nimport tqdm\n!pip install rich", 3)
    assert [i.line for i in installs] == ["%pip install -q tqdm", "!pip install rich"]
    assert rest.splitlines()[1] == "import tqdm" and len(rest.splitlines()) == 3
    assert split_installs("x = 1\npip install tqdm", 3)[0] == []  # automagic only on a one-line cell, as IPython


def _fake_pip(folder: Path) -> Path:
    """A `python` for the steps whose `-m pip` counts its calls (steps run with --python it)."""
    log = folder / "pip-calls.txt"
    wrapper = folder / "python"
    wrapper.write_text(f"""#!{sys.executable}
import os, sys
if sys.argv[1:3] == ["-m", "pip"]:
    open({str(log)!r}, "a").write(" ".join(sys.argv[3:]) + "\\n")
    print("Successfully installed " + sys.argv[-1])
    sys.exit(0)
os.execv({sys.executable!r}, [{sys.executable!r}] + sys.argv[1:])
""")
    wrapper.chmod(0o755)
    return log


@pytest.mark.slow  # CI runs it (pytest -m slow)
def test_install_lines_run_once_per_run_not_once_per_step(tmp_path):
    log = _fake_pip(tmp_path)
    write(tmp_path / "inst.ipynb", cell("%pip install made-up-package-xyz==1.0\nimport json"), cell("a = 1", "step:a"),
          cell("b = 2", "step:b"), cell("c = a + b", "step:c", "after:a", "after:b"))
    r = nb2flow("run", "inst.ipynb", "--no-progress", "--python", str(tmp_path / "python"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert log.read_text() == "install made-up-package-xyz==1.0\n"  # once, not three times
    assert "cell 1: `%pip install made-up-package-xyz==1.0` (once for every step)" in r.stderr
    rec = record(only_run_dir(tmp_path))
    assert rec["installs"][0]["line"] == "%pip install made-up-package-xyz==1.0" and rec["installs"][0]["exit_code"] == 0
    merged = json.loads(next(only_run_dir(tmp_path).glob("*.out.ipynb")).read_text())
    assert merged["cells"][0]["outputs"][0]["text"] == "Successfully installed made-up-package-xyz==1.0\n"
    assert merged["cells"][0]["source"] == "%pip install made-up-package-xyz==1.0\nimport json"  # the user's cell, as written


def test_an_install_already_satisfied_does_not_start_pip(tmp_path):
    log = _fake_pip(tmp_path)
    write(tmp_path / "sat.ipynb", cell("%pip install -q 'nbformat>=5'"), cell("a = 1", "step:a"))
    r = nb2flow("run", "sat.ipynb", "-q", "--python", str(tmp_path / "python"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert not log.exists()
    entry = record(only_run_dir(tmp_path))["installs"][0]
    assert entry["pip"] == "not run: every requirement is already satisfied"


def test_a_failing_install_names_its_cell_and_runs_no_step(tmp_path):
    write(tmp_path / "bad.ipynb", cell("import os"), cell("!pip install --no-index no-such-package-nb2flow-test"), cell("a = 1", "step:a"))
    r = nb2flow("run", "bad.ipynb", "-q", cwd=tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith(
        "nb2flow: bad.ipynb: cell 2: `!pip install --no-index no-such-package-nb2flow-test` failed (exit 1): ERROR:")
    rec = record(only_run_dir(tmp_path))
    assert rec["state"] == "failed" and rec["steps"]["a"]["state"] == "pending"


def test_warm_imports_keep_each_step_a_fresh_process(tmp_path):
    """numpy, pandas and matplotlib imported once in the fork server: steps still get their own random streams
    (numpy seeds its global generator at import), matplotlib's inline backend (as a kernel sets it before the
    notebook's code), and the notebook's own module, imported fresh by each step."""
    (tmp_path / "helper_mod.py").write_text("import os\nPID = os.getpid()\n")
    write(tmp_path / "warm.ipynb",
          cell("import numpy as np\nimport pandas as pd\nimport matplotlib.pyplot as plt\nimport helper_mod"),
          cell("import os\na = np.random.rand()\na_fresh = helper_mod.PID == os.getpid()", "step:a"),
          cell("b = np.random.rand()\nbackend = plt.get_backend()\nfig = plt.figure(); plt.plot([1, 2])", "step:b"),
          cell("import json\njson.dump({'same': a == b, 'fresh': a_fresh, 'backend': backend}, open('warm.json', 'w'))",
               "step:c", "after:a", "after:b"))
    r = nb2flow("run", "warm.ipynb", "-q", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    seen = json.loads((tmp_path / "warm.json").read_text())
    assert seen == {"same": False, "fresh": True, "backend": "module://matplotlib_inline.backend_inline"}
    warm = record(only_run_dir(tmp_path))["warm_imports"]
    assert warm["ok"] and warm["modules"] == ["numpy", "pandas", "matplotlib.pyplot"]  # not the notebook's own module
    merged = json.loads(next(only_run_dir(tmp_path).glob("*.out.ipynb")).read_text())
    assert any("image/png" in o.get("data", {}) for o in merged["cells"][2]["outputs"])  # the figure shows inline


def test_a_library_that_starts_a_thread_on_import_is_not_imported_ahead(tmp_path):
    site, work = tmp_path / "site", tmp_path / "work"  # an installed library, not a module beside the notebook
    site.mkdir()
    work.mkdir()
    (site / "threaded_lib.py").write_text(
        "import threading, time\nthreading.Thread(target=time.sleep, args=(30,), daemon=True, name='poller').start()\nX = 1\n")
    write(work / "th.ipynb", cell("import threaded_lib"), cell("a = threaded_lib.X", "step:a"))
    r = nb2flow("run", "th.ipynb", "-q", cwd=work, env=dict(os.environ, PYTHONPATH=str(site)))
    assert r.returncode == 0, r.stderr
    warm = record(only_run_dir(work))["warm_imports"]
    assert not warm["ok"] and "started threads (poller)" in warm["why"]


@pytest.mark.slow  # CI runs it (pytest -m slow)
def test_reuse_runs_only_changed_steps_and_says_from_which_run(tmp_path):
    nb = write(tmp_path / "re.ipynb", cell("x = 1", "step:a"), cell("y = x + 1", "step:b"), cell("z = y * 10\nprint(z)", "step:c"))
    assert nb2flow("run", "re.ipynb", "-q", cwd=tmp_path).returncode == 0
    first = only_run_dir(tmp_path).name
    doc = json.loads(Path(nb).read_text())
    doc["cells"][2]["source"] = "z = y * 100\nprint(z)"
    Path(nb).write_text(json.dumps(doc))
    r = nb2flow("run", "re.ipynb", "--reuse", "--no-progress", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"reusing a (from {first}), b (from {first}): unchanged cells, definitions, inputs and parameters" in r.stderr
    runs = sorted((tmp_path / ".nb2flow" / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
    rec = record(runs[-1])
    assert {n: (s["state"], s.get("reused_from")) for n, s in rec["steps"].items()} == {
        "a": ("reused", first), "b": ("reused", first), "c": ("succeeded", None)}
    merged = json.loads(next(runs[-1].glob("*.out.ipynb")).read_text())
    assert "".join(merged["cells"][2]["outputs"][0]["text"]) == "200\n"
    r = nb2flow("run", "re.ipynb", "--reuse", "-q", "-p", "unused", "1", cwd=tmp_path)
    assert r.returncode == 2  # parameters are checked as ever
    r = nb2flow("run", "re.ipynb", "-q", cwd=tmp_path)  # without --reuse, everything runs
    rec = record(max((tmp_path / ".nb2flow" / "runs").iterdir(), key=lambda p: p.stat().st_mtime))
    assert {s["state"] for s in rec["steps"].values()} == {"succeeded"}


@pytest.mark.slow  # CI runs it (pytest -m slow)
def test_each_step_says_where_its_time_went(tmp_path):
    write(tmp_path / "t.ipynb", cell("import os"), cell("x = 1", "step:a"), cell("y = x + 1", "step:b"))
    assert nb2flow("run", "t.ipynb", "-q", cwd=tmp_path).returncode == 0
    status = json.loads((only_run_dir(tmp_path) / "steps" / "b" / "status.json").read_text())
    assert set(status["timings"]) >= {"kernel", "setup", "wait", "load", "cells"}
    assert all(v >= 0 for v in status["timings"].values()) and status["timings"]["kernel"] > 0.01
