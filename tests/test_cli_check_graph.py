"""`nb2flow check` and `graph` as a user runs them: output lines, exit statuses, no tracebacks."""

import hashlib
import json
import os
import subprocess
import sys

import pytest

from helpers import SAMPLES
from nbutil import cell, md, write

NB2FLOW = [sys.executable, "-m", "nb2flow"]


def run(*args, cwd=None):
    env = dict(os.environ, NO_COLOR="1")
    return subprocess.run(NB2FLOW + list(args), capture_output=True, text=True, cwd=cwd, env=env, timeout=60)


@pytest.fixture
def broken(tmp_path):
    return write(
        tmp_path / "broken.ipynb",
        md("# title"),
        cell("data = [1, 2]", "step:a"),
        cell("model = sum(data)", "step:b"),
        cell("pred = model * 2", "step:c", "after:a"),
        cell("x = 1", "steps:d"),
    )


def test_check_reports_findings_and_exits_1(broken, tmp_path):
    before = hashlib.sha256(open(broken, "rb").read()).hexdigest()
    mtime = os.stat(broken).st_mtime_ns
    r = run("check", "broken.ipynb", cwd=tmp_path)
    assert r.returncode == 1
    assert r.stdout.splitlines() == [
        "broken.ipynb: cell 4, line 1 (step:c) `pred = model * 2`: error: `model` comes from step b (cell 3 assigns it), which does not run before step c (add after:b to step c)",
        "broken.ipynb: cell 5 (step:c) `x = 1`: warning: unknown tag 'steps:d' (did you mean 'step:d'?)",
    ]
    assert r.stderr.strip() == "broken.ipynb: 3 steps, 0 parameters: 1 error, 1 warning"
    assert hashlib.sha256(open(broken, "rb").read()).hexdigest() == before
    assert os.stat(broken).st_mtime_ns == mtime


def test_check_json(broken):
    r = run("check", "--json", broken)
    assert r.returncode == 1
    data = json.loads(r.stdout)
    assert data["ok"] is False
    assert [s["name"] for s in data["steps"]] == ["a", "b", "c"]
    assert data["steps"][1]["inputs"] == [{"name": "data", "from": "a", "kind": "data"}]
    assert data["steps"][0]["outputs"] == ["data"]
    assert data["findings"][0]["code"] == "not-an-ancestor"
    assert data["findings"][0]["cell"] == 4


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "nb2flow: missing.ipynb: no such file"),
        (b"{", "nb2flow: missing.ipynb: not valid JSON: Expecting property name enclosed in double quotes at line 1 column 2"),
        (b'{"nbformat": 9, "cells": []}', "nb2flow: missing.ipynb: unsupported nbformat 9.0 (nb2flow reads nbformat 3 and 4)"),
    ],
)
@pytest.mark.parametrize("command", ["check", "graph"])
def test_unreadable_input_exit_2_one_line(tmp_path, content, message, command):
    if content is not None:
        (tmp_path / "missing.ipynb").write_bytes(content)
    r = run(command, "missing.ipynb", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip() == message
    assert "Traceback" not in r.stderr and r.stdout == ""


def test_usage_error_exit_2():
    r = run("graph", "x.ipynb", "--format", "png")
    assert r.returncode == 2
    assert "Invalid value for '--format'" in r.stderr


def test_clean_sample_exits_0():
    r = run("check", str(SAMPLES / "analysis.ipynb"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout == ""
    assert r.stderr.strip().endswith("analysis.ipynb: 5 steps, 4 parameters: no problems")


def test_graph_text_mermaid_dot():
    nb = str(SAMPLES / "analysis.ipynb")
    text = run("graph", "--vars", nb)
    assert text.returncode == 0
    lines = text.stdout.splitlines()
    assert lines[0] == "analysis: 5 steps; level, step, cells, runs after"
    assert "train_forest" in lines[4] and "<- clean (X_train, y_train, X_test, y_test)" in lines[4]
    assert "(2 steps at this level may run in parallel)" in lines[5]
    mermaid = run("graph", "--format", "mermaid", "--vars", nb).stdout.splitlines()
    assert mermaid[0] == "flowchart TD"
    assert '    s0 -- "df" --> s1' in mermaid
    assert '    s3 -- "forest_accuracy" --> s4' in mermaid
    dot = run("graph", "--format", "dot", nb).stdout
    assert dot.startswith('digraph "analysis" {')
    assert '"clean" -> "train_logreg";' in dot and '"train_forest" -> "compare";' in dot


def test_help_and_check_do_not_import_heavy_modules():
    code = (
        "import sys\n"
        "from nb2flow.cli import main\n"
        "sys.argv = ['nb2flow', 'check', %r]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('kubernetes', 'papermill', 'nbconvert', 'nbclient', 'nbformat', 'rich', 'IPython') if m in sys.modules]\n"
        "print(heavy)\n"
    ) % str(SAMPLES / "linear.ipynb")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip().splitlines()[-1] == "[]"


def test_version_and_help():
    r = run("--help")
    assert r.returncode == 0 and "check" in r.stdout and "graph" in r.stdout
    assert run("--version").stdout.startswith("nb2flow, version ")


def test_console_script_installed():
    exe = os.path.join(os.path.dirname(sys.executable), "nb2flow")
    if not os.path.exists(exe):
        pytest.skip("console script not installed in this environment")
    r = subprocess.run([exe, "check", str(SAMPLES / "linear.ipynb")], capture_output=True, text=True)
    assert r.returncode == 0
