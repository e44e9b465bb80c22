"""The sample notebooks: clean under check, and each runs top to bottom as a plain notebook."""

import pytest

from conftest import SAMPLES
import nb2flow

SAMPLE_FILES = sorted(SAMPLES.glob("*.ipynb"))


def test_there_are_samples():
    assert {p.name for p in SAMPLE_FILES} >= {"analysis.ipynb", "linear.ipynb", "kale_pipeline.ipynb"}


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda p: p.name)
def test_sample_checks_clean(path):
    p = nb2flow.load(path)
    assert p.ok and not p.warnings, [f.render(str(path)) for f in p.findings]


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda p: p.name)
def test_sample_runs_top_to_bottom(path):
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(SAMPLES)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors


def test_analysis_shape():
    p = nb2flow.load(SAMPLES / "analysis.ipynb")
    assert [s.name for s in p.steps] == ["load", "clean", "train_logreg", "train_forest", "compare"]
    assert p.step("train_forest").parents == ("clean",) and p.step("train_logreg").parents == ("clean",)
    assert p.step("compare").parents == ("train_logreg", "train_forest")
    assert [q.name for q in p.parameters] == ["test_size", "random_state", "n_estimators", "C"]
