"""The event stream: what a run says to whatever watches it, as data.

``nb2flow run --events json`` writes one JSON object per line on stdout (human lines stay on
stderr); :func:`nb2flow.api.run` hands the same objects to a callback. The magics and the
JupyterLab scheduler backend read these, never nb2flow's human wording. Every event has ``v``
(the format's version), ``event`` and ``time`` (Unix seconds); the rest by event:

=================  ===========================================================================
``run-started``    ``run_id``, ``run_dir`` (absolute), ``backend`` (``local``/``argo``), ``steps``
``step``           ``run_id``, ``step``, ``state`` (a step state: ``pending``, ``running``,
                   ``succeeded``, ``failed``, …), ``attempt``, ``elapsed``, ``cell``, ``note``
``message``        ``text``: a line nb2flow says to people (warnings, what it does)
``problem``        ``path``, ``cell``, ``step``, ``severity``, ``message``: a finding that stops a run
``submitted``      ``workflow``, ``namespace``, ``run_dir``: an Argo run was created
``run-finished``   ``run_id``, ``run_dir``, ``state`` (the run's), ``output_notebook``,
                   ``visible_notebook`` (absolute paths or null), ``exit_status``
``error``          ``message`` (the one line), ``path``, ``cell``, ``step``, ``hint``, ``kind``,
                   ``code`` (a stable name of the cause, or null: ``no-pod-settings``), ``exit_status``
=================  ===========================================================================

New fields may be added within a version; a consumer ignores what it does not know.
"""

from __future__ import annotations

import json
import time

VERSION = 1
NAMES = ("run-started", "step", "message", "problem", "submitted", "run-finished", "error")


def event(name: str, **fields) -> dict:
    if name not in NAMES:
        raise ValueError(f"unknown event {name!r}")
    return {"v": VERSION, "event": name, "time": round(time.time(), 3), **fields}


class JsonLines:
    """A sink writing each event as one JSON line (``--events json``)."""

    def __init__(self, stream) -> None:
        self.stream = stream

    def __call__(self, ev: dict) -> None:
        self.stream.write(json.dumps(ev, ensure_ascii=False, default=str) + "\n")
        self.stream.flush()


def read_events(lines):
    """The events among ``lines`` (text lines of ``--events json`` output); other lines are skipped."""
    for line in lines:
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if isinstance(ev, dict) and "event" in ev:
            yield ev


def run_finished(outcome) -> dict:
    """The ``run-finished`` event of a backend's :class:`~nb2flow.backends.Outcome` (whose paths are absolute)."""
    return event("run-finished", run_id=outcome.run_id, run_dir=outcome.run_dir, state=outcome.state,
                 output_notebook=outcome.output_notebook, visible_notebook=outcome.visible_notebook,
                 exit_status=outcome.exit_status)


def problem(path: str, finding) -> dict:
    """The ``problem`` event of a finding that stops a run."""
    return event("problem", path=str(path), cell=finding.cell, step=finding.step, severity=finding.severity.value,
                 message=finding.message)


def error(exc) -> dict:
    """The ``error`` event of the :class:`~nb2flow.errors.Nb2flowError` that ended the command."""
    from .runner.tracebacks import printable

    return event("error", message=printable(exc.render()), path=exc.path, cell=exc.cell, step=exc.step,
                 hint=exc.hint and printable(exc.hint), kind=type(exc).__name__, code=getattr(exc, "code", None),
                 exit_status=int(exc.status))
