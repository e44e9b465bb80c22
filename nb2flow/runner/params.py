"""Parameters of a run, injected into a step as papermill injects them."""

from __future__ import annotations

import json
import math

from .auth import verified_json
from .protocol import Role


def python_literal(value) -> str:
    """Python source for a JSON value (papermill's translator, with repr for exact strings)."""
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "float('nan')"
        if math.isinf(value):
            return "float('inf')" if value > 0 else "float('-inf')"
        return repr(value)
    if isinstance(value, (int, str)):
        return repr(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{python_literal(k)}: {python_literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(python_literal(v) for v in value) + "]"
    raise TypeError(f"parameter value of type {type(value).__name__} is not JSON")


def parameters_source(params: dict) -> str:
    """The source of papermill's ``injected-parameters`` cell."""
    lines = ["# Parameters"]
    lines += [f"{name} = {python_literal(value)}" for name, value in params.items()]
    return "\n".join(lines) + "\n"


def read_params(params_file: str | None, items: list | None) -> dict:
    """The values of ``--params-file`` then each ``--param NAME=JSON`` (later wins)."""
    params: dict = {}
    if params_file:
        params.update(verified_json(params_file))
    for item in items or []:
        name, _, raw = item.partition("=")
        try:
            params[name] = json.loads(raw)
        except ValueError:
            params[name] = raw  # typed by hand (e.g. in the Argo UI) without JSON quotes
    return params


def injection_index(roles: list) -> tuple[int, bool]:
    """Where the injected parameters go among cells of these roles: (index, replaces a cell there).

    Right after the notebook's parameters cell (whatever its tag's spelling: papermill's
    ``parameters`` or Kale's ``pipeline-parameters``), replacing an injected cell already
    there; at the top when the notebook has no parameters cell.
    """
    existing = next((i for i, r in enumerate(roles) if r == Role.INJECTED), None)
    if existing is not None:
        return existing, True
    after = next((i + 1 for i, r in enumerate(roles) if r == Role.PARAMETERS), 0)
    return after, False
