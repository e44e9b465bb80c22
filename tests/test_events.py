"""The event stream: a run's events as JSON lines (`--events json`) and through the Python API, the one
thing the magics and the scheduler backend read."""

import json
import re
from pathlib import Path

import pytest

from helpers import nb2flow
from nbutil import cell, write

import nb2flow as package


def events_of(stdout: str) -> list:
    lines = stdout.splitlines()
    assert lines and all(line.startswith("{") for line in lines), stdout  # stdout holds only events
    return [json.loads(line) for line in lines]


def test_a_run_says_what_happens_as_events(tmp_path):
    write(tmp_path / "e.ipynb", cell("x = 1", "step:a"), cell("y = x + 1", "step:b"), cell("z = y / 0", "step:c"))
    r = nb2flow("run", "e.ipynb", "--events", "json", cwd=tmp_path)
    assert r.returncode == 1
    events = events_of(r.stdout)
    assert {e["v"] for e in events} == {1} and all(isinstance(e["time"], float) for e in events)
    started = next(e for e in events if e["event"] == "run-started")
    assert started["backend"] == "local" and started["steps"] == ["a", "b", "c"] and Path(started["run_dir"]).is_dir()
    states = [(e["step"], e["state"]) for e in events if e["event"] == "step"]
    for step in "abc":  # each step goes through its states in order
        seen = [s for n, s in states if n == step]
        assert seen[0] == "pending" and seen[-1] == ("failed" if step == "c" else "succeeded")
    finished = next(e for e in events if e["event"] == "run-finished")
    assert finished["state"] == "failed" and finished["exit_status"] == 1 and finished["run_dir"] == started["run_dir"]
    assert Path(finished["visible_notebook"]).is_file()
    errors = [e for e in events if e["event"] == "error"]
    assert len(errors) == 1 and events.index(errors[0]) > events.index(finished)
    error = errors[0]
    assert error["kind"] == "StepFailed" and error["cell"] == 3 and error["step"] == "c"
    assert error["message"].startswith("e.ipynb: cell 3 (step:c): `z = y / 0`: ZeroDivisionError: division by zero")


def test_a_refused_notebook_names_each_problem_as_an_event(tmp_path):
    write(tmp_path / "bad.ipynb", cell("print(nope)", "step:a"), cell("print(also_nope)", "step:b"))
    r = nb2flow("run", "bad.ipynb", "--events", "json", cwd=tmp_path)
    assert r.returncode == 2
    events = events_of(r.stdout)
    problems = [e for e in events if e["event"] == "problem"]
    assert [(p["cell"], p["step"]) for p in problems] == [(1, "a"), (2, "b")] and "nope" in problems[0]["message"]
    assert [e["event"] for e in events if e["event"] in ("run-started", "run-finished")] == []
    assert [e["kind"] for e in events if e["event"] == "error"] == ["PipelineError"]


def test_the_python_api_hands_the_same_events_to_a_callback(tmp_path):
    from nb2flow.api import run
    from nb2flow.errors import StepFailed

    nb = write(tmp_path / "p.ipynb", cell("n = 1", "parameters"), cell("x = n * 2", "step:a"), cell("y = x + 1", "step:b"))
    seen = []
    result = run(nb, parameters={"n": 5}, on_event=seen.append)
    assert result.state == "succeeded" and result.result.state.value == "succeeded"
    assert [e["event"] for e in seen][0] == "run-started" and seen[-1]["event"] == "run-finished"
    assert seen[-1]["exit_status"] == 0 and seen[-1]["run_id"] == result.run_id
    bad = write(tmp_path / "q.ipynb", cell("x = 1", "step:a"), cell("1 / 0", "step:b"))
    seen.clear()
    with pytest.raises(StepFailed):
        run(bad, on_event=seen.append)
    assert [e["event"] for e in seen[-2:]] == ["run-finished", "error"] and seen[-1]["step"] == "b"


def test_no_consumer_reads_nb2flows_human_wording():
    """The magics and the scheduler backend read events: no regular expression over the CLI's sentences."""
    root = Path(package.__file__).parent
    for name in ("ipython.py", "jupyter_scheduler.py"):
        text = (root / name).read_text()
        assert "--events" in text
        assert not re.search(r"\bre\.(search|match|compile|findall)\(", text), name
