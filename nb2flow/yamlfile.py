"""Reading a YAML mapping (parameter files, settings files, workflow files) with one-line errors."""

from __future__ import annotations


def is_workflow_file(path: str) -> bool:
    """A path nb2flow reads as a workflow file rather than a notebook: YAML by its name (a check that imports nothing,
    so that running a notebook does not load the workflow module)."""
    return str(path).endswith((".yaml", ".yml"))


def no_dates_loader():
    """A SafeLoader that leaves dates as strings, as papermill reads parameters."""
    import yaml

    class NoDatesSafeLoader(yaml.SafeLoader):
        pass

    NoDatesSafeLoader.yaml_implicit_resolvers = {
        k: [r for r in v if r[0] != "tag:yaml.org,2002:timestamp"]
        for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    return NoDatesSafeLoader


def load_mapping(text: str, origin: str, error: type, *, what: str, loader=None) -> dict:
    """The mapping in ``text``; ``error(message)`` names ``origin`` and the line when it is not one."""
    import yaml

    try:
        data = yaml.load(text, Loader=loader or yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None)
        raise error(f"{origin}: not valid YAML{where}" + (f": {problem}" if problem else "")) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise error(f"{origin}: {what} must be a YAML mapping, not {type(data).__name__}")
    return data
