"""Pipelines of several notebooks and scripts: JupyterFlow's command chain and ``workflow.yaml``, as data.

A *workflow* is a DAG of *jobs*. A job is a command (``python train.py epoch={epoch}``, run as written in
the workflow's folder) or a notebook (``prepare.ipynb``): a tagged notebook joins the pipeline as its own
steps (its first steps run after the job's parents, the job's children after its last steps), an untagged
one as one step. :func:`parse_chain` reads ``-c "a >> b & c >> d"``; :func:`load_workflow_file` reads a file;
:func:`compose` turns either into a :class:`Workflow`, which the rest of nb2flow runs as it runs one
notebook's :class:`~nb2flow.pipeline.Pipeline`: the same ``steps``, ``parameters``, ``findings``.

Grammar of a chain (JupyterFlow's, with its bugs left behind): jobs are separated by ``>>`` ("then");
``&`` joins jobs that run side by side (``prep.ipynb >> python a.py & python b.py >> report.ipynb``);
words are split as a POSIX shell splits them, so quotes keep ``'good bye'`` one word and a quoted
``'>>'`` a word. Pure apart from reading the files it is given.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
import shlex
from dataclasses import dataclass, field, replace

from .errors import UsageError
from .findings import error, warning
from .pipeline import Parameter, Pipeline, Step, StepGraph
from .runner.command_mode import COMMAND_PLACEHOLDER
from .tags import OPTION_KEYS, StepOptions, _parse_option, task_name
from .yamlfile import is_workflow_file

CMD_MODES = ("exec", "shell")
FILE_KEYS = ("version", "name", "jobs", "dags", "cmd_mode", "schedule", "parameters")
JOB_KEYS = ("name", "run", "command", "notebook", "after", "cmd_mode", "parameters") + OPTION_KEYS
SCRIPT_SUFFIXES = (".py", ".ipynb", ".sh", ".r", ".R", ".jl", ".pl", ".rb")
#: ``{name}``: a parameter's value in a command (not ``${name}``, a shell variable, nor ``{{``)
PLACEHOLDER_RE = re.compile(COMMAND_PLACEHOLDER)
JOB_NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")


class WorkflowError(UsageError):
    """A workflow file or chain nb2flow cannot use: one line, with the file's line (exit 2)."""


@dataclass(frozen=True)
class Job:
    """One job of a workflow: a command, or a notebook."""

    name: str
    index: int  # 1-based, as JupyterFlow's dags count
    text: str  # as written
    notebook: str | None = None  # a notebook job: its absolute path
    argv: tuple = ()  # a command job: the words it runs (shell mode: /bin/sh -c TEXT)
    shell: bool = False
    parents: tuple = ()  # job names
    options: StepOptions = field(default_factory=StepOptions)
    line: int | None = None
    parameters: dict = field(default_factory=dict, hash=False)  # the job's own values (the same notebook twice, two ways)

    @property
    def kind(self) -> str:
        return "notebook" if self.notebook else "command"

    @property
    def placeholders(self) -> tuple:
        """The ``{name}``s its command names, in order."""
        if self.notebook:
            return ()
        return tuple(dict.fromkeys(PLACEHOLDER_RE.findall(self.text)))


@dataclass(frozen=True)
class Source:
    """What a run record and the Argo objects say of the file a pipeline came from (a notebook's counterpart)."""

    path: str
    stem: str
    sha256: str
    cells: tuple = ()  # a workflow file has none: a failing command names no cell


@dataclass(frozen=True)
class Workflow(StepGraph):
    """Jobs and the steps they make. Quacks as a :class:`~nb2flow.pipeline.Pipeline` where runs need it
    (``path``, ``notebook``, ``steps``, ``parameters``, ``findings``)."""

    path: str  # the workflow file; for a chain, the folder it runs in joined with the pipeline's name
    folder: str
    name: str
    jobs: tuple
    notebook: Source
    steps: tuple = ()
    parameters: tuple = ()
    defaults: dict = field(default_factory=dict)  # the file's ``parameters:``
    pipelines: dict = field(default_factory=dict, compare=False, hash=False, repr=False)  # notebook job -> Pipeline
    job_steps: dict = field(default_factory=dict)  # job -> its step names
    findings: tuple = ()
    schedule: str | None = None
    chain: str | None = None  # the -c text it came from

    is_workflow = True

    def accepts(self, job: Job) -> list:
        """The run's parameters a job takes: its notebook's (papermill's way), or the ``{name}``s its command names."""
        return [p.name for p in self.pipelines[job.name].parameters] if job.notebook else list(job.placeholders)

    def job_of(self, step: str) -> Job | None:
        return next((j for j in self.jobs if step in self.job_steps.get(j.name, ())), None)


# ---------------------------------------------------------------------------------------------- reading
@dataclass(frozen=True)
class RawJob:
    """A job as written, before names and notebooks are resolved."""

    text: str
    line: int | None = None
    name: str | None = None
    notebook: str | None = None  # as written (nb2flow's ``notebook:`` key)
    after: tuple = ()
    options: dict = field(default_factory=dict)
    shell: bool | None = None
    parameters: dict = field(default_factory=dict)


def parse_chain(text: str, origin: str = "-c") -> tuple[list, list]:
    """``a >> b & c >> d`` → (jobs, edges): a job per command, each stage's jobs after every job of the stage before."""
    if not text.strip():
        raise WorkflowError(f"{origin}: no command given", hint='e.g. -c "python hello.py >> python world.py"')
    stages: list = [[[]]]
    for sep, segment in _segments(text, origin):
        if sep == ">>":
            stages.append([[]])
        elif sep == "&":
            stages[-1].append([])
        try:
            stages[-1][-1] += shlex.split(segment)
        except ValueError as exc:
            raise WorkflowError(f"{origin}: {exc}", hint="close the quote") from None
    jobs: list = []
    edges: list = []
    previous: list = []
    for s, stage in enumerate(stages, 1):
        current = []
        for words in stage:
            if not words:
                where = "before the first `>>`" if s == 1 and len(stages) > 1 else (
                    "after the last `>>`" if s == len(stages) and len(stages) > 1 else f"at position {len(jobs) + 1}")
                raise WorkflowError(f"{origin}: an empty job {where}", hint="each job between `>>` (and `&`) needs a command")
            jobs.append(RawJob(_shown(words)))
            current.append(len(jobs))
        edges += [(p, c, None) for p in previous for c in current]
        previous = current
    return jobs, edges


def _shown(words: list) -> str:
    """A command's words as one line a shell would split back into them, ``{name}`` left readable."""
    return " ".join(w if w and re.fullmatch(r"[\w@%+=:,./{}-]+", w) else shlex.quote(w) for w in words)


def _segments(text: str, origin: str) -> list:
    """(separator before it, text) of each part of a chain between unquoted ``>>`` and ``&``, as a POSIX shell quotes."""
    out: list = []
    sep, buf, quote, i = None, [], None, 0
    while i < len(text):
        c = text[i]
        if quote == "'":
            quote = None if c == "'" else quote
        elif c == "\\" and i + 1 < len(text):
            buf.append(text[i:i + 2])
            i += 2
            continue
        elif quote == '"':
            quote = None if c == '"' else quote
        elif c in "'\"":
            quote = c
        elif text.startswith(">>", i) and not text.startswith(">>>", i):
            out.append((sep, "".join(buf)))
            sep, buf, i = ">>", [], i + 2
            continue
        elif c == "&" and not text.startswith("&&", i):
            out.append((sep, "".join(buf)))
            sep, buf, i = "&", [], i + 1
            continue
        elif c in "&|;<>`":
            op = next(o for o in (">>>", "&&", "||", c) if text.startswith(o, i))
            raise WorkflowError(f"{origin}: `{op}` is shell syntax a chain does not run",
                                hint="`>>` means then, `&` side by side; for pipes and redirections write a workflow "
                                     "file with cmd_mode: shell, or wrap the command: sh -c '...'")
        buf.append(c)
        i += 1
    if quote:
        raise WorkflowError(f"{origin}: no closing quotation ({quote})", hint="close the quote")
    out.append((sep, "".join(buf)))
    return out


def _line(node) -> int:
    return node.start_mark.line + 1


def load_workflow_file(path: str) -> dict:
    """A workflow file's parts: ``jobs`` (RawJob), ``edges`` ((from, to, line) by 1-based index or name), ``name``,
    ``cmd_mode``, ``schedule``, ``defaults``. Any problem is one line naming the file and line."""
    import yaml

    try:
        with open(path, "rb") as fh:
            data = fh.read(8 * 1024 * 1024 + 1)
    except OSError as exc:
        raise WorkflowError(f"{path}: {exc.strerror or exc}") from None
    if len(data) > 8 * 1024 * 1024:
        raise WorkflowError(f"{path}: larger than 8 MiB: not a workflow file")
    try:
        text = data.decode("utf-8")
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except UnicodeDecodeError:
        raise WorkflowError(f"{path}: not UTF-8 text") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f": line {mark.line + 1}" if mark else ""
        raise WorkflowError(f"{path}{where}: not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
    if root is None or not isinstance(root, yaml.MappingNode):
        raise WorkflowError(f"{path}: a workflow file is a YAML mapping with a `jobs:` list",
                            hint="jobs:\\n- python hello.py\\n- python world.py")

    def bad(node, message, hint=None):
        raise WorkflowError(f"{path}: line {_line(node)}: {message}", hint=hint)

    def scalar(node, what):
        if not isinstance(node, yaml.ScalarNode):
            bad(node, f"{what} must be a single value")
        return _construct(node)

    keys: dict = {}
    for k, v in root.value:
        key = _construct(k)
        if not isinstance(key, str):
            bad(k, f"{key!r} is not a key of a workflow file")
        if key in keys:
            bad(k, f"`{key}` is given twice (also line {_line(keys[key][0])})")
        if key not in FILE_KEYS:
            close = difflib.get_close_matches(key, FILE_KEYS, n=1)
            bad(k, f"unknown key `{key}`", hint=f"did you mean `{close[0]}`?" if close else f"the keys: {', '.join(FILE_KEYS)}")
        keys[key] = (k, v)
    if "version" in keys:
        version = scalar(keys["version"][1], "version")
        if str(version) not in ("1", "1.0"):
            bad(keys["version"][1], f"version {version!r} is not one nb2flow reads", hint="version: 1 (JupyterFlow's format)")
    name = None
    if "name" in keys:
        name = scalar(keys["name"][1], "name")
        if not isinstance(name, (str, int)) or not str(name).strip():
            bad(keys["name"][1], "name must be text")
        name = str(name)
    mode = "exec"
    if "cmd_mode" in keys:
        mode = scalar(keys["cmd_mode"][1], "cmd_mode")
        if mode not in CMD_MODES:
            bad(keys["cmd_mode"][1], f"cmd_mode {mode!r} is not exec or shell")
    schedule = None
    if "schedule" in keys:
        schedule = scalar(keys["schedule"][1], "schedule")
        if not isinstance(schedule, str) or not schedule.strip():
            bad(keys["schedule"][1], "schedule must be a cron line in quotes, e.g. '0 3 * * *'")
        from .cron import cron_problem

        problem = cron_problem(schedule)
        if problem:
            bad(keys["schedule"][1], f"schedule {schedule!r}: {problem}")
    defaults = _parameters_node(keys["parameters"][1], bad, "parameters must be a mapping of names to default values") \
        if "parameters" in keys else {}
    if "jobs" not in keys:
        raise WorkflowError(f"{path}: no `jobs:` list", hint="jobs:\\n- python hello.py\\n- python world.py")
    jobs_node = keys["jobs"][1]
    if not isinstance(jobs_node, yaml.SequenceNode) or not jobs_node.value:
        bad(jobs_node, "`jobs:` must be a list with at least one job")
    jobs = []
    for item in jobs_node.value:
        jobs.append(_raw_job(item, bad))
    edges: list = []
    if "dags" in keys:
        dags = keys["dags"][1]
        if not isinstance(dags, yaml.SequenceNode):
            bad(dags, "`dags:` must be a list of lines like `1 >> 2`")
        for item in dags.value:
            if not isinstance(item, yaml.ScalarNode):
                bad(item, "a dag is one line like `1 >> 2` (or `1 >> 2 >> 3`)")
            parts = [p.strip() for p in str(_construct(item)).split(">>")]
            if len(parts) < 2 or not all(parts):
                bad(item, f"`{item.value}` is not `A >> B`", hint="job indexes start at 1: `1 >> 2`, `1 >> 2 >> 3`")
            for a, b in zip(parts, parts[1:]):
                edges.append((a, b, _line(item)))
    return {"jobs": jobs, "edges": edges, "name": name, "cmd_mode": mode, "schedule": schedule, "defaults": defaults, "text": text}


def _construct(node):
    import yaml

    from .yamlfile import no_dates_loader

    loader = no_dates_loader()("")
    try:
        return loader.construct_object(node, deep=True)
    except yaml.YAMLError:
        return node.value if hasattr(node, "value") else None
    finally:
        loader.dispose()


def _raw_job(item, bad) -> RawJob:
    import yaml

    if isinstance(item, yaml.ScalarNode):
        text = _construct(item)
        if text is None or not str(text).strip():
            bad(item, "an empty job", hint="write the command, e.g. - python train.py")
        return RawJob(str(text).strip(), _line(item))
    if not isinstance(item, yaml.MappingNode):
        bad(item, "a job is a command line, or a mapping with `run:` or `notebook:`")
    fields: dict = {}
    for k, v in item.value:
        key = _construct(k)
        if key not in JOB_KEYS:
            close = difflib.get_close_matches(str(key), JOB_KEYS, n=1)
            bad(k, f"unknown key `{key}` in a job", hint=f"did you mean `{close[0]}`?" if close else f"a job's keys: {', '.join(JOB_KEYS)}")
        fields[key] = (k, v, _construct(v))
    if ("run" in fields) + ("command" in fields) + ("notebook" in fields) != 1:
        bad(item, "a job needs exactly one of `run:` (a command) or `notebook:`")
    text_key = next(k for k in ("run", "command", "notebook") if k in fields)
    node, value = fields[text_key][1], fields[text_key][2]
    if not isinstance(value, str) or not value.strip():
        bad(node, f"`{text_key}:` must be text")
    name = None
    if "name" in fields:
        name = str(fields["name"][2])
        if not JOB_NAME_RE.match(name):
            bad(fields["name"][1], f"job name {name!r} may use letters, digits, - and _ only")
    after = ()
    if "after" in fields:
        raw = fields["after"][2]
        after = tuple(str(a) for a in (raw if isinstance(raw, list) else [raw]))
    options: dict = {}
    for key in OPTION_KEYS:
        if key in fields:
            problems: list = []
            _parse_option(key, str(fields[key][2]), f"{key}: {fields[key][2]}", options,
                          lambda code, message, hint=None, **_: problems.append((message, hint)))
            if problems:
                bad(fields[key][1], problems[0][0], hint=problems[0][1])
    parameters = _parameters_node(fields["parameters"][1], bad, "a job's parameters are a mapping of names to values") \
        if "parameters" in fields else {}
    shell = None
    if "cmd_mode" in fields:
        if fields["cmd_mode"][2] not in CMD_MODES:
            bad(fields["cmd_mode"][1], f"cmd_mode {fields['cmd_mode'][2]!r} is not exec or shell")
        shell = fields["cmd_mode"][2] == "shell"
    return RawJob(value.strip(), _line(item), name=name, notebook=value.strip() if text_key == "notebook" else None,
                  after=after, options=options, shell=shell, parameters=parameters)


def _parameters_node(node, bad, not_a_mapping: str) -> dict:
    """A ``parameters:`` mapping (the file's defaults, a job's own values): identifiers to values a run can pass on."""
    import yaml

    if not isinstance(node, yaml.MappingNode):
        bad(node, not_a_mapping)
    out: dict = {}
    for k, v in node.value:
        name = _construct(k)
        if not isinstance(name, str) or not name.isidentifier():
            bad(k, f"parameter name {name!r} is not a Python identifier")
        out[name] = _json_value(_construct(v), name, bad, v)
    return out


def _json_value(value, name: str, bad, node):
    """``value`` if a run can pass it on (what -p accepts), else a one-line error at ``node``'s line."""
    from .params import _check_json
    from .runner.params import to_wire

    try:
        _check_json(to_wire(value), name, "")
    except Exception as exc:  # noqa: BLE001 - a set, a binary, anything a run cannot pass on
        bad(node, str(getattr(exc, "message", exc)))
    return value


# ---------------------------------------------------------------------------------------------- composing
def _default_name(words: list, notebook: str | None) -> str:
    if notebook:
        base = os.path.splitext(os.path.basename(notebook))[0]
    else:
        script = next((w for w in words[1:] if w.endswith(SCRIPT_SUFFIXES) and not w.startswith("-")), None)
        base = os.path.splitext(os.path.basename(script))[0] if script else os.path.basename(words[0]) if words else "job"
    base = re.sub(r"[^A-Za-z0-9_-]+", "_", base).strip("_-") or "job"
    return base


def compose(raw_jobs: list, edges: list, *, folder: str, origin: str, name: str | None = None, cmd_mode: str = "exec",
            schedule: str | None = None, defaults: dict | None = None, chain: str | None = None, text: str = "",
            load=None) -> Workflow:
    """The workflow of ``raw_jobs`` with ``edges`` ((from, to, line): 1-based indexes or job names). Notebooks are
    read with ``load`` (``nb2flow.api.load``); a problem with the jobs or edges is raised (one line with the line)."""
    from .api import load as load_notebook

    load = load or load_notebook
    folder = os.path.abspath(folder)

    def bad(line, message, hint=None):
        raise WorkflowError(f"{origin}: " + (f"line {line}: " if line else "") + message, hint=hint)

    jobs: list = []
    names: dict = {}
    explicit = {task_name(r.name) for r in raw_jobs if r.name}
    for i, raw in enumerate(raw_jobs, 1):
        shell = raw.shell if raw.shell is not None else cmd_mode == "shell"
        notebook = raw.notebook
        words: list = []
        if notebook is None and raw.text.endswith(".ipynb") and os.path.isfile(os.path.join(folder, raw.text)):
            notebook = raw.text  # a notebook's path as it is, spaces and all
        if notebook is None:
            try:
                words = shlex.split(raw.text)
            except ValueError as exc:
                bad(raw.line, f"job {i}: {exc}")
            if not words:
                bad(raw.line, f"job {i} is empty")
            if len(words) == 1 and words[0].endswith(".ipynb") and not shell:
                notebook = words[0]
        if notebook is not None:
            full = os.path.normpath(os.path.join(folder, os.path.expanduser(notebook)))
            if not os.path.isfile(full):
                bad(raw.line, f"job {i}: notebook {notebook} not found in {folder}")
            _inside(full, folder, lambda m: bad(raw.line, f"job {i}: notebook {notebook} {m}"))
            notebook = full
        else:
            for word in words[1:] if not shell else shlex_words(raw.text):
                if word.endswith(SCRIPT_SUFFIXES) and not word.startswith("-") and "{" not in word:
                    full = os.path.join(folder, os.path.expanduser(word))
                    if not os.path.exists(full):
                        bad(raw.line, f"job {i}: `{raw.text}` names {word}, which is not in {folder}",
                            hint="a job runs in the workflow's folder; write the path from there")
                    break
        job_name = raw.name or _default_name(words, notebook)
        if raw.name and job_name in names:
            bad(raw.line, f"job name {job_name!r} is used twice (also job {names[job_name]})", hint="give each job its own name")
        if not raw.name:  # named after its script: never a name another job is given further down
            base, k = job_name, 2
            while job_name in names or task_name(job_name) in {task_name(n) for n in names} | explicit:
                job_name, k = f"{base}_{k}", k + 1
        elif task_name(job_name) in {task_name(n) for n in names}:
            bad(raw.line, f"job name {job_name!r} has the same Kubernetes name as another job", hint="give each job its own name")
        names[job_name] = i
        argv = ("/bin/sh", "-c", raw.text) if shell and notebook is None else tuple(words)
        jobs.append(Job(job_name, i, raw.text, notebook=notebook, argv=() if notebook else argv, shell=shell and not notebook,
                        options=StepOptions(**raw.options), line=raw.line, parameters=dict(raw.parameters)))
    by_index = {j.index: j for j in jobs}
    by_name = {j.name: j for j in jobs}

    def resolve(ref, line):
        ref = str(ref).strip()
        if ref.isdigit():
            n = int(ref)
            if n not in by_index:
                bad(line, f"job index {n} is out of range: the workflow has {len(jobs)} job(s), counted from 1")
            return by_index[n].name
        if ref in by_name:
            return ref
        close = difflib.get_close_matches(ref, list(by_name), n=1)
        bad(line, f"{ref!r} is neither a job index nor a job name", hint=f"did you mean {close[0]}?" if close else
            f"the jobs: {', '.join(by_name)}")

    parents: dict = {j.name: [] for j in jobs}
    seen: dict = {}
    for a, b, line in edges:
        pa, ch = resolve(a, line), resolve(b, line)
        if pa == ch:
            bad(line, f"job {pa} cannot run after itself")
        if (pa, ch) in seen:
            bad(line, f"`{a} >> {b}` is given twice" + (f" (also line {seen[(pa, ch)]})" if seen[(pa, ch)] else ""))
        seen[(pa, ch)] = line
        parents[ch].append(pa)
    for raw, job in zip(raw_jobs, jobs):
        for ref in raw.after:
            pa = resolve(ref, raw.line)
            if pa == job.name:
                bad(raw.line, f"job {pa} cannot run after itself")
            if pa not in parents[job.name]:
                parents[job.name].append(pa)
    def cycle(names):  # child, its parent, ... back to the child: shown parent first, at an edge's line
        chain = list(reversed(names))
        line = next((seen[(a, b)] for a, b in zip(chain, chain[1:]) if seen.get((a, b))), None)
        line = line or next((r.line for r, j in zip(raw_jobs, jobs) if j.name in chain and r.after), None)
        index = {j.name: j.index for j in jobs}
        bad(line, f"the jobs form a cycle: {' >> '.join(str(index[n]) for n in chain)} ({', '.join(dict.fromkeys(chain))})",
            hint="a pipeline runs each job once: remove one of these edges")

    order = _topological(jobs, parents, cycle)
    jobs = [replace(j, parents=tuple(parents[j.name])) for j in jobs]
    by_name = {j.name: j for j in jobs}
    return _flatten([by_name[n] for n in order], folder=folder, origin=origin, name=name, schedule=schedule,
                    defaults=defaults or {}, chain=chain, text=chain if chain is not None else text, load=load)


def shlex_words(text: str) -> list:
    try:
        return shlex.split(text)
    except ValueError:
        return text.split()


def _inside(path: str, folder: str, bad) -> None:
    if os.path.commonpath([os.path.realpath(path), os.path.realpath(folder)]) != os.path.realpath(folder):
        bad(f"is outside the workflow's folder {folder} (step pods see that folder only)")


def _topological(jobs: list, parents: dict, on_cycle) -> list:
    """Job names, parents first (file order among equals); a cycle is reported by ``on_cycle(names)``."""
    order: list = []
    state: dict = {}

    def visit(name, path):
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            on_cycle(path[path.index(name):] + [name])
        state[name] = 1
        for p in parents[name]:
            visit(p, path + [name])
        state[name] = 2
        order.append(name)

    for j in jobs:
        visit(j.name, [])
    return order


def _renamed(pipeline: Pipeline, prefix: str) -> Pipeline:
    """The notebook's pipeline with its steps named ``PREFIX.STEP`` (its own edges and data flow kept)."""
    def n(name):
        return f"{prefix}.{name}" if name else name

    steps = []
    for s in pipeline.steps:
        steps.append(replace(s, name=n(s.name), parents=tuple(n(p) for p in s.parents),
                             inputs=tuple(replace(i, provider=n(i.provider)) for i in s.inputs),
                             rng_from=n(s.rng_from) if s.rng_from else None,
                             unchanged=tuple((name, cell, tuple(n(r) for r in readers)) for name, cell, readers in s.unchanged)))
    findings = tuple(replace(f, step=n(f.step)) if f.step else f for f in pipeline.findings)
    return replace(pipeline, steps=tuple(steps), findings=findings)


def _flatten(jobs: list, *, folder, origin, name, schedule, defaults, chain, text, load) -> Workflow:
    steps: list = []
    job_steps: dict = {}
    pipelines: dict = {}
    findings: list = []
    leaves: dict = {}
    params: dict = {}
    conflicting: set = set()
    for job in jobs:
        outer = tuple(dict.fromkeys(p for parent in job.parents for p in leaves[parent]))
        if job.notebook:
            pipeline = load(job.notebook)
            for f in pipeline.findings:
                if f.code == "no-steps":  # a notebook without step: tags is a job of one step, as meant
                    continue
                findings.append(replace(f, file=os.path.relpath(job.notebook), step=f"{job.name}.{f.step}" if f.step else job.name))
            tagged = not (len(pipeline.steps) == 1 and pipeline.steps[0].name == "main" and not pipeline.steps[0].parents)
            sub = _renamed(pipeline, job.name) if tagged else replace(
                pipeline, steps=(replace(pipeline.steps[0], name=job.name),) if pipeline.steps else ())
            pipelines[job.name] = sub
            _check_job_parameters(job, [p.name for p in pipeline.parameters], origin, "its notebook's parameters cell defines")
            names = []
            for s in sub.steps:
                if not s.parents or not tagged:
                    s = replace(s, parents=tuple(s.parents) + outer)
                opts = job.options.to_json()
                if opts:
                    s = replace(s, options=replace(s.options, **{k: v for k, v in opts.items() if getattr(s.options, k) is None}))
                steps.append(replace(s, job=job.name))
                names.append(s.name)
            internal = {p for s in sub.steps for p in s.parents}
            leaves[job.name] = tuple(n for n in names if n not in internal) or tuple(outer)
            for p in pipeline.parameters:
                if p.name in params and (params[p.name].source != p.source):
                    conflicting.add(p.name)
                params.setdefault(p.name, p)
        else:
            _check_job_parameters(job, list(job.placeholders), origin, "its command names")
            command = {"argv": list(job.argv), "text": job.text, "shell": job.shell}
            steps.append(Step(name=job.name, cells=(), parents=outer, options=job.options, job=job.name, command=command))
            names = [job.name]
            leaves[job.name] = (job.name,)
            for ph in job.placeholders:  # without a default: a value only when the run is given one (-p)
                params.setdefault(ph, _parameter(ph, defaults[ph]) if ph in defaults else Parameter(ph, "", None, False))
        job_steps[job.name] = tuple(names)
    for pname, value in defaults.items():
        if pname in params and params[pname].source != repr(value) and pname not in {
                ph for j in jobs for ph in j.placeholders}:
            conflicting.add(pname)
        params.setdefault(pname, _parameter(pname, value))
    tasks: dict = {}
    for s in steps:
        if s.task in tasks:
            findings.append(error("duplicate-step", f"steps {tasks[s.task]} and {s.name} have one Kubernetes name, {s.task}",
                                  hint="give the jobs (or the notebooks' steps) names of their own", step=s.name))
        tasks[s.task] = s.name
    for job in jobs:
        unknown = [ph for ph in job.placeholders if ph not in defaults]
        if unknown:
            findings.append(warning("no-default", f"`{job.text}` names {', '.join('{' + u + '}' for u in unknown)}, which has no "
                                    "default: without -p it is passed as written",
                                    hint=f"give it a default under parameters: or run with -p {unknown[0]} VALUE", step=job.name,
                                    file=os.path.relpath(origin) if chain is None else None))
    parameters = tuple(replace(p, has_literal=False) if p.name in conflicting else p for p in params.values())
    wname = name or (os.path.splitext(os.path.basename(origin))[0] if chain is None else "pipeline")
    path = origin if chain is None else os.path.join(folder, wname)
    source = Source(path=os.path.abspath(path), stem=wname, sha256=hashlib.sha256(text.encode()).hexdigest())
    return Workflow(path=os.path.abspath(path), folder=folder, name=wname, jobs=tuple(jobs), notebook=source, steps=tuple(steps),
                    parameters=parameters, defaults=dict(defaults), pipelines=pipelines, job_steps=job_steps,
                    findings=tuple(findings), schedule=schedule, chain=chain)


def _check_job_parameters(job: Job, known: list, origin: str, what: str) -> None:
    """A job's own parameters are ones it takes (a notebook's parameters cell, a command's ``{name}``s)."""
    for name in job.parameters:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            raise WorkflowError(f"{origin}: " + (f"line {job.line}: " if job.line else "") + f"job {job.name}: {name!r} is not a "
                                f"parameter of it", hint=f"did you mean {close[0]}?" if close else
                                (f"{what}: {', '.join(known)}" if known else f"{what} none"))


def _parameter(name: str, value) -> Parameter:
    return Parameter(name, repr(value), value, True)


def from_chain(text: str, folder: str | None = None, *, name: str | None = None, load=None) -> Workflow:
    """The workflow of a ``-c`` chain, run in ``folder`` (default: here)."""
    jobs, edges = parse_chain(text)
    return compose(jobs, edges, folder=folder or os.getcwd(), origin="-c", name=name, chain=text, load=load)


def from_file(path: str, *, load=None) -> Workflow:
    """The workflow of a ``workflow.yaml`` (JupyterFlow's format, or nb2flow's superset)."""
    parts = load_workflow_file(path)
    return compose(parts["jobs"], parts["edges"], folder=os.path.dirname(os.path.abspath(path)), origin=path,
                   name=parts["name"], cmd_mode=parts["cmd_mode"], schedule=parts["schedule"], defaults=parts["defaults"],
                   text=parts["text"], load=load)


def check_workflow_parameters(workflow: Workflow, values: dict) -> dict:
    """The run's parameters: each a parameter of a notebook job, a ``{name}`` of a command, or under ``parameters:``."""
    from .params import check_parameters

    return check_parameters(values, [p.name for p in workflow.parameters], workflow.path, listing="the pipeline's parameters",
                            none="no notebook of it has a parameters cell and no command names a {parameter}")


def workflow_to_json(workflow: Workflow) -> dict:
    """``check --json`` of a pipeline of several notebooks and scripts: its jobs, steps and findings."""
    from .pipeline import pipeline_to_json

    notebooks = {job: pipeline_to_json(p) for job, p in workflow.pipelines.items()}
    return {
        "pipeline": workflow.path,
        "name": workflow.name,
        "ok": workflow.ok,
        "schedule": workflow.schedule,
        "parameters": [{"name": p.name, "default": p.source or None} for p in workflow.parameters],
        "jobs": [{"name": j.name, "index": j.index, "kind": j.kind, "run": j.text, "after": list(j.parents),
                  "steps": list(workflow.job_steps[j.name]), **({"notebook": os.path.relpath(j.notebook, workflow.folder)} if j.notebook else {}),
                  "options": j.options.to_json(), **({"line": j.line} if j.line else {})} for j in workflow.jobs],
        "steps": [{"name": s.name, "task": s.task, "job": s.job, "after": list(s.parents), "options": s.options.to_json(),
                   **({"command": s.command["text"]} if s.command else {"cells": [i + 1 for i in s.cells]})} for s in workflow.steps],
        "notebooks": notebooks,
        "findings": [f.to_json() for f in workflow.findings],
    }


def looks_like_workflow_file(path: str) -> bool:
    """A YAML file with a top-level ``jobs:`` key (so ``-f`` is a workflow, not papermill's parameters file)."""
    if not is_workflow_file(path) or not os.path.isfile(path):
        return False
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            text = fh.read(1024 * 1024)
    except OSError:
        return False
    return re.search(r"^jobs\s*:", text, re.M) is not None


def files_named(command: dict, folder: str) -> list:
    """The files a command names that exist (its script, its interpreter when a path, data files): what makes it
    unchanged for --resume and --reuse, with its command line."""
    words = shlex_words(command["text"]) if command.get("shell") else command["argv"]
    out = []
    for w in words:
        if w.startswith("-") or "{" in w:
            continue
        full = os.path.join(folder, os.path.expanduser(w))
        if ("/" in w or "." in w) and os.path.isfile(full):
            out.append(full)
    return out
