"""The tag grammar: what each cell's ``metadata.tags`` asks nb2flow to do.

Parses one cell's tags into a :class:`CellTags` value plus findings (unknown tags with a
did-you-mean, bad option values, tags that mean nothing on a markdown cell). Pure: no I/O.

Grammar (see the README's tag reference):
  step:NAME | block:NAME      start a step (block: is Kubeflow Kale's spelling; empty block: continues)
  after:NAME[,NAME] | prev:NAME   run after those steps (after:none makes a root)
  parameters | pipeline-parameters   papermill's parameters cell
  setup | imports | functions  run at the start of every step
  skip                        left out of the pipeline
  pipeline-metrics            Kale's metrics cell: a final step after every other step
  cpu:Q memory:Q gpu:N retry:N timeout:D image:REF   step options (first cell of a step)
  limit:nvidia.com/gpu:N, limit:cpu:Q, limit:memory:Q   Kale's resource limits
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

from .findings import Finding, error, warning
from .notebook import Cell

STEP_NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")
# Kubernetes resource.Quantity (apimachinery/pkg/api/resource/quantity.go).
QUANTITY_RE = re.compile(r"^\+?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|[KMGTPE]i|[numkMGTPE])?$")
# Go's time.ParseDuration, which Argo uses for ``timeout``, plus a day unit.
GO_DURATION_MAX_NS = 2**63 - 1  # Go's time.Duration, which Argo parses durations into
DURATION_PART_RE = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)")
IMAGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-/:@]*$")
RESERVED_NAMES = frozenset({"none"})

FLAG_TAGS = {
    "parameters": "parameters",
    "pipeline-parameters": "parameters",
    "setup": "setup",
    "imports": "setup",
    "functions": "setup",
    "skip": "skip",
    "pipeline-metrics": "metrics",
}
KALE_GROUPS = {"imports": "setup", "functions": "setup", "pipeline-parameters": "parameters", "pipeline-metrics": "metrics"}
KEYED_TAGS = ("step", "block", "after", "prev", "cpu", "memory", "gpu", "retry", "timeout", "image", "limit")
OPTION_KEYS = ("cpu", "memory", "gpu", "retry", "timeout", "image")
# Tags other Jupyter tools give meaning to; nb2flow keeps them on the cell and says nothing.
FOREIGN_TAGS = frozenset(
    {
        "injected-parameters",
        "raises-exception",
        "skip-execution",
        "hide-input", "hide-output", "hide-cell", "hide_input", "hide_output",
        "remove-input", "remove-output", "remove-cell", "remove_input", "remove_output", "remove_cell",
        "remove-stderr", "output_scroll", "scroll-output", "full-width", "margin", "thebe-init",
        "papermill-error-cell-tag",
        "nbval-ignore-output", "nbval-skip", "nbval-check-output", "nbval-raises-exception",
        "jupyter:kernel", "keep_output",
    }
)
GPU_RESOURCE_KEYS = ("nvidia.com/gpu", "amd.com/gpu", "gpu")
# Kale tags that mean something only on Kubeflow Pipelines; accepted and reported, never silently dropped
KALE_ONLY = {
    "cache": "nb2flow re-runs only what changed with `nb2flow run --resume`",
    "report": "the run's output notebook is the report",
    "annotation": "step pods carry nb2flow's labels and annotations",
    "label": "extra labels go in nb2flow.yaml (labels:)",
    "secret": "step pods keep the notebook's Secret references (secret_refs: in nb2flow.yaml)",
    "notebook": "sub-pipelines from other notebooks are not supported; run that notebook on its own",
}


@dataclass(frozen=True)
class StepOptions:
    """Per-step settings from option tags; ``None`` means inherit (the notebook's, or none)."""

    cpu: str | None = None
    memory: str | None = None
    gpu: int | None = None
    gpu_resource: str | None = None
    retry: int | None = None
    timeout: str | None = None
    image: str | None = None

    @property
    def timeout_seconds(self) -> float | None:
        return parse_duration(self.timeout) if self.timeout else None

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class CellTags:
    """What one cell's tags mean to nb2flow."""

    step: str | None = None  # a step starts here with this name
    kale_block: bool = False  # the step tag was Kale's block:
    continues: bool = False  # an empty block: (continue the step above)
    after: tuple[str, ...] = ()
    uses_prev: bool = False  # Kale's prev: was used
    role: str | None = None  # parameters | setup | skip | metrics
    role_tag: str | None = None  # the tag that gave the role, as spelled (imports, pipeline-parameters, ...)
    injected: bool = False  # papermill's injected-parameters cell from an earlier run
    options: dict = field(default_factory=dict)
    option_tags: tuple[str, ...] = ()  # the option tags as spelled (cpu:2, limit:cpu:2, ...)

    @property
    def step_key(self) -> str:
        """``step`` or Kale's ``block``, as the notebook spells it."""
        return "block" if self.kale_block else "step"

    @property
    def after_key(self) -> str:
        """``after`` or Kale's ``prev``, as the notebook spells it."""
        return "prev" if self.uses_prev else "after"

    @property
    def kale_group(self) -> str | None:
        """The Kale block that untagged cells below this one join (Kale's nbprocessor.parse_notebook):
        ``setup`` after imports/functions, ``parameters`` after pipeline-parameters, ``metrics``."""
        return KALE_GROUPS.get(self.role_tag)

    @property
    def is_step_start(self) -> bool:
        return self.step is not None


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration such as ``30m``, ``1h30m``, ``90s``, ``2d``."""
    pos = 0
    total = 0.0
    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400}
    for match in DURATION_PART_RE.finditer(text):
        if match.start() != pos:
            raise ValueError(text)
        total += float(match.group(1)) * units[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(text)
    if total * 1e9 > GO_DURATION_MAX_NS:
        raise ValueError(f"{text} is longer than a duration can be (at most 2562047h, about 292 years)")
    return total


def task_name(step_name: str, max_len: int = 63) -> str:
    """The DNS-1123 label form of a step name: its Argo task name and files (``Train_A`` → ``train-a``,
    ``1_load`` → ``step-1-load``: Argo refuses task names that start with a digit)."""
    from .names import k8s_name

    return k8s_name(step_name, max_len=max_len, fallback="step", letter_first=True)


def _suggest(tag: str) -> str | None:
    """A did-you-mean for an unknown tag, or None."""
    lowered = tag.lower()
    if lowered in FLAG_TAGS and lowered != tag:
        return lowered
    for sep in (" ", "=", "-", "_", "."):
        key, _, value = tag.partition(sep)
        if value.strip() and key.lower() in KEYED_TAGS:
            return f"{key.lower()}:{value.strip()}"
    if ":" in tag:
        key, _, value = tag.partition(":")
        key_l = key.strip().lower()
        if key_l in KEYED_TAGS:
            return f"{key_l}:{value.strip()}"
        close = difflib.get_close_matches(key_l, KEYED_TAGS, n=1, cutoff=0.6)
        if close:
            return f"{close[0]}:{value.strip()}"
        return None
    close = difflib.get_close_matches(lowered, list(FLAG_TAGS), n=1, cutoff=0.75)
    if close:
        return close[0]
    if lowered in KEYED_TAGS:
        return f"{lowered}:NAME" if lowered in ("step", "block", "after", "prev") else f"{lowered}:VALUE"
    return None


def parse_cell_tags(cell: Cell) -> tuple[CellTags, list[Finding]]:
    """Parse one cell's tags. Findings carry the cell number; the step is filled in later."""
    findings: list[Finding] = []
    where = dict(cell=cell.number, first_line=cell.first_line)
    step = None
    kale_block = continues = uses_prev = injected = False
    after: list[str] = []
    role = role_tag = None
    options: dict = {}
    option_tags: list[str] = []

    def bad(code: str, msg: str, hint: str | None = None) -> None:
        findings.append(error(code, msg, hint=hint, **where))

    for tag in cell.tags:
        key, sep, value = tag.partition(":")
        if tag in FLAG_TAGS:
            new_role = FLAG_TAGS[tag]
            if role and role != new_role:
                bad("conflicting-tags", f"tags give this cell two roles: {role} and {new_role}")
            role, role_tag = new_role, tag
        elif tag == "injected-parameters":
            injected = True
        elif tag in FOREIGN_TAGS:
            continue
        elif sep and key in ("step", "block"):
            if value == "":  # Kale: an empty step: / block: continues the step above
                continues = True
                continue
            if step is not None:
                bad("two-step-tags", f"two step tags on one cell: step:{step} and {tag!r}")
                continue
            if not STEP_NAME_RE.match(value):
                bad(
                    "bad-step-name",
                    f"step name {value!r} may only use letters, digits, '-' and '_'",
                    hint=f"try {key}:{re.sub(r'[^A-Za-z0-9_-]+', '-', value).strip('-') or 'name'}",
                )
                continue
            if not re.search(r"[A-Za-z0-9]", value) or len(task_name(value, max_len=1000)) > 63:
                bad("bad-step-name", f"step name {value!r} does not make a Kubernetes name (1-63 characters, a letter or digit at each end)")
                continue
            if value.lower() in RESERVED_NAMES:
                bad("bad-step-name", f"'{value}' is reserved (after:none makes a root step)", hint="choose another step name")
                continue
            step, kale_block = value, key == "block"
        elif sep and key in ("after", "prev"):
            names = [n.strip() for n in value.split(",")]
            if not value.strip() or any(not n for n in names):
                bad("bad-after", f"{tag!r} names no step", hint=f"write {key}:NAME or after:none")
                continue
            for name in names:
                if name != "none" and not STEP_NAME_RE.match(name):
                    bad("bad-after", f"{tag!r}: {name!r} is not a step name")
                    continue
                after.append(name)
            uses_prev = uses_prev or key == "prev"
        elif sep and key in OPTION_KEYS:
            _parse_option(key, value, tag, options, bad)
            option_tags.append(tag)
        elif sep and key in KALE_ONLY:
            findings.append(warning("kale-tag", f"Kubeflow Kale's {tag!r} has no effect in nb2flow", hint=KALE_ONLY[key], **where))
        elif sep and key == "limit":
            option_tags.append(tag)
            resource, _, amount = value.rpartition(":")
            if resource in GPU_RESOURCE_KEYS:
                _parse_option("gpu", amount, tag, options, bad)
                if "gpu" in options and resource != "gpu":
                    options["gpu_resource"] = resource
            elif resource in ("cpu", "memory"):
                _parse_option(resource, amount, tag, options, bad)
            else:
                bad("bad-option", f"{tag!r}: nb2flow knows limit:cpu:Q, limit:memory:Q and limit:nvidia.com/gpu:N")
        else:
            suggestion = _suggest(tag)
            hint = f"did you mean '{suggestion}'?" if suggestion else "nb2flow ignores it"
            findings.append(warning("unknown-tag", f"unknown tag {tag!r}", hint=hint, **where))

    tags = CellTags(
        step=step,
        kale_block=kale_block,
        continues=continues and step is None,
        after=tuple(after),
        uses_prev=uses_prev,
        role=role,
        role_tag=role_tag,
        injected=injected,
        options=options,
        option_tags=tuple(option_tags),
    )
    if cell.cell_type != "code":
        findings.extend(_non_code_findings(cell, tags))
        return CellTags(), findings
    if step is not None and role in ("setup", "skip", "parameters"):
        bad("conflicting-tags", f"step:{step} and {role} on one cell", hint=f"put {role} on its own cell")
    return tags, findings


def _parse_option(key: str, value: str, tag: str, options: dict, bad) -> None:
    value = value.strip()
    if key in ("cpu", "memory"):
        if not QUANTITY_RE.match(value) or float(re.match(r"[+]?[\d.]+", value).group(0) or 0) <= 0:
            example = "cpu:2 or cpu:500m" if key == "cpu" else "memory:4Gi or memory:512Mi"
            bad("bad-option", f"{tag!r} is not a Kubernetes quantity", hint=f"e.g. {example}")
            return
        options[key] = value
    elif key in ("gpu", "retry"):
        if not value.isdigit() or (key == "gpu" and int(value) == 0):
            bad("bad-option", f"{tag!r} needs a whole number" + (" of at least 1" if key == "gpu" else ""))
            return
        options[key] = int(value)
    elif key == "timeout":
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            too_long = "longer than" in str(exc)
            bad("bad-option", f"{tag!r} is {'longer than a duration can be' if too_long else 'not a duration'}",
                hint="at most 2562047h (about 292 years)" if too_long else "e.g. timeout:30m, timeout:1h30m, timeout:90s")
            return
        if seconds <= 0:
            bad("bad-option", f"{tag!r} must be longer than zero")
            return
        options[key] = value
    elif key == "image":
        if not IMAGE_RE.match(value):
            bad("bad-option", f"{tag!r} is not an image reference", hint="e.g. image:python:3.11 or image:ghcr.io/org/img@sha256:...")
            return
        options[key] = value


def _non_code_findings(cell: Cell, tags: CellTags) -> list[Finding]:
    where = dict(cell=cell.number, first_line=cell.first_line)
    kind = cell.cell_type
    out = []
    if tags.role == "parameters":
        out.append(
            warning(
                "tag-on-markdown",
                f"'parameters' on a {kind} cell: papermill would inject parameters after it, but a {kind} cell never runs, so its defaults are never set",
                hint="move the tag to the code cell that assigns the defaults",
                **where,
            )
        )
    if tags.step or tags.after or tags.continues:
        what = "step:" if tags.step else "after:"
        out.append(
            warning(
                "tag-on-markdown",
                f"'{what}' on a {kind} cell has no effect: {kind} cells never run",
                hint="move the tag to the first code cell of the step",
                **where,
            )
        )
    if tags.options or tags.role in ("setup", "skip", "metrics"):
        out.append(warning("tag-on-markdown", f"tags on a {kind} cell have no effect: {kind} cells never run", **where))
    return out
