"""The tag grammar: every tag, its errors and warnings, Kale's tags."""

import pytest

from nb2flow.tags import parse_duration, task_name
from nbutil import cell, load_cells, md, rendered


def steps(p):
    return {s.name: s.parents for s in p.steps}


def test_untagged_cells_join_the_step_above_and_cells_above_first_step_are_setup():
    p = load_cells(cell("import os"), cell("a = 1", "step:one"), cell("b = a"), cell("c = b", "step:two"))
    assert p.setup_cells == (0,)
    assert [s.cells for s in p.steps] == [(1, 2), (3,)]
    assert steps(p) == {"one": (), "two": ("one",)}
    assert p.ok


def test_after_makes_parallel_branches_and_is_repeatable_and_comma_separated():
    p = load_cells(
        cell("a = 1", "step:a"),
        cell("b = a", "step:b"),
        cell("c = a", "step:c", "after:a"),
        cell("d = b + c", "step:d", "after:b", "after:c"),
        cell("e = b + c", "step:e", "after:b,c"),
    )
    assert steps(p) == {"a": (), "b": ("a",), "c": ("a",), "d": ("b", "c"), "e": ("b", "c")}
    assert p.ok, rendered(p)


def test_after_none_makes_a_root():
    p = load_cells(cell("a = 1", "step:a"), cell("b = 2", "step:b", "after:none"))
    assert steps(p) == {"a": (), "b": ()}


def test_after_must_name_a_step_above():
    p = load_cells(
        cell("a = 1", "step:a", "after:b"),
        cell("b = 2", "step:b", "after:zz"),
        cell("c = 2", "step:c", "after:bb"),
    )
    assert rendered(p) == [
        "nb.ipynb: cell 1 (step:a) `a = 1`: error: after:b names a step defined below (cell 2) (after: may only name a step above, so no cell runs before one it followed in the notebook)",
        "nb.ipynb: cell 2 (step:b) `b = 2`: error: after:zz names no step above (steps above: a)",
        "nb.ipynb: cell 3 (step:c) `c = 2`: error: after:bb names no step above (did you mean after:b?)",
    ]


def test_duplicate_names_after_normalising_are_an_error_naming_both_cells():
    p = load_cells(cell("a = 1", "step:Train_A"), cell("b = 2", "step:train-a"))
    assert rendered(p) == [
        "nb.ipynb: cell 2 (step:train-a) `b = 2`: error: step:train-a has the same Kubernetes name 'train-a' as step:Train_A, already used by cell 1 (give each step a unique name)"
    ]
    assert task_name("Train_A") == "train-a"


@pytest.mark.parametrize(
    "tag, message",
    [
        ("step:a/b", "step name 'a/b' may only use letters, digits, '-' and '_' (try step:a-b)"),
        ("step:none", "'none' is reserved (after:none makes a root step) (choose another step name)"),
        ("step:" + "x" * 64, "does not make a Kubernetes name"),
        ("step:__", "does not make a Kubernetes name"),
        ("after:", "'after:' names no step (write after:NAME or after:none)"),
    ],
)
def test_bad_step_names(tag, message):
    p = load_cells(cell("a = 1", tag) if tag.startswith("step") else cell("a = 1", "step:x", tag))
    assert any(message in line for line in rendered(p)), rendered(p)
    assert not p.ok


@pytest.mark.parametrize(
    "tag, suggestion",
    [
        ("steps:load", "step:load"),
        ("after load", "after:load"),
        ("Step:Load", "step:Load"),
        ("Parameters", "parameters"),
        ("paramters", "parameters"),
        ("setpu", "setup"),
        ("step-load", "step:load"),
        ("afer:load", "after:load"),
    ],
)
def test_unknown_tags_warn_with_did_you_mean(tag, suggestion):
    p = load_cells(cell("x = 1", "step:load"), cell("y = x", tag))
    assert f"nb.ipynb: cell 2 (step:load) `y = x`: warning: unknown tag '{tag}' (did you mean '{suggestion}'?)" in rendered(p)
    assert p.ok  # a warning, not an error


def test_unknown_tag_without_suggestion_is_still_reported():
    p = load_cells(cell("x = 1", "step:a", "favourite"))
    assert rendered(p) == ["nb.ipynb: cell 1 (step:a) `x = 1`: warning: unknown tag 'favourite' (nb2flow ignores it)"]


def test_other_tools_tags_pass_silently():
    p = load_cells(cell("x = 1", "step:a", "hide-input", "remove-output", "raises-exception"))
    assert p.findings == ()


def test_skip_cells_are_left_out():
    p = load_cells(cell("x = 1", "step:a"), cell("print(x)", "skip"), cell("y = x"))
    assert p.steps[0].cells == (0, 2)
    assert p.skipped_cells == (1,)


def test_setup_cells_anywhere_and_parameters_cell():
    p = load_cells(
        cell("alpha = 0.5\nname: str = 'x'\nrows = int('3')", "parameters"),
        cell("x = alpha", "step:a"),
        cell("import math", "setup"),
        cell("y = math.sqrt(x)", "step:b"),
    )
    assert p.setup_cells == (0, 2)
    assert p.parameter_cell == 0
    assert [(q.name, q.default, q.type_name) for q in p.parameters] == [("alpha", 0.5, "float"), ("name", "x", "str"), ("rows", None, "expression")]
    assert p.ok, rendered(p)


def test_step_options_are_parsed_and_validated():
    p = load_cells(cell("x = 1", "step:a", "cpu:500m", "memory:4Gi", "gpu:1", "retry:3", "timeout:1h30m", "image:ghcr.io/org/img:1.0"))
    o = p.steps[0].options
    assert (o.cpu, o.memory, o.gpu, o.retry, o.timeout, o.image) == ("500m", "4Gi", 1, 3, "1h30m", "ghcr.io/org/img:1.0")
    assert o.timeout_seconds == 5400


@pytest.mark.parametrize(
    "tag, message",
    [
        ("cpu:lots", "'cpu:lots' is not a Kubernetes quantity (e.g. cpu:2 or cpu:500m)"),
        ("memory:4GB", "'memory:4GB' is not a Kubernetes quantity (e.g. memory:4Gi or memory:512Mi)"),
        ("gpu:0", "'gpu:0' needs a whole number of at least 1"),
        ("retry:-1", "'retry:-1' needs a whole number"),
        ("timeout:soon", "'timeout:soon' is not a duration (e.g. timeout:30m, timeout:1h30m, timeout:90s)"),
        ("image:bad image", "'image:bad image' is not an image reference"),
    ],
)
def test_bad_option_values(tag, message):
    p = load_cells(cell("x = 1", "step:a", tag))
    assert any(message in line for line in rendered(p)), rendered(p)
    assert not p.ok


def test_options_and_after_only_on_a_steps_first_cell():
    p = load_cells(cell("x = 1", "step:a"), cell("y = 2", "memory:1Gi"), cell("z = 3", "after:a"))
    assert rendered(p) == [
        "nb.ipynb: cell 2 (step:a) `y = 2`: error: `memory:1Gi` only applies on a step's first cell (the one tagged step:NAME) (move the tag to the step's first cell)",
        "nb.ipynb: cell 3 (step:a) `z = 3`: error: `after:a` only applies on a step's first cell (the one tagged step:NAME) (move the tag to the step's first cell)",
    ]


def test_tags_on_markdown_warn_what_papermill_would_do():
    p = load_cells(md("# Params", "parameters"), md("## Load", "step:load"), cell("x = 1", "step:a"))
    lines = rendered(p)
    assert lines[0] == (
        "nb.ipynb: cell 1 `# Params`: warning: 'parameters' on a markdown cell: papermill would inject parameters "
        "after it, but a markdown cell never runs, so its defaults are never set (move the tag to the code cell that assigns the defaults)"
    )
    assert lines[1] == "nb.ipynb: cell 2 `## Load`: warning: 'step:' on a markdown cell has no effect: markdown cells never run (move the tag to the first code cell of the step)"
    assert [s.name for s in p.steps] == ["a"]


def test_no_step_tags_runs_as_one_step():
    p = load_cells(cell("x = 1"), cell("y = x"))
    assert [(s.name, s.cells) for s in p.steps] == [("main", (0, 1))]
    assert "no step: tags" in rendered(p)[0]


def test_kale_tags():
    p = load_cells(
        cell("import math", "imports"),
        cell("def f(x):\n    return math.sqrt(x)", "functions"),
        cell("N = 4", "pipeline-parameters"),
        cell("a = f(N)", "block:first"),
        cell("b = a + 1", "block:second", "prev:first"),
        cell("c = a * 2", "block:third", "prev:first"),
        cell("c += 1", "block:"),
        cell("d = 5", "block:root"),
        cell("print(b, c)", "pipeline-metrics"),
        cell("x = 1", "limit:nvidia.com/gpu:2", "block:gpu_step", "prev:first"),
    )
    assert steps(p) == {
        "first": (), "second": ("first",), "third": ("first",), "root": (), "gpu_step": ("first",),
        "pipeline-metrics": ("second", "third", "root", "gpu_step"),
    }
    assert p.step("third").cells == (5, 6)
    assert p.setup_cells == (0, 1, 2) and p.parameter_cell == 2
    assert p.step("gpu_step").options.gpu == 2
    assert p.step("gpu_step").options.gpu_resource == "nvidia.com/gpu"
    assert p.ok, rendered(p)


def test_kale_repeated_block_name_continues_that_block():
    p = load_cells(cell("a = 1", "block:one"), cell("b = a", "block:one"))
    assert [(s.name, s.cells) for s in p.steps] == [("one", (0, 1))]


def test_parse_duration():
    assert parse_duration("90s") == 90
    assert parse_duration("1h30m") == 5400
    assert parse_duration("1.5h") == 5400
    assert parse_duration("2d") == 172800
    for bad in ("", "10", "m", "1h 30m", "-1s"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_kale_2_grammar_empty_step_continues_and_kale_only_tags_are_reported():
    p = load_cells(
        cell("a = 1", "step:first", "cache:enabled"),
        cell("b = a", "step:"),
        cell("c = b", "step:second", "prev:first", "annotation:team:ml", "label:tier:gold", "secret:db:password:DB_PASSWORD", "report:disabled"),
    )
    assert [(s.name, s.cells) for s in p.steps] == [("first", (0, 1)), ("second", (2,))]
    assert p.ok
    lines = rendered(p)
    assert lines[0] == "nb.ipynb: cell 1 (step:first) `a = 1`: warning: Kubeflow Kale's 'cache:enabled' has no effect in nb2flow (nb2flow re-runs only what changed with `nb2flow run --resume`)"
    assert {l.split("Kale's ")[1].split(" has")[0] for l in lines[1:]} == {"'annotation:team:ml'", "'label:tier:gold'", "'secret:db:password:DB_PASSWORD'", "'report:disabled'"}


def test_dangerous_step_names_are_rejected_or_normalised():
    p = load_cells(
        cell("a = 1", "step:../etc"),
        cell("b = 1", "step:a b"),
        cell("c = 1", "step:Ａ"),  # a full-width look-alike
        cell("d = 1", "step:" + "x" * 300),
        cell("e = 1", "step:Load"),
        cell("f = 1", "step:load"),
    )
    lines = rendered(p)
    assert "step name '../etc' may only use letters, digits, '-' and '_'" in lines[0]
    assert "step name 'a b' may only use letters, digits, '-' and '_'" in lines[1]
    assert "step name 'Ａ' may only use letters, digits, '-' and '_'" in lines[2]
    assert "does not make a Kubernetes name" in lines[3]
    assert "step:load has the same Kubernetes name 'load' as step:Load, already used by cell 5" in lines[4]
    assert [s.name for s in p.steps] == ["Load"]
