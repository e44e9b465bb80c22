"""The promise beyond variables: state a notebook builds up without assigning a name reaches the
steps below it as top to bottom (papermill) — or `check` names the cell and the fix."""

import json
import shutil

import pytest

from helpers import NOTEBOOKS, nb2flow
from nbutil import cell, load_cells, rendered

NAME = "state-beyond-variables.ipynb"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The notebook top to bottom with papermill, and split in notebook and script mode: each run's state.json."""
    import papermill

    out = {}
    folder = tmp_path_factory.mktemp("papermill")
    shutil.copy(NOTEBOOKS / NAME, folder / NAME)
    papermill.execute_notebook(str(folder / NAME), str(folder / "out.ipynb"), cwd=str(folder), progress_bar=False, kernel_name="python3")
    out["papermill"] = json.loads((folder / "state.json").read_text())
    for mode in ("notebook", "script"):
        folder = tmp_path_factory.mktemp(mode)
        shutil.copy(NOTEBOOKS / NAME, folder / NAME)
        r = nb2flow("run", NAME, "-q", "--mode", mode, cwd=folder)
        assert r.returncode == 0, r.stderr
        out[mode] = json.loads((folder / "state.json").read_text())
    return out


@pytest.mark.parametrize("construct, keys", [
    ("a call that changes its argument (bisect.insort, np.copyto, a notebook function)", ["lst", "arr"]),
    ("a class attribute changed in a later step", ["count"]),
    ("del of a value another step made", ["deleted"]),
    ("os.environ, os.chdir and sys.path set in one step", ["env", "cwd", "lib"]),
    ("library and global options: pandas, numpy, warnings, logging", ["max_columns", "precision", "filter", "level"]),
])
@pytest.mark.parametrize("mode", ["notebook", "script"])
def test_split_run_sees_the_state_top_to_bottom_leaves(runs, construct, keys, mode):
    reference = {k: runs["papermill"][k] for k in keys}
    assert {k: runs[mode][k] for k in keys} == reference, construct
    # and the reference really is the changed state, not the one before the change
    assert runs["papermill"]["lst"] == [5, 1, 3, 4, 99] and runs["papermill"]["count"] == 1 and runs["papermill"]["cwd"] == "sub"


def test_a_call_that_changes_its_argument_makes_the_calling_step_provide_it():
    p = load_cells(cell("import random\nlst = [1, 2]", "step:a"), cell("random.shuffle(lst)", "step:b"), cell("n = lst", "step:c"))
    assert [(i.name, i.provider) for i in p.step("c").inputs] == [("lst", "b")]
    p = load_cells(cell("lst = [1, 2]\ndef show(v):\n    print(v)", "step:a"), cell("show(lst)\nprint(lst)\nlen(lst)", "step:b"),
                   cell("n = lst", "step:c"))
    assert [(i.name, i.provider) for i in p.step("c").inputs] == [("lst", "a")]  # reading it changes nothing


def test_a_changed_class_is_loaded_as_it_is_not_re_created():
    p = load_cells(cell("class C:\n    n = 0", "step:a"), cell("C.n += 1", "step:b"), cell("x = C.n", "step:c"))
    assert [(i.name, i.provider, i.kind) for i in p.step("c").inputs] == [("C", "b", "data")]


def test_config_statements_are_re_run_below():
    p = load_cells(cell("import os\nimport pandas as pd", "setup"), cell("os.environ['A'] = '1'\npd.set_option('x', 1)\ny = 2", "step:a"),
                   cell("z = 3", "step:b", "after:none"))
    recreated = [d.source for d in p.step("b").definitions]
    assert recreated == ["os.environ['A'] = '1'", "pd.set_option('x', 1)"]


@pytest.mark.parametrize("cells, message", [
    ([cell("1 + 1", "step:a"), cell("x = _", "step:b")],
     "nb.ipynb: cell 2, line 1 (step:b) `x = _`: error: `_` is the value of cell 1's last expression (in step a), which this step's"
     " kernel never shows (assign it in cell 1 (result = ...) and read result)"),
    ([cell("1 + 1", "step:a"), cell("x = Out[1]", "step:b")],
     "nb.ipynb: cell 2, line 1 (step:b) `x = Out[1]`: error: `Out` is IPython's input/output history, which each step's kernel keeps"
     " on its own (execution counts differ too) (assign the value to a name in the cell that computes it (result = ...) and read that name)"),
])
def test_reading_ipythons_output_history_across_steps_is_refused_with_the_fix(cells, message):
    assert rendered(load_cells(*cells)) == [message]


def test_output_history_within_one_step_is_fine():
    p = load_cells(cell("1 + 1", "step:a"), cell("x = _"), cell("_ = 5", "step:b"), cell("y = _"))
    assert p.ok, rendered(p)
