"""nb2flow's exceptions and exit statuses: one table, one base class.

Every error a user can cause is an :class:`Nb2flowError` that renders as one line,
``analysis.ipynb: cell 7 (step:train): <message> (<hint>)``; the CLI prints that line
and exits with the error's status, never a traceback.
"""

from __future__ import annotations

import enum


class ExitStatus(enum.IntEnum):
    """Process exit statuses of the ``nb2flow`` command (documented in the README)."""

    OK = 0
    #: ``check`` found problems, or a step's code raised during ``run``.
    FAILED = 1
    #: The input could not be used: missing file, not a notebook, bad usage or parameters.
    BAD_INPUT = 2
    #: A step's kernel died (out of memory, segfault, killed).
    KERNEL_DIED = 3
    #: The run was interrupted (Ctrl-C, SIGTERM).
    INTERRUPTED = 130
    #: A bug in nb2flow itself.
    INTERNAL = 70


class Nb2flowError(Exception):
    """Base class: a user-facing error with where it happened and how to fix it."""

    status: ExitStatus = ExitStatus.BAD_INPUT

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        cell: int | None = None,
        step: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.cell = cell
        self.step = step
        self.hint = hint

    def __reduce__(self):  # survive pickling across process boundaries
        return (_rebuild, (type(self), self.message, self.path, self.cell, self.step, self.hint))

    def __str__(self) -> str:
        return self.render()

    def render(self) -> str:
        """The one-line form: ``path: cell N (step:x): message (hint)``."""
        where = []
        if self.path:
            where.append(self.path)
        if self.cell is not None:
            where.append(f"cell {self.cell}" + (f" (step:{self.step})" if self.step else ""))
        elif self.step:
            where.append(f"step {self.step}")
        text = ": ".join(where + [self.message]) if where else self.message
        if self.hint:
            text += f" ({self.hint})"
        return " ".join(text.split("\n")) if "\n" in text else text


def _rebuild(cls, message, path, cell, step, hint):
    return cls(message, path=path, cell=cell, step=step, hint=hint)


class NotebookReadError(Nb2flowError):
    """The notebook file is missing, unreadable, not JSON or not a notebook."""


class UsageError(Nb2flowError):
    """Bad command-line usage or configuration."""


class ParameterError(Nb2flowError):
    """A parameter override is unknown or cannot be parsed."""


class PipelineError(Nb2flowError):
    """The notebook has problems that stop it from being split into steps (bad input)."""


class StepFailed(Nb2flowError):
    """A step's code raised."""

    status = ExitStatus.FAILED


class KernelDied(Nb2flowError):
    """A step's kernel died."""

    status = ExitStatus.KERNEL_DIED


class RunInterrupted(Nb2flowError):
    """The run was interrupted by the user."""

    status = ExitStatus.INTERRUPTED
