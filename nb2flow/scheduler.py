"""What a local run does next: a pure state machine of the steps, fed events, returning actions.

The executor (:mod:`nb2flow.local`) owns the processes; this module only decides. Events in —
a step's status says it succeeded, a step's process ended, the clock ticked, the user
interrupted — and actions out: :class:`Launch` a step's process (it starts its kernel and
set-up cells, then waits), :class:`Go` (its parents are done), :class:`Cancel` a launched step
that must not run, :class:`Stop` a running one (timeout, ``--fail-fast``, Ctrl-C), and
:class:`Notice` for the user. Time comes in with each event, so tests drive it with a fake clock.

Policy: a step is launched as soon as its parents have been launched (kernel start-up overlaps
their work), at most ``warm_ahead`` per job slot ahead; it gets *go* when every parent
succeeded, at most ``jobs`` running at once. A failed step is retried up to its ``retry:``;
then its descendants are skipped (or, with ``fail_fast``, every other step is stopped), while
independent steps finish.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .runner.protocol import StepState, step_error


@dataclass(frozen=True)
class Launch:
    step: str
    attempt: int


@dataclass(frozen=True)
class Go:
    step: str


@dataclass(frozen=True)
class Cancel:
    """A launched step that has not had go: it must exit without running its cells."""

    step: str


@dataclass(frozen=True)
class Stop:
    """A running step to stop now (kill its process and kernel)."""

    step: str


@dataclass(frozen=True)
class Notice:
    text: str


@dataclass(frozen=True)
class StepPlan:
    """What the scheduler needs to know of a step."""

    name: str
    parents: tuple = ()
    retry: int = 0
    timeout: float | None = None  # seconds
    timeout_text: str | None = None  # as tagged, for the message


@dataclass
class Track:
    """The scheduler's state of one step."""

    plan: StepPlan
    state: StepState = StepState.PENDING
    launched: bool = False  # its process exists (warming up, or running after go)
    go: bool = False
    attempt: int = 0
    started: float | None = None  # first launch
    go_time: float | None = None  # when its parents were all done
    ended: float | None = None
    error: dict | None = None
    reused: bool = False

    @property
    def warming(self) -> bool:
        return self.launched and not self.go and not self.state.finished


@dataclass
class Scheduler:
    plans: list
    jobs: int = 1
    warm_ahead: int = 2  # launched-but-waiting steps per job slot
    fail_fast: bool = False
    reused: frozenset = frozenset()
    tracks: dict = field(init=False)

    def __post_init__(self) -> None:
        self.tracks = {p.name: Track(p) for p in self.plans}
        for name in self.reused:
            self.tracks[name].state, self.tracks[name].reused = StepState.REUSED, True
        self._children: dict = {p.name: [] for p in self.plans}
        for p in self.plans:
            for parent in p.parents:
                self._children[parent].append(p.name)

    # ---------------------------------------------------------------- queries
    @property
    def done(self) -> bool:
        return all(t.state.finished for t in self.tracks.values())

    @property
    def ok(self) -> bool:
        return all(t.state.ok for t in self.tracks.values())

    def descendants(self, name: str) -> list:
        out, todo = [], list(self._children[name])
        while todo:
            child = todo.pop(0)
            if child not in out:
                out.append(child)
                todo.extend(self._children[child])
        return out

    def _parents_ok(self, t: Track) -> bool:
        return all(self.tracks[p].state.ok for p in t.plan.parents)

    def _parents_launched(self, t: Track) -> bool:
        return all(self.tracks[p].launched or self.tracks[p].state.ok for p in t.plan.parents)

    # ---------------------------------------------------------------- events
    def tick(self, now: float) -> list:
        """The clock moved: stop steps past their timeout, give go, launch what may start."""
        actions: list = []
        for t in self.tracks.values():
            timeout = t.plan.timeout
            if t.state is StepState.RUNNING and timeout and t.go_time is not None and now - t.go_time > timeout:
                actions.append(Stop(t.plan.name))
                t.error = step_error(None, "Timeout", f"the step ran longer than timeout:{t.plan.timeout_text or f'{timeout:g}s'}")
                actions += self._failed(t, StepState.TIMED_OUT, now)
        running = sum(1 for t in self.tracks.values() if t.state is StepState.RUNNING)
        for t in self.tracks.values():
            if running >= self.jobs:
                break
            if t.warming and self._parents_ok(t):
                actions += self._go(t, now)
                running += 1
        warming = sum(1 for t in self.tracks.values() if t.warming)
        for t in self.tracks.values():
            if t.state is not StepState.PENDING or t.launched or not self._parents_launched(t):
                continue
            if self._parents_ok(t):
                if running < self.jobs:
                    actions += self._launch(t, now) + self._go(t, now)
                    running += 1
            elif warming < self.warm_ahead * self.jobs:
                actions += self._launch(t, now)
                warming += 1
        return actions

    def succeeded(self, name: str, now: float, ended: float | None = None) -> list:
        """The step's values are saved (its process may still be writing its notebook)."""
        t = self.tracks[name]
        if t.state is StepState.RUNNING:
            t.state, t.ended = StepState.SUCCEEDED, ended or now
        return []

    def exited(self, name: str, now: float, outcome: StepState | None, error: dict | None = None) -> list:
        """The step's process ended; ``outcome`` is the state its status file gave (None if none)."""
        t = self.tracks[name]
        if t.state.finished:  # already succeeded (values saved), stopped or skipped
            return []
        if outcome is StepState.SUCCEEDED:
            t.state, t.ended = StepState.SUCCEEDED, t.ended or now
            return []
        if outcome is StepState.CANCELLED:
            t.state, t.ended = StepState.SKIPPED, now
            return []
        if outcome is StepState.INTERRUPTED:
            t.state, t.ended = StepState.INTERRUPTED, now
            return []
        t.error = error
        return self._failed(t, outcome if outcome is StepState.KERNEL_DIED else StepState.FAILED, now)

    def interrupt(self, now: float) -> list:
        """Ctrl-C: stop every launched step."""
        actions = []
        for t in self.tracks.values():
            if t.launched and not t.state.finished:
                actions.append(Stop(t.plan.name))
                t.state, t.ended = StepState.INTERRUPTED, now
        return actions

    # ---------------------------------------------------------------- transitions
    def _launch(self, t: Track, now: float) -> list:
        t.attempt += 1
        t.launched, t.go, t.go_time, t.ended, t.error = True, False, None, None, None
        t.started = now if t.started is None else t.started
        return [Launch(t.plan.name, t.attempt)]

    def _go(self, t: Track, now: float) -> list:
        t.go, t.go_time, t.state = True, now, StepState.RUNNING
        return [Go(t.plan.name)]

    def _failed(self, t: Track, state: StepState, now: float) -> list:
        retries = t.plan.retry or 0
        if t.attempt <= retries:
            t.state, t.launched, t.go = StepState.PENDING, False, False
            return [Notice(f"{t.plan.name}: {state.label}; trying again ({t.attempt + 1} of {retries + 1})")]
        t.state, t.ended, t.launched = state, now, False
        actions: list = []
        for name in self.descendants(t.plan.name):
            d = self.tracks[name]
            if d.state is StepState.PENDING:
                if d.launched:
                    actions.append(Cancel(name))
                d.state, d.launched = StepState.SKIPPED, False
                d.ended = now if d.started is not None else None
        if self.fail_fast:
            for other in self.tracks.values():
                if other.state is StepState.RUNNING:
                    actions.append(Stop(other.plan.name))
                    other.state, other.ended, other.launched = StepState.CANCELLED, now, False
                elif other.state is StepState.PENDING:
                    if other.launched:
                        actions.append(Cancel(other.plan.name))
                    other.state, other.launched = StepState.SKIPPED, False
        return actions
