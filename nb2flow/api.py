"""The Python API: ``nb2flow.load(path) -> Pipeline``."""

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
