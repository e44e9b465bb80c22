"""Where a run goes: the backend interface, the objects that cross it, and the registry.

A backend takes one :class:`RunRequest` (a checked pipeline, its parameters, how to run it) and runs
it somewhere, leaving a run record (``run.json`` in a run folder, see
:class:`nb2flow.runner.protocol.RunLayout`) whose ``backend`` field names it. Every command that acts
on a run — ``status``, ``logs``, ``stop``, ``delete``, ``list`` — finds the run (a run folder, or a
name only a backend knows, such as a workflow's) and calls the backend the record names, so each
command works for every backend. The CLI parses, calls one method, prints what comes back.

Backends are registered by name, as papermill registers its engines: the built-in ``local`` and
``argo`` here, others with :func:`register` or a ``nb2flow.backends`` entry point
(``name = "package.module:Class"``). Modules are imported on first use, so ``nb2flow --help`` stays
instant. ``tests/test_backends.py`` runs one contract over every registered backend.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field

from ..errors import UsageError


# ---------------------------------------------------------------------------------------- the objects
@dataclass(frozen=True)
class Where:
    """Which cluster, namespace and pod settings a cluster backend uses (each optional: its default)."""

    namespace: str | None = None
    context: str | None = None
    pod_spec: str | None = None  # a pod as `kubectl get pod -o json` prints it, to copy settings from
    from_pod: str | None = None  # a running pod's name, to copy settings from
    workdir: str | None = None  # the notebook's folder as step pods see it


@dataclass(frozen=True)
class RunRef:
    """A run as commands find it: its record and folder when it has one here, else only its name."""

    run_id: str
    backend: str
    run_dir: str | None = None
    record: dict | None = None


@dataclass(frozen=True)
class RunRequest:
    """Everything a backend needs to start a run; built by ``nb2flow run`` and by :func:`nb2flow.api.run`."""

    pipeline: object  # nb2flow.pipeline.Pipeline, already checked (no errors)
    parameters: dict = field(default_factory=dict)  # overrides, already checked against the notebook's
    mode: str = "notebook"  # notebook | script
    jobs: int | None = None  # steps at once (local), parallelism (Argo)
    fail_fast: bool = False
    progress: object = "auto"  # auto | plain | quiet, or a reporter (nb2flow.progress)
    python: str | None = None  # the interpreter for the steps (local)
    reuse: bool = False  # reuse unchanged steps of earlier runs (local)
    resume: RunRef | None = None  # the earlier run to complete
    watch: bool = False  # follow a submitted run to its end (Argo)
    where: Where = Where()


@dataclass(frozen=True)
class Outcome:
    """How a started run stands when ``start`` returns: ended (local; Argo with ``--watch``) or submitted."""

    run_id: str
    run_dir: str | None  # absolute, as the output notebooks' paths
    state: str  # a RunState value (nb2flow.runner.record), or "submitted"
    output_notebook: str | None = None
    visible_notebook: str | None = None
    failure: Exception | None = None  # the Nb2flowError to end the command with (exit 1 or 3)
    result: object = None  # the backend's own result (local: nb2flow.local.RunResult)

    @property
    def exit_status(self) -> int:
        return int(getattr(self.failure, "status", 0)) if self.failure else 0


@dataclass(frozen=True)
class StepRow:
    name: str
    state: str  # a step state's label
    tries: str
    time: str
    detail: str


@dataclass(frozen=True)
class Report:
    """One run's state for ``nb2flow status``: a headline, a row per step, lines after the table; ``data`` for --json."""

    headline: str
    steps: tuple = ()
    lines: tuple = ()
    notes: tuple = ()  # said to people (stderr)
    data: dict = field(default_factory=dict)


class Console:
    """What a command says while a backend works: lines for people, one result line for scripts, events.

    ``say`` gets human lines (the CLI prints them on stderr); each is also a ``message`` event.
    ``sink`` (a callable taking one event dict, or None) gets the events; ``result`` a line for stdout
    (a submitted workflow's name), written only when no events are asked for.
    """

    def __init__(self, say=None, sink=None, result=None) -> None:
        self._say = say or (lambda text: None)
        self.sink = sink
        self._result = result or (lambda text: None)

    def say(self, text: str) -> None:
        from ..runner.tracebacks import printable

        self._say(printable(text))
        self.emit("message", text=printable(text))

    def notice(self, text: str) -> None:
        self.say(f"nb2flow: {text}")

    def emit(self, name: str, **fields) -> None:
        if self.sink is not None:
            from ..events import event

            self.sink(event(name, **fields))

    def send(self, ev: dict) -> None:
        if self.sink is not None:
            self.sink(ev)

    def result(self, text: str) -> None:
        if self.sink is None:
            self._result(text)


# ---------------------------------------------------------------------------------------- the interface
class Backend:
    """A place runs go. Subclasses set ``name`` and implement ``start``; the rest have sensible refusals."""

    name = ""
    title = ""  # how ``nb2flow run`` says where it runs: "running on this machine"

    def validate(self, request: RunRequest) -> None:
        """Refuse, with a UsageError, options that mean nothing here (before anything is written)."""

    def start(self, request: RunRequest, console: Console) -> Outcome:
        raise NotImplementedError

    def follow(self, ref: RunRef, where: Where, console: Console) -> Outcome:
        """Watch a run that goes on elsewhere until it ends (``status --watch``)."""
        raise UsageError(f"run {ref.run_id} ran on {self.title or self.name}: its own process shows its progress",
                         hint=f"`nb2flow status {ref.run_id}` shows how it stands")

    def status(self, ref: RunRef, where: Where, console: Console) -> Report:
        return record_report(ref)

    def logs(self, ref: RunRef, step: str | None, follow: bool, where: Where, console: Console) -> Iterator[tuple]:
        """(step or None, text) pairs: the cells' output of the run's steps, framed by cell."""
        raise NotImplementedError

    def stop(self, ref: RunRef, force: bool, where: Where, console: Console) -> str:
        raise UsageError(f"{self.name} runs cannot be stopped by nb2flow")

    def delete(self, ref: RunRef, force: bool, where: Where, console: Console) -> str:
        raise UsageError(f"{self.name} runs cannot be deleted by nb2flow")

    def lookup(self, name: str, where: Where, console: Console) -> RunRef | None:
        """A run with no run folder here that this backend knows by name (None: not this backend's)."""
        return None

    def more_runs(self, where: Where, asked: bool | None, known: dict, console: Console) -> list[dict]:
        """Runs this backend knows of beyond the run folders (``list``); may refresh ``known`` rows in place."""
        return []

    def list_state(self, record: dict) -> str:
        return str(record.get("state", "?"))


# ---------------------------------------------------------------------------------------- the registry
_REGISTRY: dict[str, object] = {
    "local": "nb2flow.backends.local:LocalBackend",
    "argo": "nb2flow.backends.argo:ArgoBackend",
}
_LOADED: dict[str, Backend] = {}
ENTRY_POINTS = "nb2flow.backends"


def register(name: str, target) -> None:
    """Add a backend: a Backend subclass, an instance, or ``"module:Class"`` imported on first use."""
    _REGISTRY[name] = target
    _LOADED.pop(name, None)


def _entry_points() -> dict:
    from importlib.metadata import entry_points

    try:
        return {ep.name: ep for ep in entry_points(group=ENTRY_POINTS)}
    except Exception:  # a broken third-party distribution must not stop nb2flow
        return {}


def is_registered(name: str) -> bool:
    """Whether ``name`` is a backend (installed distributions are looked through only for a name not built in)."""
    return name in _REGISTRY or name in _entry_points()


def names() -> list[str]:
    """The registered backends' names: the built-in ones, then those registered or installed."""
    found = list(_REGISTRY)
    found += [n for n in _entry_points() if n not in found]
    return found


def get(name: str) -> Backend:
    """The backend registered as ``name`` (a UsageError naming the known ones otherwise)."""
    if name in _LOADED:
        return _LOADED[name]
    target = _REGISTRY.get(name)
    if target is None:
        ep = _entry_points().get(name)
        if ep is None:
            raise UsageError(f"no backend {name!r}", hint="backends: " + ", ".join(names()))
        target = ep.value
    if isinstance(target, str):
        import importlib

        module, _, attr = target.partition(":")
        target = getattr(importlib.import_module(module), attr)
    backend = target() if isinstance(target, type) else target
    _LOADED[name] = backend
    return backend


def of_record(record: dict | None) -> Backend:
    """The backend a run record names (records older than the field are local runs)."""
    return get((record or {}).get("backend") or "local")


def choose(flag: str | None = None, *, setting: str = "auto", source: str | None = None) -> tuple[str, str]:
    """(backend name, one line saying why): a flag (``--backend``, ``--local``, ``--argo``) wins over the
    ``backend`` setting; ``auto`` picks Argo inside a pod with a service-account token, else this machine."""
    from ..incluster import NO_TOKEN_HINT, in_cluster, in_pod

    if flag:
        get(flag)
        return flag, f"{get(flag).title} ({'--' + flag if flag in ('local', 'argo') else '--backend ' + flag})"
    where = f" in {source}" if source else ""
    if setting != "auto":
        return setting, f"{get(setting).title} (backend: {setting}{where})"
    if in_cluster():
        return "argo", (f"{get('argo').title}: this is a pod with a service account "
                        "(--local, or backend: local in nb2flow.yaml, runs here instead)")
    if in_pod():
        return "local", f"{get('local').title}: this pod has no service-account token ({NO_TOKEN_HINT})"
    return "local", f"{get('local').title} (no Kubernetes credentials found)"


# ---------------------------------------------------------------------------------------- finding runs
def find(name: str, where: Where, console: Console, *, search: list[str] | None = None) -> RunRef:
    """The run ``name`` names: a run folder under ``search`` (default: the current folder), or a run a
    backend knows by name (a workflow). A UsageError saying where it looked otherwise."""
    from ..runs import find_run, read_record

    try:
        run_dir = find_run(name, search or [os.getcwd()])
    except UsageError as miss:
        if os.sep in name:
            raise
        why = []
        for backend_name in names():
            try:
                ref = get(backend_name).lookup(name, where, console)
            except UsageError as exc:
                why.append(exc.message)
                continue
            if ref is not None:
                return ref
        said = f" ({'; '.join(why)})" if why else ""
        raise UsageError(f"no run {name!r} here, and no workflow of that name{said}", hint=miss.hint) from None
    record = read_record(run_dir)
    return RunRef(run_id=record.get("run_id") or os.path.basename(run_dir), backend=record.get("backend") or "local",
                  run_dir=run_dir, record=record)


def record_report(ref: RunRef, state: str | None = None) -> Report:
    """A run's state as its record says it (any backend's record has the same layout); ``state`` what the
    backend knows better (a local run whose process is gone is abandoned)."""
    from ..runner.protocol import StepState
    from ..runs import format_duration, path_here, step_detail

    record, run_dir = ref.record or {}, ref.run_dir
    workflow = record.get("workflow") or {}
    if workflow:
        where = f"argo workflow {workflow.get('namespace')}/{workflow.get('name')}; from its run folder"
    else:
        where = os.path.relpath(record["notebook"])
    rows = tuple(StepRow(name, StepState.parse(s["state"]).label, str(s.get("attempts", 0)), format_duration(s.get("duration")),
                         step_detail(s)[:100]) for name, s in (record.get("steps") or {}).items())
    lines = []
    shown = path_here(record.get("visible_notebook") or record.get("output_notebook"), record, run_dir)
    if shown:
        lines.append(f"notebook: {os.path.relpath(shown)}")
    if record.get("html"):
        lines.append(f"html: {os.path.relpath(path_here(record.get('visible_html') or record['html'], record, run_dir))}")
    elif record.get("html_skipped"):
        lines.append(f"html: - ({record['html_skipped']})")
    if workflow.get("ui"):
        lines.append(f"argo: {workflow['ui']}")
    lines.append(f"folder: {os.path.relpath(run_dir)}")
    return Report(headline=f"run {record['run_id']}: {state or record['state']} ({where})", steps=rows, lines=tuple(lines), data=record)


def refuse_ended(ref: RunRef, verb: str) -> None:
    """A UsageError when the run's record says it has ended (nothing to ``verb``)."""
    state = (ref.record or {}).get("state")
    if ref.record is not None and state != "running":
        raise UsageError(f"run {ref.run_id} has ended ({state}): nothing to {verb}",
                         hint=f"`nb2flow status {ref.run_id}` shows how it ended")


def _job_steps(record: dict, job: str) -> list:
    """In a pipeline of several notebooks and scripts: the steps of job ``job`` (a notebook job's ``JOB.STEP``s), also
    by JupyterFlow's name for the Nth job, ``job-N``."""
    import re

    jobs = [j.get("name") for j in ((record.get("pipeline") or {}).get("jobs") or [])]
    number = re.fullmatch(r"job-(\d+)", job)
    if number and 0 < int(number.group(1)) <= len(jobs):
        job = jobs[int(number.group(1)) - 1]
    return [name for name in record.get("steps") or {} if name == job or name.startswith(job + ".")] if jobs else []


def folder_logs(ref: RunRef, step: str | None, console: Console):
    """(step or None, text): each step's ``output.log`` in the run folder — its cells' output, framed by cell —
    the same for every backend (the step runner writes it wherever it runs)."""
    from ..runs import step_logs

    steps = (ref.record or {}).get("steps") or {}
    members = [step] if step in steps else _job_steps(ref.record or {}, step) if step is not None else list(steps)
    if not members:
        raise UsageError(f"run {ref.run_id} has no step {step!r}", hint="its steps: " + ", ".join(steps))
    chosen = {steps[name].get("task") or name: name for name in members}
    logs = step_logs(ref.run_dir, chosen)
    for task, text in logs:
        yield (chosen[task] if len(chosen) > 1 else None), text
    if not logs:
        console.notice(f"no step of run {ref.run_id} has written a log yet")
