"""Showing a run as it goes: a live table on a terminal, plain lines elsewhere, or nothing.

All of it goes to stderr (stdout stays for data). The live view uses rich; plain lines
are used when stderr is not a terminal, with ``NO_COLOR`` or ``--no-progress``.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass

from .runner.protocol import StepState
from .runner.tracebacks import printable
from .runs import format_duration


@dataclass(frozen=True)
class StepView:
    name: str
    state: StepState
    cell: int | None = None
    first_line: str | None = None
    elapsed: float | None = None
    attempt: int = 1
    note: str | None = None


def make_reporter(kind="auto"):
    """``auto`` (live on a terminal, else plain), ``live``, ``plain`` or ``quiet``; a reporter object (e.g.
    :class:`EventReporter`) is used as it is."""
    if not isinstance(kind, str):
        return kind
    if kind == "quiet":
        return QuietReporter()
    if kind == "auto":
        kind = "live" if sys.stderr.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb" else "plain"
    return LiveReporter() if kind == "live" else PlainReporter()


def _describe(v: StepView) -> str:
    if v.state is StepState.RUNNING:
        where = f" cell {v.cell}" if v.cell else ""
        text = f"running{where}"
        if v.first_line and v.cell:
            text += f" `{v.first_line}`"
        return text
    text = v.state.label
    if v.note:
        text += f": {v.note}"
    return text


def summary_lines(views: list[StepView]) -> list[str]:
    width = max([len(v.name) for v in views] + [4])
    lines = [f"{'step':<{width}}  {'state':<11}  {'time':>8}  tries"]
    for v in views:
        shown = v.state.finished and v.state not in (StepState.SKIPPED, StepState.REUSED)
        lines.append(f"{v.name:<{width}}  {v.state.label:<11}  {format_duration(v.elapsed) if shown else '-':>8}  {v.attempt if shown else '-'}")
    return lines


class QuietReporter:
    started = False

    def start(self, run_id: str, run_dir: str, views: list[StepView]) -> None:
        self.started = True

    def update(self, views: list[StepView]) -> None:
        pass

    def finish(self, views: list[StepView]) -> None:
        pass

    def message(self, text: str) -> None:
        pass


class PlainReporter(QuietReporter):
    """One line per state change."""

    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stderr
        self.t0 = time.monotonic()
        self.last: dict[str, tuple] = {}

    def _print(self, text: str) -> None:
        print(f"[{time.monotonic() - self.t0:7.1f}s] {printable(text)}", file=self.stream, flush=True)

    def start(self, run_id, run_dir, views) -> None:
        self.started = True
        self.t0 = time.monotonic()
        self._print(f"run {run_id}: {len(views)} step{'s' if len(views) != 1 else ''}")
        for v in views:
            if v.state is StepState.REUSED:
                self._print(f"{v.name}: reused from the earlier run")
            if v.state in (StepState.PENDING, StepState.REUSED) and not v.note:
                self.last[v.name] = (v.state, v.attempt, v.note)  # nothing to say yet; anything else is said by update()

    def update(self, views) -> None:
        for v in views:
            key = (v.state, v.attempt, v.note)  # a new reason to wait is news too
            if self.last.get(v.name) != key:
                self.last[v.name] = key
                text = _describe(v)
                if v.state.finished and v.elapsed is not None and v.state is not StepState.SKIPPED:
                    text += f" ({format_duration(v.elapsed)})"
                if v.attempt > 1 and v.state is StepState.RUNNING:
                    text += f" (try {v.attempt})"
                self._print(f"{v.name}: {text}")

    def finish(self, views) -> None:
        print(printable("\n".join(summary_lines(views))), file=self.stream, flush=True)

    def message(self, text: str) -> None:
        self._print(text)


class LiveReporter(QuietReporter):
    """A rich table redrawn in place while the run goes on."""

    def __init__(self) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self.live = None
        self.t0 = time.monotonic()

    def _table(self, views):
        from rich.table import Table

        styles = {
            StepState.SUCCEEDED: "green", StepState.REUSED: "green", StepState.RUNNING: "cyan",
            StepState.FAILED: "bold red", StepState.KERNEL_DIED: "bold red", StepState.TIMED_OUT: "bold red",
            StepState.SKIPPED: "dim", StepState.PENDING: "dim", StepState.CANCELLED: "yellow", StepState.INTERRUPTED: "yellow",
        }
        table = Table(box=None, pad_edge=False, header_style="bold")
        table.add_column("step")
        table.add_column("state")
        table.add_column("time", justify="right")
        for v in views:
            elapsed = format_duration(v.elapsed) if v.elapsed is not None else ""
            attempt = f" (try {v.attempt})" if v.attempt > 1 else ""
            table.add_row(_escape(v.name), f"[{styles.get(v.state, '')}]{_escape(_describe(v))}{attempt}[/]", elapsed)
        return table

    def start(self, run_id, run_dir, views) -> None:
        from rich.live import Live

        self.started = True
        self.console.print(f"run [bold]{_escape(run_id)}[/]: {len(views)} step{'s' if len(views) != 1 else ''}")
        self.live = Live(self._table(views), console=self.console, refresh_per_second=8, transient=False)
        self.live.start()

    def update(self, views) -> None:
        if self.live is not None:
            self.live.update(self._table(views))

    def finish(self, views) -> None:
        if self.live is not None:
            self.live.update(self._table(views))
            self.live.stop()
            self.live = None

    def message(self, text: str) -> None:
        self.console.print(_escape(text))


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(printable(text))


class EventReporter(QuietReporter):
    """The run as events (see :mod:`nb2flow.events`) to ``sink`` (a callable taking one event): ``run-started``,
    a ``step`` event each time a step's state, try or note changes, ``message``."""

    def __init__(self, sink, backend: str = "local") -> None:
        self.sink = sink
        self.backend = backend
        self.run_id = None
        self.last: dict[str, tuple] = {}

    def start(self, run_id, run_dir, views) -> None:
        from .events import event

        self.started = True
        self.run_id = run_id
        self.sink(event("run-started", run_id=run_id, run_dir=os.path.abspath(run_dir) if self.backend == "local" else run_dir,
                        backend=self.backend, steps=[v.name for v in views]))
        self.update(views)

    def update(self, views) -> None:
        from .events import event

        for v in views:
            key = (v.state, v.attempt, v.note, v.cell)
            if self.last.get(v.name) == key:
                continue
            self.last[v.name] = key
            self.sink(event("step", run_id=self.run_id, step=v.name, state=v.state.value, attempt=v.attempt,
                            elapsed=None if v.elapsed is None else round(v.elapsed, 3), cell=v.cell,
                            note=printable(v.note) if v.note else None))

    def finish(self, views) -> None:
        self.update(views)

    def message(self, text: str) -> None:
        from .events import event

        self.sink(event("message", text=printable(text)))
