"""nb2flow's exceptions and exit statuses: one table, one base class.

Every error a user can cause is an :class:`Nb2flowError` that renders as one line,
``analysis.ipynb: cell 7 (step:train): <message> (<hint>)``; the CLI prints that line
and exits with the error's status, never a traceback.
"""

from __future__ import annotations

from .runner.protocol import ExitStatus

__all__ = ["ExitStatus", "Nb2flowError", "NotebookReadError", "UsageError", "ParameterError", "PipelineError",
           "StepFailed", "KernelDied", "RunInterrupted", "ClusterError", "ClusterUnreachable", "ClusterDenied",
           "ClusterNotFound", "ClusterConflict", "ClusterStale", "ClusterRejected", "ClusterBusy", "ClusterBadAnswer"]


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
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.cell = cell
        self.step = step
        self.hint = hint
        self.code = code  # a stable name of the cause, for tools that follow a run (the ``error`` event's ``code``)

    def fields(self) -> dict:
        """The keyword arguments that rebuild this error (subclasses add theirs)."""
        return {"path": self.path, "cell": self.cell, "step": self.step, "hint": self.hint, "code": self.code}

    def __reduce__(self):  # survive pickling across process boundaries
        return (_rebuild, (type(self), self.message, self.fields()))

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


def _rebuild(cls, message, fields):
    return cls(message, **fields)


class NotebookReadError(Nb2flowError):
    """The notebook file is missing, unreadable, not JSON or not a notebook."""


class UsageError(Nb2flowError):
    """Bad command-line usage or configuration."""


class ParameterError(Nb2flowError):
    """A parameter override is unknown or cannot be parsed."""


class PipelineError(Nb2flowError):
    """The notebook has problems that stop it from being split into steps (bad input)."""


class StepFailed(Nb2flowError):
    """A step's code raised: the exception's name and value, and the traceback inside the user's cells."""

    status = ExitStatus.FAILED

    def __init__(self, message: str, *, ename: str | None = None, evalue: str | None = None, traceback=(), **where) -> None:
        super().__init__(message, **where)
        self.ename = ename
        self.evalue = evalue
        self.traceback = tuple(traceback)

    def fields(self) -> dict:
        return {**super().fields(), "ename": self.ename, "evalue": self.evalue, "traceback": self.traceback}


class KernelDied(StepFailed):
    """A step's kernel died."""

    status = ExitStatus.KERNEL_DIED


class RunInterrupted(Nb2flowError):
    """The run was interrupted by the user."""

    status = ExitStatus.INTERRUPTED


class ClusterError(Nb2flowError):
    """The cluster refused or could not be reached; ``http_status`` is the API server's answer, if any.

    ``transient`` errors (no answer, 429, 5xx) are the ones worth asking again: the request policy in
    ``kube.py`` retries them, and a watch rides them out."""

    transient = False

    def __init__(self, message: str, *, http_status: int | None = None, **where) -> None:
        super().__init__(message, **where)
        self.http_status = http_status

    def fields(self) -> dict:
        return {**super().fields(), "http_status": self.http_status}


class ClusterUnreachable(ClusterError):
    """No answer from the API server (network policy, DNS, a dropped connection, a timeout); a TLS
    verification failure is not transient (asking again sends nothing different)."""

    def __init__(self, message: str, *, transient: bool = True, **where) -> None:
        super().__init__(message, **where)
        self.transient = transient

    def fields(self) -> dict:
        return {**super().fields(), "transient": self.transient}


class ClusterBusy(ClusterError):
    """429 or 5xx: the API server is overloaded or failing for now; ``retry_after`` is its Retry-After (seconds)."""

    transient = True

    def __init__(self, message: str, *, retry_after: float | None = None, **where) -> None:
        super().__init__(message, **where)
        self.retry_after = retry_after

    def fields(self) -> dict:
        return {**super().fields(), "retry_after": self.retry_after}


class ClusterBadAnswer(ClusterError):
    """The API server (or something in front of it) answered with a body that is not the JSON expected."""


class ClusterDenied(ClusterError):
    """401 or 403: credentials refused, or no permission."""


class ClusterNotFound(ClusterError):
    """404: no such object, or no such resource (Argo not installed)."""


class ClusterConflict(ClusterError):
    """409: an object of that name exists."""


class ClusterStale(ClusterConflict):
    """409 "the object has been modified": an update based on a stale read; re-read and try again."""


class ClusterRejected(ClusterError):
    """422: the API server rejected the manifest."""
