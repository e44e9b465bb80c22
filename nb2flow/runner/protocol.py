"""The contract between nb2flow and the step runner: one definition, imported by both sides.

nb2flow (the executor, the manifest builder, the merge of a run's notebooks, ``status``) and
the step runner that runs in each step's process or pod (``nb2flow_step.py``, assembled from
this package) agree on:

* :class:`ExitStatus` — process exit statuses, of ``nb2flow`` and of a step;
* :class:`StepState` — a step's state, in ``status.json``, ``run.json`` and on screen
  (with :data:`LABELS` for display and :data:`ARGO_PHASES` for Argo's node phases);
* :class:`Role` — what each cell of a step notebook is for (``metadata.nb2flow.role``);
* :class:`RunLayout` and :class:`BundleLayout` — the files of a run folder and of a bundle;
* :class:`StepSpec` — a step's spec in the bundle (``steps/TASK.json``), written by nb2flow, read by the runner;
* :func:`status_entry` and :func:`step_error` — a step's ``status.json`` and the error it, ``run.json`` and the
  events carry;
* :func:`step_command` and :func:`step_arg_parser` — the one command that runs a step.

Standard library only: this file is copied into every bundle.
"""

from __future__ import annotations

import argparse
import enum
import os
from dataclasses import asdict, dataclass, field, fields

RUNTIME_VERSION = 2
RUNNER_FILE = "nb2flow_step.py"
NB2FLOW_DIR = ".nb2flow"
RUNS_DIR = NB2FLOW_DIR + "/runs"  # beside the notebook: one folder per run
BUNDLES_DIR = NB2FLOW_DIR + "/bundles"  # beside the notebook: step files of exports and schedules
STEM_MAX = 200  # a notebook name's part in file names: with ".out.ipynb" within a file system's 255 bytes
VISIBLE_DIR = "nb2flow-runs"  # beside the notebook, shown by JupyterLab's file browser: one merged notebook per run


def notebook_folder(notebook_path: str) -> str:
    """The folder a notebook's runs (:data:`RUNS_DIR`), bundles and visible merged notebooks live in, and where its
    steps run (their working folder): the notebook's own."""
    return os.path.dirname(os.path.abspath(notebook_path))


def runs_root(folder: str) -> str:
    """The folder holding the run folders of the notebooks in ``folder``."""
    return os.path.join(folder, *RUNS_DIR.split("/"))


def visible_notebook(notebook_folder: str, run_id: str) -> str:
    """Where a run's merged notebook is also written, for JupyterLab's file browser (which hides dot-folders)."""
    return os.path.join(notebook_folder, VISIBLE_DIR, f"{run_id}.ipynb")


class ExitStatus(enum.IntEnum):
    """Exit statuses of the ``nb2flow`` command and of a step's process (README: Exit statuses)."""

    OK = 0
    #: ``check`` found problems, or a step's code raised.
    FAILED = 1
    #: The input could not be used: missing file, not a notebook, bad usage or parameters.
    BAD_INPUT = 2
    #: A step's kernel died (out of memory, segfault, killed).
    KERNEL_DIED = 3
    #: A step was cancelled before it ran its own cells (its parents failed).
    CANCELLED = 4
    #: A bug in nb2flow itself.
    INTERNAL = 70
    #: Interrupted (Ctrl-C, SIGTERM).
    INTERRUPTED = 130


class StepState(str, enum.Enum):
    """A step's state. The value is what files store; :attr:`label` is what people read."""

    PENDING = "pending"  # not started, or started (kernel warming) and waiting for its parents
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    REUSED = "reused"  # succeeded in an earlier run; its saved values are used
    FAILED = "failed"
    KERNEL_DIED = "kernel-died"
    TIMED_OUT = "timed-out"
    SKIPPED = "skipped"  # never ran: a parent failed
    CANCELLED = "cancelled"  # stopped by --fail-fast or a stop
    INTERRUPTED = "interrupted"  # Ctrl-C

    @property
    def finished(self) -> bool:
        return self not in (StepState.PENDING, StepState.RUNNING)

    @property
    def ok(self) -> bool:
        return self in (StepState.SUCCEEDED, StepState.REUSED)

    @property
    def failed(self) -> bool:
        return self in (StepState.FAILED, StepState.KERNEL_DIED, StepState.TIMED_OUT)

    @property
    def label(self) -> str:
        return LABELS.get(self, self.value)

    @classmethod
    def parse(cls, text: str) -> "StepState":
        """A state from a file, accepting the display words that run records of nb2flow 0.1 stored."""
        try:
            return cls(text)
        except ValueError:
            return _FROM_LABEL.get(text, cls.PENDING)


LABELS = {
    StepState.PENDING: "waiting",
    StepState.SUCCEEDED: "done",
    StepState.KERNEL_DIED: "kernel died",
    StepState.TIMED_OUT: "timed out",
}
_FROM_LABEL = {label: state for state, label in LABELS.items()}

#: Argo's node phases (``pkg/apis/workflow/v1alpha1/workflow_types.go``, ``NodePhase``).
ARGO_PHASES = {
    "Pending": StepState.PENDING,
    "Running": StepState.RUNNING,
    "Succeeded": StepState.SUCCEEDED,
    "Failed": StepState.FAILED,
    "Error": StepState.FAILED,
    "Skipped": StepState.SKIPPED,
    "Omitted": StepState.SKIPPED,
}


class Role(str, enum.Enum):
    """What a cell of a step notebook (or a chunk of a step script) is for."""

    SETUP = "setup"  # a setup cell of the notebook: runs in every step
    PARAMETERS = "parameters"  # the notebook's parameters cell (papermill's or Kale's)
    INJECTED = "injected"  # the parameters of this run, right after the parameters cell
    PREIMPORT = "preimport"  # the libraries the step's cells import, imported while it waits for its parents
    DEFINE = "define"  # re-creates a module, function or class another step defined
    LOAD = "load"  # loads the values this step reads
    CODE = "code"  # the step's own cells
    SAVE = "save"  # saves the values later steps read

    @property
    def before_go(self) -> bool:
        """Runs while the step waits for its parents (kernel warm-up)."""
        return self in (Role.SETUP, Role.PARAMETERS, Role.INJECTED, Role.PREIMPORT)

    @property
    def from_notebook(self) -> bool:
        """The cell is one of the user's (its outputs belong in the merged notebook)."""
        return self in (Role.SETUP, Role.PARAMETERS, Role.CODE)


@dataclass(frozen=True)
class StepSpec:
    """One step of a bundle, as the step runner reads it (``BUNDLE/steps/TASK.json``, signed)."""

    name: str
    task: str  # the name as Argo and file names allow it (nb2flow.names)
    notebook: str  # the notebook's file name
    mode: str = "notebook"  # notebook | script
    cwd: str = ""  # the folder the step runs in: the notebook's
    kernel_name: str | None = None
    parents: list = field(default_factory=list)
    inputs: list = field(default_factory=list)  # {"name", "from" (step), "from_task", "kind": data | define}
    outputs: list = field(default_factory=list)  # names it saves for later steps
    consumers: dict = field(default_factory=dict)  # output name -> the steps that read it
    optional_outputs: list = field(default_factory=list)  # outputs only steps reading names at run time want
    random_state_from: str | None = None  # the task whose saved random state it continues from
    saves_random_state: bool = False
    options: dict = field(default_factory=dict)  # the step's tags' options (nb2flow.pipeline.StepOptions)
    fingerprint: str = ""
    # values the step may change that steps not after it read unchanged: name -> {"cell", "readers"}; the step
    # fingerprints them once loaded and fails, naming the cause, if it changed one (top to bottom would differ)
    unchanged: dict = field(default_factory=dict)
    # a pipeline of several notebooks and scripts: the job the step belongs to; the parameters it takes (None: all
    # of the run's); a command job's {"argv", "text", "shell"} and its parameters' defaults; the job's folder
    # below the pipeline's (the --cwd a pod gets is the pipeline's folder)
    job: str | None = None
    accepts: list | None = None
    command: dict | None = None
    defaults: dict = field(default_factory=dict)
    fixed: dict = field(default_factory=dict)  # the job's own parameter values (wire form): over the run's
    subdir: str = ""

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "StepSpec":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def data_inputs(self) -> list:
        """(name, providing task, providing step) of every value the step loads."""
        return [[i["name"], i["from_task"], i["from"]] + (["optional"] if i.get("optional") else [])
                for i in self.inputs if i["kind"] == "data"]


def step_error(cell, ename: str, evalue: str, traceback=(), hint: str | None = None) -> dict:
    """A failed step's error: in its ``status.json``, in ``run.json`` and in the events (``cell`` is the
    notebook's cell number, or None when no cell of the step's was running)."""
    error = {"cell": cell, "ename": ename, "evalue": evalue, "traceback": list(traceback)}
    if hint:
        error["hint"] = hint
    return error


STATUS_KEYS = ("step", "state", "stage", "pid", "kernel_pid", "attempt", "started", "ended", "running_since", "cell", "role",
               "error", "reused_from", "timings", "runtime_version")


def check_status_keys(fields) -> None:
    """Only :data:`STATUS_KEYS` go in a ``status.json`` (a typo would be a key no watcher reads)."""
    unknown = set(fields) - set(STATUS_KEYS)
    if unknown:
        raise ValueError(f"not a status.json key: {sorted(unknown)}")


def status_entry(step: str, state: "StepState", *, stage: str, attempt: int = 1, **more) -> dict:
    """A step's ``status.json`` (keys: :data:`STATUS_KEYS`): the step writes it as it goes; a watcher reads it.
    ``stage`` is ``starting``, ``kernel-started``, ``waiting`` (for its parents), ``running`` or ``ended``."""
    check_status_keys(more)
    return {"step": step, "state": StepState(state).value, "stage": stage, "attempt": attempt, **more}


@dataclass(frozen=True)
class RunLayout:
    """The files of one run folder (``<notebook folder>/.nb2flow/runs/<run id>/``)."""

    root: str

    RECORD = "run.json"

    @property
    def notebook_folder(self) -> str:
        """The folder of the notebook whose run this is (``<folder>/.nb2flow/runs/<run id>``)."""
        folder = os.path.dirname(os.path.abspath(self.root))
        for _ in RUNS_DIR.split("/"):
            folder = os.path.dirname(folder)
        return folder

    @property
    def record(self) -> str:
        return os.path.join(self.root, self.RECORD)

    @property
    def parameters(self) -> str:
        return os.path.join(self.root, "parameters.json")

    @property
    def bundle(self) -> str:
        return os.path.join(self.root, "bundle")

    @property
    def installs(self) -> str:
        """What the run installed once, before the steps (commands, exit codes, output)."""
        return os.path.join(self.root, "installs.json")

    @property
    def values_root(self) -> str:
        return os.path.join(self.root, "values")

    def out_notebook(self, stem: str) -> str:
        return os.path.join(self.root, f"{stem[:STEM_MAX]}.out.ipynb")

    @property
    def steps_root(self) -> str:
        return os.path.join(self.root, "steps")

    def step_dir(self, task: str) -> str:
        return os.path.join(self.steps_root, task)

    def status(self, task: str) -> str:
        return os.path.join(self.step_dir(task), "status.json")

    def go(self, task: str) -> str:
        return os.path.join(self.step_dir(task), "go")

    def cancel(self, task: str) -> str:
        return os.path.join(self.step_dir(task), "cancel")

    def markers(self, task: str) -> tuple[str, str, str]:
        """The files a new attempt of the step must not find from an earlier one."""
        return self.go(task), self.cancel(task), self.status(task)

    def output_log(self, task: str) -> str:
        return os.path.join(self.step_dir(task), "output.log")

    def runner_log(self, task: str) -> str:
        return os.path.join(self.step_dir(task), "runner.log")

    def executed(self, task: str) -> str:
        return os.path.join(self.step_dir(task), f"{task}.ipynb")

    def values(self, task: str) -> str:
        return os.path.join(self.values_root, task)

    def unchanged(self, task: str) -> str:
        """The fingerprints a step took of the values it must leave unchanged (StepSpec.unchanged)."""
        return os.path.join(self.step_dir(task), "unchanged.json")

    def random_state(self, task: str) -> str:
        """The global random generators' state a step ended with (no Python name starts with a dot)."""
        return os.path.join(self.values(task), ".random-state.pkl")


@dataclass(frozen=True)
class BundleLayout:
    """The files of a bundle: the runner and each step's spec and notebook (or script)."""

    root: str

    @property
    def runner(self) -> str:
        return os.path.join(self.root, RUNNER_FILE)

    @property
    def pipeline(self) -> str:
        return os.path.join(self.root, "pipeline.json")

    @property
    def source(self) -> str:
        """The notebook's cells as they were when the bundle was written (what a run's merged notebook shows)."""
        return os.path.join(self.root, "notebook.json")

    def job_source(self, job: str) -> str:
        """In a pipeline of several notebooks: a notebook job's cells, as :attr:`source` holds one notebook's."""
        return os.path.join(self.root, "sources", f"{job}.json")

    @property
    def steps(self) -> str:
        return os.path.join(self.root, "steps")

    def spec(self, task: str) -> str:
        return os.path.join(self.steps, f"{task}.json")

    def notebook(self, task: str) -> str:
        return os.path.join(self.steps, f"{task}.ipynb")

    def script(self, task: str) -> str:
        return os.path.join(self.steps, f"{task}.py")


#: The runner's argument that makes it the warm server (``--warm-server SOCKET IDLE``, see :mod:`.warmserver`)
WARM_SERVER = "--warm-server"


#: How a process starts the step runner from a shared folder: ``python -c RUNNER_BOOT RUNNER DIGEST ARGS``
#: reads the file once, runs it only when its SHA-256 is the digest nb2flow wrote into the command (the
#: manifest, or the local run's own memory), and runs exactly the bytes it checked.
RUNNER_BOOT = (
    "import hashlib, sys\n"
    "path, digest = sys.argv[1], sys.argv[2]\n"
    "with open(path, 'rb') as fh:\n"
    "    code = fh.read()\n"
    "if hashlib.sha256(code).hexdigest() != digest:\n"
    "    sys.exit('nb2flow: ' + path + ': not the step runner nb2flow wrote (its SHA-256 differs from the one in the "
    "command): refusing to run it; in a shared folder, someone else may have changed it')\n"
    "sys.argv = [path] + sys.argv[3:]\n"
    "globals().update(__file__=path, RUNNER_DIGEST=digest)\n"
    "exec(compile(code, path, 'exec'), globals())\n"
)


def runner_argv(python: str, runner: str, digest: str | None) -> list:
    """The start of a command that runs the runner file ``runner``: checked against ``digest`` when given."""
    return [python, "-c", RUNNER_BOOT, runner, digest] if digest else [python, runner]


def step_command(python: str, bundle: str, run_dir: str, task: str, *, params_file: str | None = None,
                 params: dict | None = None, cwd: str | None = None, wait: bool = False, attempt: int = 1,
                 join=os.path.join, digest: str | None = None) -> list:
    """The command that runs one step, locally and in a pod.

    ``params`` maps a name to the text after ``--param NAME=`` (JSON, or an Argo placeholder);
    ``join`` builds the runner's path (``posixpath.join`` for a pod's paths); ``digest``: the runner's
    SHA-256, checked before it runs (see :data:`RUNNER_BOOT`).
    """
    cmd = runner_argv(python, join(bundle, RUNNER_FILE), digest) + ["--bundle", bundle, "--run-dir", run_dir, "--step", task]
    if params_file:
        cmd += ["--params-file", params_file]
    for name, text in (params or {}).items():
        cmd += ["--param", f"{name}={text}"]
    if cwd:
        cmd += ["--cwd", cwd]
    if wait:
        cmd.append("--wait")
    if attempt != 1:
        cmd += ["--attempt", str(attempt)]
    return cmd


def error_line(step: str, cell, ename: str, evalue: str) -> str:
    """A step's failure in one line, as Argo's node message, the pod log and notifications show it:
    ``cell 5 (step:train): ZeroDivisionError: division by zero``."""
    return f"{f'cell {cell} ' if cell else ''}(step:{step}): {ename}: {evalue}".rstrip(": ")


FINALIZE = "--finalize"


def finalize_command(python: str, bundle: str, run_dir: str, *, workflow: dict, failures: str, created: str,
                     params: dict | None = None, cwd: str | None = None, ui_link: str | None = None,
                     notify_on: str = "failure", join=os.path.join, digest: str | None = None) -> list:
    """The command of an Argo run's final task (exit handler): the record, the merged notebook, the HTML.

    ``workflow``: name, namespace, uid and phase (Argo placeholders); ``failures``: Argo's JSON list of
    failed nodes; ``created``: the workflow's creation time (RFC 3339)."""
    cmd = runner_argv(python, join(bundle, RUNNER_FILE), digest) + [FINALIZE, "--bundle", bundle, "--run-dir", run_dir,
           "--workflow", workflow["name"], "--namespace", workflow["namespace"], "--uid", workflow["uid"],
           "--phase", workflow["phase"], "--failures", failures, "--created", created, "--notify-on", notify_on]
    for name, text in (params or {}).items():
        cmd += ["--param", f"{name}={text}"]
    if cwd:
        cmd += ["--cwd", cwd]
    if ui_link:
        cmd += ["--ui-link", ui_link]
    return cmd


def finalize_arg_parser() -> argparse.ArgumentParser:
    """The parser of :func:`finalize_command`'s arguments (after ``--finalize``)."""
    parser = argparse.ArgumentParser(prog=f"{RUNNER_FILE} {FINALIZE}", description="Write an Argo run's record and merged notebook.")
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--workflow", required=True)
    parser.add_argument("--namespace", default="")
    parser.add_argument("--uid", default="")
    parser.add_argument("--phase", default="")
    parser.add_argument("--failures", default="[]", help="Argo's {{workflow.failures}}")
    parser.add_argument("--created", default="", help="Argo's {{workflow.creationTimestamp}}")
    parser.add_argument("--param", action="append", help="NAME=JSON, repeatable")
    parser.add_argument("--cwd", help="the notebook's folder")
    parser.add_argument("--ui-link", help="the run in the Argo UI")
    parser.add_argument("--notify-on", choices=("failure", "always"), default="failure")
    parser.add_argument("--no-html", dest="html", action="store_false", help="skip the HTML rendering")
    return parser


def step_arg_parser() -> argparse.ArgumentParser:
    """The parser of :func:`step_command`'s arguments (after the runner's path)."""
    parser = argparse.ArgumentParser(prog=RUNNER_FILE, description="Run one nb2flow step.")
    parser.add_argument("--bundle", required=True, help="folder with nb2flow_step.py and steps/")
    parser.add_argument("--run-dir", required=True, help="the run's folder (values, statuses, outputs)")
    parser.add_argument("--step", required=True, help="the step's task name")
    parser.add_argument("--params-file", help="JSON object of parameter values")
    parser.add_argument("--param", action="append", help="NAME=JSON, repeatable")
    parser.add_argument("--cwd", help="working directory (the notebook's folder)")
    parser.add_argument("--wait", action="store_true", help="start the kernel, then wait for RUN/steps/TASK/go")
    parser.add_argument("--attempt", type=int, default=1)
    return parser
