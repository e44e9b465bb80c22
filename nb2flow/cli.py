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
from .errors import ExitStatus, Nb2flowError, PipelineError, UsageError

NOTEBOOK = click.Path(dir_okay=True, path_type=str)


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
            click.echo(_color_finding(finding.render(notebook), finding.severity.value))
        click.echo(_check_summary(pipeline), err=True)
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
        click.echo(f"{notebook}: {len(pipeline.errors)} problem(s); see `nb2flow check {notebook}`", err=True)
    return ExitStatus.OK


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
@click.option("--local", is_flag=True, help="Run on this machine even where Kubernetes is available.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the result.")
@click.option("--no-progress", is_flag=True, help="Plain line-by-line progress instead of the live table.")
@click.option("--python", "python", default=None, metavar="PATH", help="Interpreter that runs each step [default: this one].")
def run(notebook, param_files, param_yamls, param_raw, param_typed, mode, jobs, fail_fast, resume, local, quiet, no_progress, python) -> int:
    """Run NOTEBOOK's pipeline: every step in its own process, independent steps in parallel.

    Executed notebooks, values and the run record go to .nb2flow/runs/RUN_ID/ beside the notebook.
    """
    from .api import load
    from .backend import choose_backend
    from .local import RunOptions, raise_for_failures, run_local
    from .params import ParameterArgs, check_parameters, merge_parameters
    from .runs import find_run, read_record

    earlier = None
    if resume:
        search = [os.getcwd()] + ([os.path.dirname(os.path.abspath(notebook))] if notebook else [])
        run_dir = find_run(resume, search)
        earlier = read_record(run_dir)
        notebook = notebook or earlier["notebook"]
    if not notebook:
        raise UsageError("give a NOTEBOOK to run (or --resume RUN_ID)")
    backend, reason = choose_backend(local=local)
    pipeline = load(notebook)
    if not pipeline.ok:
        for finding in pipeline.errors:
            click.echo(finding.render(notebook), err=True)
        raise PipelineError(f"{len(pipeline.errors)} problem(s) found; nothing was run", path=notebook, hint=f"see `nb2flow check {notebook}`")
    overrides = merge_parameters(ParameterArgs(tuple(param_files), tuple(param_yamls), tuple(param_typed), tuple(param_raw)))
    if earlier is not None and not overrides:
        overrides = earlier.get("parameters", {})
    params = check_parameters(overrides, [p.name for p in pipeline.parameters], notebook)
    progress = "quiet" if quiet else ("plain" if no_progress else "auto")
    if not quiet:
        click.echo(f"nb2flow: {reason}", err=True)
    options = RunOptions(
        mode=mode or (earlier or {}).get("mode", "notebook"), jobs=jobs, fail_fast=fail_fast, parameters=params,
        progress=progress, python=python or sys.executable, resume=run_dir if resume else None,
    )
    result = run_local(pipeline, options)
    if result.output_notebook:
        click.echo(f"run {result.run_id}: {result.state.value}; output notebook {os.path.relpath(result.output_notebook)}", err=True)
    raise_for_failures(result, pipeline)
    return ExitStatus.OK


@cli.command("list")
@click.argument("folders", nargs=-1, type=click.Path(file_okay=False))
@click.option("-n", "--limit", type=int, default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def list_(folders, limit, as_json) -> int:
    """Recent runs of notebooks in FOLDERS (default: the current folder)."""
    from .runs import format_duration, format_time, list_runs

    records = list_runs(list(folders) or [os.getcwd()], limit)
    if as_json:
        click.echo(json.dumps([{k: r.get(k) for k in ("run_id", "notebook", "state", "started", "ended", "run_dir")} for r in records], indent=2))
        return ExitStatus.OK
    if not records:
        click.echo("no runs yet", err=True)
        return ExitStatus.OK
    rows = [("RUN", "NOTEBOOK", "STATE", "STARTED", "DURATION")]
    for r in records:
        duration = (r["ended"] - r["started"]) if r.get("ended") and r.get("started") else None
        rows.append((r["run_id"], os.path.relpath(r.get("notebook", "?")), r.get("state", "?"), format_time(r.get("started")), format_duration(duration)))
    click.echo(_table(rows))
    return ExitStatus.OK


@cli.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True)
def status(run_id, as_json) -> int:
    """One run's steps: state, tries, time and the error of a failed step."""
    from .runs import find_run, format_duration, read_record

    run_dir = find_run(run_id, [os.getcwd()])
    record = read_record(run_dir)
    if as_json:
        click.echo(json.dumps(record, indent=2))
        return ExitStatus.OK
    click.echo(f"run {record['run_id']}: {record['state']} ({os.path.relpath(record['notebook'])})")
    rows = [("STEP", "STATE", "TRIES", "TIME", "DETAIL")]
    for name, s in record.get("steps", {}).items():
        error = s.get("error") or {}
        detail = f"cell {error.get('cell')}: {error.get('ename')}: {error.get('evalue')}" if error else ("" if not s.get("reused") else "reused")
        rows.append((name, s["state"], str(s.get("attempts", 0)), format_duration(s.get("duration")), detail[:100]))
    click.echo(_table(rows))
    click.echo(f"folder: {run_dir}")
    return ExitStatus.OK


def _table(rows) -> str:
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
    try:
        rv = cli.main(args=argv, prog_name="nb2flow", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("nb2flow: interrupted", err=True)
        sys.exit(ExitStatus.INTERRUPTED)
    except KeyboardInterrupt:
        click.echo("nb2flow: interrupted", err=True)
        sys.exit(ExitStatus.INTERRUPTED)
    except click.ClickException as exc:
        exc.show()
        sys.exit(ExitStatus.BAD_INPUT)
    except Nb2flowError as exc:
        click.echo(f"nb2flow: {exc.render()}", err=True)
        for line in getattr(exc, "traceback", None) or []:
            click.echo(f"    {line}", err=True)
        sys.exit(exc.status)
    except BrokenPipeError:
        sys.exit(ExitStatus.OK)
    except Exception as exc:  # a bug in nb2flow: say so, keep the traceback for the report
        import tempfile
        import traceback

        fd, path = tempfile.mkstemp(prefix="nb2flow-crash-", suffix=".txt")
        with os.fdopen(fd, "w") as fh:
            traceback.print_exc(file=fh)
        click.echo(
            f"nb2flow: internal error ({type(exc).__name__}: {exc}); this is a bug in nb2flow, "
            f"please report it with the traceback saved in {path}",
            err=True,
        )
        sys.exit(ExitStatus.INTERNAL)
    sys.exit(int(rv) if isinstance(rv, int) else ExitStatus.OK)
