"""The ``nb2flow`` command: parse flags, make one library call, report.

Only click and nb2flow's light modules are imported at start-up; each command imports
what it needs (kubernetes, papermill, nbclient, rich) inside its own body, so
``nb2flow --help``, ``check`` and ``graph`` stay instant.
"""

from __future__ import annotations

import json
import os
import sys
import time

import click

from . import __version__
from .errors import ExitStatus, Nb2flowError, PipelineError, StepFailed, UsageError

NOTEBOOK = click.Path(dir_okay=True, path_type=str)
_EVENTS = None  # the event sink of this command (``--events json``), see nb2flow.events


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "-V", "--version", prog_name="nb2flow")
def cli() -> None:
    """Run a tagged Jupyter notebook as a pipeline of steps: on this machine, or as an Argo
    Workflow that reuses the notebook pod's own image and volumes.

    Tag cells step:NAME (and after:NAME to run in parallel), then `nb2flow check NOTEBOOK`.
    """


@cli.command()
@click.argument("notebook", type=NOTEBOOK, required=False)
@click.option("-c", "--command", "chain", default=None, metavar="CHAIN", help='A pipeline of commands: "python a.py >> python b.py".')
@click.option("--json", "as_json", is_flag=True, help="Print the pipeline and findings as JSON.")
def check(notebook: str, chain, as_json: bool) -> int:
    """Check a notebook's tags and data flow; exit 1 if any problem is found.

    Reports names a step reads that no cell above defines, values a step reads from a step
    that does not run before it, parallel steps assigning the same name, syntax errors and
    tag mistakes, each with its cell number. NOTEBOOK may be a workflow file (several notebooks and
    scripts, JupyterFlow's workflow.yaml), or give -c "a >> b".
    """
    from .api import load_any
    from .pipeline import pipeline_to_json

    pipeline = load_any(notebook, chain)
    notebook = "-c" if chain is not None else notebook
    if as_json:
        from .workflow import workflow_to_json

        click.echo(json.dumps(workflow_to_json(pipeline) if pipeline.is_workflow else pipeline_to_json(pipeline), indent=2))
    else:
        for finding in pipeline.findings:
            click.echo(_color_finding(_printable(finding.render(notebook)), finding.severity.value))
        _say(_check_summary(pipeline, notebook))
    return ExitStatus.OK if pipeline.ok else ExitStatus.FAILED


@cli.command()
@click.argument("notebook", type=NOTEBOOK, required=False)
@click.option("-c", "--command", "chain", default=None, metavar="CHAIN", help='A pipeline of commands: "python a.py >> python b.py".')
@click.option("--format", "fmt", type=click.Choice(["text", "mermaid", "dot"]), default="text", show_default=True, help="Terminal drawing, mermaid (JupyterLab, GitHub markdown) or graphviz dot.")
@click.option("--vars", "show_vars", is_flag=True, help="Label each edge with the values that flow along it.")
def graph(notebook: str, chain, fmt: str, show_vars: bool) -> int:
    """Draw the step DAG (of a notebook, a workflow file, or -c "a >> b")."""
    from .api import load_any
    from .graph import render

    pipeline = load_any(notebook, chain)
    notebook = "-c" if chain is not None else notebook
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
@click.option("-c", "--command", "chain", default=None, metavar="CHAIN",
              help='Run a pipeline of commands and notebooks: "python a.py >> python b.py" (>> then, & side by side).')
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
@click.option("--backend", "backend_name", default=None, metavar="NAME", help="Run with this backend (local, argo, or one installed; see docs/architecture.md).")
@click.option("--watch", is_flag=True, help="With --argo: follow the steps until the workflow ends; the exit status reflects it.")
@click.option("--events", type=click.Choice(["json"]), default=None, help="Write the run's events as JSON lines on stdout (see the docs' event stream), for tools that follow a run.")
@_cluster_options
def run(notebook, chain, param_files, param_yamls, param_raw, param_typed, mode, jobs, fail_fast, resume, reuse, local, quiet, no_progress,
        python, argo, backend_name, watch, events, pod_spec, from_pod, namespace, context, workdir) -> int:
    """Run NOTEBOOK's pipeline: every step in its own process, independent steps in parallel.

    NOTEBOOK may also be a workflow file of several notebooks and scripts (JupyterFlow's workflow.yaml; so is
    `-f workflow.yaml` alone), or give -c "python a.py >> python b.py". Executed notebooks, values and the
    run record go to .nb2flow/runs/RUN_ID/ beside the notebook.
    """
    from . import backends
    from .runner.params import from_wire
    from .runner.protocol import notebook_folder
    from .runs import find_run, notebook_of, read_trusted_record

    global _EVENTS
    if events:
        from .events import JsonLines

        _EVENTS = JsonLines(sys.stdout)
    flags = [f for f, on in (("local", local), ("argo", argo), (backend_name, bool(backend_name))) if on]
    if len(set(flags)) > 1:
        raise UsageError(" and ".join(("--" + f if f in ("local", "argo") else "--backend " + f) for f in flags) + " exclude each other")
    earlier = None
    if resume is not None:
        if not resume.strip():
            raise UsageError("--resume needs a run id", hint="`nb2flow list` shows recent runs")
        search = [os.getcwd()] + ([notebook_folder(notebook)] if notebook else [])
        run_dir = find_run(resume, search)
        record = read_trusted_record(run_dir)
        earlier = backends.RunRef(record["run_id"], record.get("backend") or "local", run_dir, record)
        _check_resumable(earlier, notebook)
        notebook = notebook or notebook_of(record, run_dir)
        if chain is None and record.get("chain") is not None:
            chain = record["chain"]
    notebook, param_files = _workflow_flag(notebook, chain, param_files)
    if not notebook and chain is None:
        raise UsageError("give a NOTEBOOK to run (or -c COMMANDS, a workflow file, --resume RUN_ID)")
    if chain is not None and not notebook:
        notebook = os.path.join(os.getcwd(), "pipeline")
    from .config import load_config

    settings = load_config(notebook)
    origin = settings.origins.get("backend")
    chosen = flags[0] if flags else (earlier.backend if earlier else None)
    name, reason = backends.choose(chosen, setting=settings.backend, source=os.path.basename(origin) if origin else None)
    if earlier and not flags:
        reason = f"resuming {earlier.backend} run {earlier.run_id} ({backends.get(earlier.backend).title})"
    elif watch and not chosen and name == "local":  # only a submitted run can be watched
        name, reason = "argo", f"{backends.get('argo').title} (--watch)"
    backend = backends.get(name)
    if name == "local":
        from .warm import start_early

        start_early(python or sys.executable)
    if earlier and earlier.backend != name:
        raise UsageError(f"run {earlier.run_id} ran with the {earlier.backend} backend; it is resumed there",
                         hint=f"nb2flow run --resume {earlier.run_id}")
    pipeline, params = _checked_pipeline(notebook, param_files, param_yamls, param_typed, param_raw,
                                         default=(from_wire(earlier.record.get("parameters")) if earlier else None), chain=chain)
    progress = "quiet" if quiet else ("plain" if no_progress else "auto")
    if _EVENTS is not None:
        from .progress import EventReporter

        progress = EventReporter(_EVENTS, name)
    request = backends.RunRequest(
        pipeline=pipeline, parameters=params, mode=mode or (earlier.record.get("mode") if earlier else None) or "notebook",
        jobs=jobs, fail_fast=fail_fast, progress=progress, python=python, reuse=reuse, resume=earlier, watch=watch,
        where=backends.Where(namespace=namespace, context=context, pod_spec=pod_spec, from_pod=from_pod, workdir=workdir))
    backend.validate(request)
    if not quiet:
        _say(f"nb2flow: {reason}")
    outcome = backend.start(request, _console())
    if outcome.failure is not None:
        raise outcome.failure
    return ExitStatus.OK


def _check_resumable(earlier, notebook) -> None:
    """``--resume`` completes a run of this notebook that is not going on: refuse another notebook's, a live one."""
    from .runs import notebook_of, run_owner_alive

    record = earlier.record
    if notebook and os.path.abspath(notebook) != os.path.abspath(notebook_of(record, earlier.run_dir)):
        raise UsageError(f"run {earlier.run_id} is a run of {os.path.relpath(notebook_of(record, earlier.run_dir))}, "
                         f"not of {os.path.relpath(notebook)}",
                         hint=f"nb2flow run --resume {earlier.run_id} (without a notebook) completes it; "
                              f"nb2flow run {os.path.relpath(notebook)} starts a run of that one")
    if record.get("state") == "running" and run_owner_alive(record):
        owner = record.get("owner") or {}
        raise UsageError(f"run {earlier.run_id} is still running (nb2flow, pid {owner.get('pid')})",
                         hint=f"wait for it, or `nb2flow stop {earlier.run_id}` first")


def _console():
    """The Console backends talk through: human lines on stderr, the result on stdout, events when asked for."""
    from .backends import Console

    return Console(say=lambda text: click.echo(text, err=True), sink=_EVENTS, result=click.echo)


def _where(namespace=None, context=None, **more):
    from .backends import Where

    return Where(namespace=namespace, context=context, **more)


@cli.command("list")
@click.argument("folders", nargs=-1, type=click.Path(file_okay=False))
@click.option("--limit", type=int, default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.option("--cluster/--no-cluster", default=None, help="Also list workflows and schedules [default: inside a pod, or with -n].")
@_kube_options
def list_(folders, limit, as_json, cluster, namespace, context) -> int:
    """Recent runs of notebooks in FOLDERS (default: the current folder)."""
    from . import backends
    from .runs import format_duration, format_time, list_runs, notebook_of

    records = list_runs(list(folders) or [os.getcwd()], limit)
    for r in records:
        r["state"] = backends.of_record(r).list_state(r)
    by_id = {r["run_id"]: r for r in records}
    for name in backends.names():
        records += backends.get(name).more_runs(_where(namespace, context), cluster, by_id, _console())
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


@cli.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True)
@click.option("--watch", is_flag=True, help="Follow an Argo run until it ends (after `run --watch` stopped watching); the exit status reflects it.")
@_kube_options
def status(run_id, as_json, watch, namespace, context) -> int:
    """One run's steps (a run id, or a workflow's name): state, tries, time, errors.

    An Argo run is read from its run folder when it has ended (no cluster needed, also after the
    workflow is deleted), and from the cluster while it runs."""
    from . import backends

    console, where = _console(), _where(namespace, context)
    ref = backends.find(run_id, where, console)
    backend = backends.get(ref.backend)
    if watch:
        outcome = backend.follow(ref, where, console)
        if outcome.failure is not None:
            raise outcome.failure
        if ref.record is None or ref.record.get("state") == "running":
            return ExitStatus.OK
    report = backend.status(ref, where, console)
    if as_json:
        click.echo(json.dumps(report.data, indent=2))
        return ExitStatus.OK
    click.echo(report.headline)
    rows = [("STEP", "STATE", "TRIES", "TIME", "DETAIL")] + [(r.name, r.state, r.tries, r.time, r.detail) for r in report.steps]
    click.echo(_table(rows))
    for line in report.lines:
        click.echo(line)
    for note in report.notes:
        _say(note)
    return ExitStatus.OK


def _workflow_flag(notebook, chain, param_files):
    """JupyterFlow's ``run -f workflow.yaml``: a lone ``-f`` with no notebook is the pipeline to run (a workflow
    file), not papermill's parameters file (which needs a notebook to go to)."""
    if notebook or chain is not None or len(param_files) != 1:  # the usual case: nothing to import
        return notebook, param_files
    from .yamlfile import is_workflow_file

    if is_workflow_file(param_files[0]) or not os.path.isfile(param_files[0]):  # no notebook for parameters to go to
        return param_files[0], ()
    return notebook, param_files


def _checked_pipeline(notebook, param_files, param_yamls, param_typed, param_raw, default=None, chain=None):
    """Load and check the notebook (or pipeline of several), merge and check parameters; bad input raises (exit 2)."""
    import shlex

    from . import events
    from .api import load_any
    from .params import ParameterArgs, check_parameters, merge_parameters

    pipeline = load_any(notebook, chain)
    notebook = "-c" if chain is not None else notebook
    if not pipeline.ok:
        for finding in pipeline.errors:
            _say(finding.render(notebook))
            _console().send(events.problem(finding.file or notebook, finding))
        again = f"-c {shlex.quote(chain)}" if chain is not None else notebook
        raise PipelineError(f"{len(pipeline.errors)} problem(s) found; nothing was run", path=notebook, hint=f"see `nb2flow check {again}`")
    overrides = merge_parameters(ParameterArgs(tuple(param_files), tuple(param_yamls), tuple(param_typed), tuple(param_raw)))
    if default and not overrides:
        overrides = default
    if pipeline.is_workflow:
        from .workflow import check_workflow_parameters

        return pipeline, check_workflow_parameters(pipeline, overrides)
    return pipeline, check_parameters(overrides, [p.name for p in pipeline.parameters], notebook)


def _target(notebook, *, pod_spec, from_pod, namespace, context, workdir, need_kube=False):
    from .backends.argo import target_for

    return target_for(notebook, _where(namespace, context, pod_spec=pod_spec, from_pod=from_pod, workdir=workdir), _console(),
                      need_kube=need_kube)


@cli.command()
@click.argument("notebook", type=NOTEBOOK, required=False)
@click.option("-c", "--command", "chain", default=None, metavar="CHAIN", help='A pipeline of commands: "python a.py >> python b.py".')
@click.option("-o", "--output", "fmt", type=click.Choice(["yaml", "json"]), default="yaml", show_default=True)
@_parameter_options
@_cluster_options
def export(notebook, chain, fmt, param_files, param_yamls, param_typed, param_raw, pod_spec, from_pod, namespace, context, workdir) -> int:
    """Print the Argo Workflow for NOTEBOOK; submit nothing.

    The step files are written beside the notebook (.nb2flow/bundles/), where the step pods read them.
    """
    from .argo import dump
    from .cluster import prepare

    notebook, param_files = _workflow_flag(notebook, chain, param_files)
    pipeline, params = _checked_pipeline(notebook, param_files, param_yamls, param_typed, param_raw, chain=chain)
    notebook = pipeline.path
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
@click.argument("notebook", type=NOTEBOOK, required=False)
@click.option("-c", "--command", "chain", default=None, metavar="CHAIN", help='A pipeline of commands: "python a.py >> python b.py".')
@click.option("--cron", default=None, help='Cron schedule, e.g. "0 3 * * *" [default: a workflow file\'s schedule:].')
@click.option("--timezone", default=None, help="IANA time zone of the schedule, e.g. Asia/Seoul [default: the controller's].")
@click.option("--name", default=None, help="CronWorkflow name [default: the notebook's name and its owner's].")
@click.option("--replace", is_flag=True, help="Overwrite a schedule of that name that someone else made.")
@click.option("--dry-run", is_flag=True, help="Print the CronWorkflow instead of creating it.")
@_parameter_options
@_cluster_options
def schedule(notebook, chain, cron, timezone, name, replace, dry_run, param_files, param_yamls, param_typed, param_raw, pod_spec, from_pod,
             namespace, context, workdir) -> int:
    """Run NOTEBOOK on a schedule (an Argo CronWorkflow); creates it, or updates your own.

    The step files are a snapshot taken now: editing the notebook changes nothing until you schedule again.
    A parameter named scheduled_time gets the time each run was due (RFC 3339), unless you set it with -p.
    """
    from .argo import dump
    from .cluster import prepare, schedule as create_schedule
    from .names import CRON_NAME_MAX, k8s_name

    notebook, param_files = _workflow_flag(notebook, chain, param_files)
    pipeline, params = _checked_pipeline(notebook, param_files, param_yamls, param_typed, param_raw, chain=chain)
    notebook = pipeline.path
    cron = cron or getattr(pipeline, "schedule", None)
    if not cron:
        in_file = chain is None and pipeline.is_workflow
        raise UsageError("give --cron, e.g. --cron '0 3 * * *'" + (" (or schedule: in the workflow file)" if in_file else ""))
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


@cli.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def server(ctx, as_json) -> int:
    """Your warm servers: what each keeps ready for local runs (the step runner, nbformat, nbclient and ipykernel
    imported; the set-up imports of the notebooks run lately), since when, and when it ends if left idle.

    \b
    nb2flow server stop    end them now (a run going on keeps its steps)
    nb2flow server start   start this environment's now (a run starts it when there is none)
    NB2FLOW_WARM_SERVER=off  in the environment: runs start their own fork server, as without one
    """
    if ctx.invoked_subcommand:
        return ExitStatus.OK
    from .keys import user_key
    from .warm import servers

    rows = servers(user_key())
    if as_json:
        click.echo(json.dumps([dict(status, socket=path) for path, status in rows], indent=2))
        return ExitStatus.OK
    foreign = [path for path, status in rows if "this user's key" in status.get("error", "")]
    mine = [(path, status) for path, status in rows if path not in foreign]
    if not mine:
        _say("no warm server running (a local run starts one; NB2FLOW_WARM_SERVER=off turns them off)")
        return ExitStatus.OK
    now = time.time()
    for path, status in mine:
        if "error" in status:
            click.echo(f"{os.path.basename(path)}: not answering ({status['error']})")
            continue
        left = max(0.0, status["idle"] - (now - status["used"]))
        click.echo(f"warm server {status['pid']} ({status['python']}): up {_ago(now - status['started'])}, "
             f"{status['sessions']} run(s) served, ends after {_ago(left)} more idle")
        for t in status.get("templates", []):
            what = "ready" if t["ready"] else "importing"
            click.echo(f"  set-up imports {', '.join(t['modules'])} for {t['folder']}: {what}"
                 + (f" (took {t['seconds']:.1f} s), served {t['served']} run(s)" if t["ready"] else ""))
        for d in status.get("declined", []):
            click.echo(f"  declined: {', '.join(d['modules'])} for {d['folder']}: {d['why']}")
    if foreign:
        click.echo(f"({len(foreign)} more server(s) in {os.path.dirname(foreign[0])} answer to another key: another HOME's, "
                   "or one from before this key was made; they end when idle)")
    return ExitStatus.OK


def _ago(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"


@server.command("stop")
def server_stop() -> int:
    """End your warm servers now."""
    from .keys import user_key
    from .warm import stop_all

    stopped = stop_all(user_key())
    click.echo(f"stopped {len(stopped)} warm server(s)" if stopped else "no warm server running")
    return ExitStatus.OK


@server.command("start")
def server_start() -> int:
    """Start this environment's warm server now (and wait until it serves)."""
    from .keys import user_key
    from .warm import WarmClient, WarmUnavailable, idle_seconds

    idle = idle_seconds()
    if idle is None:
        raise UsageError("NB2FLOW_WARM_SERVER turns the warm server off here")
    try:
        client = WarmClient(sys.executable, user_key(), idle)
        status = client.wait_ready()
    except WarmUnavailable as exc:
        raise UsageError(f"no warm server: {exc}") from None
    click.echo(f"warm server {status['pid']} serving ({client.path}); it ends after {_ago(idle)} idle")
    return ExitStatus.OK


def _own(kube, ns, plural: str, name: str, verb: str, force: bool) -> dict:
    from .backends.argo import own

    return own(kube, ns, plural, name, verb, force, _console())


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
    from . import backends

    console, where = _console(), _where(namespace, context)
    ref = backends.find(name, where, console)
    for task, text in backends.get(ref.backend).logs(ref, step, follow, where, console):
        _echo_prefixed(text, task)
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
    """Stop run NAME: a workflow (running steps are stopped, exit handlers run; yours, another user's with
    --force), or a local run going on on this machine (as Ctrl-C in its terminal)."""
    from . import backends

    console, where = _console(), _where(namespace, context)
    ref = backends.find(name, where, console)
    _say(backends.get(ref.backend).stop(ref, force, where, console))
    return ExitStatus.OK


@cli.command()
@click.argument("name")
@FORCE
@_kube_options
def delete(name, force, namespace, context) -> int:
    """Delete run NAME: a workflow (yours; another user's with --force), or a local run's folder."""
    from . import backends

    console, where = _console(), _where(namespace, context)
    ref = backends.find(name, where, console)
    _say(backends.get(ref.backend).delete(ref, force, where, console))
    return ExitStatus.OK


@cli.command()
@click.option("-n", "--namespace", default=None, help="Namespace [default: this pod's, or the --pod-spec pod's].")
@click.option("--service-account", "service_account", default=None, help="The notebook's service account [default: this pod's, or the --pod-spec pod's].")
@click.option("--pod-spec", "pod_spec", default=None, metavar="FILE", type=click.Path(dir_okay=False), help="Take both from a pod (`kubectl get pod -o json`).")
@click.option("--runner", default=None, help="The account step pods run as, if not the notebook's.")
def rbac(namespace, service_account, pod_spec, runner) -> int:
    """Print the Role and RoleBinding nb2flow needs (apply with kubectl apply -f -)."""
    import yaml

    from .incluster import pod_namespace, service_account as own_account
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


@cli.command("enable-scheduler")
@click.option("--user", is_flag=True, help="For this user only (~/.jupyter) [default: this Python environment].")
def enable_scheduler(user) -> int:
    """Make JupyterLab's scheduler run notebooks as nb2flow pipelines: write the server-config file a wheel install
    lays (an editable install from a checkout does not), where jupyter_server reads it."""
    from .jupyter_scheduler_config import enable

    path = enable(user=user)
    _say(f"nb2flow: wrote {path}; restart the Jupyter server (its log then says it runs notebooks as nb2flow pipelines)")
    return ExitStatus.OK


def _kube(namespace, context):
    from .backends.argo import kube_for

    return kube_for(_where(namespace, context), _console())


def _say(text: str) -> None:
    """A message for people (stderr), with terminal commands from outside text removed; a ``message`` event too."""
    _console().say(text)


def _printable(text: str) -> str:
    from .runner.tracebacks import printable

    return printable(text)


def _table(rows) -> str:
    rows = [[_printable(str(c)).replace("\n", " ") for c in r] for r in rows]
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _check_summary(pipeline, shown: str | None = None) -> str:
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
    return f"{shown or pipeline.path}: {shape}: {verdict}"


def _color_finding(line: str, severity: str) -> str:
    if os.environ.get("NO_COLOR") or not sys.stdout.isatty():
        return line
    return click.style(line, fg="red" if severity == "error" else "yellow")


class _Survivor:
    """stdout or stderr that outlives its reader: once the pipe is closed (``nb2flow run … | head``, a restarted
    kernel that started nb2flow), what follows goes nowhere and the run goes on to complete its record."""

    def __init__(self, stream) -> None:
        self._stream = stream
        self._gone = False

    def _lost(self) -> None:
        self._gone = True
        try:  # the interpreter's own flush at exit must not meet the closed pipe either
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass

    def write(self, text):
        if not self._gone:
            try:
                return self._stream.write(text)
            except (BrokenPipeError, ValueError):
                self._lost()
        return len(text)

    def flush(self) -> None:
        if not self._gone:
            try:
                self._stream.flush()
            except (BrokenPipeError, ValueError):
                self._lost()

    def __getattr__(self, name):
        return getattr(self._stream, name)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: one line and a distinct exit status for every failure."""
    global _EVENTS
    _EVENTS = None
    if not isinstance(sys.stdout, _Survivor) and argv is None:  # the console script (tests call main(argv) in-process)
        sys.stdout, sys.stderr = _Survivor(sys.stdout), _Survivor(sys.stderr)
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
        from .events import error

        _console().send(error(exc))
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
        _console().emit("error", message=f"internal error ({type(exc).__name__}: {exc})", path=None, cell=None, step=None,
                        hint=f"the traceback is in {path}", kind="InternalError", code=None, exit_status=int(ExitStatus.INTERNAL))
        _say(f"nb2flow: internal error ({type(exc).__name__}: {exc}); this is a bug in nb2flow, "
             f"please report it with the traceback saved in {path}")
        sys.exit(ExitStatus.INTERNAL)
    sys.exit(int(rv) if isinstance(rv, int) else ExitStatus.OK)
