"""The run record, ``RUN/run.json``: one schema for a local run and an Argo run.

nb2flow writes it while a local run goes on; an Argo run's final task (:mod:`.finalize`) writes
it from the steps' ``status.json`` files. ``nb2flow status`` and ``list`` read both the same way.
"""

from __future__ import annotations

import enum
import hashlib
import json

from .params import to_wire
from .protocol import StepState


class RunState(str, enum.Enum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # Ctrl-C, or `nb2flow stop` (Argo's Stop)


def parse_timestamp(text: str | None) -> float | None:
    """Seconds since the epoch of an RFC 3339 time as Kubernetes and Argo write them (``2026-11-30T03:00:00Z``);
    None when absent or unreadable."""
    if not text:
        return None
    from datetime import datetime

    try:
        return datetime.fromisoformat(text.strip().replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def parameters_key(parameters: dict) -> str:
    """The part of every step's fingerprint that the run's parameters decide."""
    text = json.dumps(to_wire(parameters), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def step_fingerprint(code_fingerprint: str, parameters: dict) -> str:
    """A step's fingerprint in the record: its code's (the bundle's) and the parameters'."""
    return f"{code_fingerprint}:{parameters_key(parameters)}"


def new_record(*, run_id: str, notebook: str, sha256: str, version: str, python: str, mode: str, jobs,
               parameters: dict, started: float, resumed: bool, backend: str = "local") -> dict:
    """The run record of a run that starts now."""
    return {"run_id": run_id, "backend": backend, "notebook": notebook, "notebook_sha256": sha256,
            "nb2flow_version": version, "python": python, "mode": mode, "jobs": jobs, "parameters": to_wire(parameters),
            "started": started, "ended": None, "state": RunState.RUNNING.value, "resumed": resumed, "steps": {}}


def step_entry(*, task: str, state: StepState, attempts: int, started, go_time, ended, exit_code, error, fingerprint: str,
               reused: bool, cell) -> dict:
    """One step of the run record; its duration is what it added to the run (from when its parents were done)."""
    since = go_time or started
    return {"task": task, "state": state.value, "attempts": attempts, "started": started, "ended": ended,
            "duration": (ended - since) if ended and since else None, "exit_code": exit_code, "error": error,
            "fingerprint": fingerprint, "reused": reused, "cell": cell}


def pipeline_entry(manifest: dict) -> dict:
    """A run record's ``pipeline`` of several notebooks and scripts, from the bundle's ``pipeline.json``: its name and
    jobs (``logs RUN JOB`` and JupyterFlow's ``job-N`` read it)."""
    return {"name": manifest.get("pipeline"),
            "jobs": [{"name": j["name"], "kind": j["kind"], "run": j["text"]} for j in manifest.get("jobs") or []]}
