"""Reading notebook files: every unusable input is one clean error naming the file."""

import json

import pytest

from nb2flow.errors import NotebookReadError
from nb2flow.notebook import parse_notebook, read_notebook
from nbutil import cell, notebook


def parse(doc, path="x.ipynb"):
    data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return parse_notebook(data, path)


def error_of(doc) -> str:
    with pytest.raises(NotebookReadError) as info:
        parse(doc)
    return info.value.render()


def test_reads_cells_tags_and_kernel():
    nb = parse(notebook(cell("x = 1", "step:a"), cell(["y = ", "2\n"])))
    assert [c.source for c in nb.cells] == ["x = 1", "y = 2\n"]
    assert nb.cells[0].tags == ("step:a",)
    assert nb.cells[1].number == 2
    assert nb.kernel_name == "python3" and nb.language == "python"
    assert len(nb.sha256) == 64


@pytest.mark.parametrize(
    "doc, expected",
    [
        (b"", "x.ipynb: empty file, not a notebook"),
        (b"{not json", "x.ipynb: not valid JSON: Expecting property name enclosed in double quotes at line 1 column 2"),
        (b"\xff\xfe{}", "x.ipynb: not UTF-8 text (invalid byte at offset 0)"),
        ([1, 2], "x.ipynb: not a notebook: the JSON top level is a list, not an object"),
        ({"hello": 1}, "x.ipynb: not a notebook: no 'nbformat' or 'cells' field"),
        ({"nbformat": 5, "nbformat_minor": 0, "cells": []}, "x.ipynb: unsupported nbformat 5.0 (nb2flow reads nbformat 3 and 4)"),
        ({"nbformat": "4", "cells": []}, "x.ipynb: not a notebook: 'nbformat' is '4', expected a whole number"),
        ({"nbformat": 4, "nbformat_minor": 5, "cells": {}}, "x.ipynb: not a notebook: 'cells' is an object, expected a list"),
        ({"nbformat": 4, "nbformat_minor": 5}, "x.ipynb: not a notebook: no 'cells' list"),
        ({"nbformat": 4, "cells": [3]}, "x.ipynb: cell 1: cell is a number, expected an object"),
        ({"nbformat": 4, "cells": [{"cell_type": "python", "source": ""}]}, "x.ipynb: cell 1: unknown cell_type 'python' (expected code, markdown or raw)"),
        ({"nbformat": 4, "cells": [{"cell_type": "code", "source": 7}]}, "x.ipynb: cell 1: 'source' is a number, expected a string or a list of strings"),
        ({"nbformat": 4, "cells": [{"cell_type": "code", "source": ["a", 1]}]}, "x.ipynb: cell 1: 'source' list holds something other than strings"),
        ({"nbformat": 4, "cells": [{"cell_type": "code", "source": "a\x00"}]}, "x.ipynb: cell 1: source contains a NUL character"),
        ({"nbformat": 4, "cells": [{"cell_type": "code", "source": "", "metadata": {"tags": "step:a"}}]}, "x.ipynb: cell 1: 'metadata.tags' is a string ('step:a'), expected a list of strings"),
        ({"nbformat": 4, "cells": [{"cell_type": "code", "source": "", "metadata": {"tags": [1]}}]}, "x.ipynb: cell 1: 'metadata.tags' must be a list of strings"),
        ({"nbformat": 4, "cells": [{"cell_type": "code", "source": "", "metadata": []}]}, "x.ipynb: cell 1: 'metadata' is a list, expected an object"),
    ],
)
def test_unusable_input_is_one_line_naming_file_and_cause(doc, expected):
    message = error_of(doc)
    assert message == expected
    assert "\n" not in message


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(NotebookReadError, match=r"nope.ipynb: no such file$"):
        read_notebook(tmp_path / "nope.ipynb")
    with pytest.raises(NotebookReadError, match="is a directory, not a notebook file"):
        read_notebook(tmp_path)


def test_bom_and_crlf_are_accepted():
    raw = json.dumps(notebook(cell("x = 1\r\ny = x\r\n", "step:a"))).encode()
    nb = parse(b"\xef\xbb\xbf" + raw)
    assert nb.cells[0].source == "x = 1\ny = x\n"


def test_nbformat_3_worksheets():
    doc = {
        "nbformat": 3,
        "nbformat_minor": 0,
        "metadata": {},
        "worksheets": [
            {"cells": [
                {"cell_type": "heading", "level": 1, "source": "Title", "metadata": {}},
                {"cell_type": "code", "input": "x = 1", "language": "python", "metadata": {"tags": ["step:a"]}, "outputs": []},
            ]}
        ],
    }
    nb = parse(doc)
    assert [c.cell_type for c in nb.cells] == ["markdown", "code"]
    assert nb.cells[1].source == "x = 1"
    assert nb.nbformat == (3, 0)
