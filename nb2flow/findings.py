"""Findings: the problems and warnings ``check`` reports, as data."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass


class Severity(str, enum.Enum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Finding:
    """One problem in a notebook, located at a cell (1-based) and, where known, a step."""

    severity: Severity
    code: str
    message: str
    cell: int | None = None
    first_line: str | None = None
    step: str | None = None
    hint: str | None = None
    line: int | None = None
    file: str | None = None  # in a pipeline of several notebooks: the notebook the cell is in

    def render(self, path: str) -> str:
        """One line: ``path: cell 3 (step:x) `first line`: error: message (hint)``."""
        where = self.file or path
        if self.cell is not None:
            where += f": cell {self.cell}"
            if self.line is not None:
                where += f", line {self.line}"
            if self.step:
                where += f" (step:{self.step})"
            if self.first_line:
                where += f" `{self.first_line}`"
        elif self.step:
            where += f": step {self.step}"
        text = f"{where}: {self.severity.value}: {self.message}"
        if self.hint:
            text += f" ({self.hint})"
        return text

    def to_json(self) -> dict:
        data = asdict(self)
        data["severity"] = self.severity.value
        if data["file"] is None:
            del data["file"]
        return data


def error(code: str, message: str, **where) -> Finding:
    return Finding(Severity.ERROR, code, message, **where)


def warning(code: str, message: str, **where) -> Finding:
    return Finding(Severity.WARNING, code, message, **where)
