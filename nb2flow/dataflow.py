"""Data flow between steps: what each step reads, from which step, and what it must save.

Walks the steps in notebook order, replaying each cell's events (see
:mod:`nb2flow.cellcode`). A name a step reads that it has not bound itself is provided
by the nearest earlier step in notebook order that bound or changed it — exactly the
value a top-to-bottom run would see. Then:

* a module, function or class is re-created in the step by re-running its statement;
* a data value is loaded from the providing step, which must be an ancestor;
* setup and parameters cells run in every step, so their names are always there.

Problems become findings: undefined names (hidden state), providers that are not
ancestors (with the ``after:`` that fixes it), parallel steps racing on a name, syntax
errors, a star import (warned: its names are invisible). Pure: no I/O.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace

from .cellcode import BUILTIN_NAMES, CallSummary, CellCode, CellSyntaxError, analyze_cell
from .findings import Finding, error, warning
from .pipeline import Definition, Input, Pipeline, Step, with_steps

DEFINITION_KINDS = frozenset({"module", "function", "class"})


@dataclass(frozen=True)
class _Mark:
    """One event in the notebook's history of a global name."""

    op: str  # bind | mutate | delete | star
    kind: str  # kind of the name after the event
    step: str | None  # None for setup cells
    cell: int
    stmt: int


def analyze(structure: Pipeline) -> Pipeline:
    """Fill in inputs, outputs and definitions of every step; add data-flow findings."""
    nb = structure.notebook
    findings: list[Finding] = list(structure.findings)
    code: dict[int, CellCode] = {}

    def where(i: int, step: str | None = None, line: int | None = None) -> dict:
        return dict(cell=i + 1, first_line=nb.cells[i].first_line, step=step, line=line)

    step_cells = [(s.name, i) for s in structure.steps for i in s.cells]
    for owner, i in [(None, i) for i in structure.setup_cells] + step_cells:
        try:
            code[i] = analyze_cell(nb.cells[i].source)
        except CellSyntaxError as exc:
            findings.append(error("syntax-error", f"syntax error: {exc.msg}", **where(i, owner, exc.line)))

    # ---- setup and parameters cells: run first in every step, in notebook order
    setup_kind: dict[str, str] = {}
    summaries: dict[tuple[int, str], CallSummary] = {}
    setup_star = False
    for i in structure.setup_cells:
        cc = code.get(i)
        if cc is None:
            continue
        for ev in cc.events:
            if ev.op == "read" and ev.name not in setup_kind and ev.name not in BUILTIN_NAMES and not setup_star:
                later = _bound_later(structure, code, ev.name, i)
                findings.append(
                    error(
                        "setup-undefined",
                        f"setup cell reads `{ev.name}`, which no setup or parameters cell above defines",
                        hint=(f"it is defined in cell {later + 1}, which setup cells cannot see: setup cells run first in every step" if later is not None else "define it in a setup cell above"),
                        **where(i, None, ev.line),
                    )
                )
                setup_kind[ev.name] = "data"  # report once
            elif ev.op == "bind":
                setup_kind[ev.name] = ev.kind or "data"
            elif ev.op == "delete":
                setup_kind.pop(ev.name, None)
            elif ev.op == "star":
                setup_star = True
                findings.append(_star_warning(where(i)))
        for name, summary in cc.summaries.items():
            summaries[(i, name)] = summary

    # ---- steps, in notebook order
    history: dict[str, list[_Mark]] = defaultdict(list)
    star_marks: list[_Mark] = []
    ancestors = structure._ancestors
    outputs: dict[str, set[str]] = defaultdict(set)
    new_steps: list[Step] = []

    def statement_reads(cell: int, stmt: int) -> list[str]:
        bound: set[str] = set()
        reads: list[str] = []
        for ev in code[cell].events:
            if ev.stmt != stmt:
                continue
            if ev.op == "read" and ev.name not in bound and ev.name not in reads:
                reads.append(ev.name)
            elif ev.op == "bind":
                bound.add(ev.name)
        return reads

    for step in structure.steps:
        local: dict[str, str] = dict(setup_kind)  # name -> kind, as bound in this step so far
        local_summary: dict[str, CallSummary] = {n: summaries[(i, n)] for (i, n) in summaries}
        own: set[str] = set()  # names this step bound itself
        inputs: dict[str, Input] = {}
        definitions: dict[tuple[int, int], Definition] = {}
        reported: set[str] = set()
        star_here = False
        anc = ancestors[step.name]

        def provider_of(name: str) -> _Mark | None:
            marks = history.get(name)
            return marks[-1] if marks else None

        def need_definition(mark: _Mark, line_where: dict, depth: int) -> None:
            key = (mark.cell, mark.stmt)
            if key in definitions:
                return
            stmt = code[mark.cell].statements[mark.stmt]
            names = tuple(sorted({ev.name for ev in code[mark.cell].events if ev.stmt == mark.stmt and ev.op == "bind"}))
            definitions[key] = Definition(mark.cell, mark.stmt, stmt.source, names)
            before = set(inputs)
            for name in statement_reads(mark.cell, mark.stmt):
                resolve(name, line_where, depth + 1)
            if any(inputs[n].kind == "data" for n in set(inputs) - before):
                definitions[key] = replace(definitions[key], needs_values=True)

        def expand_call(name: str, summary: CallSummary | None, line_where: dict, depth: int) -> None:
            if summary is None or depth > 50:
                return
            for r in sorted(summary.reads):
                read(r, line_where, depth + 1)
            for w in sorted(summary.writes):
                mutate(w, line_where, depth + 1)

        def resolve(name: str, line_where: dict, depth: int = 0) -> str | None:
            """Make ``name`` available in this step; return its kind (None if unknown)."""
            if name in own or name in inputs:
                return local.get(name) or (inputs[name].kind if name in inputs else None)
            mark = provider_of(name)
            if mark is None:
                if name in setup_kind:
                    return setup_kind[name]
                if name in BUILTIN_NAMES:
                    return None
                star = star_marks[-1] if star_marks else None
                if setup_star or star_here or star is not None:
                    if star is not None and not star_here:
                        need_definition(star, line_where, depth)
                    return None
                if name not in reported:
                    reported.add(name)
                    later = _bound_later(structure, code, name, line_where["cell"] - 1)
                    hint = (
                        f"it is only defined below, in cell {later + 1}" if later is not None
                        else "no cell above defines it: hidden notebook state, e.g. a deleted cell or a name set in another session"
                    )
                    findings.append(error("undefined-name", f"`{name}` is read but never defined above", hint=hint, **line_where))
                return None
            if mark.op == "delete":
                if name not in reported:
                    reported.add(name)
                    findings.append(error("deleted-name", f"`{name}` is read after `del {name}` in cell {mark.cell + 1} (step:{mark.step})", **line_where))
                return None
            if mark.kind in DEFINITION_KINDS and mark.op == "bind":
                inputs[name] = Input(name, mark.step, mark.kind)
                local[name] = mark.kind
                need_definition(mark, line_where, depth)
                return mark.kind
            # a data value: loaded from the step that last bound or changed it
            inputs[name] = Input(name, mark.step, "data")
            local[name] = "data"
            outputs[mark.step].add(name)
            if mark.step not in anc and name not in reported:
                reported.add(name)
                verb = "changes" if mark.op == "mutate" else "assigns"
                findings.append(
                    error(
                        "not-an-ancestor",
                        f"`{name}` comes from step {mark.step} (cell {mark.cell + 1} {verb} it), which does not run before step {step.name}",
                        hint=f"add after:{mark.step} to step {step.name}",
                        **line_where,
                    )
                )
            racers = sorted(
                {m.step for m in history[name] if m.op in ("bind", "mutate") and m.step not in (mark.step, None)
                 and mark.step not in ancestors[m.step] and m.step not in ancestors[mark.step]}
            )
            if racers and name not in reported:
                reported.add(name)
                findings.append(
                    error(
                        "parallel-assign",
                        f"steps {racers[0]} and {mark.step} may run in parallel and both assign `{name}`, which step {step.name} reads: the result would depend on timing",
                        hint=f"add after:{racers[0]} to step {mark.step}, or use different names",
                        **line_where,
                    )
                )
            return "data"

        def read(name: str, line_where: dict, depth: int = 0) -> None:
            kind = resolve(name, line_where, depth)
            if kind in ("function", "class") and depth < 50:
                summary = local_summary.get(name)
                if name in inputs and inputs[name].provider is not None:
                    mark = provider_of(name)
                    summary = code[mark.cell].summaries.get(name) if mark else summary
                key = ("called", name)
                if key not in reported:
                    reported.add(key)
                    expand_call(name, summary, line_where, depth)

        def mutate(name: str, line_where: dict, depth: int = 0) -> None:
            kind = resolve(name, line_where, depth)
            if kind == "data" or (kind is None and name in own):
                history_mark(name, "mutate", "data", line_where)

        def history_mark(name: str, op: str, kind: str, line_where: dict, stmt: int = 0) -> None:
            pending.append((name, _Mark(op, kind, step.name, line_where["cell"] - 1, stmt)))

        pending: list[tuple[str, _Mark]] = []
        for i in step.cells:
            cc = code.get(i)
            if cc is None:
                continue
            for name, summary in cc.summaries.items():
                local_summary[name] = summary
            for ev in cc.events:
                lw = where(i, step.name, ev.line)
                if ev.op == "read":
                    read(ev.name, lw)
                elif ev.op == "mutate":
                    mutate(ev.name, lw)
                elif ev.op == "bind":
                    own.add(ev.name)
                    local[ev.name] = ev.kind or "data"
                    reported.discard(("called", ev.name))  # a new definition: expand its calls again
                    pending.append((ev.name, _Mark("bind", ev.kind or "data", step.name, i, ev.stmt)))
                elif ev.op == "delete":
                    own.add(ev.name)
                    local.pop(ev.name, None)
                    pending.append((ev.name, _Mark("delete", "data", step.name, i, ev.stmt)))
                elif ev.op == "star":
                    star_here = True
                    findings.append(_star_warning(where(i, step.name)))
                    star_marks.append(_Mark("star", "module", step.name, i, ev.stmt))

        # Definitions of ancestors are re-created too, so that values referring to a
        # notebook-defined class or function unpickle (pickle stores them by name).
        for name, marks in list(history.items()):
            mark = marks[-1]
            if mark.op == "bind" and mark.kind in ("class", "function") and mark.step in anc and name not in own and name not in inputs:
                reads = statement_reads(mark.cell, mark.stmt)
                if all(provider_of(r) is None or provider_of(r).kind in DEFINITION_KINDS for r in reads):
                    need_definition(mark, where(mark.cell, step.name), 1)

        for name, mark in pending:
            if mark.op == "mutate" and history[name] and history[name][-1].step == step.name and history[name][-1].op == "bind":
                continue
            history[name].append(mark)
        new_steps.append(
            replace(
                step,
                inputs=tuple(inputs.values()),
                definitions=tuple(sorted(definitions.values(), key=lambda d: (d.cell, d.stmt))),
            )
        )

    final = [replace(s, outputs=tuple(sorted(outputs.get(s.name, ())))) for s in new_steps]
    findings.sort(key=lambda f: (f.cell or 0, f.line or 0, f.severity.value != "error"))
    result = with_steps(structure, final, _dedupe(findings))
    return replace(result, code=code)


def _star_warning(where: dict) -> Finding:
    return warning(
        "star-import",
        "`from … import *` (or %run) defines names nb2flow cannot see; names read after it are not checked",
        hint="import the names you use explicitly",
        **where,
    )


def _bound_later(structure: Pipeline, code: dict, name: str, after_index: int) -> int | None:
    for i in sorted(code):
        if i > after_index and any(ev.op == "bind" and ev.name == name for ev in code[i].events):
            return i
    return None


def _dedupe(findings: list[Finding]) -> list[Finding]:
    seen = set()
    out = []
    for f in findings:
        key = (f.code, f.cell, f.message)
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out
