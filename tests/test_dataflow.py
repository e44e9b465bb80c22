"""Data flow between steps: providers, kinds, re-created definitions and the problems check reports."""

import json

import pytest

from nb2flow.cellcode import analyze_cell
from nbutil import cell, load_cells, rendered


def inputs(p, step):
    return {(i.name, i.provider, i.kind) for i in p.step(step).inputs}


def data_in(p, step):
    return {i.name: i.provider for i in p.step(step).data_inputs}


def events(src):
    return [(e.op, e.name) for e in analyze_cell(src).events]


# ---------------------------------------------------------------- cell analysis


def test_ipython_syntax_parses():
    code = analyze_cell("%matplotlib inline\n!pip install x\nfiles = !ls\ndf?\ny = df.x")
    assert code.transformed
    assert ("bind", "files") in [(e.op, e.name) for e in code.events]
    assert ("read", "df") in [(e.op, e.name) for e in code.events]


def test_plain_python_skips_ipython():
    code = analyze_cell("x = 1")
    assert not code.transformed


def test_time_magic_code_is_analysed():
    assert ("bind", "w") in events("%time w = slow(v)")
    assert ("read", "v") in events("%%time\nw = slow(v)\n")
    assert ("bind", "out") in events("%%capture out\nprint(1)\n")


def test_read_before_bind_order():
    assert events("x = x + 1") == [("read", "x"), ("bind", "x")]
    assert events("for i in items:\n    total += i") == [
        ("read", "items"), ("bind", "i"), ("read", "total"), ("read", "i"), ("bind", "total")]


@pytest.mark.parametrize(
    "src, expected",
    [
        ("df['x'] = 1", [("read", "df"), ("mutate", "df")]),
        ("df.loc[0, 'x'] = 1", [("read", "df"), ("mutate", "df")]),
        ("obj.attr = v", [("read", "v"), ("read", "obj"), ("mutate", "obj")]),
        ("lst.append(3)", [("read", "lst"), ("mutate", "lst")]),
        # X and y are passed to a call used as a statement; the data flow lets a method of a value change only the value
        ("model.fit(X, y)", [("read", "model"), ("read", "X"), ("read", "y"), ("mutate", "model"), ("pass", "X"), ("pass", "y")]),
        ("fitted = model.fit(X)", [("read", "model"), ("read", "X"), ("mutate", "model"), ("pass", "X"), ("bind", "fitted")]),
        # a call inside an expression may change its object and its arguments too (a draw, next(it), lst.pop())
        ("x = rng.random() + next(it)", [("read", "rng"), ("mutate", "rng"), ("read", "next"), ("read", "it"), ("pass", "it"),
                                         ("bind", "x")]),
        ("c = df.pop('c')", [("read", "df"), ("mutate", "df"), ("bind", "c")]),
        ("df.dropna(inplace=True)", [("read", "df"), ("mutate", "df")]),
        ("df.head()", [("read", "df")]),
        ("del d['k']", [("read", "d"), ("mutate", "d")]),
        ("del x", [("delete", "x")]),
    ],
)
def test_mutations(src, expected):
    assert events(src) == expected


def test_function_bodies_record_globals_read_at_call_time():
    code = analyze_cell("def f(a, *args, k=DEFAULT, **kw):\n    b = a + OFFSET\n    return helper(b, [c for c in ITEMS if c > b])")
    assert events("def f(a, k=DEFAULT):\n    return a + OFFSET") == [("read", "DEFAULT"), ("bind", "f")]
    assert code.summaries["f"].reads == {"OFFSET", "helper", "ITEMS"}


def test_global_statement_and_in_place_changes_in_functions():
    code = analyze_cell("def bump():\n    global counter\n    counter += 1\n    log.append(counter)")
    assert code.summaries["bump"].writes == {"counter", "log"}


def test_closures_and_nonlocal_are_not_globals():
    code = analyze_cell("def outer():\n    x = 1\n    def inner():\n        nonlocal x\n        x += G\n    return inner")
    assert code.summaries["outer"].reads == {"G"}


def test_class_body_runs_now_methods_at_call_time():
    code = analyze_cell("class C(Base):\n    size = SIZE\n    def m(self):\n        return helper(self.size)")
    assert [(e.op, e.name) for e in code.events] == [("read", "Base"), ("read", "SIZE"), ("bind", "C")]
    assert code.summaries["C"].reads >= {"helper"}


def test_comprehension_walrus_try_with_match():
    assert events("ys = [x * k for x in xs]") == [("read", "k"), ("read", "xs"), ("bind", "ys")]
    assert ("bind", "n") in events("if (n := len(a)) > 1:\n    pass")
    assert events("try:\n    v = f()\nexcept ValueError as e:\n    print(e)") == [
        ("read", "f"), ("bind", "v"), ("read", "ValueError"), ("bind", "e"), ("read", "print"), ("read", "e"), ("delete", "e")]
    assert events("with open(p) as fh:\n    t = fh.read()")[:3] == [("read", "open"), ("read", "p"), ("bind", "fh")]
    assert ("bind", "a") in events("match v:\n    case [a, *rest]:\n        pass")


# ---------------------------------------------------------------- pipeline data flow


def test_values_come_from_the_nearest_step_above_that_assigns_or_changes_them():
    p = load_cells(
        cell("df = make()", "step:load"),
        cell("df['y'] = 1", "step:clean"),
        cell("n = len(df)", "step:count"),
    )
    assert data_in(p, "clean") == {"df": "load"}
    assert data_in(p, "count") == {"df": "clean"}
    assert p.step("load").outputs == ("df",)
    assert p.step("clean").outputs == ("df",)
    assert p.step("count").outputs == ()  # unused values are not saved
    assert "`make` is read but never defined above" in rendered(p)[0]


def test_modules_functions_classes_are_recreated_not_transported():
    p = load_cells(
        cell("import numpy as np\nfrom math import sqrt", "step:a"),
        cell("SCALE = 2\ndef f(x):\n    return np.sqrt(x) * SCALE\nclass Box:\n    pass", "step:b"),
        cell("v = f(9)\nbox = Box()", "step:c"),
    )
    assert inputs(p, "c") == {("f", "b", "function"), ("np", "a", "module"), ("SCALE", "b", "data"), ("Box", "b", "class")}
    sources = [d.source for d in p.step("c").definitions]
    assert sources == ["import numpy as np", "def f(x):\n    return np.sqrt(x) * SCALE", "class Box:\n    pass"]
    assert p.ok, rendered(p)


def test_mutation_inside_a_called_function_moves_the_provider():
    p = load_cells(
        cell("log = []\ndef record(x):\n    log.append(x)", "step:a"),
        cell("record(1)", "step:b"),
        cell("n = len(log)", "step:c"),
    )
    assert data_in(p, "b") == {"log": "a"}
    assert data_in(p, "c") == {"log": "b"}


def test_provider_not_an_ancestor_is_an_error_with_the_fix():
    p = load_cells(
        cell("data = [1, 2]", "step:a"),
        cell("model = sum(data)", "step:b"),
        cell("pred = model * 2", "step:c", "after:a"),
    )
    assert rendered(p) == [
        "nb.ipynb: cell 3, line 1 (step:c) `pred = model * 2`: error: `model` comes from step b (cell 2 assigns it), "
        "which does not run before step c (add after:b to step c)"
    ]


def test_parallel_steps_assigning_a_name_a_later_step_reads_give_it_the_later_ones_value():
    """Each assigns x afresh: d loads c's, the value top to bottom leaves (nothing depends on timing)."""
    p = load_cells(
        cell("x = 0", "step:a"),
        cell("x = 1", "step:b", "after:a"),
        cell("x = 2", "step:c", "after:a"),
        cell("y = x", "step:d", "after:b", "after:c"),
    )
    assert p.ok, rendered(p)
    assert data_in(p, "d") == {"x": "c"}
    p = load_cells(cell("x = 1", "step:a"), cell("x = 2", "step:b", "after:none"), cell("print(x)", "step:c", "after:b"))
    assert p.ok and data_in(p, "c") == {"x": "b"}


def test_a_parallel_step_that_surely_changes_in_place_what_a_later_step_reads_is_refused():
    """b's append is not in the list c passes on to d: top to bottom d sees [0, 1, 2] whatever happens at run time."""
    p = load_cells(
        cell("x = [0]", "step:a"),
        cell("x.append(1)", "step:b", "after:a"),
        cell("x.append(2)", "step:c", "after:a"),
        cell("y = x", "step:d", "after:b", "after:c"),
    )
    assert rendered(p) == [
        "nb.ipynb: cell 3, line 1 (step:c) `x.append(2)`: error: `x` comes from step b (cell 2 changes it), which does not run "
        "before step c (add after:b to step c)",
        "nb.ipynb: cell 4, line 1 (step:d) `y = x`: error: step b changes `x` in place (cell 2) in parallel with step c, "
        "which step d loads it from: that change is not in the value step d gets (add after:b to step c, or work on a copy)"
    ]


def test_a_step_that_only_may_change_what_a_parallel_step_reads_checks_it_at_run_time():
    p = load_cells(
        cell("import statistics"),
        cell("data = [3, 1, 2]", "step:load"),
        cell("statistics.mean(data)", "step:stats"),
        cell("print(len(data))", "step:report", "after:load"),
    )
    assert p.ok, rendered(p)
    assert data_in(p, "report") == {"data": "load"}
    assert {s.name: s.unchanged for s in p.steps}["stats"] == (("data", 2, ("report",)),)


def test_parallel_steps_with_distinct_names_are_fine():
    p = load_cells(
        cell("x = 0", "step:a"),
        cell("b = x + 1", "step:b", "after:a"),
        cell("c = x + 2", "step:c", "after:a"),
        cell("y = b + c", "step:d", "after:b", "after:c"),
    )
    assert p.ok, rendered(p)
    assert data_in(p, "d") == {"b": "b", "c": "c"}


def test_undefined_name_hidden_state_and_defined_below():
    p = load_cells(cell("y = ghost + later", "step:a"), cell("later = 1", "step:b"))
    assert rendered(p) == [
        "nb.ipynb: cell 1, line 1 (step:a) `y = ghost + later`: error: `ghost` is read but never defined above "
        "(no cell above defines it: hidden notebook state, e.g. a deleted cell or a name set in another session)",
        "nb.ipynb: cell 1, line 1 (step:a) `y = ghost + later`: error: `later` is read but never defined above (it is only defined below, in cell 2)",
    ]


def test_deleted_name():
    p = load_cells(cell("x = 1", "step:a"), cell("del x", "step:b"), cell("y = x", "step:c"))
    assert "`x` is read after `del x` in cell 2 (step:b)" in rendered(p)[0]


def test_star_import_is_warned_and_silences_undefined_names():
    p = load_cells(cell("from math import *", "step:a"), cell("y = sqrt(4)", "step:b"))
    assert p.ok
    assert "`from … import *` (or %run) defines names nb2flow cannot see" in rendered(p)[0]
    assert [d.source for d in p.step("b").definitions] == ["from math import *"]


def test_setup_and_parameters_are_available_everywhere_and_not_transported():
    p = load_cells(
        cell("import pandas as pd"),
        cell("rows = 10", "parameters"),
        cell("df = pd.DataFrame({'a': range(rows)})", "step:a"),
        cell("n = rows + len(df)", "step:b"),
    )
    assert inputs(p, "b") == {("df", "a", "data")}
    assert p.ok


def test_setup_cell_reading_a_step_value_is_an_error():
    p = load_cells(cell("x = 1", "step:a"), cell("y = x", "setup"))
    assert "setup cell reads `x`, which no setup or parameters cell above defines" in rendered(p)[0]


def test_syntax_errors_name_cell_and_line():
    p = load_cells(cell("x = 1", "step:a"), cell("y = (\n", "step:b"))
    assert rendered(p) == ["nb.ipynb: cell 2, line 1 (step:b) `y = (`: error: syntax error: '(' was never closed"]


def test_loop_variables_augmented_assignment_and_walrus_across_steps():
    p = load_cells(
        cell("total = 0\nfor i in range(3):\n    total += i", "step:a"),
        cell("if (n := total) > 1:\n    total += n", "step:b"),
        cell("print(total, i, n)", "step:c"),
    )
    assert data_in(p, "c") == {"total": "b", "i": "a", "n": "b"}
    assert p.ok


def test_reading_a_function_pulls_in_what_it_reads_when_called():
    p = load_cells(
        cell("THRESHOLD = 3", "step:a"),
        cell("def keep(xs):\n    return [x for x in xs if x > THRESHOLD]", "step:b"),
        cell("kept = keep([1, 5])", "step:c"),
    )
    assert data_in(p, "c") == {"THRESHOLD": "a"}


def test_display_calls_do_not_count_as_changes():
    p = load_cells(cell("df = [1]", "step:a"), cell("df.head()", "step:b", "after:a"), cell("n = df", "step:c", "after:a"))
    assert data_in(p, "c") == {"df": "a"}
    assert p.ok


def test_seeding_warns_only_a_parallel_step_that_may_draw():
    p = load_cells(
        cell("import numpy as np\nnp.random.seed(0)"),
        cell("x = np.random.rand()", "step:a"),
        cell("y = [1, 2, 3]\nprint(sum(y))", "step:b", "after:none"),
        cell("z = np.random.rand()", "step:c", "after:a"),
        cell("w = np.random.rand()", "step:d", "after:none"),
    )
    assert [f.code for f in p.findings] == ["random-state"] and p.findings[0].step == "d"
    steps = {s.name: s for s in p.steps}
    assert steps["c"].rng_from == "a" and steps["b"].rng_from is None and steps["a"].saves_rng


def test_a_step_name_used_again_further_down_is_a_step_of_its_own():
    p = load_cells(cell("x = 1", "step:evaluation"), cell("y = x + 1", "step:train"), cell("print(x, y)", "step:evaluation"),
                   cell("z = y", "step:after", "after:evaluation"))
    assert p.ok and [s.name for s in p.steps] == ["evaluation", "train", "evaluation_2", "after"]
    assert [f.code for f in p.findings] == ["repeated-step"] and p.findings[0].cell == 3
    assert {s.name: s.parents for s in p.steps}["after"] == ("evaluation_2",)  # the nearer one above


def test_names_read_from_strings_are_read_and_a_dynamic_read_gets_every_value_above():
    p = load_cells(cell("limit = 2\nd = 5\nother = 1", "step:a"), cell("q = d.query('x > @limit')\nv = eval('other')", "step:b"))
    assert p.ok and data_in(p, "b") == {"d": "a", "limit": "a", "other": "a"}
    p = load_cells(cell("def show(name):\n    return eval(name)"), cell("df1 = 5\nunused = 1", "step:a"), cell("show('df1')", "step:b"))
    assert p.ok and not p.findings and data_in(p, "b") == {"df1": "a"}  # the name it spells as a string
    p = load_cells(cell("df1 = 5\nunused = 1", "step:a"), cell("key = 'df' + str(1)\nprint(globals()[key])", "step:b"))
    assert data_in(p, "b") == {"df1": "a", "unused": "a"} and all(i.optional for i in p.step("b").inputs)
    assert [f.code for f in p.findings] == ["dynamic-read"] and "df1, unused" in p.findings[0].message


def test_an_import_of_the_notebooks_own_module_is_re_run_by_later_steps():
    from nb2flow.dataflow import analyze
    from nb2flow.pipeline import build_structure
    from nb2flow.notebook import parse_notebook
    from nbutil import notebook

    nb = parse_notebook(json.dumps(notebook(cell("import nbstyle", "step:a"), cell("x = 1", "step:b"))).encode(), "nb.ipynb")
    later = {s.name: s for s in analyze(build_structure(nb), frozenset({"nbstyle"})).steps}["b"]
    assert [d.source for d in later.definitions] == ["import nbstyle"]
    assert {s.name: s for s in analyze(build_structure(nb)).steps}["b"].definitions == ()


@pytest.mark.parametrize("cells, code", [
    ([cell("print(total)", "step:a")], "undefined-name"),
    ([cell("x = 1", "step:a"), cell("print(x)", "step:b", "after:none")], "not-an-ancestor"),
    ([cell("x = 1", "step:a"), cell("x = 2", "step:b", "after:a"), cell("print(x)", "step:c", "after:a")], "not-an-ancestor"),
    ([cell("x = [0]", "step:a"), cell("x.append(1)", "step:b", "after:a"), cell("print(x)", "step:c", "after:a")], "not-an-ancestor"),
    ([cell("x = [0]", "step:a"), cell("x.append(1)", "step:b", "after:a"), cell("x.append(2)", "step:c", "after:a"),
      cell("print(x)", "step:d", "after:b", "after:c")], "parallel-change"),
    ([cell("x = 1", "step:a"), cell("del x", "step:b"), cell("print(x)", "step:c")], "deleted-name"),
    ([cell("2 + 2", "step:a"), cell("print(_)", "step:b")], "output-history"),
    ([cell("print(x)", "setup"), cell("x = 1", "step:a")], "setup-undefined"),
])
def test_each_refusal_that_remains_is_one_no_run_could_equal_top_to_bottom(cells, code):
    """The notebooks of the docs' table (docs/tags-and-data-flow.md): each still refused, with its rule."""
    p = load_cells(*cells)
    assert code in [f.code for f in p.errors], rendered(p)


def test_a_name_spelt_for_a_dynamic_read_comes_from_a_step_that_runs_before_as_a_written_read_does():
    p = load_cells(cell("v2 = [2]", "step:a"), cell("v2 = v2 + [3]", "step:b", "after:a"),
                   cell("n = len(globals()['v2'])", "step:c", "after:a"))
    assert [f.code for f in p.errors] == ["not-an-ancestor"] and "add after:b to step c" in rendered(p)[0]
