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


def load_any(path: str | os.PathLike | None, chain: str | None = None):
    """What ``nb2flow run PATH`` runs: a notebook's :class:`Pipeline`, or a pipeline of several notebooks and scripts
    (:class:`nb2flow.workflow.Workflow`): a workflow file, or a ``-c`` chain (run in ``path``'s folder, else here)."""
    from .errors import UsageError
    from .yamlfile import is_workflow_file

    if chain is not None:
        from .workflow import from_chain

        return from_chain(chain, os.path.dirname(os.path.abspath(path)) if path else os.getcwd())
    if not path:
        raise UsageError("give a NOTEBOOK (or a workflow file, or -c COMMANDS)")
    if is_workflow_file(str(path)):
        from .workflow import from_file

        return from_file(str(path))
    return load(path)


def load_notebook(nb: Notebook) -> Pipeline:
    """The pipeline of an already-read notebook."""
    return analyze(build_structure(nb), local_modules(os.path.dirname(os.path.abspath(nb.path))))


def local_modules(folder: str) -> frozenset:
    """The modules a notebook in ``folder`` imports from beside itself: ``name.py`` files and packages."""
    try:
        entries = os.listdir(folder)
    except OSError:
        return frozenset()
    found = set()
    for entry in entries:
        stem, ext = os.path.splitext(entry)
        if ext == ".py" and stem.isidentifier():
            found.add(stem)
        elif entry.isidentifier() and os.path.isfile(os.path.join(folder, entry, "__init__.py")):
            found.add(entry)
    return frozenset(found)


def run(path: str | os.PathLike, *, parameters: dict | None = None, mode: str = "notebook", jobs: int | None = None,
        on_event=None, python: str | None = None, backend: str = "local", **request):
    """Run a notebook's pipeline (or a workflow file's: several notebooks and scripts), as ``nb2flow run`` does, with the
    backend named (``local`` by default), and
    return its :class:`~nb2flow.backends.Outcome` (a local run's :class:`~nb2flow.local.RunResult` is its
    ``result``). ``on_event`` receives the run's events (dicts, see :mod:`nb2flow.events`), the same ones
    ``--events json`` writes; a failed run is raised, as :class:`~nb2flow.errors.StepFailed` (or a subclass),
    after the ``run-finished`` and ``error`` events. Other keywords are :class:`~nb2flow.backends.RunRequest`'s
    (``fail_fast``, ``watch``, ``where``, …)."""
    from . import backends
    from .errors import Nb2flowError, PipelineError
    from .events import error, problem
    from .params import check_parameters
    from .progress import EventReporter

    sink = on_event or (lambda ev: None)
    try:
        pipeline = load_any(path)  # a notebook, or a workflow file of several notebooks and scripts (docs/pipelines.md)
        if not pipeline.ok:
            for f in pipeline.errors:
                sink(problem(f.file or path, f))
            raise PipelineError(f"{len(pipeline.errors)} problem(s) found; nothing was run", path=str(path))
        if pipeline.is_workflow:
            from .workflow import check_workflow_parameters

            params = check_workflow_parameters(pipeline, dict(parameters or {}))
        else:
            params = check_parameters(dict(parameters or {}), [p.name for p in pipeline.parameters], str(path))
        chosen = backends.get(backend)
        req = backends.RunRequest(pipeline=pipeline, parameters=params, mode=mode, jobs=jobs, python=python,
                                  progress=EventReporter(sink, backend), **request)
        chosen.validate(req)
        outcome = chosen.start(req, backends.Console(sink=sink))
        if outcome.failure is not None:
            raise outcome.failure
        return outcome
    except Nb2flowError as exc:
        sink(error(exc))
        raise
