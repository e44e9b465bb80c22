"""Property test: random tag layouts and cell contents never make the parser raise anything
but nb2flow's own clean error."""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nb2flow.api import load_notebook
from nb2flow.errors import Nb2flowError
from nb2flow.notebook import parse_notebook

NAMES = st.sampled_from(["a", "b", "c", "load", "Train_A", "train-a", "none", "x/y", "", "ü"])
TAGS = st.one_of(
    st.builds(lambda n: f"step:{n}", NAMES),
    st.builds(lambda n: f"after:{n}", NAMES),
    st.builds(lambda n: f"block:{n}", NAMES),
    st.builds(lambda n: f"prev:{n}", NAMES),
    st.sampled_from(["parameters", "setup", "skip", "imports", "functions", "pipeline-parameters", "pipeline-metrics",
                     "cpu:2", "cpu:x", "memory:1Gi", "gpu:1", "retry:2", "timeout:5m", "image:py", "limit:nvidia.com/gpu:1",
                     "injected-parameters", "Step:A", "after b", "weird"]),
    st.text(max_size=12),
)
SOURCES = st.one_of(
    st.sampled_from(["x = 1", "y = x + 1", "x.append(2)", "del x", "import os", "from m import *", "def f():\n    return x",
                     "class C:\n    v = y", "%matplotlib inline", "!ls", "x?", "for i in x:\n    y += i", "(", "lambda: z",
                     "[q for q in x]", "global g\ng = 1", "%%time\nx = 2", "x: int = 3", ""]),
    st.text(max_size=40),
)
CELLS = st.lists(
    st.builds(
        lambda t, s, tags: {"cell_type": t, "metadata": {"tags": tags}, "source": s, **({"outputs": [], "execution_count": None} if t == "code" else {})},
        st.sampled_from(["code", "code", "code", "markdown", "raw"]),
        SOURCES,
        st.lists(TAGS, max_size=3),
    ),
    max_size=12,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(CELLS)
def test_random_layouts_never_crash(cells):
    doc = {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": cells}
    try:
        pipeline = load_notebook(parse_notebook(json.dumps(doc).encode(), "fuzz.ipynb"))
    except Nb2flowError as exc:
        assert "\n" not in exc.render()
        return
    # every step's parents are earlier steps, and every finding renders on one line
    seen = set()
    for step in pipeline.steps:
        assert set(step.parents) <= seen
        seen.add(step.name)
    for f in pipeline.findings:
        assert "\n" not in f.render("fuzz.ipynb")
