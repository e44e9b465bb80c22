"""The ``nb2flow`` command: parse flags, make one library call, report.

Only click and nb2flow's light modules are imported at start-up; each command imports
what it needs (kubernetes, papermill, nbclient, rich) inside its own body, so
``nb2flow --help``, ``check`` and ``graph`` stay instant.
"""

from __future__ import annotations

import json
import os
import sys

import click

from . import __version__
from .errors import ClusterError, ExitStatus, Nb2flowError, PipelineError, StepFailed, UsageError

NOTEBOOK = click.Path(dir_okay=True, path_type=str)
_EVENTS = None  # the event sink of this command (``--events json``), see nb2flow.events


def _emit(name: str, **fields) -> None:
    if _EVENTS is not None:
        from .events import event

        _EVENTS(event(name, **fields))


def _sink(ev_builder, *args) -> None:
    """Send an event built by one of :mod:`nb2flow.events`' builders (only when ``--events`` is on)."""
    if _EVENTS is not None:
        from . import events

        _EVENTS(getattr(events, ev_builder)(*args))


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "-V", "--version", prog_name="nb2flow")
def cli() -> None:
    """Run a tagged Jupyter notebook as a pipeline of steps: on this machine, or as an Argo
    Workflow that reuses the notebook pod's own image and volumes.

    Tag cells step:NAME (and after:NAME to run in parallel), then `nb2flow check NOTEBOOK`.
    """


@cli.command()
@click.argument("notebook", type=NOTEBOOK)
@click.option("--json", "as_json", is_flag=True, help="Print the pipeline and findings as JSON.")
def check(notebook: str, as_json: bool) -> int:
    """Check a notebook's tags and data flow; exit 1 if any problem is found.

    Reports names a step reads that no cell above defines, values a step reads from a step
    that does not run before it, parallel steps assigning the same name, syntax errors and
    tag mistakes, each with its cell number.
    """
    from .api import load
    from .pipeline import pipeline_to_json

    pipeline = load(notebook)
    if as_json:
        click.echo(json.dumps(pipeline_to_json(pipeline), indent=2))
    else:
        for finding in pipeline.findings:
            click.echo(_color_finding(_printable(finding.render(notebook)), finding.severity.value))
        _say(_check_summary(pipeline))
    return ExitStatus.OK if pipeline.ok else ExitStatus.FAILED


@cli.command()
@click.argument("notebook", type=NOTEBOOK)
@click.option("--format", "fmt", type=click.Choice(["text", "mermaid", "dot"]), default="text", show_default=True, help="Terminal drawing, mermaid (JupyterLab, GitHub markdown) or graphviz dot.")
@click.option("--vars", "show_vars", is_flag=True, help="Label each edge with the values that flow along it.")
def graph(notebook: str, fmt: str, show_vars: bool) -> int:
    """Draw the step DAG."""
    from .api import load
    from .graph import render

    pipeline = load(notebook)
    click.echo(render(pipeline, fmt, show_vars=show_vars), nl=False)
    if pipeline.errors:
        _say(f"{notebook}: {len(pipeline.errors)} problem(s); see `nb2flow check {notebook}`")
    return ExitStatus.OK


def _cluster_options(f):
    """Where step pods take their image, volumes and settings from."""
    f = click.option("--workdir", default=None, metavar="DIR", help="The notebook's folder as step pods see it.")(f)
    f = click.option("--context", default=None, help="kubeconfig context (outside a cluster).")(f)
    f = click.option("-n", "--namespace", default=None, help="Namespace [default: the notebook pod's].")(f)
    f = click.option("--from-pod", "from_pod", default=None, metavar="NAME", help="Copy the settings of this running pod (kubeconfig).")(f)
    f = click.option("--pod-spec", "pod_spec", default=None, metavar="FILE", type=click.Path(dir_okay=False), help="Copy the settings of a pod from `kubectl get pod -o json` (offline).")(f)
    return f


def _kube_options(f):
    f = click.option("--context", default=None, help="kubeconfig context (outside a cluster).")(f)
    f = click.option("-n", "--namespace", default=None, help="Namespace [default: this pod's, else the kubeconfig's].")(f)
    return f


def _parameter_options(f):
    """papermill's parameter flags; merged in papermill's order whatever their order here."""
    f = click.option("-f", "--parameters-file", "param_files", multiple=True, type=click.Path(dir_okay=False), help="YAML file of parameters.")(f)
    f = click.option("-y", "--parameters-yaml", "param_yamls", multiple=True, help="YAML string of parameters.")(f)
    f = click.option("-r", "--parameters-raw", "param_raw", nargs=2, multiple=True, metavar="NAME VALUE", help="Parameter passed as a string.")(f)
    f = click.option("-p", "--parameters", "param_typed", nargs=2, multiple=True, metavar="NAME VALUE", help="Parameter, typed as papermill types it (True/False/None, int, float, else string).")(f)
    return f


@cli.command()
@click.argument("notebook", type=NOTEBOOK, required=False)
@_parameter_options
@click.option("--mode", type=click.Choice(["notebook", "script"]), default=None, help="Run each step as a notebook with a kernel (default) or as a plain python script.")
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=None, help="Steps to run at once [default: the number of CPUs].")
@click.option("--fail-fast", is_flag=True, help="Stop every step at the first failure.")
@click.option("--resume", "resume", metavar="RUN_ID", help="Complete an earlier run: re-run its failed, interrupted and never-run steps, and steps whose code or inputs changed.")
@click.option("--reuse", is_flag=True, help="Reuse unchanged steps of earlier runs of this notebook (same cells, definitions, inputs' fingerprints and parameters), with their saved values; files the notebook reads are not compared.")
@click.option("--local", is_flag=True, help="Run on this machine even where Kubernetes is available.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the result.")
@click.option("--no-progress", is_flag=True, help="Plain line-by-line progress instead of the live table.")
@click.option("--python", "python", default=None, metavar="PATH", help="Interpreter that runs each step [default: this one].")
@click.option("--argo", is_flag=True, help="Submit to Argo Workflows (the default inside a pod with a service account).")
@click.option("--watch", is_flag=True, help="With --argo: follow the steps until the workflow ends; the exit status reflects it.")
@click.option("--events", type=click.Choice(["json"]), default=None, help="Write the run's events as JSON lines on stdout (see the docs' event stream), for tools that follow a run.")
@_cluster_options
def run(notebook, param_files, param_yamls, param_raw, param_typed, mode, jobs, fail_fast, resume, reuse, local, quiet, no_progress,
        python, argo, watch, events, pod_spec, from_pod, namespace, context, workdir) -> int:
    """Run NOTEBOOK's pipeline: every step in its own process, independent steps in parallel.

    Executed notebooks, values and the run record go to .nb2flow/runs/RUN_ID/ beside the notebook.
    """
    from .backend import choose_backend
    from .local import RunOptions, raise_for_failures, run_local
    from .runs import find_run, notebook_of, read_trusted_record

    global _EVENTS
    if events:
        from .events import JsonLines

        _EVENTS = JsonLines(sys.stdout)
    earlier = None
    if resume:
        search = [os.getcwd()] + ([os.path.dirname(os.path.abspath(notebook))] if notebook else [])
        run_dir = find_run(resume, search)
        earlier = read_trusted_record(run_dir)
        notebook = notebook or notebook_of(earlier, run_dir)
    if not notebook:
        raise UsageError("give a NOTEBOOK to run (or --resume RUN_ID)")
    from .config import load_config

    settings = load_config(notebook)
    origin = settings.origins.get("backend")
    argo_resume = bool(earlier) and earlier.get("backend") == "argo"
    backend, reason = choose_backend(local=local or (bool(resume) and not argo_resume), argo=argo or argo_resume,
                                     setting=settings.backend, source=os.path.basename(origin) if origin else None)
    if argo_resume:
        reason = f"resuming Argo run {earlier['run_id']} on Argo"
    if watch and backend == "local" and not local:
        backend, reason = choose_backend(argo=True)
        reason = reason.replace("(--argo)", "(--watch)")
    pipeline, params = _checked_pipeline(notebook, param_files, param_yamls, param_typed, param_raw,
                                         default=(earlier or {}).get("parameters"))
    progress = "quiet" if quiet else ("plain" if no_progress else "auto")
    if _EVENTS is not None:
        from .progress import EventReporter

        progress = EventReporter(_EVENTS, backend)
    if not quiet:
        _say(f"nb2flow: {reason}")
    if backend == "argo":
        if reuse:
            raise UsageError("--reuse is for local runs; on Argo, `nb2flow run --resume RUN` re-runs only what changed")
        if python:
            raise UsageError("--python names an interpreter on this machine; step pods run `python:` from nb2flow.yaml (default python3)")
        return _run_argo(pipeline, params, watch=watch, progress=progress, mode=mode or (earlier or {}).get("mode") or "notebook",
                         fail_fast=fail_fast, parallelism=jobs, resume=(run_dir, earlier) if argo_resume else None,
                         pod_spec=pod_spec, from_pod=from_pod, namespace=namespace, context=context, workdir=workdir)
    options = RunOptions(
        mode=mode or (earlier or {}).get("mode", "notebook"), jobs=jobs, fail_fast=fail_fast, parameters=params,
        progress=progress, python=python or sys.executable, resume=run_dir if resume else None, reuse=reuse and not resume,
    )
    result = run_local(pipeline, options)
    if result.output_notebook:
        shown = result.visible_notebook or result.output_notebook
        _say(f"run {result.run_id}: {result.state.value}; output notebook {os.path.relpath(shown)}")
    try:
        raise_for_failures(result, pipeline)
    except Nb2flowError as exc:
        _run_finished(result, exc.status)
        raise
    _run_finished(result, ExitStatus.OK)
    return ExitStatus.OK


def _run_finished(result, status) -> None:
    _sink("run_finished", result, status)


@cli.command("list")
@click.argument("folders", nargs=-1, type=click.Path(file_okay=False))
@click.option("--limit", type=int, default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.option("--cluster/--no-cluster", default=None, help="Also list workflows and schedules [default: inside a pod, or with -n].")
@_kube_options
def list_(folders, limit, as_json, cluster, namespace, context) -> int:
    """Recent runs of notebooks in FOLDERS (default: the current folder)."""
    from .runs import format_duration, format_time, list_runs, notebook_of

    records = list_runs(list(folders) or [os.getcwd()], limit)
    for r in records:
        if r.get("backend") == "argo":
            r["state"] = f"argo {r.get('state')}"
    by_id = {r["run_id"]: r for r in records}
    for row in _cluster_runs(namespace, context, cluster):
        known = by_id.get(row["run_id"])
        if known is None:
            records.append(row)
        elif known["state"] == "argo running":  # its folder has only the record written at submission
            known.update(state=row["state"], started=row["started"] or known.get("started"), ended=row["ended"])
    if as_json:
        click.echo(json.dumps([{k: r.get(k) for k in ("run_id", "notebook", "state", "started", "ended", "run_dir")} for r in records], indent=2))
        return ExitStatus.OK
    if not records:
        _say("no runs yet")
        return ExitStatus.OK
    rows = [("RUN", "NOTEBOOK", "STATE", "STARTED", "DURATION")]
    for r in records:
        duration = (r["ended"] - r["started"]) if r.get("ended") and r.get("started") else None
        notebook = notebook_of(r, r["run_dir"]) if r.get("run_dir") else r.get("notebook", "?")
        rows.append((r["run_id"], os.path.relpath(notebook), r.get("state", "?"), format_time(r.get("started")), format_duration(duration)))
    click.echo(_table(rows))
    return ExitStatus.OK


def _cluster_runs(namespace, context, cluster) -> list:
    """Workflows and schedules nb2flow made, as run-like rows; nothing when no cluster is asked for."""
    from .backend import in_cluster

    if cluster is False or (cluster is None and not namespace and not in_cluster()):
        return []
    from .argo import MANAGED_SELECTOR, NOTEBOOK_PATH
    from .runner.record import parse_timestamp
    from .errors import ClusterError

    try:
        kube, ns = _kube(namespace, context)
        rows = []
        for wf in kube.list("workflows", ns, MANAGED_SELECTOR):
            st = wf.get("status") or {}
            phase = {"Error": "failed"}.get(st.get("phase"), st.get("phase", "Pending").lower())
            rows.append({"run_id": wf["metadata"]["name"], "notebook": (wf["metadata"].get("annotations") or {}).get(NOTEBOOK_PATH, "?"),
                         "state": f"argo {phase}", "started": parse_timestamp(st.get("startedAt")), "ended": parse_timestamp(st.get("finishedAt"))})
        for cw in kube.list("cronworkflows", ns, MANAGED_SELECTOR):
            rows.append({"run_id": cw["metadata"]["name"], "notebook": (cw["metadata"].get("annotations") or {}).get(NOTEBOOK_PATH, "?"),
                         "state": "schedule " + ", ".join(cw["spec"].get("schedules") or []), "started": None, "ended": None})
        return rows
    except (ClusterError, UsageError) as exc:
        if cluster:
            raise
        _say(f"nb2flow: workflows not listed: {exc.render()}")
        return []


@cli.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True)
@click.option("--watch", is_flag=True, help="Follow an Argo run until it ends (after `run --watch` stopped watching); the exit status reflects it.")
@_kube_options
def status(run_id, as_json, watch, namespace, context) -> int:
    """One run's steps (a run id, or a workflow's name): state, tries, time, errors.

    An Argo run is read from its run folder when it has ended (no cluster needed, also after the
    workflow is deleted), and from the cluster while it runs."""
    from .runs import find_run, read_record

    try:
        run_dir = find_run(run_id, [os.getcwd()])
    except UsageError as local_miss:
        if os.sep in run_id:
            raise
        from .errors import ClusterError, ClusterNotFound

        if watch:
            kube, ns = _kube(namespace, context)
            return _follow(kube, ns, run_id, progress="auto")
        try:
            return _workflow_status(run_id, as_json, namespace, context)
        except ClusterError as exc:
            why = "not found" if isinstance(exc, ClusterNotFound) else exc.message
            raise UsageError(f"no run {run_id!r} here, and no workflow of that name ({why})", hint=local_miss.hint) from None
    record = read_record(run_dir)
    workflow = record.get("workflow") or {}
    if watch:
        if record.get("backend") != "argo":
            raise UsageError(f"run {record['run_id']} ran on this machine: its own process shows its progress",
                             hint=f"`nb2flow status {record['run_id']}` shows how it stands")
        if record.get("state") == "running":
            kube, ns = _kube(namespace or workflow.get("namespace"), context)
            return _follow(kube, ns, workflow.get("name", record["run_id"]), progress="auto", run_dir=run_dir)
    if record.get("backend") == "argo" and record.get("state") == "running":
        from .errors import ClusterError

        try:  # the record is the one written at submission: the cluster knows more
            return _workflow_status(workflow.get("name", record["run_id"]), as_json, workflow.get("namespace") or namespace, context,
                                    run_dir=run_dir)
        except (ClusterError, UsageError) as exc:
            _say(f"nb2flow: the cluster cannot say how workflow {record['run_id']} goes ({exc.render()}); "
                       "showing its run folder")
    if as_json:
        click.echo(json.dumps(record, indent=2))
        return ExitStatus.OK
    _print_record(record, run_dir)
    return ExitStatus.OK


def _print_record(record: dict, run_dir: str) -> None:
    from .runner.protocol import StepState
    from .runs import format_duration, path_here, step_detail

    workflow = record.get("workflow") or {}
    if record.get("backend") == "argo":
        where = f"argo workflow {workflow.get('namespace')}/{workflow.get('name')}; from its run folder"
    else:
        where = os.path.relpath(record["notebook"])
    click.echo(f"run {record['run_id']}: {record['state']} ({where})")
    rows = [("STEP", "STATE", "TRIES", "TIME", "DETAIL")]
    for name, s in record.get("steps", {}).items():
        rows.append((name, StepState.parse(s["state"]).label, str(s.get("attempts", 0)), format_duration(s.get("duration")),
                     step_detail(s)[:100]))
    click.echo(_table(rows))
    shown = path_here(record.get("visible_notebook") or record.get("output_notebook"), record, run_dir)
    if shown:
        click.echo(f"notebook: {os.path.relpath(shown)}")
    if record.get("html"):
        click.echo(f"html: {os.path.relpath(path_here(record.get('visible_html') or record['html'], record, run_dir))}")
    elif record.get("html_skipped"):
        click.echo(f"html: - ({record['html_skipped']})")
    if workflow.get("ui"):
        click.echo(f"argo: {workflow['ui']}")
    click.echo(f"folder: {os.path.relpath(run_dir)}")


def _workflow_status(name, as_json, namespace, context, run_dir=None) -> int:
    from .cluster import controller_silence, live_views, no_controller_error
    from .runs import format_duration

    kube, ns = _kube(namespace, context)
    workflow = kube.get("workflows", ns, name)
    if as_json:
        click.echo(json.dumps(workflow, indent=2))
        return ExitStatus.OK
    status = workflow.get("status") or {}
    click.echo(f"workflow {name}: {status.get('phase', 'Pending')} (namespace {ns})")
    rows = [("STEP", "STATE", "TRIES", "TIME", "DETAIL")]
    for v in live_views(kube, ns, workflow, run_dir):
        detail = v.note or (f"cell {v.cell}: {v.first_line}" if v.cell else "")
        rows.append((v.name, v.state.label, str(v.attempt), format_duration(v.elapsed), detail[:160]))
    click.echo(_table(rows))
    waited = controller_silence(workflow)
    if waited is not None:
        error = no_controller_error(ns, name, waited)
        _say(f"nb2flow: {error.render()}")
    return ExitStatus.OK


def _checked_pipeline(notebook, param_files, param_yamls, param_typed, param_raw, default=None):
    """Load and check the notebook, merge and check parameters; bad input raises (exit 2)."""
    from .api import load
    from .params import ParameterArgs, check_parameters, merge_parameters

    pipeline = load(notebook)
    if not pipeline.ok:
        for finding in pipeline.errors:
            _say(finding.render(notebook))
            _sink("problem", notebook, finding)
        raise PipelineError(f"{len(pipeline.errors)} problem(s) found; nothing was run", path=notebook, hint=f"see `nb2flow check {notebook}`")
    overrides = merge_parameters(ParameterArgs(tuple(param_files), tuple(param_yamls), tuple(param_typed), tuple(param_raw)))
    if default and not overrides:
        overrides = default
    return pipeline, check_parameters(overrides, [p.name for p in pipeline.parameters], notebook)


def _target(notebook, *, pod_spec, from_pod, namespace, context, workdir, need_kube=False):
    from .cluster import resolve_target
    from .config import load_config

    config = load_config(notebook).with_flags(namespace=namespace, context=context, workdir=workdir)
    for warning in config.warnings:
        _say(f"nb2flow: warning: {warning}")
    target = resolve_target(notebook, config, pod_spec=pod_spec, from_pod=from_pod, need_kube=need_kube, notice=_notice)
    for warning in target.pod.warnings:
        _say(f"nb2flow: {warning}")
    return target


def _run_argo(pipeline, params, *, watch, progress, mode, fail_fast, parallelism, resume=None, **where) -> int:
    from .cluster import check_step_files_reach_pods, prepare, prepare_resume, submit, ui_link

    target = _target(pipeline.path, need_kube=True, **where)
    check_step_files_reach_pods(target, submitting=True)
    manifest, _ = prepare(pipeline, target, params, mode=mode, fail_fast=fail_fast, parallelism=parallelism)
    if resume:
        earlier_dir, earlier = resume
        manifest, kept = prepare_resume(pipeline, target, manifest, earlier_dir, earlier, params, mode)
        if manifest is None:
            _say(f"nb2flow: nothing to re-run: every step of {earlier['run_id']} succeeded and is unchanged")
            return ExitStatus.OK
        others = [s.name for s in pipeline.steps if s.name not in kept]
        _say(f"nb2flow: resuming {earlier['run_id']}: reusing {', '.join(kept) or 'no step'} (saved values); "
                   f"running {', '.join(others)}")
    from .argo import named

    manifest = named(manifest)
    name = manifest["metadata"]["name"]
    link = ui_link(target.config, target.namespace, name)
    # the record first: a submission whose answer is lost still has one, under the name nb2flow chose
    run_dir = _record_submission(pipeline, manifest, mode, link, target.local_dir, resumed=resume[1]["run_id"] if resume else None)
    from .argo import env_secret_manifest
    from .cluster import secret_values

    try:
        created = submit(target.kube, manifest, env_secret_manifest(manifest, secret_values(target)))
    except ClusterError as exc:
        if exc.transient:  # not known whether it was created: the record stays, and says how to find out
            raise ClusterError(f"{exc.message}; workflow {name} may or may not have been created",
                               hint=f"`nb2flow status {name}` tells; its record is in {os.path.relpath(run_dir)}") from None
        _forget_submission(run_dir)
        raise
    _record_submission(pipeline, created, mode, link, target.local_dir, resumed=resume[1]["run_id"] if resume else None)
    _say(f"workflow {name} submitted in namespace {target.namespace}")
    _emit("submitted", workflow=name, namespace=target.namespace, run_dir=os.path.abspath(run_dir))
    if link:
        _say(f"  {link}")
    if _EVENTS is None:
        click.echo(name)
    if not watch:
        return ExitStatus.OK
    return _follow(target.kube, target.namespace, name, progress=progress, run_dir=run_dir)


def _follow(kube, namespace: str, name: str, *, progress: str, run_dir: str | None = None) -> int:
    """Watch a workflow to its end (``run --watch``, ``status --watch``); the exit status reflects it."""
    from .cluster import watch as watch_workflow

    final = watch_workflow(kube, namespace, name, progress=progress, run_dir=run_dir)
    phase = final.get("status", {}).get("phase")
    _say(f"workflow {name}: {phase}")
    from .runner.protocol import RunLayout

    record = {}
    if run_dir and os.path.exists(RunLayout(run_dir).record):
        from .runs import read_record

        record = read_record(run_dir)
    _emit("run-finished", run_id=name, run_dir=run_dir and os.path.abspath(run_dir),
          state=record.get("state") if record.get("state") not in (None, "running") else ("succeeded" if phase == "Succeeded" else "failed"),
          output_notebook=record.get("output_notebook"), visible_notebook=record.get("visible_notebook"),
          exit_status=int(ExitStatus.OK if phase == "Succeeded" else ExitStatus.FAILED))
    if phase != "Succeeded":
        raise StepFailed(f"workflow {name} ended {phase}: {final.get('status', {}).get('message', '')}".rstrip(": "),
                         hint=f"nb2flow logs {name}")
    return ExitStatus.OK


def _record_submission(pipeline, manifest: dict, mode: str, link, folder: str, resumed=None) -> str:
    """The run's record (``running``) before the Workflow is sent, completed with its uid once created, so
    ``list`` and ``status`` find it in the run folder at once — also after a lost answer; the workflow's
    final task replaces it with the outcome."""
    import time

    from . import __version__
    from .runner.protocol import RunLayout
    from .runner.record import new_record
    from .runs import RUNS_SUBDIR, read_record, write_record

    meta = manifest["metadata"]
    params = {p["name"]: json.loads(p["value"]) for p in (manifest["spec"].get("arguments") or {}).get("parameters") or []}
    record = new_record(run_id=meta["name"], notebook=os.path.abspath(pipeline.path), sha256=pipeline.notebook.sha256,
                        version=__version__, python=None, mode=mode, jobs=manifest["spec"].get("parallelism"), parameters=params,
                        started=time.time(), resumed=resumed or False, backend="argo")
    record["workflow"] = {"name": meta["name"], "namespace": meta.get("namespace"), "uid": meta.get("uid"),
                          "phase": "Pending" if meta.get("uid") else "Submitting", **({"ui": link} if link else {})}
    run_dir = os.path.join(folder, RUNS_SUBDIR, meta["name"])
    try:
        path = RunLayout(run_dir).record
        if not os.path.exists(path) or (read_record(run_dir).get("workflow") or {}).get("phase") == "Submitting":
            write_record(run_dir, record)  # never over the final task's record
    except (OSError, ValueError) as exc:
        _say(f"nb2flow: warning: cannot write the run's record in {run_dir}: {exc}")
    return run_dir


def _forget_submission(run_dir: str) -> None:
    """The record written before a submission the API server refused: nothing was created."""
    from .runner.protocol import RunLayout

    from .runner.auth import SIG_SUFFIX
    from .runner.files import unlink

    unlink(RunLayout(run_dir).record)
    unlink(RunLayout(run_dir).record + SIG_SUFFIX)
    try:
        os.rmdir(run_dir)  # a resume's folder keeps the steps it had copied in
    except OSError:
        pass


@cli.command()
@click.argument("notebook", type=NOTEBOOK)
@click.option("-o", "--output", "fmt", type=click.Choice(["yaml", "json"]), default="yaml", show_default=True)
@_parameter_options
@_cluster_options
def export(notebook, fmt, param_files, param_yamls, param_typed, param_raw, pod_spec, from_pod, namespace, context, workdir) -> int:
    """Print the Argo Workflow for NOTEBOOK; submit nothing.

    The step files are written beside the notebook (.nb2flow/bundles/), where the step pods read them.
    """
    from .argo import dump
    from .cluster import prepare

    pipeline, params = _checked_pipeline(notebook, param_files, param_yamls, param_typed, param_raw)
    from .cluster import STEP_FILES_HINT, check_step_files_reach_pods

    target = _target(notebook, pod_spec=pod_spec, from_pod=from_pod, namespace=namespace, context=context, workdir=workdir)
    manifest, bundle = prepare(pipeline, target, params)
    _say(f"nb2flow: step files in {os.path.relpath(bundle)}")
    unseen = check_step_files_reach_pods(target, submitting=False)
    if unseen:
        _say(f"nb2flow: warning: {unseen}: copy {os.path.relpath(bundle)} there before applying the manifest ({STEP_FILES_HINT})")
    from .argo import ENV_SECRET

    from .runner.auth import KEY_ENV

    secret = manifest["metadata"]["annotations"].get(ENV_SECRET)
    names = ", ".join([n for n, _ in target.pod.secret_env] + [KEY_ENV])
    _say(f"nb2flow: warning: the steps read {names} from Secret {secret}, which `nb2flow run --argo` and `schedule` "
         f"create and this manifest does not hold (no credential or key is ever printed): create it before applying the "
         f"manifest ({KEY_ENV}: the hexadecimal key in ~/.config/nb2flow/key)")
    click.echo(dump(manifest, fmt), nl=False)
    return ExitStatus.OK


@cli.command()
@click.argument("notebook", type=NOTEBOOK)
@click.option("--cron", required=True, help='Cron schedule, e.g. "0 3 * * *".')
@click.option("--timezone", default=None, help="IANA time zone of the schedule, e.g. Asia/Seoul [default: the controller's].")
@click.option("--name", default=None, help="CronWorkflow name [default: the notebook's name and its owner's].")
@click.option("--replace", is_flag=True, help="Overwrite a schedule of that name that someone else made.")
@click.option("--dry-run", is_flag=True, help="Print the CronWorkflow instead of creating it.")
@_parameter_options
@_cluster_options
def schedule(notebook, cron, timezone, name, replace, dry_run, param_files, param_yamls, param_typed, param_raw, pod_spec, from_pod,
             namespace, context, workdir) -> int:
    """Run NOTEBOOK on a schedule (an Argo CronWorkflow); creates it, or updates your own.

    The step files are a snapshot taken now: editing the notebook changes nothing until you schedule again.
    A parameter named scheduled_time gets the time each run was due (RFC 3339), unless you set it with -p.
    """
    from .argo import dump
    from .cluster import prepare, schedule as create_schedule
    from .names import CRON_NAME_MAX, k8s_name

    pipeline, params = _checked_pipeline(notebook, param_files, param_yamls, param_typed, param_raw)
    target = _target(notebook, pod_spec=pod_spec, from_pod=from_pod, namespace=namespace, context=context, workdir=workdir,
                     need_kube=not dry_run)
    from .cluster import check_step_files_reach_pods, default_schedule_name

    name = k8s_name(name, max_len=CRON_NAME_MAX, unique=True) if name else default_schedule_name(pipeline.notebook.stem, target.pod.owner)

    check_step_files_reach_pods(target, submitting=not dry_run)
    manifest, bundle = prepare(pipeline, target, params, schedule={"name": name, "cron": cron, "timezone": timezone})
    if dry_run:
        click.echo(dump(manifest), nl=False)
        return ExitStatus.OK
    from .argo import env_secret_manifest
    from .cluster import secret_values

    made, created = create_schedule(target.kube, manifest, replace_others=replace,
                                    secret=env_secret_manifest(manifest, secret_values(target)))
    from .cluster import schedule_spec_error

    problem = schedule_spec_error(target.kube, target.namespace, name)
    if problem:
        raise StepFailed(f"schedule {name} was {'created' if created else 'updated'}, but Argo's controller will not run it: {problem}",
                         hint=f"fix the schedule and run nb2flow schedule again, or nb2flow unschedule {name}")
    tz = f" ({timezone})" if timezone else ""
    older = " (Argo before v3.6: spec.schedule)" if "schedule" in (made.get("spec") or {}) else ""
    _say(f"schedule {name} {'created' if created else 'updated'} in namespace {target.namespace}: {cron}{tz}{older}; step files {os.path.relpath(bundle)}")
    return ExitStatus.OK


@cli.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True)
@_kube_options
@click.pass_context
def schedules(ctx, as_json, namespace, context) -> int:
    """Your schedules: cron, time zone, paused or not, the last run and its result, the next run.

    \b
    nb2flow schedules pause NAME     stop starting runs (CronWorkflow suspend)
    nb2flow schedules resume NAME    start them again
    nb2flow schedules trigger NAME   run it now, from the schedule's own spec
    """
    if ctx.invoked_subcommand:
        return ExitStatus.OK
    from .cluster import schedule_rows

    kube, ns = _kube(namespace, context)
    rows = schedule_rows(kube, ns)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return ExitStatus.OK
    if not rows:
        _say(f"no schedules in namespace {ns}")
        return ExitStatus.OK
    table = [("SCHEDULE", "CRON", "STATE", "LAST RUN", "RESULT", "NEXT RUN", "NOTEBOOK")]
    for r in rows:
        cron = ", ".join(r["schedules"]) + (f" ({r['timezone']})" if r["timezone"] else "")
        table.append((r["name"], cron, "paused" if r["suspended"] else "active", r["last_run"] or "-",
                      (r["last_result"] or "-").lower(), r["next_run"] or "-",
                      os.path.relpath(r["notebook"]) if r["notebook"] and os.path.exists(r["notebook"]) else r["notebook"] or "?"))
    click.echo(_table(table))
    return ExitStatus.OK


def _own(kube, ns, plural: str, name: str, verb: str, force: bool) -> dict:
    """The object, once it is known to be the user's own (or ``--force``); see :func:`cluster.check_owner`."""
    from .cluster import check_owner

    obj = kube.get(plural, ns, name)
    said = check_owner(kube, obj, what=f"{'schedule' if plural == 'cronworkflows' else 'workflow'} {name}", verb=verb, force=force)
    if said:
        _say(f"nb2flow: {said}")
    return obj


FORCE = click.option("--force", is_flag=True, help="Act on another user's object (or one nb2flow did not make).")


def _suspend(name, namespace, context, suspend: bool, force: bool) -> None:
    kube, ns = _kube(namespace, context)
    _own(kube, ns, "cronworkflows", name, "pause" if suspend else "resume", force)
    kube.patch("cronworkflows", ns, name, {"spec": {"suspend": suspend}})
    _say(f"schedule {name} {'paused: no new runs until `nb2flow schedules resume ' + name + '`' if suspend else 'resumed'}")


@schedules.command("pause")
@click.argument("name")
@FORCE
@_kube_options
def schedules_pause(name, force, namespace, context) -> int:
    """Stop the schedule NAME from starting runs (runs already going go on)."""
    _suspend(name, namespace, context, True, force)
    return ExitStatus.OK


@schedules.command("resume")
@click.argument("name")
@FORCE
@_kube_options
def schedules_resume(name, force, namespace, context) -> int:
    """Let the schedule NAME start runs again."""
    _suspend(name, namespace, context, False, force)
    return ExitStatus.OK


@schedules.command("trigger")
@click.argument("name")
@FORCE
@_kube_options
def schedules_trigger(name, force, namespace, context) -> int:
    """Run the schedule NAME now, from its own spec (its step files snapshot and parameters), as
    `argo submit --from cronwf/NAME` does; scheduled_time is now."""
    import time

    from .argo import named
    from .cluster import submit, workflow_from_schedule

    kube, ns = _kube(namespace, context)
    cron = _own(kube, ns, "cronworkflows", name, "trigger", force)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    created = submit(kube, named(workflow_from_schedule(cron, now)))
    _say(f"workflow {created['metadata']['name']} submitted from schedule {name}")
    click.echo(created["metadata"]["name"])
    return ExitStatus.OK


@cli.command()
@click.argument("name")
@FORCE
@_kube_options
def unschedule(name, force, namespace, context) -> int:
    """Delete the schedule NAME (yours; another user's with --force)."""
    kube, ns = _kube(namespace, context)
    _own(kube, ns, "cronworkflows", name, "delete", force)
    kube.delete("cronworkflows", ns, name)
    _say(f"schedule {name} deleted")
    return ExitStatus.OK


@cli.command()
@click.argument("name", metavar="RUN")
@click.argument("step", required=False)
@click.option("-f", "--follow", is_flag=True, help="Keep printing as the step runs (Argo runs).")
@_kube_options
def logs(name, step, follow, namespace, context) -> int:
    """Print the logs of run NAME's steps (or of STEP only); lines prefixed with their step when there are
    several. A local run's from its run folder; an Argo run's from its pods, and once the pods are gone from
    the run folder on the shared volume."""
    from .cluster import find_step_pods, run_folder_logs
    from .runs import find_run, read_record

    try:
        run_dir = find_run(name, [os.getcwd()])
        record = read_record(run_dir)
    except (UsageError, OSError, ValueError):
        record = None
    if record is not None and record.get("backend", "local") == "local":
        return _local_logs(run_dir, record, step)
    kube, ns = _kube(namespace, context)
    workflow = kube.get("workflows", ns, name)
    pods = find_step_pods(kube, ns, workflow, step)
    if not pods:
        kept = run_folder_logs(workflow, step)
        if kept is None:
            raise UsageError(f"no pods for {'step ' + step + ' of ' if step else ''}workflow {name} (yet, or already cleaned up)",
                             hint="executed notebooks and logs stay in the run folder on the shared volume")
        _say(f"nb2flow: the pods are gone; the cells' output as kept in {os.path.relpath(kept[0])}")
        for task, text in kept[1]:
            _echo_prefixed(text, task if len(kept[1]) > 1 else None)
        return ExitStatus.OK
    prefix = len(pods) > 1
    if follow and prefix:  # several pods at once, interleaved as their lines come
        import threading

        lock = threading.Lock()

        def pump(task, pod):
            for line in kube.pod_log(ns, pod, follow=True):
                with lock:
                    _echo_prefixed(line, task)

        threads = [threading.Thread(target=pump, args=pair, daemon=True) for pair in pods]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return ExitStatus.OK
    for task, pod in pods:
        out = kube.pod_log(ns, pod, follow=follow)
        for text in ([out] if isinstance(out, str) else out):
            _echo_prefixed(text, task if prefix else None)
    return ExitStatus.OK


def _local_logs(run_dir: str, record: dict, step: str | None) -> int:
    """A local run's step logs (each step's ``output.log``: its cells' output, framed by cell)."""
    from .runner.protocol import RunLayout

    layout = RunLayout(run_dir)
    steps = record.get("steps") or {}
    if step is not None and step not in steps:
        raise UsageError(f"run {record['run_id']} has no step {step!r}", hint="its steps: " + ", ".join(steps))
    chosen = [(n, s) for n, s in steps.items() if step is None or n == step]
    shown = 0
    for name, entry in chosen:
        try:
            with open(layout.output_log(entry.get("task") or name), encoding="utf-8", errors="replace") as fh:
                text = fh.read()
        except OSError:
            continue
        _echo_prefixed(text, name if len(chosen) > 1 else None)
        shown += 1
    if not shown:
        _say(f"nb2flow: no step of run {record['run_id']} has written a log yet")
    return ExitStatus.OK


def _echo_prefixed(text: str, task: str | None) -> None:
    """Print log text, each line prefixed ``[task] `` (as `kubectl logs --prefix`) when ``task`` is given."""
    if task is None:
        click.echo(text, nl=not text.endswith("\n") and bool(text))
        return
    for line in text.splitlines():
        click.echo(f"[{task}] {line}")


@cli.command()
@click.argument("name")
@FORCE
@_kube_options
def stop(name, force, namespace, context) -> int:
    """Stop workflow NAME (running steps are stopped, exit handlers run); yours, another user's with --force."""
    kube, ns = _kube(namespace, context)
    _own(kube, ns, "workflows", name, "stop", force)
    kube.patch("workflows", ns, name, {"spec": {"shutdown": "Stop"}})
    _say(f"workflow {name} stopping")
    return ExitStatus.OK


@cli.command()
@click.argument("name")
@FORCE
@_kube_options
def delete(name, force, namespace, context) -> int:
    """Delete workflow NAME (yours; another user's with --force)."""
    kube, ns = _kube(namespace, context)
    _own(kube, ns, "workflows", name, "delete", force)
    kube.delete("workflows", ns, name)
    _say(f"workflow {name} deleted")
    return ExitStatus.OK


@cli.command()
@click.option("-n", "--namespace", default=None, help="Namespace [default: this pod's, or the --pod-spec pod's].")
@click.option("--service-account", "service_account", default=None, help="The notebook's service account [default: this pod's, or the --pod-spec pod's].")
@click.option("--pod-spec", "pod_spec", default=None, metavar="FILE", type=click.Path(dir_okay=False), help="Take both from a pod (`kubectl get pod -o json`).")
@click.option("--runner", default=None, help="The account step pods run as, if not the notebook's.")
def rbac(namespace, service_account, pod_spec, runner) -> int:
    """Print the Role and RoleBinding nb2flow needs (apply with kubectl apply -f -)."""
    import yaml

    from .backend import pod_namespace, service_account as own_account
    from .cluster import pod_from_file, rbac_manifests

    where = "given"
    if pod_spec:
        pod = pod_from_file(pod_spec)
        namespace = namespace or pod.get("metadata", {}).get("namespace")
        service_account = service_account or pod.get("spec", {}).get("serviceAccountName") or "default"
        where = f"the pod in {os.path.basename(pod_spec)}"
    else:
        token_ns, token_sa = own_account()
        namespace = namespace or pod_namespace() or token_ns
        if service_account is None and token_sa:
            service_account, where = token_sa, "this pod's"
    if not namespace or not service_account:
        raise UsageError("which account? no service-account token here to take it from",
                         hint="pass --service-account NAME -n NAMESPACE, or --pod-spec FILE.json")
    _say(f"nb2flow: the Role and RoleBinding for service account {namespace}/{service_account} ({where}); "
               "an admin applies them with kubectl apply -f -")
    docs = rbac_manifests(namespace, service_account, runner)
    click.echo(yaml.safe_dump_all(docs, sort_keys=False), nl=False)
    return ExitStatus.OK


def _kube(namespace, context):
    from .config import load_config
    from .kube import Kube

    from .kube import ApiPolicy

    config = load_config(None).with_flags(namespace=namespace, context=context)
    kube = Kube(context=config.context, policy=ApiPolicy.from_config(config), notice=_notice)
    return kube, config.namespace or kube.default_namespace


def _say(text: str) -> None:
    """A message for people (stderr), with terminal commands from outside text removed; a ``message`` event too."""
    from .runner.tracebacks import printable

    click.echo(printable(text), err=True)
    _emit("message", text=printable(text))


def _notice(line: str) -> None:
    _say(f"nb2flow: {line}")


def _printable(text: str) -> str:
    from .runner.tracebacks import printable

    return printable(text)


def _table(rows) -> str:
    rows = [[_printable(str(c)).replace("\n", " ") for c in r] for r in rows]
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _check_summary(pipeline) -> str:
    n_steps = len(pipeline.steps)
    errors, warnings = len(pipeline.errors), len(pipeline.warnings)
    shape = f"{n_steps} step{'s' if n_steps != 1 else ''}, {len(pipeline.parameters)} parameter{'s' if len(pipeline.parameters) != 1 else ''}"
    if not errors and not warnings:
        verdict = "no problems"
    else:
        parts = []
        if errors:
            parts.append(f"{errors} error{'s' if errors != 1 else ''}")
        if warnings:
            parts.append(f"{warnings} warning{'s' if warnings != 1 else ''}")
        verdict = ", ".join(parts)
    return f"{pipeline.path}: {shape}: {verdict}"


def _color_finding(line: str, severity: str) -> str:
    if os.environ.get("NO_COLOR") or not sys.stdout.isatty():
        return line
    return click.style(line, fg="red" if severity == "error" else "yellow")


def main(argv: list[str] | None = None) -> None:
    """Console entry point: one line and a distinct exit status for every failure."""
    global _EVENTS
    _EVENTS = None
    try:
        rv = cli.main(args=argv, prog_name="nb2flow", standalone_mode=False)
    except click.exceptions.Abort:
        _say("nb2flow: interrupted")
        sys.exit(ExitStatus.INTERRUPTED)
    except KeyboardInterrupt:
        _say("nb2flow: interrupted")
        sys.exit(ExitStatus.INTERRUPTED)
    except click.ClickException as exc:
        exc.show()
        sys.exit(ExitStatus.BAD_INPUT)
    except Nb2flowError as exc:
        _sink("error", exc)
        _say(f"nb2flow: {exc.render()}")
        for line in getattr(exc, "traceback", None) or []:
            _say(f"    {line}")
        sys.exit(exc.status)
    except BrokenPipeError:
        sys.exit(ExitStatus.OK)
    except Exception as exc:  # a bug in nb2flow: say so, keep the traceback for the report
        import tempfile
        import traceback

        fd, path = tempfile.mkstemp(prefix="nb2flow-crash-", suffix=".txt")
        with os.fdopen(fd, "w") as fh:
            traceback.print_exc(file=fh)
        _emit("error", message=f"internal error ({type(exc).__name__}: {exc})", path=None, cell=None, step=None,
              hint=f"the traceback is in {path}", kind="InternalError", exit_status=int(ExitStatus.INTERNAL))
        _say(f"nb2flow: internal error ({type(exc).__name__}: {exc}); this is a bug in nb2flow, "
             f"please report it with the traceback saved in {path}")
        sys.exit(ExitStatus.INTERNAL)
    sys.exit(int(rv) if isinstance(rv, int) else ExitStatus.OK)
