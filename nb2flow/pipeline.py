"""The pipeline model: steps, their edges and options, from a notebook's tags.

:func:`build_structure` turns a :class:`~nb2flow.notebook.Notebook` into a
:class:`Pipeline` whose steps know their cells, parents and options; the data-flow
pass (:mod:`nb2flow.dataflow`) then fills in each step's inputs, outputs and the
definitions it re-creates. Pure: no I/O.
"""

from __future__ import annotations

import ast
import difflib
import re
from dataclasses import dataclass, field, replace
from functools import cached_property

from .findings import Finding, Severity, error, warning
from .notebook import Notebook
from .tags import CellTags, StepOptions, parse_cell_tags, task_name

METRICS_STEP = "pipeline-metrics"
DEFAULT_STEP = "main"


@dataclass(frozen=True)
class Input:
    """A name a step reads from an earlier step."""

    name: str
    provider: str  # the step whose value (or definition) it is
    kind: str  # data | module | function | class
    optional: bool = False  # given to a step that reads names it spells at run time: loaded if it could travel


@dataclass(frozen=True)
class Definition:
    """A top-level statement re-run in a step to re-create a module, function or class."""

    cell: int  # 0-based cell index
    stmt: int
    source: str
    names: tuple[str, ...]
    needs_values: bool = False  # its decorators/defaults read transported values


@dataclass(frozen=True)
class Step:
    """One step: a run of cells that executes in its own process or pod."""

    name: str
    cells: tuple[int, ...]  # 0-based indexes into the notebook's cells
    parents: tuple[str, ...] = ()
    options: StepOptions = field(default_factory=StepOptions)
    inputs: tuple[Input, ...] = ()
    outputs: tuple[str, ...] = ()
    definitions: tuple[Definition, ...] = ()
    # a notebook that seeds the global random generators: the step continues the generators' state
    # where the step before it in notebook order left them (rng_from), and saves its own (saves_rng)
    rng_from: str | None = None
    saves_rng: bool = False
    # values this step may change (a call it makes on them or passes them to) that steps not after it read as
    # they were: (name, 0-based cell, readers). The step checks at run time that it left each as it was.
    unchanged: tuple = ()
    # in a pipeline of several notebooks and scripts (nb2flow.workflow): the job the step belongs to, and for a
    # command job what it runs ({"argv", "text", "shell"}); a command step has no cells
    job: str | None = None
    command: dict | None = field(default=None, hash=False)

    @property
    def task(self) -> str:
        """The DNS-1123 name (Argo task name, Kubernetes labels)."""
        return task_name(self.name)

    @property
    def first_cell(self) -> int | None:
        return self.cells[0] if self.cells else None

    @property
    def data_inputs(self) -> tuple[Input, ...]:
        return tuple(i for i in self.inputs if i.kind == "data")


@dataclass(frozen=True)
class Parameter:
    """A papermill parameter: a simple assignment in the ``parameters`` cell."""

    name: str
    source: str  # the default's expression as written
    default: object = None
    has_literal: bool = False  # the default is a Python literal
    annotation: str | None = None

    @property
    def type_name(self) -> str:
        if self.annotation:
            return self.annotation
        return type(self.default).__name__ if self.has_literal else "expression"


class StepGraph:
    """What a set of steps answers, whatever made it: one notebook's :class:`Pipeline`, or a pipeline of several
    notebooks and scripts (:class:`nb2flow.workflow.Workflow`). Needs ``steps`` (parents first) and ``findings``."""

    is_workflow = False  # several notebooks and scripts (nb2flow.workflow), not one notebook

    @cached_property
    def by_name(self) -> dict[str, Step]:
        return {s.name: s for s in self.steps}

    def step(self, name: str) -> Step:
        return self.by_name[name]

    @property
    def edges(self) -> tuple[tuple[str, str], ...]:
        return tuple((p, s.name) for s in self.steps for p in s.parents)

    @cached_property
    def _ancestors(self) -> dict[str, frozenset[str]]:
        result: dict[str, frozenset[str]] = {}
        for s in self.steps:  # parents always come first
            acc: set[str] = set()
            for p in s.parents:
                acc.add(p)
                acc |= result.get(p, frozenset())
            result[s.name] = frozenset(acc)
        return result

    def ancestors(self, name: str) -> frozenset[str]:
        return self._ancestors[name]

    def descendants(self, name: str) -> frozenset[str]:
        return frozenset(s.name for s in self.steps if name in self._ancestors[s.name])

    @property
    def errors(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity is Severity.ERROR)

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity is Severity.WARNING)

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass(frozen=True)
class Pipeline(StepGraph):
    """A notebook split into steps, with its data flow and the problems found."""

    notebook: Notebook
    steps: tuple[Step, ...]
    setup_cells: tuple[int, ...] = ()  # setup, parameters and injected-parameters cells in order
    parameter_cell: int | None = None
    skipped_cells: tuple[int, ...] = ()
    parameters: tuple[Parameter, ...] = ()
    findings: tuple[Finding, ...] = ()
    code: dict = field(default_factory=dict, compare=False, hash=False, repr=False)  # cell index -> CellCode
    after_tag: str = "after"  # how the notebook says "runs after": after, or Kale's prev
    local_modules: frozenset = field(default=frozenset(), compare=False)  # the notebook's own modules, beside it

    @property
    def path(self) -> str:
        return self.notebook.path

    def step_of_cell(self, index: int) -> str | None:
        for s in self.steps:
            if index in s.cells:
                return s.name
        return None


NB2FLOW_MAGIC_LINE = re.compile(r"^\s*(%(re)?load_ext\s+nb2flow\s*|%nb2flow(\s.*)?|#.*|)$")


def is_nb2flow_magic_cell(source: str) -> bool:
    """A cell of only ``%load_ext nb2flow`` / ``%nb2flow ...`` lines (and comments): it works on the pipeline and is
    left out of it, so a step never runs ``%nb2flow run`` on its own notebook."""
    lines = source.split("\n")
    return any(line.strip() for line in lines) and all(NB2FLOW_MAGIC_LINE.match(line) for line in lines)


def build_structure(nb: Notebook) -> Pipeline:
    """Steps, edges, setup and parameter cells from the tags. Data flow comes later."""
    findings: list[Finding] = []
    parsed: list[CellTags] = []
    for cell in nb.cells:
        tags, cell_findings = parse_cell_tags(cell)
        parsed.append(tags)
        findings.extend(cell_findings)

    if nb.language not in ("python", "python3", "ipython"):
        findings.append(error("not-python", f"the notebook's language is {nb.language!r}; nb2flow runs Python notebooks"))

    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    has_steps = any(parsed[c.index].is_step_start for c in code_cells)
    kale_mode = any(parsed[c.index].uses_prev for c in code_cells)
    after_tag = "prev" if kale_mode else "after"
    # papermill's style, no step tags: the cells above the parameters cell run before it, as set-up
    first_parameters = next((c.index for c in code_cells if parsed[c.index].role == "parameters"), None)
    kale_group: str | None = None  # the Kale block (imports/functions, pipeline-parameters, metrics) untagged cells join

    steps: list[dict] = []
    setup: list[int] = []
    skipped: list[int] = []
    metrics: list[int] = []
    parameter_cell: int | None = None
    seen: dict[str, tuple[str, int]] = {}  # task name -> (step name, cell number)

    def where(i: int) -> dict:
        return dict(cell=i + 1, first_line=nb.cells[i].first_line)

    for cell in code_cells:
        i = cell.index
        tags = parsed[i]
        current = steps[-1] if steps else None
        if tags.role == "skip" or (not tags.is_step_start and not tags.role and is_nb2flow_magic_cell(cell.source)):
            skipped.append(i)  # `%load_ext nb2flow` and `%nb2flow run` drive the pipeline; they are not part of it
            continue
        if tags.role or tags.is_step_start:
            kale_group = tags.kale_group
        elif kale_group is not None:  # Kale: an untagged (or empty step:) cell joins the block above it
            if tags.after:
                findings.append(_ignored_prev(tags, i, where))
            (metrics if kale_group == "metrics" else setup).append(i)
            continue
        if tags.role == "parameters" or tags.injected:
            if tags.role == "parameters" and parameter_cell is None:
                parameter_cell = i
            elif tags.role == "parameters":
                findings.append(
                    warning(
                        "second-parameters",
                        f"a second 'parameters' cell: papermill injects after the first (cell {parameter_cell + 1}); this one runs as a setup cell",
                        **where(i),
                    )
                )
            setup.append(i)
            continue
        if tags.role == "setup":
            setup.append(i)
            continue
        if tags.role == "metrics":
            metrics.append(i)
            continue
        if tags.is_step_start:
            task = task_name(tags.step)
            if task in seen:
                other_name, other_cell = seen[task]
                if tags.kale_block and current is not None and current["name"] == other_name:
                    current["cells"].append(i)  # Kale: a repeated block name continues that block
                    continue
                if other_name == tags.step:
                    # the same name further down: top to bottom is well defined, so it runs as a step of its own
                    k = 2
                    while task_name(f"{tags.step}_{k}") in seen:
                        k += 1
                    own = f"{tags.step}_{k}"
                    findings.append(warning(
                        "repeated-step",
                        f"{tags.step_key}:{tags.step} is used again (cell {other_cell} starts step {other_name}): this cell starts "
                        f"a step of its own, {own}, which runs where the notebook puts it",
                        hint=f"give it a name of its own; {tags.after_key}:{tags.step} below means the nearer one above",
                        step=own, **where(i)))
                    seen[task_name(own)] = (own, i + 1)
                    steps.append(dict(name=own, cells=[i], tags=tags, alias=tags.step))
                    continue
                same = f"the same Kubernetes name '{task}' as {tags.step_key}:{other_name}"
                findings.append(
                    error(
                        "duplicate-step",
                        f"{tags.step_key}:{tags.step} has {same}, already used by cell {other_cell}",
                        hint="give each step a unique name",
                        step=tags.step,
                        **where(i),
                    )
                )
                continue
            seen[task] = (tags.step, i + 1)
            steps.append(dict(name=tags.step, cells=[i], tags=tags))
            continue
        if tags.after and tags.uses_prev and not tags.options:
            findings.append(_ignored_prev(tags, i, where))  # Kale ignores prev: on a continuation cell too
        elif tags.after or tags.options:
            spelled = [f"{tags.after_key}:{n}" for n in tags.after] + list(tags.option_tags)
            step_key = current["tags"].step_key if current else "step"
            findings.append(
                error(
                    "tag-not-on-step-start",
                    f"{', '.join(f'`{t}`' for t in spelled)} only applies on a step's first cell (the one tagged {step_key}:NAME)",
                    hint="move the tag to the step's first cell",
                    step=current["name"] if current else None,
                    **where(i),
                )
            )
        if current is None:
            if has_steps or (first_parameters is not None and i < first_parameters):
                setup.append(i)  # untagged code above the first step (or above the parameters cell)
            else:
                steps.append(dict(name=DEFAULT_STEP, cells=[i], tags=CellTags()))
                findings.append(
                    warning(
                        "no-steps",
                        f"no step: tags, so the whole notebook runs as one step '{DEFAULT_STEP}'",
                        hint="tag the first cell of each step step:NAME",
                    )
                )
        else:
            current["cells"].append(i)

    # edges
    built: list[Step] = []
    names_above: list[str] = []
    all_names = {s["name"]: s["cells"][0] for s in steps}
    nearest: dict[str, str] = {}  # a repeated step name -> the step of that name nearest above
    for s in steps:
        tags: CellTags = s["tags"]
        first = s["cells"][0]
        parents: list[str] = []
        key = tags.after_key
        if "none" in tags.after:
            if len(tags.after) > 1:
                findings.append(error("bad-after", f"{key}:none cannot be combined with other {key}: names", step=s["name"], **where(first)))
        elif tags.after:
            for name in tags.after:
                name = nearest.get(name, name)
                if name in names_above:
                    if name not in parents:
                        parents.append(name)
                    continue
                if name == s["name"]:
                    msg, hint = f"step {name} cannot run after itself", None
                elif name in all_names:
                    msg = f"{key}:{name} names a step defined below (cell {all_names[name] + 1})"
                    hint = f"{key}: may only name a step above, so no cell runs before one it followed in the notebook"
                else:
                    close = difflib.get_close_matches(name, names_above, n=1, cutoff=0.6)
                    close = close or [n for n in names_above if task_name(n) == task_name(name)]
                    msg = f"{key}:{name} names no step above"
                    hint = f"did you mean {key}:{close[0]}?" if close else (
                        f"steps above: {', '.join(names_above)}" if names_above else "this is the first step; drop the tag"
                    )
                findings.append(error("unknown-after", msg, hint=hint, step=s["name"], **where(first)))
        elif not kale_mode and names_above:
            parents.append(names_above[-1])
        options = StepOptions(**tags.options)
        built.append(Step(name=s["name"], cells=tuple(s["cells"]), parents=tuple(parents), options=options))
        names_above.append(s["name"])
        if s.get("alias"):
            nearest[s["alias"]] = s["name"]

    if metrics:
        leaves = [s.name for s in built if not any(s.name in o.parents for o in built)]
        if METRICS_STEP in all_names:
            findings.append(error("duplicate-step", f"step:{METRICS_STEP} clashes with the pipeline-metrics cells", **where(metrics[0])))
        else:
            built.append(Step(name=METRICS_STEP, cells=tuple(metrics), parents=tuple(leaves)))

    if not built and code_cells:
        findings.append(warning("nothing-to-run", "nothing to run: every code cell is a setup, parameters or skip cell",
                                hint="tag the cells to run step:NAME"))
    parameters: tuple[Parameter, ...] = ()
    if parameter_cell is not None:
        parameters = parse_parameters(nb.cells[parameter_cell].source)

    owner = {i: s.name for s in built for i in s.cells}
    findings = [
        replace(f, step=owner.get(f.cell - 1)) if f.step is None and f.cell is not None else f for f in findings
    ]
    return Pipeline(
        notebook=nb,
        steps=tuple(built),
        setup_cells=tuple(setup),
        parameter_cell=parameter_cell,
        skipped_cells=tuple(skipped),
        parameters=parameters,
        findings=tuple(findings),
        after_tag=after_tag,
    )


def _ignored_prev(tags: CellTags, i: int, where) -> Finding:
    """Kale reads prev: only on a step's first cell; on any other cell it has no effect."""
    spelled = ", ".join(f"`{tags.after_key}:{n}`" for n in tags.after)
    return warning("ignored-prev", f"{spelled} on a cell that continues a block has no effect (Kale ignores it too)",
                   hint=f"put {tags.after_key}: on the step's first cell, or drop it", **where(i))


def parse_parameters(source: str) -> tuple[Parameter, ...]:
    """The simple ``name = value`` assignments of a parameters cell, as papermill sees them."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return ()  # reported as a syntax error by the data-flow pass
    params: dict[str, Parameter] = {}
    lines = source.splitlines()
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            target, value, annotation = node.targets[0].id, node.value, None
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            target, value, annotation = node.target.id, node.value, ast.unparse(node.annotation)
        else:
            continue
        text = _segment(lines, value) or ast.unparse(value)
        try:
            default, literal = ast.literal_eval(value), True
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            default, literal = None, False
        params[target] = Parameter(target, text, default, literal, annotation)
    return tuple(params.values())


def _segment(lines: list[str], node: ast.AST) -> str | None:
    """``ast.get_source_segment`` on lines split once (it re-splits the source on every call)."""
    end = getattr(node, "end_lineno", None)
    if end is None or node.lineno > len(lines) or end > len(lines):
        return None
    first, last = lines[node.lineno - 1].encode(), lines[end - 1].encode()  # offsets count UTF-8 bytes
    if node.lineno == end:
        return first[node.col_offset:node.end_col_offset].decode(errors="replace")
    parts = [first[node.col_offset:].decode(errors="replace"), *lines[node.lineno:end - 1],
             last[:node.end_col_offset].decode(errors="replace")]
    return "\n".join(parts)


def with_steps(pipeline: Pipeline, steps, findings) -> Pipeline:
    """A copy with data-flow results filled in."""
    return replace(pipeline, steps=tuple(steps), findings=tuple(findings))


def pipeline_to_json(pipeline: Pipeline) -> dict:
    """A JSON-ready description of the pipeline (used by ``check --json`` and run records)."""
    cells = pipeline.notebook.cells
    return {
        "notebook": pipeline.path,
        "ok": pipeline.ok,
        "parameters": [
            {"name": p.name, "default": p.source, "type": p.type_name} for p in pipeline.parameters
        ],
        "setup_cells": [i + 1 for i in pipeline.setup_cells],
        "skipped_cells": [i + 1 for i in pipeline.skipped_cells],
        "steps": [
            {
                "name": s.name,
                "task": s.task,
                "cells": [i + 1 for i in s.cells],
                "first_line": cells[s.first_cell].first_line,
                "after": list(s.parents),
                "options": s.options.to_json(),
                "inputs": [{"name": i.name, "from": i.provider, "kind": i.kind, **({"optional": True} if i.optional else {})}
                           for i in s.inputs],
                "outputs": list(s.outputs),
                "recreates": [{"cell": d.cell + 1, "names": list(d.names)} for d in s.definitions],
                **({"random_state_from": s.rng_from} if s.rng_from else {}),
                **({"checks_unchanged": [{"name": n, "cell": c + 1, "read_by": list(r)} for n, c, r in s.unchanged]}
                   if s.unchanged else {}),
            }
            for s in pipeline.steps
        ],
        "findings": [f.to_json() for f in pipeline.findings],
    }
