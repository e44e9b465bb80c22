"""Drawing the step DAG: a terminal view, mermaid and graphviz dot. Pure text out."""

from __future__ import annotations

import json
import os

from .pipeline import Pipeline


def cell_list(indices) -> str:
    """Cell numbers as a step really has them: ``cell 5``, ``cells 7-8``, ``cells 8-10, 12, 50-53``."""
    numbers = sorted(i + 1 for i in indices)
    runs: list[list[int]] = []
    for n in numbers:
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    text = ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)
    return f"cell{'s' if len(numbers) > 1 else ''} {text}"


def levels(pipeline: Pipeline) -> dict[str, int]:
    """Each step's depth: 0 for roots, else one more than its deepest parent."""
    depth: dict[str, int] = {}
    for s in pipeline.steps:  # parents come first in notebook order
        depth[s.name] = 1 + max((depth[p] for p in s.parents), default=-1)
    return depth


def flows(pipeline: Pipeline) -> dict[tuple[str, str], list[str]]:
    """(provider, consumer) -> names of data values loaded along that pair."""
    out: dict[tuple[str, str], list[str]] = {}
    for s in pipeline.steps:
        for i in s.data_inputs:
            out.setdefault((i.provider, s.name), []).append(i.name)
    return out


def render(pipeline: Pipeline, fmt: str = "text", *, show_vars: bool = False) -> str:
    if fmt == "mermaid":
        return render_mermaid(pipeline, show_vars=show_vars)
    if fmt == "dot":
        return render_dot(pipeline, show_vars=show_vars)
    return render_text(pipeline, show_vars=show_vars)


def _what(pipeline, step) -> str:
    """What a step runs: its cells; in a pipeline of several notebooks and scripts, its command or notebook too."""
    if step.command:
        return f"$ {step.command['text']}"
    job = pipeline.job_of(step.name) if pipeline.is_workflow else None
    if job is not None:
        return f"{os.path.basename(job.notebook)} {cell_list(step.cells)}"
    return cell_list(step.cells)


def render_text(pipeline: Pipeline, *, show_vars: bool = False) -> str:
    depth = levels(pipeline)
    data = flows(pipeline)
    if not pipeline.steps:
        return "(no steps)\n"
    width = max(len(s.name) for s in pipeline.steps)
    lines = []
    last_level = None
    for level in sorted(set(depth.values())):
        group = [s for s in pipeline.steps if depth[s.name] == level]
        for n, s in enumerate(group):
            label = f"{level:>3}  " if level != last_level else "     "
            last_level = level
            parts = []
            for p in s.parents:
                names = data.get((p, s.name))
                parts.append(f"{p} ({', '.join(names)})" if show_vars and names else p)
            if show_vars:
                for (prov, cons), names in data.items():
                    if cons == s.name and prov not in s.parents:
                        how = "via ancestors" if prov in pipeline.ancestors(s.name) else "does not run before it: see nb2flow check"
                        parts.append(f"{prov} ({', '.join(names)}, {how})")
            arrow = "  <- " + ", ".join(parts) if parts else ""
            lines.append(f"{label}{s.name:<{width}}  [{_what(pipeline, s)}]{arrow}")
        if len(group) > 1:
            lines.append(f"     ({len(group)} steps at this level may run in parallel)")
    what = "what it runs" if pipeline.is_workflow else "cells"
    header = f"{pipeline.notebook.stem}: {len(pipeline.steps)} step{'s' if len(pipeline.steps) != 1 else ''}; level, step, {what}, runs after"
    return header + "\n" + "\n".join(lines) + "\n"


def _ids(pipeline: Pipeline) -> dict[str, str]:
    return {s.name: f"s{i}" for i, s in enumerate(pipeline.steps)}


def render_mermaid(pipeline: Pipeline, *, show_vars: bool = False) -> str:
    ids = _ids(pipeline)
    data = flows(pipeline)
    out = ["flowchart TD"]
    for s in pipeline.steps:
        out.append(f'    {ids[s.name]}["{s.name}"]')
    for s in pipeline.steps:
        for p in s.parents:
            names = data.get((p, s.name))
            if show_vars and names:
                out.append(f'    {ids[p]} -- "{", ".join(names)}" --> {ids[s.name]}')
            else:
                out.append(f"    {ids[p]} --> {ids[s.name]}")
    if show_vars:
        for (prov, cons), names in data.items():
            if prov not in pipeline.step(cons).parents and prov in ids:
                out.append(f'    {ids[prov]} -. "{", ".join(names)}" .-> {ids[cons]}')
    return "\n".join(out) + "\n"


def render_dot(pipeline: Pipeline, *, show_vars: bool = False) -> str:
    data = flows(pipeline)
    q = json.dumps  # a JSON string is a valid dot quoted string for these names
    out = [f"digraph {q(pipeline.notebook.stem)} {{", "    rankdir=TB;", "    node [shape=box, style=rounded];"]
    for s in pipeline.steps:
        out.append(f"    {q(s.name)};")
    for s in pipeline.steps:
        for p in s.parents:
            names = data.get((p, s.name))
            attr = f" [label={q(', '.join(names))}]" if show_vars and names else ""
            out.append(f"    {q(p)} -> {q(s.name)}{attr};")
    if show_vars:
        for (prov, cons), names in data.items():
            if prov not in pipeline.step(cons).parents:
                out.append(f"    {q(prov)} -> {q(cons)} [label={q(', '.join(names))}, style=dashed];")
    out.append("}")
    return "\n".join(out) + "\n"
