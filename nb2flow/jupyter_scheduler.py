"""nb2flow as a backend of JupyterLab's scheduler (jupyter-scheduler 2.x): "Create Notebook Job" runs the
notebook as an nb2flow pipeline.

``pip install 'nb2flow[jupyterlab]'`` installs jupyter-scheduler and enables this module as a server
extension (``etc/jupyter/jupyter_server_config.d/nb2flow-scheduler.json``; from a source checkout,
``nb2flow enable-scheduler``, see :mod:`nb2flow.jupyter_scheduler_config`). When the server links its extensions, this
one sets jupyter-scheduler's own documented configuration, as ``c.SchedulerApp.scheduler_class = ...`` in
``jupyter_server_config.py`` would (and leaves alone what the user's configuration sets):
``SchedulerApp.scheduler_class`` is :class:`Scheduler` (whose ``execution_manager_class`` and
``task_runner_class`` are nb2flow's) and ``SchedulerApp.environment_manager_class`` is :class:`Environments`:
one environment, *nb2flow pipeline*, with compute types ``local`` (the steps
run on the notebook server's machine) and ``argo`` (an Argo Workflow, followed to its end), runs
each job with ``nb2flow run`` on the staged copy of the notebook, and gives the job the merged
notebook as its output notebook (and HTML), the run record and the per-step notebooks as its side
files, and a status message naming the failing step and cell. Stopping a job stops nb2flow, which
stops every step process and kernel. A job definition with a schedule and compute type ``argo``
becomes an Argo CronWorkflow (``nb2flow schedule``); with ``local``, jupyter-scheduler's own task
runner starts the jobs (only while the notebook server runs). A notebook without step tags runs as
jupyter-scheduler would run it.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys

from jupyter_scheduler.environments import EnvironmentManager
from jupyter_scheduler.executors import DefaultExecutionManager
from jupyter_scheduler.models import RuntimeEnvironment
from jupyter_scheduler.scheduler import Scheduler as _Scheduler
from jupyter_scheduler.task_runner import TaskRunner as _TaskRunner
from traitlets import Type as TType

SUPPORTED = "jupyter-scheduler>=2.7,<3"
ENVIRONMENT = "nb2flow"
COMPUTE_TYPES = ("local", "argo")
SIDE_FOLDER = "nb2flow-run"  # the job's side files: run.json and each step's executed notebook


class Environments(EnvironmentManager):
    """One environment: the notebook as an nb2flow pipeline, here or on Argo."""

    def list_environments(self) -> list:
        argo = argo_reachable()
        return [RuntimeEnvironment(
            name=ENVIRONMENT, label="nb2flow pipeline",
            description=("Runs the notebook's tagged steps as a pipeline: local (this server's machine) or argo (Argo Workflows)"
                         if argo else "Runs the notebook's tagged steps as a pipeline on this server's machine (argo needs a "
                         "notebook pod with a service account, or a kubeconfig)"),
            file_extensions=["ipynb"], output_formats=["ipynb", "html"], metadata={},
            compute_types=list(COMPUTE_TYPES) if argo else ["local"], default_compute_type="local", utc_only=False)]

    def manage_environments_command(self) -> str:
        return ""

    def output_formats_mapping(self) -> dict:
        return {"ipynb": "Notebook", "html": "HTML"}


def job_parameters(parameters: dict | None) -> dict:
    """A job's parameters as values: jupyter-scheduler writes each as Python source (``n = 5``), so ``5`` is a
    number and ``'north'`` a string; a bare word it would leave undefined is taken as a string."""
    import ast

    out = {}
    for name, text in (parameters or {}).items():
        try:
            out[name] = ast.literal_eval(text) if isinstance(text, str) else text
        except (ValueError, SyntaxError):
            out[name] = text
    return out


def _parameter_args(parameters: dict | None) -> list:
    values = job_parameters(parameters)
    from .params import yaml_text

    return ["-y", yaml_text(values)] if values else []


def run_command(input_path: str, compute_type: str | None, parameters: dict | None) -> list:
    """The ``nb2flow run`` of a job: the staged notebook, here or on Argo (followed to its end), its parameters."""
    cmd = [sys.executable, "-m", "nb2flow", "run", input_path, "--no-progress", "--events", "json"]
    cmd += ["--argo", "--watch"] if compute_type == "argo" else ["--local"]
    return cmd + _parameter_args(parameters)


def failure_line(output: str) -> str:
    """The one line nb2flow printed about the failure (``nb2flow: nb.ipynb: cell 5 (step:train): ...``), for a
    command without an event stream (``schedule``)."""
    lines = [line for line in output.splitlines() if line.startswith("nb2flow: ") and "warning" not in line]
    return lines[-1][len("nb2flow: "):] if lines else "nb2flow failed"


# an error whose fix the command line says in flags (--pod-spec), as the Create Job dialog's user can act on it
IN_THE_DIALOGS_WORDS = {
    "no-pod-settings": ("compute type argo runs the steps as pods copied from the notebook's own pod, and this Jupyter "
                        "server runs in no pod with a service account: choose compute type local, or set image: (and "
                        "volumes:) in nb2flow.yaml beside the notebook"),
}


def argo_reachable() -> bool:
    """Whether Argo could be asked from this server: a pod with a service-account token, or a kubeconfig (no request
    is made: the dialog lists compute types at once)."""
    from .incluster import in_cluster

    kubeconfig = os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    return in_cluster() or any(os.path.isfile(p) for p in kubeconfig.split(os.pathsep) if p)


def run_outcome(events_text: str) -> tuple[str | None, str | None]:
    """(this run's folder, the failure to show) from a run's events (``--events json``): the folder only when
    this run made one (never another run found in the folder), the error with each problem that stopped it."""
    from .events import read_events

    run_dir = error = None
    problems = []
    for ev in read_events(events_text.splitlines()):
        if ev["event"] in ("run-started", "run-finished", "submitted") and ev.get("run_dir"):
            run_dir = ev["run_dir"] if os.path.isdir(ev["run_dir"]) else run_dir
        elif ev["event"] == "problem":
            problems.append(f"cell {ev['cell']}: {ev['message']}" if ev.get("cell") else ev["message"])
        elif ev["event"] == "error":
            error = IN_THE_DIALOGS_WORDS.get(ev.get("code"), ev["message"])
    if error and problems:
        error = f"{error}: " + "; ".join(problems)
    return run_dir, error


class ExecutionManager(DefaultExecutionManager):
    """Runs a job's notebook with ``nb2flow run``; a notebook without steps as jupyter-scheduler does.

    jupyter-scheduler stops a job by killing this process (SIGKILL): nb2flow gets SIGTERM then (the
    parent-death signal) and stops every step process and kernel."""

    def execute(self):
        from .api import load
        from .runner.forkserver import die_with_parent

        job = self.model
        input_path = self.staging_paths["input"]
        staging = os.path.dirname(input_path)
        if not load(input_path).steps:
            return super().execute()
        proc = subprocess.run(run_command(os.path.basename(input_path), job.compute_type, job.parameters), cwd=staging, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=die_with_parent,
                              env=dict(os.environ, NO_COLOR="1"))
        with open(os.path.join(staging, "nb2flow.log"), "w", encoding="utf-8") as fh:
            fh.write(proc.stderr)
        run_dir, error = run_outcome(proc.stdout)
        self._outputs(job, run_dir)
        if proc.returncode != 0:
            raise RuntimeError(error or failure_line(proc.stderr))

    def _outputs(self, job, run_dir: str | None) -> None:
        """The merged notebook as the job's output notebook (and HTML); the record and step notebooks as side files."""
        if run_dir is None:
            return
        merged = next(iter(glob.glob(os.path.join(run_dir, "*.out.ipynb"))), None)
        if merged:
            import nbconvert
            import nbformat

            with open(merged, encoding="utf-8") as fh:
                nb = nbformat.read(fh, as_version=4)
            for fmt in job.output_formats or []:
                if fmt == "ipynb":
                    shutil.copyfile(merged, self.staging_paths["ipynb"])
                elif fmt in self.staging_paths:
                    body, _ = nbconvert.get_exporter(fmt)().from_notebook_node(nb)
                    with open(self.staging_paths[fmt], "w", encoding="utf-8") as fh:
                        fh.write(body)
        side = os.path.join(os.path.dirname(self.staging_paths["input"]), SIDE_FOLDER)
        os.makedirs(side, exist_ok=True)
        files = []
        record = os.path.join(run_dir, "run.json")
        if os.path.isfile(record):
            shutil.copyfile(record, os.path.join(side, "run.json"))
            files.append(f"{SIDE_FOLDER}/run.json")
        for executed in sorted(glob.glob(os.path.join(run_dir, "steps", "*", "*.ipynb"))):
            name = f"step-{os.path.basename(executed)}"
            shutil.copyfile(executed, os.path.join(side, name))
            files.append(f"{SIDE_FOLDER}/{name}")
        self._package(files)

    def _package(self, files: list) -> None:
        from jupyter_scheduler.orm import Job

        with self.db_session() as session:
            current = session.query(Job.packaged_files).filter(Job.job_id == self.job_id).scalar() or []
            session.query(Job).filter(Job.job_id == self.job_id).update({"packaged_files": sorted(set(current) | set(files))})
            session.commit()

    def add_side_effects_files(self, staging_dir: str):
        """Side files are the run's record and step notebooks (above), not nb2flow's internals (values, bundles)."""
        return None

    def validate(cls, input_path: str) -> bool:  # jupyter-scheduler calls it as cls.validate(cls, path)
        return True  # the kernel comes from the notebook's metadata, else python3 (nb2flow picks it)


class Scheduler(_Scheduler):
    """jupyter-scheduler's scheduler with nb2flow's execution manager and task runner (``SchedulerApp.scheduler_class``);
    an ``argo`` job definition with a schedule becomes an Argo CronWorkflow instead of a task of the server's own runner."""

    execution_manager_class = TType(allow_none=True, config=True, klass="jupyter_scheduler.executors.ExecutionManager",
                                    default_value="nb2flow.jupyter_scheduler.ExecutionManager",
                                    help="The execution manager class to use (nb2flow's: a job is an nb2flow run).")
    task_runner_class = TType(allow_none=True, config=True, klass="jupyter_scheduler.task_runner.BaseTaskRunner",
                              default_value="nb2flow.jupyter_scheduler.TaskRunner",
                              help="The runner of scheduled job definitions (nb2flow's leaves argo ones to Argo).")

    def copy_input_folder(self, input_uri: str, nb_copy_to_path: str) -> list:
        """"Run job with input folder": the notebook's folder as its input, without nb2flow's records of earlier runs
        (``.nb2flow/``: values, bundles, logs; ``nb2flow-runs/``: merged notebooks), which are no input of this job."""
        from .runner.protocol import NB2FLOW_DIR, VISIBLE_DIR

        source = os.path.dirname(os.path.join(self.root_dir, input_uri))
        staging = os.path.dirname(nb_copy_to_path)
        os.makedirs(staging, exist_ok=True)  # the job's staging folder is made here, as jupyter-scheduler's copy makes it
        skip = shutil.ignore_patterns(NB2FLOW_DIR, VISIBLE_DIR)
        for item in sorted(set(os.listdir(source)) - skip(source, os.listdir(source))):
            src, dst = os.path.join(source, item), os.path.join(staging, item)
            if os.path.isdir(src):
                shutil.copytree(src, dst, ignore=skip, dirs_exist_ok=True)
            elif os.path.isfile(src):
                shutil.copy2(src, dst)
        return sorted(os.path.relpath(os.path.join(folder, name), staging)
                      for folder, _, names in os.walk(staging) for name in names)

    def create_job_definition(self, model) -> str:
        if model.compute_type != "argo" or not model.schedule:
            return super().create_job_definition(model)
        saved, self.task_runner = self.task_runner, None  # Argo's cron controller runs it, not this server
        try:
            definition_id = super().create_job_definition(model)
        finally:
            self.task_runner = saved
        input_path = self.get_staging_paths(self.get_job_definition(definition_id))["input"]
        cmd = schedule_command(input_path, model.schedule, model.timezone, model.name, model.parameters)
        proc = subprocess.run(cmd, cwd=os.path.dirname(input_path), capture_output=True, text=True, env=dict(os.environ, NO_COLOR="1"))
        self.log.info("%s", proc.stderr.strip())
        if proc.returncode != 0:
            self.delete_job_definition(definition_id)
            raise RuntimeError(failure_line(proc.stderr))
        return definition_id


class TaskRunner(_TaskRunner):
    """jupyter-scheduler's runner of scheduled job definitions, leaving ``argo`` ones to Argo's cron controller (after a
    server restart it reads every definition with a schedule from its database)."""

    def create_job(self, job_definition_id: str):
        definition = self.scheduler.get_job_definition(job_definition_id)
        if definition is not None and definition.compute_type == "argo":
            return None
        return super().create_job(job_definition_id)


def schedule_command(input_path: str, cron: str, timezone: str | None, name: str, parameters: dict | None) -> list:
    """``nb2flow schedule`` for a job definition: its cron, time zone, name and parameters."""
    cmd = [sys.executable, "-m", "nb2flow", "schedule", input_path, "--cron", cron, "--name", name]
    if timezone and timezone != "UTC":
        cmd += ["--timezone", timezone]
    return cmd + _parameter_args(parameters)


def _jupyter_server_extension_points():
    return [{"module": "nb2flow.jupyter_scheduler"}]


NB2FLOW_CONFIG = {"scheduler_class": "nb2flow.jupyter_scheduler.Scheduler",
                  "environment_manager_class": "nb2flow.jupyter_scheduler.Environments"}


def _link_jupyter_server_extension(serverapp) -> None:
    """Before any extension is loaded: jupyter-scheduler's configuration names nb2flow's scheduler and environments,
    unless the user's configuration already names others. Extensions link in name order, so jupyter-scheduler's
    app has read the server's configuration already: it gets the same values directly."""
    from traitlets.config import Config

    configured = serverapp.config["SchedulerApp"] if "SchedulerApp" in serverapp.config else {}
    config = Config({"SchedulerApp": {k: v for k, v in NB2FLOW_CONFIG.items() if k not in configured}})
    serverapp.update_config(config)
    for app in serverapp.extension_manager.extension_apps.get("jupyter_scheduler", ()):
        app.update_config(config)


def _load_jupyter_server_extension(serverapp) -> None:
    """Says whether JupyterLab's scheduler runs notebooks as nb2flow pipelines: the configuration does the wiring
    (``SchedulerApp.scheduler_class``, ``SchedulerApp.environment_manager_class``); this only reports it, and warns
    when another scheduler or environment manager is configured in their place."""
    settings = serverapp.web_app.settings
    scheduler = settings.get("scheduler")
    if scheduler is None:
        serverapp.log.warning("nb2flow: jupyter-scheduler is not loaded; nothing to do (pip install 'nb2flow[jupyterlab]')")
        return
    if not isinstance(scheduler, Scheduler) or not isinstance(settings.get("environments_manager"), Environments):
        serverapp.log.warning("nb2flow: JupyterLab's scheduler is configured with %s and %s, not nb2flow's: set "
                              "c.SchedulerApp.scheduler_class = 'nb2flow.jupyter_scheduler.Scheduler' and "
                              "c.SchedulerApp.environment_manager_class = 'nb2flow.jupyter_scheduler.Environments'",
                              type(scheduler).__name__, type(settings.get("environments_manager")).__name__)
        return
    serverapp.log.info("nb2flow: JupyterLab's scheduler (%s) runs notebooks as nb2flow pipelines (compute types: local, argo)",
                       SUPPORTED)
