"""nb2flow: run a tagged Jupyter notebook as a pipeline of steps, locally or on Argo Workflows."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "load", "load_ipython_extension"]


def load(path):
    """Read a notebook and return its :class:`~nb2flow.pipeline.Pipeline` (see :func:`nb2flow.api.load`)."""
    from .api import load as _load

    return _load(path)


def load_ipython_extension(shell) -> None:
    """``%load_ext nb2flow`` in a notebook: the ``%nb2flow`` magic (see :mod:`nb2flow.ipython`)."""
    from .ipython import load_ipython_extension as _load

    _load(shell)
