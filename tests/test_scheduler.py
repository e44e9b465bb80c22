"""The local run's scheduler as a pure state machine, driven by events and a fake clock."""

from nb2flow.runner.protocol import StepState
from nb2flow.scheduler import Cancel, Go, Launch, Notice, Scheduler, StepPlan, Stop

S = StepState


def plans(*specs):
    """StepPlan per (name, parents[, retry[, timeout]])."""
    return [StepPlan(s[0], tuple(s[1]), *(s[2:])) for s in specs]


def names(actions, kind):
    return [a.step for a in actions if isinstance(a, kind)]


def states(s):
    return {n: t.state for n, t in s.tracks.items()}


def test_children_launch_while_parents_run_and_get_go_when_parents_succeed():
    s = Scheduler(plans(("a", []), ("b", ["a"]), ("c", ["b"])), jobs=1, warm_ahead=1)
    assert s.tick(100.0) == [Launch("a", 1), Go("a"), Launch("b", 1)]  # b warms up; one warm step per job slot
    assert s.tick(100.1) == []
    assert states(s) == {"a": S.RUNNING, "b": S.PENDING, "c": S.PENDING}
    s.succeeded("a", 101.0)
    assert s.tick(101.0) == [Go("b"), Launch("c", 1)]
    assert s.tracks["b"].go_time == 101.0
    s.exited("a", 101.2, S.SUCCEEDED)
    s.succeeded("b", 102.0)
    assert s.tick(102.0) == [Go("c")]
    s.exited("c", 103.0, S.SUCCEEDED)
    s.exited("b", 103.0, S.SUCCEEDED)
    assert s.done and s.ok


def test_jobs_limit_how_many_run_and_warm_ahead_how_many_wait():
    s = Scheduler(plans(("root", []), *[(f"p{i}", ["root"]) for i in range(6)]), jobs=2, warm_ahead=1)
    s.tick(0)
    assert len(names(s.tick(0), Launch)) == 0  # root + 2 warming already (warm_ahead 1 x jobs 2)
    assert sum(t.warming for t in s.tracks.values()) == 2
    s.succeeded("root", 1)
    actions = s.tick(1)
    assert len(names(actions, Go)) == 2  # the two warm ones; the job slots are full
    assert sum(t.state is S.RUNNING for t in s.tracks.values()) == 2


def test_failed_step_skips_its_descendants_and_independent_steps_finish():
    s = Scheduler(plans(("a", []), ("b", ["a"]), ("c", ["a"]), ("d", ["b"])), jobs=4)
    s.tick(0)
    s.succeeded("a", 1)
    s.tick(1)
    assert [n for n, t in s.tracks.items() if t.warming] == ["d"]
    out = s.exited("b", 2, S.FAILED, {"cell": 3, "ename": "ZeroDivisionError"})
    assert names(out, Cancel) == ["d"]  # it warmed up: told to exit without running
    assert states(s)["d"] is S.SKIPPED and states(s)["b"] is S.FAILED
    assert states(s)["c"] is S.RUNNING  # not stopped
    s.exited("c", 3, S.SUCCEEDED)
    assert s.done and not s.ok
    assert s.tracks["b"].error == {"cell": 3, "ename": "ZeroDivisionError"}


def test_fail_fast_stops_running_steps_and_skips_the_rest():
    s = Scheduler(plans(("a", []), ("b", []), ("c", ["a"]), ("z", ["b"])), jobs=4, fail_fast=True)
    s.tick(0)
    out = s.exited("a", 1, S.FAILED, {})
    assert names(out, Stop) == ["b"]
    assert states(s) == {"a": S.FAILED, "b": S.CANCELLED, "c": S.SKIPPED, "z": S.SKIPPED}
    assert s.done


def test_retry_relaunches_until_the_limit():
    s = Scheduler(plans(("flaky", [], 2)), jobs=1)
    assert names(s.tick(0), Launch) == ["flaky"]
    out = s.exited("flaky", 1, S.FAILED, {"ename": "E"})
    assert [a.text for a in out if isinstance(a, Notice)] == ["flaky: failed; trying again (2 of 3)"]
    assert s.tick(1) == [Launch("flaky", 2), Go("flaky")]
    s.exited("flaky", 2, S.KERNEL_DIED, {"ename": "DeadKernelError"})
    assert s.tick(2) == [Launch("flaky", 3), Go("flaky")]
    s.exited("flaky", 3, S.FAILED, {"ename": "E"})
    assert s.tick(3) == []
    assert states(s) == {"flaky": S.FAILED} and s.tracks["flaky"].attempt == 3


def test_timeout_counts_from_go_and_stops_the_step():
    s = Scheduler(plans(("slow", [], 0, 5.0, "5s"), ("after", ["slow"])), jobs=2)
    s.tick(10.0)  # launched and go at t=10
    assert s.tick(14.9) == []
    out = s.tick(15.1)
    assert names(out, Stop) == ["slow"]
    assert states(s) == {"slow": S.TIMED_OUT, "after": S.SKIPPED}
    assert s.tracks["slow"].error["evalue"] == "the step ran longer than timeout:5s"
    assert s.exited("slow", 15.2, None, {}) == []  # the stopped process's end changes nothing


def test_timeout_with_retry_tries_again():
    s = Scheduler(plans(("slow", [], 1, 5.0, "5s")), jobs=1)
    s.tick(0)
    out = s.tick(6)
    assert [type(a) for a in out] == [Stop, Notice, Launch, Go]  # stopped, then tried again at once
    assert out[2] == Launch("slow", 2)
    s.exited("slow", 7, S.SUCCEEDED)
    assert s.ok


def test_reused_steps_are_not_launched_and_count_as_done_for_their_children():
    s = Scheduler(plans(("a", []), ("b", ["a"]), ("c", ["b"])), jobs=2, reused=frozenset({"a"}))
    assert states(s)["a"] is S.REUSED
    out = s.tick(0)
    assert out[:2] == [Launch("b", 1), Go("b")]
    assert "a" not in names(out, Launch)


def test_a_process_that_dies_without_a_status_is_a_failure():
    s = Scheduler(plans(("a", []), ("b", ["a"])), jobs=1)
    s.tick(0)
    s.exited("a", 1, None, {"ename": "StepProcessDied"})
    assert states(s) == {"a": S.FAILED, "b": S.SKIPPED}


def test_interrupt_stops_every_launched_step():
    s = Scheduler(plans(("a", []), ("b", ["a"]), ("c", ["b"]), ("d", ["c"])), jobs=1, warm_ahead=1)
    s.tick(0)
    out = s.interrupt(1)
    assert sorted(names(out, Stop)) == ["a", "b"]
    assert states(s) == {"a": S.INTERRUPTED, "b": S.INTERRUPTED, "c": S.PENDING, "d": S.PENDING}


def test_cancelled_child_reports_skipped():
    s = Scheduler(plans(("a", []), ("b", ["a"])), jobs=2)
    s.tick(0)
    s.exited("b", 0.5, S.CANCELLED)
    assert states(s)["b"] is S.SKIPPED
