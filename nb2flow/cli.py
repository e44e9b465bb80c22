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
from .errors import ExitStatus, Nb2flowError

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
