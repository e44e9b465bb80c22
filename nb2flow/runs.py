"""Run folders and run records: where a local run keeps its files, and what it says happened.

A run lives in ``<notebook folder>/.nb2flow/runs/<run-id>/``; its record ``run.json`` is
rewritten atomically on every state change, so ``nb2flow status`` and ``list`` can read it
while the run goes on, and a killed run leaves a record that says how far it got.
"""

from __future__ import annotations

import datetime as _dt
import enum
import json
import os
import re
import secrets
import time

from .errors import UsageError

RUNS_SUBDIR = os.path.join(".nb2flow", "runs")
RECORD = "run.json"


class StepState(str, enum.Enum):
    PENDING = "waiting"
    RUNNING = "running"
    SUCCEEDED = "done"
    REUSED = "reused"
    FAILED = "failed"
    KERNEL_DIED = "kernel died"
    TIMED_OUT = "timed out"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"

    @property
    def finished(self) -> bool:
        return self not in (StepState.PENDING, StepState.RUNNING)

    @property
    def ok(self) -> bool:
        return self in (StepState.SUCCEEDED, StepState.REUSED)


class RunState(str, enum.Enum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


def runs_root_for(notebook_path: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(notebook_path)), RUNS_SUBDIR)


def _slug(stem: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.") or "notebook"
    return slug[:60]


def create_run_dir(root: str, stem: str) -> tuple[str, str]:
    """A new, empty run folder ``<root>/<stem>-<time>-<random>``; never shared by two runs."""
    try:
        os.makedirs(root, exist_ok=True)
        for _ in range(20):
            stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            run_id = f"{_slug(stem)}-{stamp}-{secrets.token_hex(3)}"
            path = os.path.join(root, run_id)
            try:
                os.mkdir(path)  # atomic: fails if another run took the name
            except FileExistsError:
                continue
            return run_id, path
    except OSError as exc:
        raise UsageError(f"{root}: cannot create the run folder: {exc.strerror or exc}",
                         hint="the notebook's folder must be writable") from None
    raise UsageError(f"{root}: could not create a new run folder")


def read_record(run_dir: str) -> dict:
    with open(os.path.join(run_dir, RECORD), encoding="utf-8") as fh:
        return json.load(fh)


def write_record(run_dir: str, record: dict) -> None:
    from .runtime import write_json

    write_json(os.path.join(run_dir, RECORD), record)


def find_run(run_id: str, search: list[str]) -> str:
    """The folder of run ``run_id`` (an id under any of ``search``'s run roots, or a path)."""
    if os.path.isfile(os.path.join(run_id, RECORD)):
        return os.path.abspath(run_id)
    if "/" not in run_id and run_id not in (".", ".."):
        for base in search:
            candidate = os.path.join(base, RUNS_SUBDIR, run_id)
            if os.path.isfile(os.path.join(candidate, RECORD)):
                return os.path.abspath(candidate)
    raise UsageError(
        f"no run {run_id!r} here",
        hint="`nb2flow list` shows recent runs; give the run id from the folder where the notebook is, or the run folder's path",
    )


def list_runs(bases: list[str], limit: int = 20) -> list[dict]:
    """Recent run records under each base folder's ``.nb2flow/runs``, newest first."""
    records = []
    for base in bases:
        root = os.path.join(base, RUNS_SUBDIR)
        try:
            names = os.listdir(root)
        except OSError:
            continue
        for name in names:
            try:
                record = read_record(os.path.join(root, name))
            except (OSError, ValueError):
                continue
            record["run_dir"] = os.path.join(root, name)
            records.append(record)
    records.sort(key=lambda r: r.get("started") or 0, reverse=True)
    return records[:limit]


def now() -> float:
    return time.time()


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def format_time(ts: float | None) -> str:
    if not ts:
        return "-"
    return _dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")
