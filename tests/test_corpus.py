"""Real-world notebooks: papermill's own test notebooks (from its source distribution) and
Kubeflow Kale's (from the kubeflow-kale package), through check, graph and export.

Downloaded from the package index once and cached (~/.cache/nb2flow-tests); the download is
opt-in (`pytest -m network`) so it can never stall the default run; skipped, saying why, when it fails.
The notebooks written here in those styles are in tests/test_real_notebooks.py (default run).
"""

import json
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from helpers import invoke


pytestmark = pytest.mark.network
CACHE = Path.home() / ".cache" / "nb2flow-tests" / "corpus"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    downloads = CACHE
    for spec, pattern in ((["papermill==2.7.0", "--no-binary", ":all:"], "papermill-2.7.0.tar.gz"),
                          (["kubeflow-kale==2.3.0"], "kubeflow_kale-2.3.0-*.whl")):
        if list(downloads.glob(pattern)):
            continue
        try:
            r = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(downloads), *spec],
                               capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired:
            pytest.skip(f"downloading {spec[0]} from the package index took over 300 s")
        if r.returncode != 0:
            pytest.skip(f"cannot download {spec[0]} from the package index: {r.stderr.strip().splitlines()[-1:]}")
    nbs = folder / "nbs"
    nbs.mkdir()
    with tarfile.open(next(downloads.glob("papermill-*.tar.gz"))) as tar:
        for member in tar.getmembers():
            if member.name.endswith(".ipynb") and "/tests/notebooks/" in member.name:
                (nbs / Path(member.name).name).write_bytes(tar.extractfile(member).read())
    with zipfile.ZipFile(next(downloads.glob("kubeflow_kale-*.whl"))) as wheel:
        for name in wheel.namelist():
            if name.startswith("kale/tests/assets/notebooks/") and name.endswith(".ipynb"):
                (nbs / ("kale-" + Path(name).name)).write_bytes(wheel.read(name))
    (nbs / "nb2flow.yaml").write_text(f"image: python:3.11\nworkdir: {nbs}\nvolumes: [{{name: w, persistentVolumeClaim: {{claimName: w}}}}]\nvolume_mounts: [{{name: w, mountPath: {nbs}}}]\n")
    return nbs


# what a user would expect from each: exit status of check, and a line check must print
EXPECTED = {
    # Python 2 print statements: a syntax error, pointed at its cell
    "broken.ipynb": (1, "cell 1, line 1 (step:main) `print \"We're good.\"`: error: syntax error: Missing parentheses in call to 'print'"),
    "broken1.ipynb": (1, "cell 8, line 1 (step:main) `print \"Shouldn't get here.\"`: error: syntax error"),
    "broken2.ipynb": (1, "cell 3, line 1 (step:main) `print \"Shouldn't get here.\"`: error: syntax error"),
    # papermill's parameter-introspection case deliberately ends with `= 2`
    "complex_parameters.ipynb": (1, "cell 1, line 14 `msg = None`: error: syntax error: invalid syntax"),
    # an R notebook
    "notimplemented_translator.ipynb": (1, "error: the notebook's language is 'r'; nb2flow runs Python notebooks"),
    # Kale's own notebooks run unchanged; Kale-only tags are named, not dropped
    "kale-pipeline_parameters_and_metrics.ipynb": (0, "warning: Kubeflow Kale's 'cache:enabled' has no effect in nb2flow"),
    "kale-mount_pvc.ipynb": (0, None),
    # only a parameters cell: nothing to run, which export refuses
    "result_no_exec.ipynb": (0, "warning: nothing to run: every code cell is a setup, parameters or skip cell"),
    "kale-mount_pvc_env_var.ipynb": (0, None),
}


def test_corpus_check_graph_export(corpus):
    notebooks = sorted(corpus.glob("*.ipynb"))
    assert len(notebooks) >= 25
    for nb in notebooks:
        before = nb.read_bytes()
        code, out, err = invoke(["check", str(nb)])
        assert "Traceback" not in err
        expected_code, expected_line = EXPECTED.get(nb.name, (0, "warning: no step: tags, so the whole notebook runs as one step 'main'"))
        assert code == expected_code, (nb.name, out, err)
        if expected_line:
            assert expected_line in out, (nb.name, out)
        code, out, err = invoke(["graph", str(nb)])
        assert code == 0 and "Traceback" not in err, (nb.name, err)
        code, out, err = invoke(["export", str(nb)])
        if expected_code == 0 and nb.name != "result_no_exec.ipynb":
            assert code == 0, (nb.name, err)
            assert json.loads(json.dumps(__import__("yaml").safe_load(out)))["kind"] == "Workflow"
        else:
            assert code == 2 and err.strip().splitlines()[-1].startswith(f"nb2flow: {nb}: "), (nb.name, err)
        assert nb.read_bytes() == before


def test_kale_pipeline_shape(corpus):
    import nb2flow

    p = nb2flow.load(corpus / "kale-pipeline_parameters_and_metrics.ipynb")
    assert [s.name for s in p.steps] == ["create_matrix", "sum_matrix", "pipeline-metrics"]
    assert p.step("sum_matrix").parents == ("create_matrix",)
    assert p.step("create_matrix").options.gpu == 2
    assert [q.name for q in p.parameters] and p.ok
