"""Running a pipeline on this machine: one process (and kernel) per step, in parallel.

Each step runs the same command a pod runs (``python nb2flow_step.py ...``, see
:mod:`nb2flow.runner`), forked by the run's fork server in its own session so that Ctrl-C and
timeouts can stop it and its kernel together. What to do next is decided by the pure
:class:`~nb2flow.scheduler.Scheduler`; this module performs its actions (start a process,
write ``go`` or ``cancel``, kill, reap) and feeds it what the processes report.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import sys
import time
from dataclasses import dataclass, field

from . import __version__
from .errors import KernelDied, RunInterrupted, StepFailed, UsageError
from .materialize import materialize, setup_imports
from .pipeline import Pipeline
from .progress import StepView, make_reporter
from .runner import write_runner
from .runner.files import make_dir_inside, unlink, write_atomic, write_json
from .runner.forkserver import ForkServer, end_marked
from .runner.merge import write_merged
from .runner.params import to_wire
from .runner.protocol import BundleLayout, RunLayout, StepState, notebook_folder, step_command, step_error
from .runner.record import RunState, new_record, pipeline_entry, step_entry, step_fingerprint
from .runs import (copy_step_results, create_run_dir, process_owner, read_trusted_record, reusable_from_runs, reusable_steps, runs_root_for,
                   write_record)
from .scheduler import Cancel, Go, Launch, Notice, Scheduler, StepPlan, Stop

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
    reuse: bool = False  # reuse unchanged succeeded steps of earlier runs of this notebook (--reuse)


@dataclass
class _Process:
    """A step's process as the executor sees it."""

    pid: int
    status: dict = field(default_factory=dict)
    exit_code: int | None = None


@dataclass(frozen=True)
class RunResult:
    run_id: str
    run_dir: str
    state: RunState
    steps: dict  # name -> StepState
    output_notebook: str | None
    failures: tuple = ()  # (step name, error dict, state)
    visible_notebook: str | None = None  # the same merged notebook where JupyterLab's file browser shows it


class LocalRun:
    """One local run of a pipeline; ``execute()`` returns a :class:`RunResult`."""

    def __init__(self, pipeline: Pipeline, options: RunOptions) -> None:
        self.pipeline = pipeline
        self.options = options
        self.folder = notebook_folder(pipeline.path)  # where its steps run and its visible notebook goes
        self.jobs = max(1, options.jobs or os.cpu_count() or 1)
        self.reporter = make_reporter(options.progress)
        self.tasks = {s.name: s.task for s in pipeline.steps}
        self.first_lines = {c.number: c.first_line for c in pipeline.notebook.cells}
        from .warm import idle_seconds

        self.warm_idle = idle_seconds()  # a bad NB2FLOW_WARM_SERVER is refused before the run's folder is made
        if options.resume:
            run_dir = os.path.abspath(options.resume)
            self.run_id = os.path.basename(run_dir)
        else:
            root = options.runs_root or runs_root_for(pipeline.path)
            self.run_id, run_dir = create_run_dir(root, pipeline.notebook.stem)
        self.layout = RunLayout(run_dir)
        self.run_dir = run_dir
        self.started = time.time()
        self.procs: dict[str, _Process] = {}  # steps whose process has not been reaped
        self.statuses: dict[str, dict] = {}  # the last status.json read of each step
        self.exit_codes: dict[str, int | None] = {}
        self.fingerprints: dict[str, str] = {}
        self.record: dict = {}
        self.manifest: dict = {}  # pipeline.json of a pipeline of several notebooks and scripts (its jobs)
        self.reused_from: dict[str, str] = {}  # step -> the earlier run whose results it reuses (--reuse)
        self.folder_gone = False  # the run folder was deleted during the run
        self.warm_unavailable: str | None = None  # why the warm server could not serve this run

    # ------------------------------------------------------------------ set-up
    def prepare(self) -> None:
        write_json(self.layout.parameters, to_wire(self.options.parameters), signed=True)
        bundle = materialize(self.pipeline, self.layout.bundle, mode=self.options.mode, installs_once=True)
        self.fingerprints = {name: step_fingerprint(print_, self._parameters_of(name)) for name, print_ in bundle.fingerprints.items()}
        kept: dict = {}
        parents = {s.name: s.parents for s in self.pipeline.steps}
        if self.options.resume:
            try:
                earlier = read_trusted_record(self.run_dir)
            except (OSError, ValueError):
                raise UsageError(f"{self.run_dir}: no readable run record to resume") from None
            kept = reusable_steps(earlier, self.fingerprints, parents)
        elif self.options.reuse:
            found = reusable_from_runs(self._earlier_runs(), self.fingerprints, parents)
            for name, (old_dir, entry) in found.items():
                copy_step_results(old_dir, self.run_dir, self.tasks[name])
                self.reused_from[name] = os.path.basename(old_dir)
            kept = {name: entry for name, (_, entry) in found.items()}
        plans = [StepPlan(s.name, tuple(s.parents), s.options.retry or 0, s.options.timeout_seconds, s.options.timeout)
                 for s in self.pipeline.steps]
        self.scheduler = Scheduler(plans, jobs=self.jobs, warm_ahead=WARM_AHEAD, fail_fast=self.options.fail_fast,
                                   reused=frozenset(kept))
        for name, old in kept.items():
            t = self.scheduler.tracks[name]
            t.started, t.ended, t.attempt = old.get("started"), old.get("ended"), old.get("attempts", 1)
        for name, task in self.tasks.items():
            if name not in kept:
                for marker in self.layout.markers(task):
                    unlink(marker)
        self.record = new_record(
            run_id=self.run_id, notebook=os.path.abspath(self.pipeline.path), sha256=self.pipeline.notebook.sha256,
            version=__version__, python=self.options.python, mode=self.options.mode, jobs=self.jobs,
            parameters=self.options.parameters, started=self.started, resumed=bool(self.options.resume),
        )
        self.record["owner"] = process_owner()
        if self.pipeline.is_workflow:
            self.record["pipeline"] = pipeline_entry(bundle.manifest)
            self.manifest = bundle.manifest
            if self.pipeline.chain is not None:
                self.record["chain"] = self.pipeline.chain
        if self.reused_from:
            self.reporter.message("reusing " + ", ".join(f"{n} (from {r})" for n, r in self.reused_from.items())
                                  + ": unchanged cells, definitions, inputs and parameters")
        self._save_record()
        if len(kept) < len(self.pipeline.steps):
            self._install(bundle.installs)
            self._warm_up(kept)

    def _parameters_of(self, name: str) -> dict:
        """The run's parameters a step takes: all of them, or in a pipeline of several notebooks and scripts, its job's."""
        if not self.pipeline.is_workflow:
            return self.options.parameters
        job = self.pipeline.job_of(name)
        accepts = set(self.pipeline.accepts(job)) - set(job.parameters)  # its own values win over the run's
        return {k: v for k, v in self.options.parameters.items() if k in accepts}

    def _earlier_runs(self) -> list:
        """(folder, record) of this notebook's earlier local runs, newest first."""
        from .runs import list_runs

        from .runner.auth import Untrusted, verified_json
        from .runner.protocol import RunLayout

        runs = [r for r in list_runs([self.layout.notebook_folder], limit=50) if r.get("run_dir") != self.run_dir
                and r.get("notebook") == os.path.abspath(self.pipeline.path) and r.get("backend", "local") == "local"]
        trusted, passed_over = [], []
        for r in runs:  # only runs whose record this user's nb2flow wrote (a planted or changed one is passed over)
            try:
                verified_json(RunLayout(r["run_dir"]).record)
            except (Untrusted, OSError, ValueError):
                passed_over.append(os.path.basename(r["run_dir"]))
                continue
            trusted.append((r["run_dir"], r))
        if passed_over:  # one line, also when an upgrade left many unsigned runs
            shown = ", ".join(passed_over[:3]) + (f" and {len(passed_over) - 3} more" if len(passed_over) > 3 else "")
            self.reporter.message(f"not reusing {shown}: {'its record is' if len(passed_over) == 1 else 'their records are'} "
                                  "not one nb2flow wrote for you (someone else's, or made before nb2flow signed its files)")
        return trusted

    def _install(self, installs: tuple) -> None:
        """The set-up cells' install lines, once, before the steps (each step would otherwise run them)."""
        if not installs:
            return
        done = []
        folder = self.folder
        for inst in installs:
            self.reporter.message(f"cell {inst.cell}: `{inst.line}` (once for every step)")
            done.append(self._install_one(inst, folder))
            write_json(self.layout.installs, done, sort_keys=False)
            self.record["installs"] = [{k: v for k, v in d.items() if k != "output"} for d in done]
            self._save_record()
            if done[-1]["exit_code"] != 0:
                last = next((line for line in reversed(done[-1]["output"].splitlines()) if line.strip()), "")
                self.record.update(state=RunState.FAILED.value, ended=time.time())
                self._save_record()
                raise StepFailed(f"`{inst.line}` failed (exit {done[-1]['exit_code']}): {last}", path=self.pipeline.path,
                                 cell=inst.cell, hint=f"its output is in {self.layout.installs}")

    def _install_one(self, inst, folder: str) -> dict:
        import subprocess

        from .installs import SATISFIED_CHECK, checkable_requirements, satisfied

        t0 = time.time()
        reqs = checkable_requirements(inst)
        if reqs:  # already satisfied: what pip would conclude, without its 2 s start-up
            if os.path.realpath(self.options.python) == os.path.realpath(sys.executable):
                line = satisfied(reqs)  # this interpreter's: no process to start
            else:
                check = subprocess.run([self.options.python, "-c", SATISFIED_CHECK, *reqs], cwd=folder, stdin=subprocess.DEVNULL,
                                       capture_output=True, text=True)
                line = check.stdout.strip() if check.returncode == 0 else None
            if line:
                return {"cell": inst.cell, "line": inst.line, "exit_code": 0, "seconds": round(time.time() - t0, 3),
                        "output": line + "\n", "pip": "not run: every requirement is already satisfied"}
        proc = subprocess.run(inst.command(self.options.python), cwd=folder, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        return {"cell": inst.cell, "line": inst.line, "exit_code": proc.returncode, "seconds": round(time.time() - t0, 3),
                "output": proc.stdout}

    def _warm_up(self, kept: dict) -> None:
        """Let the fork server import the set-up cells' modules once, for every step's kernel to inherit."""
        subs = self.pipeline.pipelines.values() if self.pipeline.is_workflow else [self.pipeline]
        self.server.warm(list(dict.fromkeys(m for sub in subs for m in setup_imports(sub))), self.options.mode)

    # ------------------------------------------------------------------ records and views
    def _cell(self, name: str):
        t = self.scheduler.tracks[name]
        return self.statuses.get(name, {}).get("cell") if t.state is StepState.RUNNING else None

    def _save_record(self) -> None:
        self.record["steps"] = {
            name: step_entry(task=self.tasks[name], state=t.state, attempts=t.attempt, started=t.started,
                             go_time=t.go_time, ended=t.ended, exit_code=self.exit_codes.get(name), error=t.error,
                             fingerprint=self.fingerprints.get(name, ""), reused=t.reused, cell=self._cell(name))
            for name, t in self.scheduler.tracks.items()
        }
        for name, run_id in self.reused_from.items():
            self.record["steps"][name]["reused_from"] = run_id
        if getattr(self, "server", None) is not None and self.server.warmed is not None:
            self.record["warm_imports"] = self.server.warmed
        if getattr(self, "server", None) is not None and self.server.warm_server is not None:
            self.record["warm_server"] = self.server.warm_server
        elif self.warm_unavailable:
            self.record["warm_server"] = {"used": False, "why": self.warm_unavailable}
        if self.folder_gone:
            return
        try:
            write_record(self.run_dir, self.record)
        except OSError as exc:
            self.reporter.message(f"warning: cannot write the run record: {exc}")

    def views(self) -> list[StepView]:
        out = []
        now = time.time()
        for name, t in self.scheduler.tracks.items():
            cell = self._cell(name)
            since = t.go_time or t.started  # the time the step added to the run, set-up included
            if t.state is StepState.RUNNING and since:
                elapsed = now - since
            elif t.ended and since:
                elapsed = t.ended - since
            else:
                elapsed = None
            note = None
            if t.error and t.state.failed:
                note = f"cell {t.error.get('cell')}: {t.error.get('ename')}" if t.error.get("cell") else t.error.get("ename")
            out.append(StepView(name, t.state, cell, self.first_lines.get(cell), elapsed, max(t.attempt, 1), note))
        return out

    # ------------------------------------------------------------------ actions
    def _perform(self, actions: list) -> None:
        for action in actions:
            if isinstance(action, Launch):
                self._launch(action.step, action.attempt)
            elif isinstance(action, Go):
                write_atomic(self.layout.go(self.tasks[action.step]), b"")
            elif isinstance(action, Cancel):
                try:
                    write_atomic(self.layout.cancel(self.tasks[action.step]), b"")
                except OSError:
                    pass
                self._reap(action.step)
            elif isinstance(action, Stop):
                error = self.scheduler.tracks[action.step].error
                if error and error.get("cell") is None:  # a timeout: say in which cell it was
                    error["cell"] = self.statuses.get(action.step, {}).get("cell")
                self._kill(action.step)
                self._reap(action.step)
            elif isinstance(action, Notice):
                self.reporter.message(action.text)

    def _launch(self, name: str, attempt: int) -> None:
        task = self.tasks[name]
        make_dir_inside(self.layout.step_dir(task), self.run_dir)  # never follow a symlink out of the run folder
        for marker in self.layout.markers(task):
            unlink(marker)
        cmd = step_command(self.options.python, self.layout.bundle, self.run_dir, task, params_file=self.layout.parameters,
                           cwd=self.folder, wait=True, attempt=attempt)
        self.statuses[name] = {}
        self.exit_codes[name] = None
        self.procs[name] = _Process(self.server.spawn(cmd[2:], self.layout.runner_log(task)))

    def _read_status(self, name: str) -> dict:
        try:
            with open(self.layout.status(self.tasks[name]), encoding="utf-8") as fh:
                self.statuses[name] = json.load(fh)
        except (OSError, ValueError):
            pass
        return self.statuses.get(name, {})

    def _kill(self, name: str, sig=signal.SIGTERM, pid: int | None = None) -> None:
        """Signal the step's process group, and its kernel's (the kernel has its own session)."""
        if pid is None:
            proc = self.procs.get(name)
            pid = proc.pid if proc else None
        for pid in (pid, self.statuses.get(name, {}).get("kernel_pid")):
            if pid:
                try:
                    os.killpg(pid, sig)
                except OSError:
                    pass

    def _reap(self, name: str, timeout: float = KILL_GRACE) -> int | None:
        """Wait for the step's process (killing it after ``timeout``); never leave its kernel behind."""
        proc = self.procs.pop(name, None)
        if proc is None:
            return None
        code = self.server.wait(proc.pid, timeout)
        if code is None:
            self._kill(name, signal.SIGKILL, proc.pid)
            code = self.server.wait(proc.pid, 10)
        self.exit_codes[name] = code
        kernel = self._read_status(name).get("kernel_pid")
        if kernel:
            try:
                os.killpg(kernel, signal.SIGKILL)
            except OSError:
                pass
        return code

    def _observe(self) -> bool:
        """Feed the scheduler what the step processes report; True if anything changed."""
        changed = False
        for name in list(self.procs):
            if name not in self.procs:
                continue  # reaped by an action of an earlier step in this round (a cancel)
            status = self._read_status(name)
            state = StepState.parse(status.get("state", StepState.PENDING.value))
            track = self.scheduler.tracks[name]
            if state is StepState.SUCCEEDED and track.state is StepState.RUNNING:
                # values saved: dependents may start while it writes its notebook and stops its kernel
                self._perform(self.scheduler.succeeded(name, time.time(), status.get("ended")))
                changed = True
            proc = self.procs.get(name)
            code = self.server.exit_code(proc.pid) if proc else None
            if code is None:
                continue
            self._reap(name, 0)
            status = self.statuses.get(name, {})
            state = StepState.parse(status.get("state", StepState.PENDING.value))
            outcome = state if state.finished else None
            error = status.get("error")
            if outcome is None or (outcome is StepState.SUCCEEDED and code != 0):
                outcome, error = None, self._process_died(name, code, status)
            self._perform(self.scheduler.exited(name, time.time(), outcome, error))
            changed = True
        return changed

    def _process_died(self, name: str, code: int, status: dict) -> dict:
        sig = -code if code < 0 else None
        what = (f"was killed by signal {signal.Signals(sig).name}" if sig and sig in signal.Signals._value2member_map_
                else f"exited with status {code}")
        log = self.layout.runner_log(self.tasks[name])
        return step_error(status.get("cell"), "StepProcessDied", f"the step process {what}; see {log}")

    def _interrupt(self) -> None:
        self._perform(self.scheduler.interrupt(time.time()))
        for name in list(self.procs):  # succeeded steps still writing their notebooks
            self._kill(name)
            self._reap(name)
        self.record["state"] = RunState.INTERRUPTED.value
        self.record["ended"] = time.time()
        self._save_record()

    # ------------------------------------------------------------------ the run
    def execute(self) -> RunResult:
        # the server imports while the step files are written; it runs the runner the bundle ships
        self.server = None
        # SIGTERM (nb2flow stop, a job's stop) and SIGHUP (a closed terminal or SSH session) stop the run cleanly
        previous = {sig: signal.signal(sig, _raise_interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
        lock = hold_run_lock(self.run_dir, self.run_id)
        st = os.stat(self.run_dir)
        self.folder_id = (st.st_dev, st.st_ino)
        try:
            from .keys import user_key
            from .runner import runner_digest

            self.mark = f"{self.run_id}-{secrets.token_hex(4)}"
            try:
                runner = write_runner(self.layout.bundle)
                key = user_key()
                self.server = ForkServer(self.options.python, runner, self.folder, digest=runner_digest(), key=key, mark=self.mark,
                                         session=self._warm_server(key))
                self.prepare()
            except KeyboardInterrupt:
                raise RunInterrupted(f"interrupted before the steps started; run {self.run_id} stopped") from None
            except OSError as exc:  # a full disk, a file-size limit, the folder gone: no step has run
                self._fail_before_steps()
                raise UsageError(f"{self.run_dir}: cannot write the run's files: {exc.strerror or exc}",
                                 hint="free some space (or use a folder you can write) and run again; no step ran") from None
            return self._execute()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if self.server is not None:
                try:
                    self.server.close()
                finally:
                    end_marked(self.mark)  # a step's child that left its session (setsid) ends with the run too
            lock.close()

    def _warm_server(self, key: bytes):
        """How this run opens a session of the user's warm server (started now when there is none, so that its imports
        overlap the run's set-up), or None: off, or not possible here (the record says why)."""
        from .warm import WarmUnavailable, client as warm_client

        if self.warm_idle is None:
            return None
        try:
            client = warm_client(self.options.python, key, self.warm_idle)
        except (WarmUnavailable, OSError) as exc:
            self.warm_unavailable = str(exc)
            return None
        return lambda env, modules, mode: client.session(env=env, cwd=self.folder, modules=modules, mode=mode)

    def _folder_replaced(self) -> bool:
        """Whether the run folder is gone, or is another folder now (a step re-made its path after a deletion)."""
        try:
            st = os.stat(self.run_dir)
        except OSError:
            return True
        return (st.st_dev, st.st_ino) != self.folder_id

    def _folder_gone(self) -> None:
        """The run folder was deleted under the run: stop what still runs, say so in one line (no record can be kept)."""
        self.folder_gone = True
        self._interrupt()
        raise UsageError(f"{self.run_dir}: the run folder was deleted while the run went on; every step was stopped",
                         hint="nb2flow run NOTEBOOK starts afresh")

    def _fail_before_steps(self) -> None:
        """The record of a run that could not start its steps says so (when there is one to correct)."""
        if self.record.get("state") == RunState.RUNNING.value:
            self.record.update(state=RunState.FAILED.value, ended=time.time())
            try:
                self._save_record()
            except OSError:
                pass

    def _execute(self) -> RunResult:
        self.reporter.start(self.run_id, self.run_dir, self.views())
        last_draw = 0.0
        try:
            while not self.scheduler.done:
                changed = self._observe()
                actions = self.scheduler.tick(time.time())
                self._perform(actions)
                if changed or actions:
                    self._save_record()
                now = time.monotonic()
                if now - last_draw > 0.1:
                    self.reporter.update(self.views())
                    last_draw = now
                    if self._folder_replaced():  # deleted under the run: no step can say how it goes
                        self._folder_gone()
                time.sleep(POLL)
        except KeyboardInterrupt:
            self._interrupt()
            self.reporter.update(self.views())
            self.reporter.finish(self.views())
            raise RunInterrupted(f"interrupted; run {self.run_id} stopped, every step process and kernel ended",
                                 hint=f"nb2flow run --resume {self.run_id} completes it") from None
        for name in list(self.procs):  # succeeded steps still writing their notebooks
            self._reap(name, 30)
        if self._folder_replaced():  # deleted as the last steps ended (they failed for it)
            self._folder_gone()
        self.reporter.update(self.views())
        self.record["state"] = (RunState.SUCCEEDED if self.scheduler.ok else RunState.FAILED).value
        self.record["ended"] = time.time()
        output, visible = self._write_output()
        self.record["output_notebook"] = output
        self.record["visible_notebook"] = visible
        self._save_record()
        self.reporter.finish(self.views())
        tracks = self.scheduler.tracks
        failures = tuple((name, t.error or {}, t.state) for name, t in tracks.items() if t.state.failed)
        return RunResult(self.run_id, self.run_dir, RunState(self.record["state"]),
                         {n: t.state for n, t in tracks.items()}, output, failures, visible)

    def _write_output(self) -> tuple[str | None, str | None]:
        """The merged notebook in the run folder, and a copy beside the notebook that JupyterLab shows."""
        if self.pipeline.is_workflow:
            from .runner.merge import write_merged_jobs

            merged = write_merged_jobs(BundleLayout(self.layout.bundle), self.manifest, self.run_dir, self.options.parameters,
                                       folder=self.folder, run_id=self.run_id)
            for problem in merged.pop("problems"):
                self.reporter.message(f"warning: {problem}")
            self.record.update(merged)
            return merged["output_notebook"], merged["visible_notebook"]
        with open(BundleLayout(self.layout.bundle).source, encoding="utf-8") as fh:
            source = json.load(fh)
        written = write_merged(source, [s.task for s in self.pipeline.steps], self.run_dir, self.options.parameters,
                               notebook_folder=self.folder, run_id=self.run_id)
        if written.get("problem"):
            self.reporter.message(f"warning: {written['problem']}")
        return written["output_notebook"], written["visible_notebook"]


def hold_run_lock(run_dir: str, run_id: str):
    """An exclusive lock on the run folder for as long as this process runs it (released when the process ends,
    however it ends): a second process resuming the same run at once is refused instead of racing."""
    import fcntl

    fh = open(os.path.join(run_dir, ".lock"), "a+")  # noqa: SIM115 - held for the run
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        raise UsageError(f"run {run_id} is being run by another nb2flow process right now",
                         hint=f"`nb2flow status {run_id}` shows it; `nb2flow stop {run_id}` stops it") from None
    return fh


def run_local(pipeline: Pipeline, options: RunOptions) -> RunResult:
    """Run ``pipeline`` on this machine."""
    return LocalRun(pipeline, options).execute()


def raise_for_failures(result: RunResult, pipeline: Pipeline) -> None:
    """Turn the first failed step into the error the CLI shows (exit 1, or 3 for a dead kernel)."""
    if not result.failures:
        return
    name, error, state = result.failures[0]
    cell = error.get("cell")
    path, cells = pipeline.path, pipeline.notebook.cells
    if pipeline.is_workflow:  # the job's notebook (a command has no cells)
        job = pipeline.job_of(name)
        if job is not None and job.notebook:
            path, cells = job.notebook, pipeline.pipelines[job.name].notebook.cells
        elif pipeline.chain is not None:
            path = None  # a command of a -c chain: no file to name
    first = next((c.first_line for c in cells if c.number == cell), None)
    what = f"{error.get('ename', 'Error')}: {error.get('evalue', '')}".rstrip(": ")
    message = f"`{first}`: {what}" if first else what
    others = len(result.failures) - 1
    hint = (f"{error['hint']}; " if error.get("hint") else "") + f"run folder {result.run_dir}" + (
        f"; {others} more step(s) failed" if others else "")
    cls = KernelDied if state is StepState.KERNEL_DIED else StepFailed
    raise cls(message, path=path, cell=cell, step=name, hint=hint,
              ename=error.get("ename"), evalue=error.get("evalue"), traceback=tuple(error.get("traceback") or ()))


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt
