"""Property: a generated notebook split into steps sees the same values as papermill top to bottom.

Notebooks are drawn at random: cells that assign, change in place, read, import modules,
define and call functions (some changing globals or their arguments) and classes, change a
class attribute, pass a value to a module function that changes it, delete a value, set and
read environment variables, draw from a generator inside an expression, pop from a list inside an expression,
advance an iterator with ``next()``, read names through ``eval('…')`` and ``globals()[…]``; cut into steps at random
places with random ``after:`` edges. Layouts ``check`` rejects for a timing race are discarded; a missing ``after:``
is added as ``check`` suggests, as a user would. A run that fails because a parallel step did change what another
read (nb2flow's run-time check, naming the cause) is a correct refusal, never a silent difference.
"""

import json
import os
import pickle
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from nb2flow.api import load_notebook
from nb2flow.notebook import parse_notebook
from nbutil import cell, notebook

pytestmark = pytest.mark.slow  # papermill comparisons of many notebooks: CI runs them (pytest -m slow)

VARS = ["v0", "v1", "v2", "v3"]


@st.composite
def programs(draw):
    """A list of cell sources over list-valued globals v0..v3."""
    cells = ["import bisect\nimport math\nimport os\nimport random\nv0, v1, v2, v3 = [0], [1], [2], [3]\nrng = random.Random(7)"]
    functions, mutators, classes, modules, changers, env, iterators = [], [], [], [], [], [], []
    for n in range(draw(st.integers(3, 9))):
        a, b = draw(st.sampled_from(VARS)), draw(st.sampled_from(VARS))
        k = draw(st.integers(0, 9))
        kind = draw(st.sampled_from(["assign", "append", "subscript", "augassign", "def", "call", "import", "use-module",
                                     "global-def", "global-call", "class", "use-class", "read", "comprehension",
                                     "insort", "arg-def", "arg-call", "class-attr", "del", "set-env", "read-env",
                                     "draw", "pop", "iter", "next", "eval", "globals"]))
        if kind == "assign":
            src = f"{a} = {b} + [{k}]"
        elif kind == "append":
            src = f"{a}.append({k})"
        elif kind == "subscript":
            src = f"{a}[0] = {a}[0] + {k}"
        elif kind == "augassign":
            src = f"{a} += [{k}]"
        elif kind == "def":
            src = f"def f{n}(x):\n    return x + [len({b}) + {k}]"
            functions.append(f"f{n}")
        elif kind == "call" and functions:
            src = f"{a} = {draw(st.sampled_from(functions))}({b})"
        elif kind == "import":
            src = f"import statistics as m{n}"
            modules.append(f"m{n}")
        elif kind == "use-module" and modules:
            src = f"{a} = {a} + [int({draw(st.sampled_from(modules))}.mean({b} + [{k}]))]"
        elif kind == "global-def":
            src = f"def g{n}():\n    {a}.append({k})"
            mutators.append(f"g{n}")
        elif kind == "global-call" and mutators:
            src = f"{draw(st.sampled_from(mutators))}()"
        elif kind == "class":
            src = f"class C{n}:\n    def __init__(self, seq):\n        self.v = list(seq) + [{k}]\n    def total(self):\n        return sum(self.v) + math.floor({k} / 2)"
            classes.append(f"C{n}")
        elif kind == "use-class" and classes:
            c = draw(st.sampled_from(classes))
            src = f"{a} = [{c}({b}).total() + getattr({c}, 'bonus', 0)]"
        elif kind == "insort":
            src = f"bisect.insort({a}, {k})"
        elif kind == "arg-def":
            src = f"def h{n}(seq):\n    seq.append({k})"
            changers.append(f"h{n}")
        elif kind == "arg-call" and changers:
            src = f"{draw(st.sampled_from(changers))}({a})"
        elif kind == "class-attr" and classes:
            src = f"{draw(st.sampled_from(classes))}.bonus = {k}"
        elif kind == "del":
            src = f"del {a}\n{a} = [{k}]"
        elif kind == "set-env":
            src = f"os.environ['NB2FLOW_P{k}'] = '{k}'"
            env.append(k)
        elif kind == "read-env" and env:
            src = f"{a} = {a} + [int(os.environ.get('NB2FLOW_P{draw(st.sampled_from(env))}', '-1'))]"
        elif kind == "draw":
            src = f"{a} = {a} + [rng.randint(0, 99)]"
        elif kind == "pop":
            src = f"{a} = {a} + [{b}.pop() if len({b}) > 1 else -{k}]"
        elif kind == "iter":
            src = f"it{n} = iter({b} * 3)"
            iterators.append(f"it{n}")
        elif kind == "next" and iterators:
            src = f"{a} = {a} + [next({draw(st.sampled_from(iterators))}, -1)]"
        elif kind == "eval":
            src = f"{a} = {a} + [len(eval('{b}'))]"
        elif kind == "globals":
            src = f"{a} = {a} + [len(globals()['{b}'])]"
        elif kind == "comprehension":
            src = f"{a} = [x * {k} for x in {b}]"
        else:
            src = f"{a} = list({b})"
        cells.append(src)
    starts = [True] + [draw(st.booleans()) for _ in cells[1:]]
    afters = [draw(st.sets(st.integers(0, 8), max_size=2)) for _ in cells]
    return cells, starts, afters


def build(program):
    cells, starts, afters = program
    out = [cell("probe_path = 'probe.pkl'", "parameters")]
    names = []
    for i, (src, start) in enumerate(zip(cells, starts)):
        tags = []
        if start:
            name = f"s{len(names)}"
            tags = [f"step:{name}"]
            earlier = [names[j] for j in sorted(afters[i]) if j < len(names)]
            tags += [f"after:{p}" for p in earlier]
            names.append(name)
        out.append(cell(src, *tags))
    probe = "import pickle\nwith open(probe_path, 'wb') as fh:\n    pickle.dump({%s}, fh)" % ", ".join(f"'{v}': {v}" for v in VARS)
    out.append(cell(probe, "step:probe", *[f"after:{n}" for n in names]))
    return out


def repaired(cells):
    """Add the after: edges check asks for, as a user would; None when the layout races."""
    for _ in range(30):
        doc = notebook(*cells)
        p = load_notebook(parse_notebook(json.dumps(doc).encode(), "gen.ipynb"))
        if p.ok:
            return doc
        fixes = [f for f in p.errors if f.code == "not-an-ancestor"]
        if not fixes or len(fixes) != len(p.errors):
            return None
        for f in fixes:
            target = f.hint.split("add after:")[1].split(" ")[0]
            first = p.step(f.step).first_cell
            tags = cells[first]["metadata"].setdefault("tags", [])
            if f"after:{target}" not in tags:
                tags.append(f"after:{target}")
    return None


def run_both(doc, tmp_path, mode="notebook"):
    import papermill

    nb = tmp_path / "gen.ipynb"
    nb.write_text(json.dumps(doc))
    ref, split = tmp_path / "ref.pkl", tmp_path / "split.pkl"
    papermill.execute_notebook(str(nb), str(tmp_path / "pm.ipynb"), parameters={"probe_path": str(ref)},
                               progress_bar=False, cwd=str(tmp_path), kernel_name="python3")
    r = subprocess.run([sys.executable, "-m", "nb2flow", "run", "gen.ipynb", "-q", "--mode", mode, "-r", "probe_path", str(split)],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300, env=dict(os.environ, NO_COLOR="1"))
    if r.returncode == 1 and "ValueChanged: step " in r.stderr:
        return pickle.loads(ref.read_bytes()), None  # refused at run time, naming the cause: not a silent difference
    assert r.returncode == 0, r.stderr
    return pickle.loads(ref.read_bytes()), pickle.loads(split.read_bytes())


def _check(program, tmp_path_factory, mode):
    doc = repaired(build(program))
    assume(doc is not None)
    tmp = tmp_path_factory.mktemp("gen")
    reference, split = run_both(doc, tmp, mode)
    if split is not None:
        assert split == reference


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(program=programs())
def test_generated_notebooks_match_papermill(program, tmp_path_factory):
    _check(program, tmp_path_factory, "notebook")


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(program=programs())
def test_generated_notebooks_match_papermill_script_mode(program, tmp_path_factory):
    _check(program, tmp_path_factory, "script")


@pytest.mark.slow
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(program=programs(), mode=st.sampled_from(["notebook", "script"]))
def test_generated_notebooks_match_papermill_many(program, mode, tmp_path_factory):
    _check(program, tmp_path_factory, mode)
