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


@st.composite
def byte_mutants(draw):
    data = bytearray(draw(st.sampled_from(SOURCES)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "bom", "crlf"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "truncate":
            data = data[:pos]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 50))]
        elif op == "bom":
            data = bytearray(b"\xef\xbb\xbf") + data
        else:
            data = bytearray(bytes(data).replace(b"\n", b"\r\n"))
    return bytes(data)


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
