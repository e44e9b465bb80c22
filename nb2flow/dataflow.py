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

import ast
from collections import defaultdict
from functools import cached_property
from dataclasses import dataclass, replace

from .cellcode import BUILTIN_NAMES, OUTPUT_HISTORY_RE, CallSummary, CellCode, CellSyntaxError, analyze_cell
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
    certain: bool = True  # for mutate: it surely changes the value (append, fit, df[c] = ...), not only may


def analyze(structure: Pipeline, local_modules: frozenset = frozenset()) -> Pipeline:
    """Fill in inputs, outputs and definitions of every step; add data-flow findings. ``local_modules``: the
    modules beside the notebook (its own ``.py`` files and packages), whose import may configure what later
    cells see (``pd.set_option`` at their top level), so later steps re-run it."""
    return replace(_Analysis(structure, local_modules).run(), local_modules=frozenset(local_modules))


class _Analysis:
    """One pass over the notebook: set-up cells first, then the steps in notebook order."""

    def __init__(self, structure: Pipeline, local_modules: frozenset = frozenset()) -> None:
        self.structure = structure
        self.local_modules = local_modules
        self.nb = structure.notebook
        self.findings: list[Finding] = list(structure.findings)
        self.code: dict[int, CellCode] = {}
        self.setup_kind: dict[str, str] = {}  # names the set-up cells bind -> kind
        self.setup_star = False
        self.summaries: dict[str, CallSummary] = {}  # functions the set-up cells define
        self.history: dict[str, list[_Mark]] = defaultdict(list)  # what the steps so far did to each name
        self.defined: dict[str, _Mark] = {}  # names whose last mark binds a class or function (history's, kept as it grows)
        self.star_marks: list[_Mark] = []
        self.outputs: dict[str, set[str]] = defaultdict(set)  # step -> values later steps load from it
        # step -> name -> (cell, readers): values the step may change that steps not after it read as they were
        # before it; the step checks at run time that it left them as they were (Step.unchanged)
        self.unchanged: dict[str, dict[str, tuple[int, set]]] = defaultdict(dict)
        self.immutable: dict[str, bool] = {}  # name -> every binding of it so far is an immutable literal

    def where(self, i: int, step: str | None = None, line: int | None = None) -> dict:
        return dict(cell=i + 1, first_line=self.nb.cells[i].first_line, step=step, line=line)

    def run(self) -> Pipeline:
        self.parse_cells()
        self.scan_setup()
        steps = [self.analyze_step(step) for step in self.structure.steps]
        final = self.carry_random_state([
            replace(s, outputs=tuple(sorted(self.outputs.get(s.name, ()))),
                    unchanged=tuple((n, cell, tuple(sorted(readers))) for n, (cell, readers) in sorted(self.unchanged.get(s.name, {}).items())))
            for s in steps])
        self.findings.sort(key=lambda f: (f.cell or 0, f.line or 0, f.severity.value != "error"))
        return replace(with_steps(self.structure, final, _dedupe(self.findings)), code=self.code)

    def parse_cells(self) -> None:
        """Every cell that runs, in notebook order (what is bound above a cell decides IPython's automagic)."""
        s = self.structure
        owners = {i: None for i in s.setup_cells} | {i: step.name for step in s.steps for i in step.cells}
        bound_above: set[str] = set()
        for i in sorted(owners):
            try:
                self.code[i] = analyze_cell(self.nb.cells[i].source, frozenset(bound_above))
            except CellSyntaxError as exc:
                self.findings.append(error("syntax-error", f"syntax error: {exc.msg}", **self.where(i, owners[i], exc.line)))
                continue
            bound_above.update(ev.name for ev in self.code[i].events if ev.op == "bind")

    def scan_setup(self) -> None:
        """Set-up and parameters cells run first in every step, in notebook order."""
        for i in self.structure.setup_cells:
            cc = self.code.get(i)
            if cc is None:
                continue
            for ev in cc.events:
                if ev.op == "read" and ev.name not in self.setup_kind and ev.name not in BUILTIN_NAMES and not self.setup_star:
                    later = self.bound_later(ev.name, i)
                    hint = (f"it is defined in cell {later + 1}, which setup cells cannot see: setup cells run first in every step"
                            if later is not None else "define it in a setup cell above")
                    self.findings.append(error("setup-undefined", f"setup cell reads `{ev.name}`, which no setup or parameters cell above defines",
                                               hint=hint, **self.where(i, None, ev.line)))
                    self.setup_kind[ev.name] = "data"  # report once
                elif ev.op == "bind":
                    self.setup_kind[ev.name] = ev.kind or "data"
                    self.immutable[ev.name] = ev.const and self.immutable.get(ev.name, True)
                elif ev.op == "delete":
                    self.setup_kind.pop(ev.name, None)
                elif ev.op == "star":
                    self.setup_star = True
                    self.findings.append(_star_warning(self.where(i)))
            self.summaries.update(cc.summaries)

    def carry_random_state(self, steps: list[Step]) -> list[Step]:
        """A notebook that seeds the global generators draws its numbers in notebook order: each step that may
        draw continues from the state the drawing (or seeding) step above it left, which therefore must run
        before it. A step that draws nothing (only builtins and display) neither needs that state nor passes it."""
        seeding = sorted(i for i, cc in self.code.items() if cc.seeds)
        if not seeding:
            return steps
        first_seed = seeding[0]
        seeded_in_setup = first_seed in self.structure.setup_cells
        ancestors = self.structure._ancestors
        out = list(steps)
        index = {s.name: k for k, s in enumerate(out)}
        previous = None  # the last step above that seeded or drew
        for k, step in enumerate(out):
            codes = [self.code[i] for i in step.cells if i in self.code]
            seeds_here = any(c.seeds for c in codes)
            if not seeded_in_setup and previous is None and not seeds_here:
                continue  # nothing seeded yet
            if not seeds_here and not any(c.draws for c in codes):
                continue  # draws nothing: its numbers cannot differ, and it leaves the state as it found it
            if previous is not None:
                if previous in ancestors[step.name]:
                    out[k] = replace(out[k], rng_from=previous)
                    out[index[previous]] = replace(out[index[previous]], saves_rng=True)
                else:
                    self.findings.append(warning(
                        "random-state",
                        f"cell {first_seed + 1} seeds the random generators, and step {step.name} may draw after step {previous} "
                        f"in the notebook, but may run before it: its random numbers can differ from top to bottom",
                        hint=f"add {self.structure.after_tag}:{previous} to step {step.name}, or seed in step {step.name} itself",
                        **self.where(step.cells[0], step.name)))
            previous = step.name
        return out

    def provider_of(self, name: str) -> _Mark | None:
        marks = self.history.get(name)
        return marks[-1] if marks else None

    def statement_reads(self, cell: int, stmt: int) -> list[str]:
        """Names one statement reads before binding them."""
        bound: set[str] = set()
        reads: list[str] = []
        for ev in self.code[cell].events:
            if ev.stmt != stmt:
                continue
            if ev.op == "read" and ev.name not in bound and ev.name not in reads:
                reads.append(ev.name)
            elif ev.op == "bind":
                bound.add(ev.name)
        return reads

    def bound_later(self, name: str, after_index: int) -> int | None:
        return _bound_later(self.structure, self.code, name, after_index)

    def config_above(self, step: Step) -> list[_Mark]:
        """Statements of other steps' cells above this step that configure the process or a library
        (os.environ, os.chdir, sys.path, pd.set_option, %matplotlib ..., an import of the notebook's own module):
        top to bottom, this step sees them."""
        first = step.cells[0]
        return [mark for mark in self._config_marks if mark.cell < first and mark.step != step.name]

    @cached_property
    def _config_marks(self) -> list:
        """Every step's configuring statements, in notebook order (found once, not once a step: 100 steps of a
        1,000-cell notebook made that lookup quadratic)."""
        owner = {i: s.name for s in self.structure.steps for i in s.cells}
        marks = []
        for i in sorted(owner):
            if i not in self.code:
                continue
            marks += [_Mark("config", "config", owner[i], i, st.index) for st in self.code[i].statements
                      if st.config or set(st.imports) & self.local_modules]
        return marks

    def output_cells_above(self, index: int) -> list[int]:
        """Code cells above ``index``, nearest first, that end in an expression (IPython keeps its value as ``_``)."""
        out = []
        for c in reversed(self.nb.cells[:index]):
            if c.cell_type != "code":
                continue
            code = self.code.get(c.index)
            if code is not None:
                sets = code.sets_output
            else:  # a skip cell: it runs top to bottom, never in a split run
                try:
                    body = ast.parse(c.source).body
                    sets = bool(body) and isinstance(body[-1], ast.Expr)
                except (SyntaxError, ValueError):
                    sets = False
            if sets:
                out.append(c.index)
        return out

    def analyze_step(self, step: Step) -> Step:
        scope = _StepScope(self, step)
        for mark in self.config_above(step):
            scope.need_definition(mark, self.where(mark.cell, step.name), 1)
        scope.walk_cells()
        scope.recreate_ancestor_definitions()
        for name, mark in scope.pending:
            last = self.history[name][-1] if self.history[name] else None
            if mark.op == "mutate" and last is not None and last.step == step.name and last.op == "bind" and last.kind == mark.kind:
                continue  # bound and changed in this step: the binding step provides it either way
            self.history[name].append(mark)
            if mark.op == "bind" and mark.kind in ("class", "function"):
                self.defined[name] = mark
            else:
                self.defined.pop(name, None)
        return replace(step, inputs=tuple(scope.inputs.values()),
                       definitions=tuple(sorted(scope.definitions.values(), key=lambda d: (d.cell, d.stmt))))


class _StepScope:
    """What one step binds, reads and must be given, while its cells are walked."""

    def __init__(self, analysis: _Analysis, step: Step) -> None:
        self.a = analysis
        self.step = step
        self.local: dict[str, str] = dict(analysis.setup_kind)  # name -> kind, as bound in this step so far
        self.local_summary: dict[str, CallSummary] = dict(analysis.summaries)
        self.own: set[str] = set()  # names this step bound itself
        self.inputs: dict[str, Input] = {}
        self.definitions: dict[tuple[int, int], Definition] = {}
        self.reported: set[str] = set()  # names already reported for this step
        self.expanded: set[str] = set()  # functions whose calls were already followed
        self.star_here = False
        self.ancestors = analysis.structure._ancestors[step.name]
        self.pending: list[tuple[str, _Mark]] = []  # this step's marks, added to the history at its end
        self.gave_everything = False  # a dynamic read gave the step every value above it

    def walk_cells(self) -> None:
        for i in self.step.cells:
            cc = self.a.code.get(i)
            if cc is None:
                continue
            self.local_summary.update(cc.summaries)
            for ev in cc.events:
                lw = self.a.where(i, self.step.name, ev.line)
                if ev.op == "read":
                    self.read(ev.name, lw)
                elif ev.op == "mutate":
                    self.mutate(ev.name, lw, store=ev.kind == "store", certain=ev.kind != "may")
                elif ev.op == "pass":
                    self.passed(ev, lw)
                elif ev.op == "dynamic":
                    self.dynamic(f"`{ev.name}(…)`", lw)
                elif ev.op == "bind":
                    self.a.immutable[ev.name] = ev.const and self.a.immutable.get(ev.name, True)
                    self.own.add(ev.name)
                    self.local[ev.name] = ev.kind or "data"
                    self.expanded.discard(ev.name)  # a new definition: follow its calls again
                    self.pending.append((ev.name, _Mark("bind", ev.kind or "data", self.step.name, i, ev.stmt)))
                elif ev.op == "delete":
                    if ev.name not in self.own:
                        self.read(ev.name, lw)  # `del x` needs x: load it from the step that made it
                    self.own.add(ev.name)
                    self.local.pop(ev.name, None)
                    self.pending.append((ev.name, _Mark("delete", "data", self.step.name, i, ev.stmt)))
                elif ev.op == "star":
                    self.star_here = True
                    self.a.findings.append(_star_warning(self.a.where(i, self.step.name)))
                    self.a.star_marks.append(_Mark("star", "module", self.step.name, i, ev.stmt))

    def recreate_ancestor_definitions(self) -> None:
        """Definitions of ancestors are re-created too, so that values referring to a
        notebook-defined class or function unpickle (pickle stores them by name)."""
        defined = self.a.defined  # history's names whose last mark binds a class or function, in history's order
        for name in [n for n in self.a.history if n in defined]:
            mark = defined[name]
            if (mark.step in self.ancestors
                    and name not in self.own and name not in self.inputs):
                reads = self.a.statement_reads(mark.cell, mark.stmt)
                if all(self.a.provider_of(r) is None or self.a.provider_of(r).kind in DEFINITION_KINDS for r in reads):
                    self.need_definition(mark, self.a.where(mark.cell, self.step.name), 1)

    def need_definition(self, mark: _Mark, line_where: dict, depth: int) -> None:
        """Re-create the statement that defined a module, function or class, and what it reads."""
        key = (mark.cell, mark.stmt)
        if key in self.definitions:
            return
        code = self.a.code[mark.cell]
        names = tuple(sorted({ev.name for ev in code.events if ev.stmt == mark.stmt and ev.op == "bind"}))
        self.definitions[key] = Definition(mark.cell, mark.stmt, code.statements[mark.stmt].source, names)
        before = set(self.inputs)
        for name in self.a.statement_reads(mark.cell, mark.stmt):
            self.resolve(name, line_where, depth + 1)
        if any(self.inputs[n].kind == "data" for n in set(self.inputs) - before):
            self.definitions[key] = replace(self.definitions[key], needs_values=True)

    def resolve(self, name: str, line_where: dict, depth: int = 0) -> str | None:
        """Make ``name`` available in this step; return its kind (None if unknown)."""
        if name in self.own or name in self.inputs:
            return self.local.get(name) or (self.inputs[name].kind if name in self.inputs else None)
        mark = self.provider(name)
        if mark is None:
            return self.resolve_unprovided(name, line_where, depth)
        if mark.op == "delete":
            self.report(name, error("deleted-name", f"`{name}` is read after `del {name}` in cell {mark.cell + 1} (step:{mark.step})", **line_where))
            return None
        if mark.kind in DEFINITION_KINDS and mark.op == "bind":
            self.inputs[name] = Input(name, mark.step, mark.kind)
            self.local[name] = mark.kind
            self.need_definition(mark, line_where, depth)
            return mark.kind
        # a data value: loaded from the step that last bound or changed it
        self.inputs[name] = Input(name, mark.step, "data")
        self.local[name] = "data"
        self.a.outputs[mark.step].add(name)
        if mark.step not in self.ancestors:
            verb = "changes" if mark.op == "mutate" else "assigns"
            self.report(name, error(
                "not-an-ancestor",
                f"`{name}` comes from step {mark.step} (cell {mark.cell + 1} {verb} it), which does not run before step {self.step.name}",
                hint=f"add {self.a.structure.after_tag}:{mark.step} to step {self.step.name}", **line_where))
        self.check_race(name, mark, line_where)
        return "data"

    def provider(self, name: str) -> _Mark | None:
        """The event whose value of ``name`` this step gets: the latest in notebook order, passing over the steps
        that only *may* have changed it and do not run before this one — each of those must leave it unchanged,
        which it checks at run time (:attr:`_Analysis.unchanged`)."""
        passed_over = []
        found = None
        for mark in reversed(self.a.history.get(name) or []):
            if mark.op == "mutate" and not mark.certain and mark.step not in self.ancestors and mark.step != self.step.name:
                passed_over.append(mark)
                continue
            found = mark
            break
        for mark in passed_over:
            self.must_leave(mark, name)
        return found

    def must_leave(self, mark: _Mark, name: str) -> None:
        """Step ``mark.step`` may change ``name`` (cell ``mark.cell``), which this step reads without its change."""
        cell, readers = self.a.unchanged[mark.step].get(name, (mark.cell, set()))
        readers.add(self.step.name)
        self.a.unchanged[mark.step][name] = (min(cell, mark.cell), readers)

    def resolve_unprovided(self, name: str, line_where: dict, depth: int) -> str | None:
        """A name no earlier step bound: set-up, a builtin, a star import, or hidden state."""
        if name in self.a.setup_kind:
            return self.a.setup_kind[name]
        if OUTPUT_HISTORY_RE.match(name):
            self.check_output_history(name, line_where)
            return None
        if name in BUILTIN_NAMES:
            return None
        star = self.a.star_marks[-1] if self.a.star_marks else None
        if self.a.setup_star or self.star_here or star is not None:
            if star is not None and not self.star_here:
                self.need_definition(star, line_where, depth)
            return None
        later = self.a.bound_later(name, line_where["cell"] - 1)
        hint = (f"it is only defined below, in cell {later + 1}" if later is not None
                else "no cell above defines it: hidden notebook state, e.g. a deleted cell or a name set in another session")
        self.report(name, error("undefined-name", f"`{name}` is read but never defined above", hint=hint, **line_where))
        return None

    def check_race(self, name: str, mark: _Mark, line_where: dict) -> None:
        """Steps that change ``name`` in place while the step this one loads it from runs in parallel: their change
        is not in the value this step gets. A step that assigns it afresh races with nothing (this step gets the
        value of the later one in notebook order, as top to bottom); one that surely changes it in place makes
        equality impossible; one that only may change it checks at run time that it did not."""
        ancestors = self.a.structure._ancestors
        racers = [m for m in self.a.history[name] if m.op == "mutate" and m.step not in (mark.step, None)
                  and mark.step not in ancestors[m.step] and m.step not in ancestors[mark.step]]
        for m in racers:
            if not m.certain:
                self.must_leave(m, name)
        sure = sorted({m.step for m in racers if m.certain})
        if sure:
            cell = next(m.cell for m in racers if m.step == sure[0])
            self.report(name, error(
                "parallel-change",
                f"step {sure[0]} changes `{name}` in place (cell {cell + 1}) in parallel with step {mark.step}, which step "
                f"{self.step.name} loads it from: that change is not in the value step {self.step.name} gets",
                hint=f"add {self.a.structure.after_tag}:{sure[0]} to step {mark.step}, or work on a copy", **line_where))

    def check_output_history(self, name: str, line_where: dict) -> None:
        """IPython's output history is per kernel: a step sees only what its own cells displayed."""
        cell = line_where["cell"] - 1
        fix = "assign the value to a name in the cell that computes it (result = ...) and read that name"
        if name not in ("_", "__", "___"):
            self.report(name, error("output-history", f"`{name}` is IPython's input/output history, which each step's kernel keeps"
                                    " on its own (execution counts differ too)", hint=fix, **line_where))
            return
        sources = self.a.output_cells_above(cell)[: len(name)]
        outside = [i for i in sources if i not in self.step.cells]
        if outside:
            where = outside[0]
            in_step = next((s.name for s in self.a.structure.steps if where in s.cells), None)
            what = f"in step {in_step}" if in_step else ("a skip cell" if where in self.a.structure.skipped_cells else "a set-up cell")
            self.report(name, error(
                "output-history", f"`{name}` is the value of cell {where + 1}'s last expression ({what}), which this step's kernel never shows",
                hint=f"assign it in cell {where + 1} (result = ...) and read result", **line_where))

    def passed(self, ev, line_where: dict) -> None:
        """A name passed to a call used as a statement, which may change it (random.shuffle(lst))."""
        root = ev.callee.split(".")[0]
        kind = self.local.get(root) or (self.inputs[root].kind if root in self.inputs else self.a.setup_kind.get(root))
        if kind in ("data", "class"):
            return  # a method of a value (lst.append(x)) changes that value, not x; a class makes an instance
        if kind == "function" and root == ev.callee:
            summary = self.summary_of(root)
            if summary is not None and ev.position not in summary.changes_args:
                return  # the notebook's function leaves that argument alone
        self.mutate(ev.name, line_where, certain=False)

    def summary_of(self, name: str) -> CallSummary | None:
        if name in self.inputs and self.inputs[name].provider is not None:
            mark = self.a.provider_of(name)
            return self.a.code[mark.cell].summaries.get(name) if mark else None
        return self.local_summary.get(name)

    def report(self, name: str, finding: Finding) -> None:
        """One finding per name and step."""
        if name not in self.reported:
            self.reported.add(name)
            self.a.findings.append(finding)

    def read(self, name: str, line_where: dict, depth: int = 0) -> None:
        kind = self.resolve(name, line_where, depth)
        if kind in ("function", "class") and depth < 50 and name not in self.expanded:
            self.expanded.add(name)
            self.expand_call(self.summary_of(name), line_where, depth)

    def expand_call(self, summary: CallSummary | None, line_where: dict, depth: int) -> None:
        """A call to a notebook function reads and changes what its body does."""
        if summary is None or depth > 50:
            return
        for r in sorted(summary.reads):
            self.read(r, line_where, depth + 1)
        for w in sorted(summary.writes):
            self.mutate(w, line_where, depth + 1)
        for w in sorted(summary.may_writes):
            self.mutate(w, line_where, depth + 1, certain=False)
        if summary.dynamic:
            self.dynamic("a function that calls eval, exec or globals()", line_where)

    def dynamic(self, what: str, line_where: dict) -> None:
        """The step reads names it spells at run time (``eval(name)``, ``globals()[name]``). The names its cells spell
        as strings (``show('df1')``, ``'x' in globals()``) are read like any other; when they spell none, the step is
        given every value the steps before it defined that can travel, as top to bottom it could read any of them.
        ``check`` says which, once per step."""
        if self.gave_everything:
            return
        self.gave_everything = True
        spelt = set().union(*(self.a.code[i].strings for i in self.step.cells if i in self.a.code))
        candidates = sorted(n for n in self.a.history if n in spelt) if spelt else []
        for name in candidates:  # read as if written out: from a step that must run before this one (check says so)
            mark = self.provider(name)
            if mark is not None and mark.op != "delete":
                self.read(name, line_where, 1)
        if candidates:
            return
        given = []
        for name in sorted(self.a.history):
            if name in self.own or name in self.inputs:
                continue
            mark = self.provider(name)
            if mark is None or mark.op not in ("bind", "mutate") or (mark.step not in self.ancestors):
                continue
            self.resolve(name, line_where, 1)
            if self.inputs.get(name) is not None and self.inputs[name].kind == "data":
                self.inputs[name] = replace(self.inputs[name], optional=True)
            given.append(name)
        self.a.findings.append(warning(
            "dynamic-read",
            f"step {self.step.name} reads names it spells at run time ({what}): it is given every value the steps before "
            f"it defined ({len(given)}: {', '.join(given[:8])}{', …' if len(given) > 8 else ''})",
            hint="read the names directly (x rather than eval('x')), or spell them as strings, to give it only those",
            **line_where))

    def mutate(self, name: str, line_where: dict, depth: int = 0, store: bool = False, certain: bool = True) -> None:
        """``name`` may change here. A class or function whose attributes are assigned (Counter.count += 1)
        is a value from then on: later steps load it as it is, instead of re-running its definition. A name only
        ever bound to immutable literals (a parameter's 5 or 'north') is not changed by a call it is passed to."""
        if not certain and self.a.immutable.get(name):
            self.read(name, line_where, depth)
            return
        kind = self.resolve(name, line_where, depth)
        if kind == "data" or (kind is None and name in self.own) or (store and kind in ("class", "function")):
            self.local[name] = "data"
            self.pending.append((name, _Mark("mutate", "data", self.step.name, line_where["cell"] - 1, 0, certain)))


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
