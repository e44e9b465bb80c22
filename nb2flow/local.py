"""Running a pipeline on this machine: one process (and kernel) per step, in parallel.

Each step runs the same command a pod runs (``python nb2flow_step.py ...``, see
:mod:`nb2flow.runtime`), in its own session so that Ctrl-C and timeouts can stop it and
its kernel together. A step is started as soon as its parents have *started*: it starts
its kernel and runs its setup cells, then waits for a ``go`` file that the executor
writes when every parent has succeeded, so kernel start-up overlaps the parents' work.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from . import __version__
from .errors import KernelDied, RunInterrupted, StepFailed, UsageError
from .materialize import materialize
from .merge import merged_notebook
from .pipeline import Pipeline, Step
from .progress import StepView, make_reporter
from .runs import RunState, StepState, create_run_dir, read_record, runs_root_for, write_record
from .runtime import _unlink, check_inside, write_atomic, write_json

POLL = 0.02
WARM_AHEAD = 2  # kernels started ahead of their parents, per job slot
KILL_GRACE = 3.0


@dataclass(frozen=True)
class RunOptions:
    """How to run a pipeline locally."""

    mode: str = "notebook"
    jobs: int | None = None  # parallel steps; default: the number of CPUs
    fail_fast: bool = False
    parameters: dict = field(default_factory=dict)  # overrides, already checked
    progress: str = "auto"  # auto | live | plain | quiet
    python: str = sys.executable  # the interpreter that runs each step
    runs_root: str | None = None
    resume: str | None = None  # the folder of an earlier run to complete


class ForkServer:
    """Client of ``nb2flow_step.py --serve``: one pre-imported process that forks each step.

    Every step still runs the pod's code path (the runtime's ``main(argv)``) in its own
    session; only Python's start-up and the nbformat/nbclient imports are paid once per run.
    """

    def __init__(self, python: str, runtime: str, cwd: str) -> None:
        self.proc = subprocess.Popen([python, runtime, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, start_new_session=True, cwd=cwd,
                                     env=dict(os.environ, PYTHONUNBUFFERED="1"))
        self._cond = threading.Condition()
        self._pids: dict[int, int] = {}
        self._exits: dict[int, int] = {}
        self._next = 0
        self._reader = threading.Thread(target=self._read, name="nb2flow-fork-server", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            with self._cond:
                if "id" in msg:
                    self._pids[msg["id"]] = msg["pid"]
                else:
                    self._exits[msg["pid"]] = msg["code"]
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def spawn(self, argv: list[str], log: str) -> int:
        with self._cond:
            self._next += 1
            ident = self._next
        try:
            self.proc.stdin.write((json.dumps({"id": ident, "argv": argv, "log": log}) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise RuntimeError("the step fork server stopped") from None
        with self._cond:
            if not self._cond.wait_for(lambda: ident in self._pids or self.proc.poll() is not None, timeout=60):
                raise RuntimeError("the step fork server did not answer")
            if ident not in self._pids:
                raise RuntimeError("the step fork server stopped")
            return self._pids[ident]

    def exit_code(self, pid: int) -> int | None:
        with self._cond:
            if pid in self._exits:
                return self._exits[pid]
            if self.proc.poll() is not None and not self._reader.is_alive():
                return -signal.SIGKILL  # the server died; its children are gone with it
            return None

    def wait(self, pid: int, timeout: float) -> int | None:
        with self._cond:
            self._cond.wait_for(lambda: pid in self._exits or self.proc.poll() is not None, timeout=timeout)
        return self.exit_code(pid)

    def close(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@dataclass
class _StepRun:
    step: Step
    state: StepState = StepState.PENDING
    pid: int | None = None
    attempt: int = 0
    go_sent: bool = False
    go_time: float | None = None  # when its parents were all done (or it was launched, for a root)
    started: float | None = None
    running_since: float | None = None
    ended: float | None = None
    status: dict = field(default_factory=dict)
    exit_code: int | None = None
    error: dict | None = None
    reused: bool = False
    fingerprint: str = ""


@dataclass(frozen=True)
class RunResult:
    run_id: str
    run_dir: str
    state: RunState
    steps: dict  # name -> StepState
    output_notebook: str | None
    failures: tuple = ()  # (step name, error dict, state)


class LocalRun:
    """One local run of a pipeline; ``execute()`` returns a :class:`RunResult`."""

    def __init__(self, pipeline: Pipeline, options: RunOptions) -> None:
        self.pipeline = pipeline
        self.options = options
        self.jobs = max(1, options.jobs or os.cpu_count() or 1)
        self.reporter = make_reporter(options.progress)
        self.runs: dict[str, _StepRun] = {s.name: _StepRun(s) for s in pipeline.steps}
        self.first_lines = {
            c.number: c.first_line for c in pipeline.notebook.cells
        }
        if options.resume:
            self.run_dir = os.path.abspath(options.resume)
            self.run_id = os.path.basename(self.run_dir)
        else:
            root = options.runs_root or runs_root_for(pipeline.path)
            self.run_id, self.run_dir = create_run_dir(root, pipeline.notebook.stem)
        self.started = time.time()
        self.record: dict = {}
        self.finishing: list[_StepRun] = []  # succeeded, process still writing its notebook

    # ------------------------------------------------------------------ set-up
    def prepare(self) -> None:
        params_path = os.path.join(self.run_dir, "parameters.json")
        write_json(params_path, self.options.parameters)
        bundle = materialize(self.pipeline, os.path.join(self.run_dir, "bundle"), mode=self.options.mode)
        self.bundle = bundle
        param_key = json.dumps(self.options.parameters, sort_keys=True, default=str)
        for name, r in self.runs.items():
            r.fingerprint = f"{bundle.fingerprints[name]}:{_hash(param_key)}"
        if self.options.resume:
            self._reuse_earlier_results()
        self.record = {
            "run_id": self.run_id,
            "notebook": os.path.abspath(self.pipeline.path),
            "notebook_sha256": self.pipeline.notebook.sha256,
            "nb2flow_version": __version__,
            "python": self.options.python,
            "mode": self.options.mode,
            "jobs": self.jobs,
            "parameters": self.options.parameters,
            "started": self.started,
            "ended": None,
            "state": RunState.RUNNING.value,
            "resumed": bool(self.options.resume),
            "steps": {},
        }
        self._save_record()

    def _reuse_earlier_results(self) -> None:
        try:
            earlier = read_record(self.run_dir)
        except (OSError, ValueError):
            raise UsageError(f"{self.run_dir}: no readable run record to resume") from None
        old_steps = earlier.get("steps", {})
        for name, r in self.runs.items():
            old = old_steps.get(name)
            if not old or old.get("state") not in (StepState.SUCCEEDED.value, StepState.REUSED.value):
                continue
            if old.get("fingerprint") != r.fingerprint:
                continue  # its code, inputs or parameters changed
            if not all(self.runs[p].reused for p in r.step.parents):
                continue  # a parent runs again, so this step's inputs may change
            r.state, r.reused = StepState.REUSED, True
            r.started, r.ended, r.attempt = old.get("started"), old.get("ended"), old.get("attempts", 1)
        for name, r in self.runs.items():
            if not r.reused:
                step_dir = os.path.join(self.run_dir, "steps", r.step.task)
                for marker in ("go", "cancel", "status.json"):
                    _unlink(os.path.join(step_dir, marker))

    # ------------------------------------------------------------------ records
    def _save_record(self) -> None:
        steps = {}
        for name, r in self.runs.items():
            steps[name] = {
                "task": r.step.task,
                "state": r.state.value,
                "attempts": r.attempt,
                "started": r.started,
                "ended": r.ended,
                "duration": (r.ended - (r.go_time or r.started)) if r.ended and (r.go_time or r.started) else None,
                "exit_code": r.exit_code,
                "error": r.error,
                "fingerprint": r.fingerprint,
                "reused": r.reused,
                "cell": r.status.get("cell") if r.state is StepState.RUNNING else None,
            }
        self.record["steps"] = steps
        try:
            write_record(self.run_dir, self.record)
        except OSError as exc:
            self.reporter.message(f"warning: cannot write the run record: {exc}")

    def views(self) -> list[StepView]:
        out = []
        now = time.time()
        for name, r in self.runs.items():
            cell = r.status.get("cell") if r.state is StepState.RUNNING else None
            since = r.go_time or r.started  # the time the step added to the run, set-up included
            if r.state is StepState.RUNNING and r.go_sent and since:
                elapsed = now - since
            elif r.ended and since:
                elapsed = r.ended - since
            else:
                elapsed = None
            state = r.state
            if state is StepState.RUNNING and not r.go_sent:
                state = StepState.PENDING  # started, kernel warming, waiting for its parents
            note = None
            if r.error and state in (StepState.FAILED, StepState.KERNEL_DIED, StepState.TIMED_OUT):
                note = f"cell {r.error.get('cell')}: {r.error.get('ename')}" if r.error.get("cell") else r.error.get("ename")
            out.append(StepView(name, state, cell, self.first_lines.get(cell), elapsed, max(r.attempt, 1), note))
        return out

    # ------------------------------------------------------------------ processes
    def _step_dir(self, r: _StepRun) -> str:
        return os.path.join(self.run_dir, "steps", r.step.task)

    def _launch(self, r: _StepRun) -> None:
        step_dir = check_inside(self._step_dir(r), self.run_dir)
        os.makedirs(step_dir, exist_ok=True)
        check_inside(step_dir, self.run_dir)  # never follow a symlink out of the run folder
        for marker in ("go", "cancel", "status.json"):
            _unlink(os.path.join(step_dir, marker))
        r.attempt += 1
        cmd = step_command(
            self.options.python, self.bundle.path, self.run_dir, r.step.task,
            params_file=os.path.join(self.run_dir, "parameters.json"),
            cwd=os.path.dirname(os.path.abspath(self.pipeline.path)), wait=True, attempt=r.attempt,
        )
        r.pid = self.server.spawn(cmd[2:], os.path.join(step_dir, "runner.log"))
        r.exit_code = None
        r.state = StepState.RUNNING
        r.go_sent = False
        r.go_time = None
        r.started = r.started or time.time()
        r.running_since = None
        r.ended = None
        r.status = {}
        r.error = None

    def _send_go(self, r: _StepRun) -> None:
        write_atomic(os.path.join(self._step_dir(r), "go"), b"")
        r.go_sent = True
        r.running_since = r.go_time = time.time()

    def _cancel(self, r: _StepRun) -> None:
        try:
            write_atomic(os.path.join(self._step_dir(r), "cancel"), b"")
        except OSError:
            pass

    def _read_status(self, r: _StepRun) -> None:
        try:
            with open(os.path.join(self._step_dir(r), "status.json"), encoding="utf-8") as fh:
                r.status = json.load(fh)
        except (OSError, ValueError):
            pass

    def _kill(self, r: _StepRun, sig=signal.SIGTERM) -> None:
        """Signal the step's process group, and its kernel's (the kernel has its own session)."""
        for pid in (r.pid, r.status.get("kernel_pid")):
            if pid:
                try:
                    os.killpg(pid, sig)
                except (ProcessLookupError, PermissionError, OSError):
                    pass

    def _reap(self, r: _StepRun, timeout: float = KILL_GRACE) -> None:
        if r.pid is None:
            return
        if self.server.wait(r.pid, timeout) is None:
            self._kill(r, signal.SIGKILL)
            self.server.wait(r.pid, 10)
        r.exit_code = self.server.exit_code(r.pid)
        self._read_status(r)
        kernel = r.status.get("kernel_pid")
        if kernel:
            try:
                os.killpg(kernel, signal.SIGKILL)  # never leave a kernel behind
            except OSError:
                pass

    # ------------------------------------------------------------------ scheduling
    def _parents_ok(self, r: _StepRun) -> bool:
        return all(self.runs[p].state.ok for p in r.step.parents)

    def _parents_started(self, r: _StepRun) -> bool:
        return all(self.runs[p].state in (StepState.RUNNING,) or self.runs[p].state.ok for p in r.step.parents)

    def _skip_descendants(self, name: str) -> None:
        for d in self.pipeline.descendants(name):
            dr = self.runs[d]
            if dr.state is StepState.PENDING:
                dr.state = StepState.SKIPPED
            elif dr.state is StepState.RUNNING and not dr.go_sent:
                self._cancel(dr)
                dr.state = StepState.SKIPPED
                self._reap(dr)
                dr.ended = time.time()

    def _finish_failed(self, r: _StepRun, state: StepState) -> None:
        retries = r.step.options.retry or 0
        if r.attempt <= retries:
            self.reporter.message(f"{r.step.name}: {state.value}; trying again ({r.attempt + 1} of {retries + 1})")
            self._launch(r)
            return
        r.state = state
        r.ended = time.time()
        self._skip_descendants(r.step.name)
        if self.options.fail_fast:
            for other in self.runs.values():
                if other.state is StepState.RUNNING:
                    self._cancel(other)
                    self._kill(other)
                    self._reap(other)
                    other.state, other.ended = StepState.CANCELLED, time.time()
                elif other.state is StepState.PENDING:
                    other.state = StepState.SKIPPED

    def _reap_finishing(self, block: bool = False) -> None:
        """Collect the processes of steps that already succeeded."""
        for r in list(self.finishing):
            code = self.server.wait(r.pid, 30) if block else self.server.exit_code(r.pid)
            if code is None and block:
                self._kill(r, signal.SIGKILL)
                code = self.server.wait(r.pid, 10)
            if code is not None or block:
                self._reap(r, 0)
                r.exit_code = code
                self.finishing.remove(r)

    def _poll(self) -> bool:
        """One scheduling round; True if anything changed."""
        changed = False
        self._reap_finishing()
        for r in self.runs.values():
            if r.state is not StepState.RUNNING:
                continue
            self._read_status(r)
            state = r.status.get("state")
            if r.go_sent and r.status.get("running_since"):
                r.running_since = r.status["running_since"]
            code = self.server.exit_code(r.pid) if r.pid else None
            timeout = r.step.options.timeout_seconds
            if timeout and r.go_sent and r.running_since and time.time() - r.running_since > timeout and code is None:
                self._kill(r)
                self._reap(r)
                r.error = {"cell": r.status.get("cell"), "ename": "Timeout", "evalue": f"the step ran longer than timeout:{r.step.options.timeout}", "traceback": []}
                self._finish_failed(r, StepState.TIMED_OUT)
                changed = True
                continue
            if state == "succeeded" and code is None:
                # values saved: dependents may start while it writes its notebook and stops its kernel
                r.state, r.ended, r.exit_code = StepState.SUCCEEDED, r.status.get("ended") or time.time(), None
                self.finishing.append(r)
                changed = True
                continue
            if code is None:
                continue
            self._reap(r)
            r.exit_code = code
            final = r.status.get("state")
            r.ended = r.status.get("ended") or time.time()
            changed = True
            if final == "succeeded" and code == 0:
                r.state = StepState.SUCCEEDED
            elif final == "cancelled":
                r.state = StepState.SKIPPED
            elif final == "kernel-died":
                r.error = r.status.get("error")
                self._finish_failed(r, StepState.KERNEL_DIED)
            elif final == "failed":
                r.error = r.status.get("error")
                self._finish_failed(r, StepState.FAILED)
            else:
                sig = -code if code < 0 else None
                what = f"was killed by signal {signal.Signals(sig).name}" if sig and sig in signal.Signals._value2member_map_ else f"exited with status {code}"
                r.error = {"cell": r.status.get("cell"), "ename": "StepProcessDied", "evalue": f"the step process {what}; see {os.path.join(self._step_dir(r), 'runner.log')}", "traceback": []}
                self._finish_failed(r, StepState.FAILED)
        # give go to started steps whose parents all succeeded, within the job limit
        active = sum(1 for r in self.runs.values() if r.state is StepState.RUNNING and r.go_sent)
        for r in self.runs.values():
            if active >= self.jobs:
                break
            if r.state is StepState.RUNNING and not r.go_sent and self._parents_ok(r):
                self._send_go(r)
                active += 1
                changed = True
        # start steps whose parents have started (kernel warm-up overlaps the parents' work)
        warming = sum(1 for r in self.runs.values() if r.state is StepState.RUNNING and not r.go_sent)
        for r in self.runs.values():
            if r.state is not StepState.PENDING or not self._parents_started(r):
                continue
            if self._parents_ok(r) and active < self.jobs:
                self._launch(r)
                self._send_go(r)
                active += 1
                changed = True
            elif not self._parents_ok(r) and warming < WARM_AHEAD * self.jobs:
                self._launch(r)
                warming += 1
                changed = True
        return changed

    def _interrupt(self) -> None:
        for r in self.finishing:
            self._kill(r)
        self._reap_finishing(block=True)
        for r in self.runs.values():
            if r.state is StepState.RUNNING:
                self._cancel(r)
                self._kill(r)
        for r in self.runs.values():
            if r.state is StepState.RUNNING:
                self._reap(r)
                r.state, r.ended = StepState.INTERRUPTED, time.time()
        self.record["state"] = RunState.INTERRUPTED.value
        self.record["ended"] = time.time()
        self._save_record()

    # ------------------------------------------------------------------ the run
    def execute(self) -> RunResult:
        # the server imports while the bundle is written; it runs the runtime that ships in this package
        runtime = os.path.join(os.path.dirname(os.path.abspath(__file__)), "runtime.py")
        self.server = ForkServer(self.options.python, runtime, os.path.dirname(os.path.abspath(self.pipeline.path)))
        try:
            self.prepare()
            return self._execute()
        finally:
            self.server.close()

    def _execute(self) -> RunResult:
        self.reporter.start(self.run_id, self.run_dir, self.views())
        last_draw = 0.0
        previous = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            while any(not r.state.finished for r in self.runs.values()):
                if self._poll():
                    self._save_record()
                now = time.monotonic()
                if now - last_draw > 0.1:
                    self.reporter.update(self.views())
                    last_draw = now
                time.sleep(POLL)
        except KeyboardInterrupt:
            self._interrupt()
            self.reporter.update(self.views())
            self.reporter.finish(self.views())
            raise RunInterrupted(f"interrupted; run {self.run_id} stopped, every step process and kernel ended",
                                 hint=f"nb2flow run --resume {self.run_id} completes it") from None
        finally:
            signal.signal(signal.SIGTERM, previous)
        self._reap_finishing(block=True)
        self.reporter.update(self.views())
        ok = all(r.state.ok for r in self.runs.values())
        self.record["state"] = (RunState.SUCCEEDED if ok else RunState.FAILED).value
        self.record["ended"] = time.time()
        output = self._write_output()
        self.record["output_notebook"] = output
        self._save_record()
        self.reporter.finish(self.views())
        failures = tuple(
            (name, r.error or {}, r.state) for name, r in self.runs.items()
            if r.state in (StepState.FAILED, StepState.KERNEL_DIED, StepState.TIMED_OUT)
        )
        return RunResult(self.run_id, self.run_dir, RunState(self.record["state"]),
                         {n: r.state for n, r in self.runs.items()}, output, failures)

    def _write_output(self) -> str | None:
        path = os.path.join(self.run_dir, f"{self.pipeline.notebook.stem}.out.ipynb")
        try:
            doc = merged_notebook(self.pipeline, self.run_dir, self.options.parameters)
            write_atomic(path, json.dumps(doc, indent=1, ensure_ascii=False))
        except OSError as exc:
            self.reporter.message(f"warning: cannot write {path}: {exc}")
            return None
        return path


def step_command(python: str, bundle: str, run_dir: str, task: str, *, params_file: str | None = None,
                 params: dict | None = None, cwd: str | None = None, wait: bool = False, attempt: int = 1) -> list[str]:
    """The command that runs one step — the same locally and in a pod."""
    cmd = [python, os.path.join(bundle, "nb2flow_step.py"), "--bundle", bundle, "--run-dir", run_dir, "--step", task]
    if params_file:
        cmd += ["--params-file", params_file]
    for name, value in (params or {}).items():
        cmd += ["--param", f"{name}={json.dumps(value)}"]
    if cwd:
        cmd += ["--cwd", cwd]
    if wait:
        cmd.append("--wait")
    if attempt != 1:
        cmd += ["--attempt", str(attempt)]
    return cmd


def run_local(pipeline: Pipeline, options: RunOptions) -> RunResult:
    """Run ``pipeline`` on this machine."""
    return LocalRun(pipeline, options).execute()


def raise_for_failures(result: RunResult, pipeline: Pipeline) -> None:
    """Turn the first failed step into the error the CLI shows (exit 1, or 3 for a dead kernel)."""
    if not result.failures:
        return
    name, error, state = result.failures[0]
    cell = error.get("cell")
    first = next((c.first_line for c in pipeline.notebook.cells if c.number == cell), None)
    what = f"{error.get('ename', 'Error')}: {error.get('evalue', '')}".rstrip(": ")
    message = f"`{first}`: {what}" if first else what
    others = len(result.failures) - 1
    hint = f"run folder {result.run_dir}" + (f"; {others} more step(s) failed" if others else "")
    cls = KernelDied if state is StepState.KERNEL_DIED else StepFailed
    exc = cls(message, path=pipeline.path, cell=cell, step=name, hint=hint)
    exc.traceback = error.get("traceback") or []
    raise exc


def _hash(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt
