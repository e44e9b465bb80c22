"""Fuzzing the commands with broken and hostile notebooks.

Every input either works or ends with exit 2 and one line that names the file — never a
traceback, never nb2flow's internal-error status — and the file is left byte-identical.
The default run tries a few hundred inputs; ``pytest -m fuzz`` tries ten thousand.
"""

import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import SAMPLES, invoke

SOURCES = [p.read_bytes() for p in sorted(SAMPLES.glob("*.ipynb"))]
# workflow files (several notebooks and scripts): the sample's, JupyterFlow's get-started one, and each bad one the tests know
WORKFLOWS = [(SAMPLES / "pipeline" / "workflow.yaml").read_bytes(),
             b"jobs:\n- python job1.py \n- python job2.py foo\n- python job2.py bar\n- python job3.py\ndags:\n- 1 >> 2\n- 1 >> 3\n"
             b"- 2 >> 4\n- 3 >> 4\n"]


def _mutate(draw, sources, inserts: dict) -> bytes:
    """One to four byte-level mutations of one of ``sources``: flip, truncate, insert, delete, and ``inserts``
    (name -> the snippets that operation puts at a random place, or a function of the data)."""
    data = bytearray(draw(st.sampled_from(sources)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "delete", *inserts]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "truncate":
            data = data[:pos]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 50))]
        elif callable(inserts.get(op)):
            data = bytearray(inserts[op](bytes(data)))
        elif op in inserts:
            data[pos:pos] = draw(st.sampled_from(inserts[op]))
    return bytes(data)


@st.composite
def byte_mutants(draw):
    return _mutate(draw, SOURCES, {"bom": lambda d: b"\xef\xbb\xbf" + d, "crlf": lambda d: d.replace(b"\n", b"\r\n")})


JUNK = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@st.composite
def structural_mutants(draw):
    doc = json.loads(draw(st.sampled_from(SOURCES)))
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["cells", "cell", "tags", "tags-str", "source", "no-source", "type", "nbformat", "kernel", "huge", "nul", "tag-add"]))
        cells = doc.get("cells") if isinstance(doc.get("cells"), list) else []
        i = draw(st.integers(0, max(0, len(cells) - 1)))
        cell = cells[i] if cells and isinstance(cells[i], dict) else None
        if op == "cells":
            doc["cells"] = draw(JUNK)
        elif op == "cell" and cells:
            cells[i] = draw(JUNK)
        elif op == "tags" and cell is not None:
            cell.setdefault("metadata", {})["tags"] = draw(st.one_of(JUNK, st.lists(JUNK, max_size=3)))
        elif op == "tags-str" and cell is not None:
            cell.setdefault("metadata", {})["tags"] = "step:x"
        elif op == "tag-add" and cell is not None and isinstance(cell.get("metadata"), dict):
            cell["metadata"].setdefault("tags", [])
            if isinstance(cell["metadata"]["tags"], list):
                cell["metadata"]["tags"].append(draw(st.one_of(st.text(max_size=20), st.sampled_from(["step:../x", "step:a/b", "step:" + "x" * 300, "after:zz", "step:Ａ", "cpu:-1", "timeout:0s"]))))
        elif op == "source" and cell is not None:
            cell["source"] = draw(st.one_of(JUNK, st.lists(st.text(max_size=10), max_size=3), st.text(max_size=60)))
        elif op == "no-source" and cell is not None:
            cell.pop("source", None)
        elif op == "type" and cell is not None:
            cell["cell_type"] = draw(st.one_of(st.sampled_from(["code", "markdown", "raw", "heading"]), JUNK))
        elif op == "nbformat":
            doc["nbformat"] = draw(st.one_of(st.integers(2, 6), JUNK))
            doc["nbformat_minor"] = draw(st.one_of(st.integers(0, 5), JUNK))
        elif op == "kernel":
            doc["metadata"] = draw(st.one_of(JUNK, st.just({}), st.just({"kernelspec": {"name": "ir", "language": "R"}})))
        elif op == "huge" and cell is not None:
            cell["source"] = "x = 1\n" * 5000
        elif op == "nul" and cell is not None:
            cell["source"] = "x = '\x00'"
    return json.dumps(doc).encode()


def check_all_commands(data: bytes, folder: Path) -> None:
    nb = folder / "fuzz.ipynb"
    nb.write_bytes(data)
    before = (nb.read_bytes(), os.stat(nb).st_mtime_ns)
    check_code = invoke(["check", str(nb)])[0]
    commands = [["graph", str(nb)], ["check", "--json", str(nb)], ["graph", "--format", "dot", "--vars", str(nb)], ["export", str(nb)]]
    if check_code != 0:
        commands.append(["run", str(nb), "-q"])  # refused before anything runs (a clean input would run the notebook)
    for argv in commands:
        code, out, err = invoke(argv)
        if argv[0] == "run":
            assert code == 2, (argv, code, err)
        assert code in (0, 1, 2), (argv, code, err)
        assert "Traceback" not in err
        if code == 2:
            lines = [l for l in err.splitlines() if l.startswith("nb2flow: ")]
            assert lines and ("fuzz.ipynb" in lines[-1] or "nb2flow.yaml" in lines[-1]), (argv, err)
    assert (nb.read_bytes(), os.stat(nb).st_mtime_ns) == before


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    f = tmp_path_factory.mktemp("fuzz")
    # explicit step-pod settings so export runs offline
    (f / "nb2flow.yaml").write_text(f"image: python:3.11\nworkdir: {f}\nvolumes: [{{name: w, persistentVolumeClaim: {{claimName: w}}}}]\nvolume_mounts: [{{name: w, mountPath: {f}}}]\n")
    return f


SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])


@settings(max_examples=80, **SETTINGS)
@given(byte_mutants())
def test_byte_mutations(folder, data):
    check_all_commands(data, folder)


@settings(max_examples=80, **SETTINGS)
@given(structural_mutants())
def test_structural_mutations(folder, data):
    check_all_commands(data, folder)


@pytest.mark.fuzz
@settings(max_examples=5000, derandomize=False, **SETTINGS)
@given(byte_mutants())
def test_byte_mutations_nightly(folder, data):
    check_all_commands(data, folder)


@pytest.mark.fuzz
@settings(max_examples=5000, derandomize=False, **SETTINGS)
@given(structural_mutants())
def test_structural_mutations_nightly(folder, data):
    check_all_commands(data, folder)


# ------------------------------------------------------------------ workflow files and -c chains
def _workflow_sources() -> list:
    from test_pipelines import BAD_FILES

    return WORKFLOWS + [text.encode() for text, _ in BAD_FILES.values()]


@st.composite
def workflow_mutants(draw):
    return _mutate(draw, _workflow_sources(), {
        "line": [b"\n- 9 >> 1", b"\n- 2 >> 1", b"\n- a >> b", b"\n  after: [x]", b"\n- report.ipynb", b"\nparameters: 3",
                 b"\n- name: job1\n  run: echo", b"\ncmd_mode: shell", b"\n- {run: x, notebook: y}", b"\nschedule: 'x'",
                 b"\n- python {alpha}.py"],
        "token": [b">>", b"&", b"'", b'"', b"{", b"}", b":", b"- ", b"\t", b"\x00"]})


def check_workflow_commands(data: bytes, folder: Path) -> None:
    wf = folder / "workflow.yaml"
    wf.write_bytes(data)
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    check_code = invoke(["check", str(wf)])[0]
    commands = [["graph", str(wf)], ["check", "--json", str(wf)], ["export", str(wf)]]
    if check_code != 0:
        commands.append(["run", str(wf), "-q"])  # refused before anything runs
    for argv in commands:
        code, out, err = invoke(argv)
        if argv[0] == "run":
            assert code == 2, (argv, code, err)
        assert code in (0, 1, 2), (argv, code, err)
        assert "Traceback" not in err
        if code == 2:
            lines = [l for l in err.splitlines() if l.startswith("nb2flow: ")]
            assert lines and any(n in lines[-1] for n in ("workflow.yaml", ".ipynb", "nb2flow.yaml")), (argv, err)
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before


@pytest.fixture(scope="module")
def workflow_folder(tmp_path_factory):
    import shutil

    f = tmp_path_factory.mktemp("fuzz-workflow")
    shutil.copytree(SAMPLES / "pipeline", f, dirs_exist_ok=True)
    for name, text in (("job1.py", "print('hello')\n"), ("job2.py", "import sys\nprint(sys.argv)\n"), ("job3.py", "print('again')\n")):
        (f / name).write_text(text)
    (f / "nb2flow.yaml").write_text(f"image: python:3.11\nworkdir: {f}\nvolumes: [{{name: w, persistentVolumeClaim: {{claimName: w}}}}]\n"
                                    f"volume_mounts: [{{name: w, mountPath: {f}}}]\n")
    return f


@settings(max_examples=60, **SETTINGS)
@given(workflow_mutants())
def test_workflow_file_mutations(workflow_folder, data):
    check_workflow_commands(data, workflow_folder)


@pytest.mark.fuzz
@settings(max_examples=3000, derandomize=False, **SETTINGS)
@given(workflow_mutants())
def test_workflow_file_mutations_nightly(workflow_folder, data):
    check_workflow_commands(data, workflow_folder)


CHAIN_WORDS = st.sampled_from(["python", "job1.py", "job2.py", "foo", ">>", "&", "'", '"', "\\", "|", ";", "&&", ">", "report.ipynb",
                               "{alpha}", "echo", "' '", "", "   ", "gone.py", "prepare.ipynb", "-c", "#", "$(x)", "`x`"])


@settings(max_examples=60, **SETTINGS)
@given(st.lists(CHAIN_WORDS, min_size=0, max_size=8).map(" ".join))
def test_chain_mutations(workflow_folder, chain):
    """`check -c` and `graph -c` of any chain: it works, or one line and exit 2 (never a traceback)."""
    for argv in (["check", "-c", chain], ["graph", "-c", chain]):
        code, out, err = run_in(workflow_folder, argv)
        assert code in (0, 1, 2), (argv, code, err)
        assert "Traceback" not in err and "internal error" not in err, (argv, err)
        if code == 2:
            assert len([l for l in err.splitlines() if l.startswith("nb2flow: ")]) == 1, (argv, err)


def run_in(folder: Path, argv: list):
    saved = os.getcwd()
    os.chdir(folder)
    try:
        return invoke(argv)
    finally:
        os.chdir(saved)
