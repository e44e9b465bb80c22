"""The ``local`` backend: every step a process (and kernel) on this machine (:mod:`nb2flow.local`)."""

from __future__ import annotations

import os
import signal
import sys

from ..errors import Nb2flowError, UsageError
from . import Backend, Console, Outcome, RunRef, RunRequest, Where


class LocalBackend(Backend):
    name = "local"
    title = "running on this machine"

    def validate(self, request: RunRequest) -> None:
        if request.python:
            import shutil

            found = shutil.which(request.python)
            if found is None:
                raise UsageError(f"--python {request.python}: no such interpreter (or it is not executable)",
                                 hint="give the path of a python, e.g. --python ~/envs/ml/bin/python")

    def start(self, request: RunRequest, console: Console) -> Outcome:
        from ..events import run_finished
        from ..local import RunOptions, raise_for_failures, run_local

        options = RunOptions(mode=request.mode, jobs=request.jobs, fail_fast=request.fail_fast, parameters=request.parameters,
                             progress=request.progress, python=request.python or sys.executable,
                             resume=request.resume.run_dir if request.resume else None,
                             reuse=request.reuse and not request.resume)
        result = run_local(request.pipeline, options)
        if result.output_notebook:
            shown = result.visible_notebook or result.output_notebook
            console.say(f"run {result.run_id}: {result.state.value}; output notebook {os.path.relpath(shown)}")
        elif request.pipeline.is_workflow:  # commands only: their output is in the step logs
            console.say(f"run {result.run_id}: {result.state.value}; output: nb2flow logs {result.run_id}")
        failure = None
        try:
            raise_for_failures(result, request.pipeline)
        except Nb2flowError as exc:
            failure = exc
        outcome = Outcome(run_id=result.run_id, run_dir=result.run_dir, state=result.state.value,
                          output_notebook=result.output_notebook, visible_notebook=result.visible_notebook,
                          failure=failure, result=result)
        console.send(run_finished(outcome))
        return outcome

    def status(self, ref: RunRef, where: Where, console: Console):
        from . import record_report

        return record_report(ref, state=self.list_state(ref.record or {}))

    def logs(self, ref: RunRef, step, follow, where: Where, console: Console):
        from . import folder_logs

        return folder_logs(ref, step, console)

    def stop(self, ref: RunRef, force: bool, where: Where, console: Console) -> str:
        """Interrupt the process running it on this machine, as Ctrl-C in its terminal does (steps end, the
        record says interrupted, ``--resume`` completes it)."""
        from ..runs import run_owner_alive

        from . import refuse_ended

        refuse_ended(ref, "stop")
        record = ref.record or {}
        alive = run_owner_alive(record)
        if alive is None:
            raise UsageError(f"run {ref.run_id} runs on another machine ({(record.get('owner') or {}).get('host', '?')})",
                             hint="stop it there")
        if not alive:
            raise UsageError(f"run {ref.run_id} is abandoned: the process that ran it is gone",
                             hint=f"nb2flow run --resume {ref.run_id} completes it")
        os.kill(int(record["owner"]["pid"]), signal.SIGTERM)
        return f"run {ref.run_id} stopping"

    def delete(self, ref: RunRef, force: bool, where: Where, console: Console) -> str:
        """Remove the run's folder (its values, step notebooks and record); the merged notebook shown in
        JupyterLab's file browser stays, as a file the user owns."""
        import shutil

        from ..runs import run_owner_alive

        record = ref.record or {}
        if record.get("state") == "running" and run_owner_alive(record):
            raise UsageError(f"run {ref.run_id} is still running", hint=f"nb2flow stop {ref.run_id} first")
        shutil.rmtree(ref.run_dir)
        return f"run {ref.run_id} deleted ({os.path.relpath(ref.run_dir)})"

    def list_state(self, record: dict) -> str:
        from ..runs import run_owner_alive

        if record.get("state") == "running" and run_owner_alive(record) is False:
            return "abandoned"
        return str(record.get("state", "?"))
