"""The step's status file, ``RUN/steps/TASK/status.json``: what a watcher reads while it runs."""

from __future__ import annotations

import os
import time

from .files import write_json
from .protocol import RUNTIME_VERSION, StepState, check_status_keys, status_entry


class Status:
    """Keeps ``status.json`` current: state, stage, current cell and role, error."""

    def __init__(self, path: str, step: str, attempt: int) -> None:
        self.path = path
        self.data = status_entry(step, StepState.PENDING, stage="starting", attempt=attempt, pid=os.getpid(), started=time.time(),
                                 runtime_version=RUNTIME_VERSION)
        self.write()

    @property
    def state(self) -> StepState:
        return StepState(self.data["state"])

    def update(self, **fields) -> None:
        if isinstance(fields.get("state"), StepState):
            fields["state"] = fields["state"].value
        check_status_keys(fields)
        self.data.update(fields)
        self.write()

    def finish(self, state: StepState, **fields) -> None:
        """The step ended in ``state`` (a succeeded step has no current cell)."""
        if state is StepState.SUCCEEDED:
            fields.setdefault("cell", None)
        self.update(state=state, stage="ended", ended=time.time(), **fields)

    def write(self) -> None:
        try:
            write_json(self.path, self.data)
        except OSError:
            pass  # a full or read-only disk must not hide the step's own outcome
