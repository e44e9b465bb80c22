"""The Python API: ``nb2flow.load(path) -> Pipeline``; ``nb2flow.api.run(path, on_event=...)`` runs it here."""

from __future__ import annotations

import os

from .dataflow import analyze
from .notebook import Notebook, read_notebook
from .pipeline import Pipeline, build_structure


def load(path: str | os.PathLike) -> Pipeline:
    """Read a notebook and return its pipeline: steps, edges, data flow and findings.

    Raises :class:`nb2flow.errors.NotebookReadError` when the file is not a usable notebook;
    problems in a readable notebook are in ``Pipeline.findings`` (``Pipeline.ok`` is False
    when any is an error).
    """
    return load_notebook(read_notebook(path))


def load_notebook(nb: Notebook) -> Pipeline:
    """The pipeline of an already-read notebook."""
    return analyze(build_structure(nb))


def run(path: str | os.PathLike, *, parameters: dict | None = None, mode: str = "notebook", jobs: int | None = None,
        on_event=None, python: str | None = None):
    """Run a notebook's pipeline on this machine, as ``nb2flow run --local`` does, and return its
    :class:`~nb2flow.local.RunResult`. ``on_event`` receives the run's events (dicts, see :mod:`nb2flow.events`),
    the same ones ``--events json`` writes; the run's failure is also raised, as
    :class:`~nb2flow.errors.StepFailed` (or a subclass), after the ``run-finished`` and ``error`` events."""
    import sys

    from .errors import Nb2flowError, PipelineError
    from .events import error, problem, run_finished
    from .local import RunOptions, raise_for_failures, run_local
    from .params import check_parameters
    from .progress import EventReporter

    sink = on_event or (lambda ev: None)
    try:
        pipeline = load(path)
        if not pipeline.ok:
            for f in pipeline.errors:
                sink(problem(path, f))
            raise PipelineError(f"{len(pipeline.errors)} problem(s) found; nothing was run", path=str(path))
        params = check_parameters(dict(parameters or {}), [p.name for p in pipeline.parameters], str(path))
        result = run_local(pipeline, RunOptions(mode=mode, jobs=jobs, parameters=params, python=python or sys.executable,
                                                progress=EventReporter(sink, "local")))
        failure = None
        try:
            raise_for_failures(result, pipeline)
        except Nb2flowError as exc:
            failure = exc
        sink(run_finished(result, failure.status if failure else 0))
        if failure:
            raise failure
        return result
    except Nb2flowError as exc:
        sink(error(exc))
        raise
