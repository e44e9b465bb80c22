"""Notebooks written here in the styles people publish (Kale, papermill, seeded), split exactly as
their authors meant: each run split (notebook and script mode) gives what papermill gives top to
bottom, with the run's parameters; plus the analysis of the constructs that used to break."""

import json
import shutil
from pathlib import Path

import pytest

from helpers import NOTEBOOKS, nb2flow, only_run_dir
from nbutil import cell, load_cells, rendered




# notebook -> (parameters, the file its last step writes, what that file must hold (None: as papermill))
CASES = {
    "kale-parameters-functions.ipynb": ({"n": 5, "label": "run"}, "result.json",
                                        {"n": 5, "label": "run", "data": [0, 2, 4, 6, 8], "mean": 4}),
    "papermill-style.ipynb": ({"scale": 3, "offset": 2}, "pm-result.json", {"day": "2026-01-01", "scale": 3, "offset": 2}),
    "seeded-random.ipynb": ({}, "draws.json", None),
}


def papermill_copy(src: Path, dst: Path) -> None:
    """The notebook as papermill runs it top to bottom: Kale's skip cells removed, its
    pipeline-parameters cell tagged `parameters` so papermill injects after it."""
    doc = json.loads(src.read_text())
    cells = []
    for c in doc["cells"]:
        tags = c.get("metadata", {}).get("tags", [])
        if "skip" in tags:
            continue
        if "pipeline-parameters" in tags:
            c["metadata"]["tags"] = tags + ["parameters"]
        cells.append(c)
    doc["cells"] = cells
    dst.write_text(json.dumps(doc))


@pytest.mark.slow  # papermill and a split run of each: CI runs it (pytest -m slow)
@pytest.mark.parametrize("name", sorted(CASES))
def test_split_runs_give_what_papermill_gives(tmp_path, name):
    import papermill

    params, output, expected = CASES[name]
    reference_dir = tmp_path / "papermill"
    reference_dir.mkdir()
    papermill_copy(NOTEBOOKS / name, reference_dir / name)
    papermill.execute_notebook(str(reference_dir / name), str(reference_dir / "out.ipynb"), parameters=params,
                               cwd=str(reference_dir), progress_bar=False, kernel_name="python3")
    reference = json.loads((reference_dir / output).read_text())
    if expected is not None:
        assert reference == expected
    flags = [a for k, v in params.items() for a in ("-p", k, str(v))]
    for mode in ("notebook", "script"):
        folder = tmp_path / mode
        folder.mkdir()
        shutil.copy(NOTEBOOKS / name, folder / name)
        r = nb2flow("run", name, "-q", "--mode", mode, *flags, cwd=folder)
        if mode == "script" and name == "papermill-style.ipynb":  # `pwd` is a magic: plain python cannot run it
            assert r.returncode == 2 and r.stderr.strip().endswith(
                "cell 4 (step:main): uses IPython syntax (a %magic, !shell command or magic without %) that plain python"
                " cannot run (run with --mode notebook)"), r.stderr
            continue
        assert r.returncode == 0, r.stderr
        assert json.loads((folder / output).read_text()) == reference, mode
        run_dir = only_run_dir(folder)
        record = json.loads((run_dir / "run.json").read_text())
        assert record["parameters"] == params
        for step in record["steps"].values():  # every step, in either mode, leaves its output log
            assert (run_dir / "steps" / step["task"] / "output.log").is_file(), (mode, step)
        merged = json.loads(next(run_dir.glob("*.out.ipynb")).read_text())
        texts = [o.get("text", "") for c in merged["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
        printed = "".join("".join(t) if isinstance(t, list) else t for t in texts)
        if name == "kale-parameters-functions.ipynb":
            assert '"label": "run"' in printed, mode  # the report cell's print, in the merged notebook
            injected = [c for c in merged["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
            assert len(injected) == 1 and "n = 5" in injected[0]["source"]
            at = merged["cells"].index(injected[0])
            assert "pipeline-parameters" in merged["cells"][at - 1]["metadata"]["tags"]  # right after it
        if name == "papermill-style.ipynb":
            assert "'scale': 3" in printed, mode


def test_kale_grammar_is_followed_and_reported_in_its_own_spelling():
    p = load_cells(
        cell("import json", "imports"),
        cell("x = 1", "step:load"),
        cell("def scaled(v):\n    return v * factor()", "functions"),
        cell("def factor():\n    return 2"),  # untagged after functions: Kale puts it in the functions block
        cell("y = scaled(x)", "step:report", "prev:load"),
        cell("z = y + 1", "prev:load"),  # prev: on a continuation cell: Kale ignores it
        cell("w = 1", "step:other", "prev:lod"),
    )
    assert p.setup_cells == (0, 2, 3)
    assert [s.cells for s in p.steps] == [(1,), (4, 5), (6,)]
    assert rendered(p) == [
        "nb.ipynb: cell 6 (step:report) `z = y + 1`: warning: `prev:load` on a cell that continues a block has no effect"
        " (Kale ignores it too) (put prev: on the step's first cell, or drop it)",
        "nb.ipynb: cell 7 (step:other) `w = 1`: error: prev:lod names no step above (did you mean prev:load?)",
    ]


def test_findings_about_values_speak_prev_in_kale_notebooks():
    p = load_cells(cell("a = 1", "step:one"), cell("b = 2", "step:two", "prev:one"), cell("c = a + b", "step:three", "prev:one"))
    assert any("(add prev:two to step three)" in line for line in rendered(p)), rendered(p)


def test_papermill_style_setup_above_the_parameters_cell():
    p = load_cells(cell("import datetime"), cell("day = datetime.date.today()", "parameters"), cell("print(day)"))
    assert p.ok, rendered(p)
    assert p.setup_cells == (0, 1) and [s.cells for s in p.steps] == [(2,)]


@pytest.mark.parametrize("source", ["pip install -r requirements.txt", "ls", "cd ..", "conda install -y numpy", "pwd"])
def test_a_magic_without_percent_is_what_ipython_runs(source):
    p = load_cells(cell(source, "step:a"), cell("x = 1", "step:b"))
    assert p.ok, rendered(p)
    assert p.code[0].automagic == source.split()[0]


def test_a_variable_of_the_magics_name_turns_automagic_off():
    p = load_cells(cell("ls = ['a', 'b']", "step:a"), cell("ls", "step:b"))
    assert p.code[1].automagic is None
    assert [(i.name, i.provider) for i in p.step("b").inputs] == [("ls", "a")]
    p = load_cells(cell("pip install x\nprint(1)", "step:a"))  # two lines: no automagic, a syntax error in IPython too
    assert [f.code for f in p.errors] == ["syntax-error"]


def test_automagic_names_are_real_line_magics_of_a_default_kernel():
    import subprocess
    import sys

    from nb2flow.cellcode import AUTOMAGIC

    code = ("from ipykernel.zmqshell import ZMQInteractiveShell\nfrom traitlets.config import Config\n"
            "c = Config(); c.HistoryManager.enabled = False\n"
            "print(' '.join(ZMQInteractiveShell.instance(config=c).magics_manager.magics['line']))")
    live = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split())
    assert {"pip", "conda", "cd", "ls", "pwd"} <= live
    # `store` comes from the kernel's storemagic extension; %mamba, %micromamba, %uv and %code_wrap came with
    # later IPython releases (the list is the newest's; an older kernel lacks them)
    import IPython

    newer = {"mamba", "micromamba", "uv", "code_wrap"} if int(IPython.__version__.split(".")[0]) < 9 else set()
    assert AUTOMAGIC - live <= {"store"} | newer, AUTOMAGIC - live


def test_seeded_notebook_steps_that_may_run_in_parallel_are_warned():
    p = load_cells(cell("import random\nrandom.seed(1)", "setup"), cell("a = random.random()", "step:a"),
                   cell("b = random.random()", "step:b", "after:none"))
    assert rendered(p) == [
        "nb.ipynb: cell 3 (step:b) `b = random.random()`: warning: cell 1 seeds the random generators, and step b may draw after"
        " step a in the notebook, but may run before it: its random numbers can differ from top to bottom"
        " (add after:a to step b, or seed in step b itself)"]
    p = load_cells(cell("import random\nrandom.seed(1)", "setup"), cell("a = random.random()", "step:a"), cell("b = random.random()", "step:b"))
    assert p.ok and not p.warnings and p.step("b").rng_from == "a" and p.step("a").saves_rng


def test_graph_shows_the_cells_a_step_really_has():
    from nb2flow.graph import render

    p = load_cells(cell("x = 1", "step:a"), cell("print(x)", "skip"), cell("y = x"), cell("z = 3"), cell("w = 4", "step:b"))
    assert "a  [cells 1, 3-4]" in render(p)


def test_graph_vars_says_when_a_provider_does_not_run_before():
    from nb2flow.graph import render

    p = load_cells(cell("x = 1", "step:a"), cell("y = 2", "step:b", "after:none"), cell("z = x + y", "step:c", "after:b"))
    text = render(p, show_vars=True)
    assert "a (x, does not run before it: see nb2flow check)" in text


def test_small_things_read_right():
    import io

    from nb2flow.cluster import bundle_id
    from nb2flow.progress import PlainReporter, StepView
    from nb2flow.runner.protocol import StepState

    out = io.StringIO()
    PlainReporter(stream=out).start("r1", "/x", [StepView("a", StepState.PENDING)])
    assert out.getvalue().rstrip().endswith("run r1: 1 step")
    p = load_cells(cell("x = 1", "step:a"), path="an analysis with a long name that is cut right at - this.ipynb")
    ident = bundle_id(p, {"a": "0" * 64})
    assert "--" not in ident and ident.startswith("an-analysis-with-a-long-name-that-is-cut")


def test_script_mode_refusal_of_a_setup_cell_blames_no_step():
    from nb2flow.errors import PipelineError
    from nb2flow.materialize import script_source

    p = load_cells(cell("!echo hello", "setup"), cell("x = 1", "step:a"))
    with pytest.raises(PipelineError) as info:
        script_source(p, p.step("a"))
    assert info.value.render() == ("nb.ipynb: cell 1: uses IPython syntax (a %magic, !shell command or magic without %) that plain"
                                   " python cannot run (a setup cell: every step runs it) (run with --mode notebook)")
