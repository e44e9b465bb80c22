"""The sample notebooks are clean under check. (That each runs top to bottom is the papermill reference run of
test_run_local.py::test_split_run_sees_what_top_to_bottom_sees.)"""

import pytest

from helpers import SAMPLES
import nb2flow

SAMPLE_FILES = sorted(SAMPLES.glob("*.ipynb"))


def test_there_are_samples():
    assert {p.name for p in SAMPLE_FILES} >= {"analysis.ipynb", "linear.ipynb", "kale_pipeline.ipynb"}


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda p: p.name)
def test_sample_checks_clean(path):
    p = nb2flow.load(path)
    assert p.ok and not p.warnings, [f.render(str(path)) for f in p.findings]


def test_analysis_shape():
    p = nb2flow.load(SAMPLES / "analysis.ipynb")
    assert [s.name for s in p.steps] == ["load", "clean", "train_logreg", "train_forest", "compare"]
    assert p.step("train_forest").parents == ("clean",) and p.step("train_logreg").parents == ("clean",)
    assert p.step("compare").parents == ("train_logreg", "train_forest")
    assert [q.name for q in p.parameters] == ["test_size", "random_state", "n_estimators", "C"]
