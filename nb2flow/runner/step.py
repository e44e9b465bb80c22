"""One step's run: its spec, parameters, status and values; :func:`main` is the step command."""

from __future__ import annotations

import os
import re
import signal
import sys
import time

from .auth import Untrusted, take_key, verified_bytes
from .tracebacks import no_surrogates
from .files import make_dir_inside, remove_partial_files
from .params import read_params
from .protocol import (FINALIZE, WARM_SERVER, BundleLayout, ExitStatus, Role, RunLayout, StepSpec, StepState, error_line, step_arg_parser,
                       step_error)
from .status import Status

MISSING_MODULE_HINT = (
    "a step pod starts from the notebook's image: a package pip-installed into the running notebook server "
    "is not in it; install it under the home volume (pip install --user, PYTHONUSERBASE on the volume) "
    "or install it in a %pip cell of the notebook")
TERMINATION_LOG = "/dev/termination-log"  # the container's terminationMessagePath (Kubernetes' default)
TASK_RE = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")


class StepRun:
    """What both modes share: where the step's files are, its status, waiting for go, values."""

    def __init__(self, args) -> None:
        import json

        self.bundle = BundleLayout(os.path.abspath(args.bundle))
        self.run = RunLayout(os.path.abspath(args.run_dir))
        self.task = args.step
        if not TASK_RE.fullmatch(self.task):
            raise SystemExit(f"nb2flow: {self.task!r} is not a step task name")
        self.spec = StepSpec.from_json(json.loads(verified_bytes(self.bundle.spec(self.task))))
        self.name = self.spec.name
        self.step_dir = make_dir_inside(self.run.step_dir(self.task), self.run.root)
        # a job of a pipeline of several notebooks runs in its notebook's folder, below the pipeline's (--cwd)
        self.cwd = os.path.abspath(os.path.join(args.cwd, self.spec.subdir) if args.cwd else (self.spec.cwd or os.getcwd()))
        self.wait = args.wait
        self.go = not args.wait
        self.params = read_params(args.params_file, args.param)
        if self.spec.accepts is not None:  # in a pipeline of several notebooks: only the parameters this job has
            self.params = {k: v for k, v in self.params.items() if k in self.spec.accepts}
        if self.spec.fixed:  # and the job's own values, which the workflow file gives it
            from .params import from_wire

            self.params.update({k: from_wire(v) for k, v in self.spec.fixed.items()})
        self.status = Status(self.run.status(self.task), self.name, args.attempt)
        self.kernel_pid = None
        self.key_file = None  # the private file a kernel's load and save cells read the key from
        self.timings: dict = {}  # where the step's time went: kernel start, waiting for go, each role's cells

    TIMING_KEYS = {"setup": "setup", "parameters": "setup", "injected": "setup", "preimport": "setup", "load": "load", "save": "save",
                   "code": "cells", "define": "cells", "wait": "wait"}

    def add_time(self, what, seconds: float) -> None:
        """Count ``seconds`` under where they went (a cell role, or ``wait`` for the parents)."""
        key = self.TIMING_KEYS.get(getattr(what, "value", what), "cells")
        self.timings[key] = self.timings.get(key, 0.0) + seconds

    def rounded_timings(self) -> dict:
        return {k: round(v, 4) for k, v in self.timings.items()}

    def wait_for_go(self) -> bool:
        """Block until the watcher says go (parents done) or cancel; False if cancelled."""
        go, cancel = self.run.go(self.task), self.run.cancel(self.task)
        self.status.update(stage="waiting")
        while True:
            if os.path.exists(cancel):
                return False
            if os.path.exists(go):
                return True
            time.sleep(0.01)

    def ready_for(self, role) -> bool:
        """Before running a cell: past the set-up cells, wait for go (with --wait); False if cancelled."""
        if Role(role).before_go:
            return True
        if not self.go:
            if not self.wait_for_go():
                return False
            self.go = True
        if self.status.state is not StepState.RUNNING:
            self.status.update(state=StepState.RUNNING, stage="running", running_since=time.time())
        return True

    def load_entries(self) -> list:
        """(name, providing task, providing step) of every value this step loads."""
        return self.spec.data_inputs

    @property
    def values_dir(self) -> str:
        return self.run.values(self.task)

    @property
    def random_state_from(self) -> str | None:
        """The file with the random state this step continues from (None: it starts from its own seed)."""
        task = self.spec.random_state_from
        return self.run.random_state(task) if task else None

    @property
    def saves_random_state(self) -> bool:
        return bool(self.spec.saves_random_state)

    def fail(self, cell_number, ename, evalue, tb_lines, state=StepState.FAILED) -> None:
        missing = ename == "ModuleNotFoundError" and os.environ.get("KUBERNETES_SERVICE_HOST")
        error = step_error(cell_number, ename, no_surrogates(evalue), [no_surrogates(line) for line in tb_lines or ()],
                           hint=MISSING_MODULE_HINT if missing else None)
        self.status.finish(state, cell=cell_number, error=error)
        summary = error_line(self.name, cell_number, ename, evalue)
        # what a local run prints, on stderr (the pod log); and one line for Argo's node message
        print(f"nb2flow: {summary}", *[f"    {line}" for line in tb_lines], sep="\n", file=sys.stderr, flush=True)
        _termination_message(summary)

    def cancelled(self) -> int:
        self.status.finish(StepState.CANCELLED)
        return ExitStatus.CANCELLED

    def remove_partial_files(self) -> None:
        """Temporary files a killed kernel left mid-write (a resume never reads them)."""
        remove_partial_files(self.values_dir, self.step_dir)


def _termination_message(text: str) -> None:
    """One line for Argo's node message (the container's termination log), in a pod."""
    if os.path.exists(TERMINATION_LOG):
        try:
            with open(TERMINATION_LOG, "w", encoding="utf-8") as fh:
                fh.write(text[:4000])  # the kubelet keeps at most 4096 bytes
        except OSError:
            pass


def main(argv=None) -> int:
    """``nb2flow_step.py ARGS`` (see :func:`protocol.step_command`), ``--finalize ARGS`` (an Argo run's final
    task, :func:`protocol.finalize_command`), ``--serve`` (the fork server) or ``--warm-server SOCKET IDLE`` (the
    warm server, :mod:`.warmserver`)."""
    args = sys.argv[1:] if argv is None else list(argv)
    take_key()  # out of the environment before any kernel or child process starts (forks keep it in memory)
    if args == ["--serve"]:
        from .forkserver import serve

        code = serve()
        sys.stdout.flush()
        os._exit(code)  # nothing to tear down that matters, and the run waits for this exit
    if args[:1] == [WARM_SERVER] and len(args) == 3:
        from .warmserver import serve_warm

        os._exit(serve_warm(args[1], float(args[2])))
    if args[:1] == [FINALIZE]:
        from .finalize import finalize

        return finalize(args[1:])
    args = step_arg_parser().parse_args(args)

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        step = StepRun(args)
    except Untrusted as exc:
        print(exc, file=sys.stderr, flush=True)
        _termination_message(str(exc))
        return ExitStatus.BAD_INPUT
    if step.spec.command:
        from .command_mode import run_command

        return run_command(step)
    if step.spec.mode == "script":
        from .script_mode import run_script

        return run_script(step)
    from .notebook_mode import run_notebook

    return run_notebook(step)
