"""What one code cell reads, binds and mutates, from Python's own ``ast``.

A cell's source first goes through IPython's input transformation (only when plain
Python does not parse it, which keeps ``check`` fast): ``%matplotlib inline``,
``!pip install x`` and ``df?`` become ordinary Python. The result is a list of events
in execution order at the notebook's global scope:

* ``read``   a global name is read (including globals a nested comprehension reads now)
* ``bind``   a global name is bound, with a kind: data, module, function, class
* ``mutate`` a global value may be changed in place (``df["x"] = ...``, ``lst.append(1)``,
  ``model.fit(X)``, ``df.dropna(inplace=True)``)
* ``delete`` ``del x``

Functions and classes also get a summary of the globals they read and write *when
called*, so that a step calling ``f()`` is known to need what ``f`` reads.
"""

from __future__ import annotations

import ast
import builtins
import copy
import functools
import keyword
import os
import re
import sys
import warnings
from dataclasses import dataclass, field

# Methods that, called as a statement, are taken to change their object in place
# unless listed here as read-only (display, export, statistics).
READ_ONLY_METHODS = frozenset(
    """head tail describe info sample plot hist show display print format copy count value_counts
    nunique unique sum mean median std var min max corr cov summary keys values items get predict
    predict_proba predict_log_proba decision_function score transform inverse_transform evaluate
    isna isnull notna notnull any all round abs groupby agg aggregate apply map memory_usage
    savefig save save_model dump dumps write_image write_html render encode decode split join
    startswith endswith strip lower upper replace find index tolist item reshape astype
    get_params get_feature_names_out""".split()
)
# Methods that change their object even when the result is used (``fitted = model.fit(X)``).
MUTATING_METHODS = frozenset(
    """fit fit_transform fit_predict partial_fit append extend insert update pop popitem remove
    clear sort reverse add discard setdefault set_params train load_state_dict compile
    """.split()
)
# Cell and line magics whose argument is Python code run in the user namespace.
CODE_MAGICS = frozenset({"time", "timeit", "prun", "capture", "debug"})
IPYTHON_NAMES = frozenset(
    {"get_ipython", "display", "In", "Out", "_", "__", "___", "_i", "_ii", "_iii", "_oh", "_ih", "_dh", "exit", "quit", "__builtins__", "__name__", "__file__", "__doc__"}
)
BUILTIN_NAMES = frozenset(dir(builtins)) | IPYTHON_NAMES

# The line magics of a default IPython kernel (IPython 9, ipykernel 7; aliases such as ls
# included). With automagic on, as it is by default, a cell of one line that starts with one
# of these names runs it as a magic (IPython's AutoMagicChecker, applied only to one-line cells
# by InteractiveShell.transform_cell), unless a variable, a builtin or a keyword of that name
# shadows it, or the line assigns to it (``ls = 1``).
AUTOMAGIC = frozenset(
    """alias alias_magic autoawait autocall automagic autosave bookmark cat cd clear code_wrap colors conda
    config connect_info cp debug dhist dirs doctest_mode ed edit env gui hist history killbgscripts ldir less
    lf lk ll load load_ext loadpy logoff logon logstart logstate logstop ls lsmagic lx macro magic mamba man
    matplotlib micromamba mkdir more mv notebook page pastebin pdb pdef pdoc pfile pinfo pinfo2 pip popd
    pprint precision prun psearch psource pushd pwd pycat pylab qtconsole quickref recall rehashx reload_ext
    rep rerun reset reset_selective rm rmdir run save sc set_env store subshell sx system tb time timeit
    unalias unload_ext uv who who_ls whos xdel xmode""".split()
)
# Calls that seed the global generators whose draws a split run must continue from step to step
SEED_CALL_RE = re.compile(r"(^|\.)random\.seed$|^torch\.(cuda\.)?manual_seed(_all)?$")
# Functions that, called as a statement, change none of their arguments (display, logging, saving).
# Any other call used as a statement may change what is passed to it (random.shuffle(lst),
# np.copyto(a, b), a notebook function appending to its argument): those names count as changed.
READ_ONLY_CALL_RE = re.compile(
    r"^(print|len|repr|str|int|float|bool|type|isinstance|issubclass|id|hash|sorted|sum|min|max|any|all|abs|round"
    r"|range|enumerate|zip|reversed|iter|open|callable|divmod|pow|chr|ord|bin|hex|oct|bytes|complex|slice|super|object"
    r"|list|tuple|dict|set|frozenset|format|getattr|hasattr|vars|dir|help|display|HTML|Markdown|Image|pprint)$"
    r"|^(plt|matplotlib|mpl|sns|seaborn|logging|warnings|IPython\.display|display|tqdm|time|json|pickle|joblib|os\.path)\."
    r"|^(np|numpy)\.(save|savez|savez_compressed|savetxt|testing\..*)$|^(pd|pandas)\.testing\.|^os\.(makedirs|mkdir)$"
)
# Statements that configure the process or a library, which every later cell sees top to bottom:
# a step re-runs those of the cells above it (as it re-creates definitions). By the dotted name
# they call or assign into, as notebooks spell it.
CONFIG_CALL_RE = re.compile(
    r"^os\.(chdir|putenv|unsetenv|environ\.(update|setdefault|pop|clear))$"
    r"|^sys\.(path\.(append|insert|extend|remove|clear)|setrecursionlimit)$"
    r"|^(pd|pandas)\.(set_option|reset_option)$|^(np|numpy)\.(set_printoptions|seterr)$"
    r"|^(plt|matplotlib\.pyplot|mpl|matplotlib)\.(rc|rcdefaults|use|style\.use|rcParams\.update)$"
    r"|^(sns|seaborn)\.(set|set_theme|set_style|set_context|set_palette)$"
    r"|^warnings\.(filterwarnings|simplefilter|resetwarnings)$|^logging\.(basicConfig|disable|captureWarnings)$"
    r"|^(sklearn\.)?set_config$|^torch\.(manual_seed|set_default_dtype|set_num_threads|set_printoptions|use_deterministic_algorithms)$"
    r"|^(tf|tensorflow)\.(random\.set_seed|config\..*)$"
)
CONFIG_TARGET_RE = re.compile(r"^(os\.environ|sys\.path|(pd|pandas)\.options|(plt|mpl|matplotlib)\.rcParams)(\.|$)")
# Magics that configure the kernel or the process (%cd, %env, %matplotlib inline, %config ...)
CONFIG_MAGICS = frozenset({"cd", "env", "set_env", "config", "matplotlib", "load_ext", "reload_ext", "autoreload", "precision", "xmode"})
# IPython's output and input history: per kernel, so per step
OUTPUT_HISTORY_RE = re.compile(r"^(_{1,3}|Out|_oh|In|_ih|_i{1,3}|_i?\d+)$")
# IPython's own split of a line into escape, function and the rest (IPython.core.splitinput.line_split)
LINE_SPLIT_RE = re.compile(r"^(\s*)([,;/%]|!!?|\?\??)?\s*(%{0,2}[\w\.\*]*)(.*?$|$)")

SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


@dataclass(frozen=True)
class Event:
    op: str  # read | bind | mutate | delete | star | pass (name passed to a call) | dynamic (names spelt at run time)
    name: str
    line: int
    kind: str | None = None  # for bind: data | module | function | class; for mutate: store, may (it may change), or None
    stmt: int = 0  # index of the top-level statement
    callee: str | None = None  # for pass: the function called (dotted, as written)
    position: int | str | None = None  # for pass: the argument's position, or its keyword
    const: bool = False  # for bind: the value is an immutable literal (5, 'north', None, (1, 2)): nothing changes it


@dataclass(frozen=True)
class CallSummary:
    """Globals a function or class reads and writes when it is called or instantiated."""

    reads: frozenset[str] = frozenset()
    writes: frozenset[str] = frozenset()
    changes_args: frozenset = frozenset()  # positions and names of the parameters it changes in place
    may_writes: frozenset[str] = frozenset()  # globals it may change (a call on them whose effect is not known)
    dynamic: bool = False  # reads names it spells at run time (eval, exec, globals(), locals(), vars())


@dataclass(frozen=True)
class Statement:
    """A top-level statement: the unit nb2flow re-runs to re-create a definition."""

    index: int
    start: int  # 1-based first line (decorators included)
    end: int
    source: str
    config: bool = False  # configures the process or a library (os.environ, os.chdir, sys.path, options)
    imports: tuple = ()  # the top-level modules an import statement imports (absolute imports only)


@dataclass(frozen=True)
class CellCode:
    """The analysis of one code cell."""

    python: str  # the source after IPython's transformation
    events: tuple[Event, ...]
    statements: tuple[Statement, ...]
    summaries: dict = field(default_factory=dict, compare=False, hash=False)  # name -> CallSummary
    transformed: bool = False
    automagic: str | None = None  # the line magic a one-line cell runs without its % (``pip install x``)
    seeds: bool = False  # seeds the global random generators (random.seed, numpy.random.seed)
    draws: bool = True  # may draw from the global random generators: calls something beyond Python's builtins and display
    strings: frozenset = frozenset()  # string literals that could name a variable ('df1' in show('df1'))
    sets_output: bool = False  # ends with an expression, so IPython sets `_` (and Out[N]) to its value


class CellSyntaxError(Exception):
    """The cell is not valid Python even after IPython's transformation."""

    def __init__(self, msg: str, line: int | None):
        super().__init__(msg)
        self.msg = msg
        self.line = line


def automagic_name(source: str, shadowed=frozenset()) -> str | None:
    """The magic a default kernel runs for this cell through automagic (``pip install -r x.txt``), else None.

    ``shadowed``: names bound above the cell; a variable of the magic's name turns automagic off.
    """
    stripped = source.strip()
    if not stripped or "\n" in stripped:
        return None  # quick exit; the exact one-line test is on IPython's transformed cell below
    pre, esc, ifun, rest = LINE_SPLIT_RE.match(stripped).groups()
    if esc or ifun not in AUTOMAGIC or rest.lstrip()[:1] in ("=", ","):
        return None
    if ifun in shadowed or ifun in BUILTIN_NAMES or keyword.iskeyword(ifun):
        return None
    return ifun


@functools.lru_cache(maxsize=1)
def _transformer_manager():
    """IPython's ``TransformerManager``. Its module imports only the standard library, while ``import IPython`` runs
    the package's ``__init__`` (the terminal shell, prompt_toolkit: 0.75 s); so, unless a kernel has IPython already,
    the module is loaded from IPython's folder on its own."""
    if "IPython" not in sys.modules:
        import importlib.util

        spec = importlib.util.find_spec("IPython")
        for folder in (spec.submodule_search_locations or []) if spec else []:
            path = os.path.join(folder, "core", "inputtransformer2.py")
            if os.path.isfile(path):
                module_spec = importlib.util.spec_from_file_location("nb2flow._ipython_inputtransformer2", path)
                module = importlib.util.module_from_spec(module_spec)
                module_spec.loader.exec_module(module)
                return module.TransformerManager
    from IPython.core.inputtransformer2 import TransformerManager

    return TransformerManager


def to_python(source: str, shadowed=frozenset()) -> tuple[str, ast.Module, bool]:
    """Parse a cell as a default IPython kernel would run it: plain Python when it parses and
    is not an automagic line, else after IPython's input transformation."""
    magic = automagic_name(source, shadowed)
    if magic is not None:
        rest = LINE_SPLIT_RE.match(source.strip()).group(4).strip()
        python = f"get_ipython().run_line_magic({magic!r}, {rest!r})\n"
        return python, ast.parse(python), True
    try:
        return source, ast.parse(source), False
    except SyntaxError as plain_error:
        first_error = plain_error
    except (ValueError, MemoryError, RecursionError) as exc:
        raise CellSyntaxError(f"cannot parse: {exc}", None) from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # IPython warns on odd line endings; we report our own error
            python = _transformer_manager()().transform_cell(source)
    except Exception:  # IPython raises assorted errors on broken input
        raise CellSyntaxError(first_error.msg, first_error.lineno) from None
    try:
        return python, ast.parse(python), True
    except SyntaxError:
        raise CellSyntaxError(first_error.msg, first_error.lineno) from None
    except (ValueError, MemoryError, RecursionError) as exc:
        raise CellSyntaxError(f"cannot parse: {exc}", None) from None


def analyze_cell(source: str, shadowed=frozenset()) -> CellCode:
    """Analyse one code cell (``shadowed``: names bound above it). Raises :class:`CellSyntaxError`."""
    python, tree, transformed = to_python(source, shadowed)
    try:
        walker = _ModuleWalker(python)
        walker.run(tree)
    except RecursionError:
        raise CellSyntaxError("code nested too deeply to analyse", None) from None
    seeds = draws = False
    strings = set()
    for n in ast.walk(tree):  # one pass for the calls and strings (three walks cost a 1,000-cell notebook 0.2 s)
        if isinstance(n, ast.Call):
            seeds = seeds or bool(SEED_CALL_RE.search(_dotted(n.func) or ""))
            draws = draws or _may_draw(n)
        elif isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value.isidentifier():
            strings.add(n.value)
    return CellCode(
        python=python,
        events=tuple(walker.events),
        statements=tuple(walker.statements),
        summaries=walker.summaries,
        transformed=transformed,
        automagic=automagic_name(source, shadowed),
        seeds=seeds,
        draws=draws,
        strings=frozenset(strings),
        sets_output=bool(tree.body) and _sets_output(tree.body[-1]),
    )


def _may_draw(call: ast.Call) -> bool:
    """Whether a call may draw from the global random generators (random, numpy.random, or a library drawing
    from them, such as scikit-learn without a random_state): anything but Python's builtins, display and
    printing, and methods known only to read (``df.sample`` draws)."""
    callee = _dotted(call.func) or ""
    if callee in BUILTIN_NAMES or READ_ONLY_CALL_RE.match(callee):
        return False
    if isinstance(call.func, ast.Attribute) and call.func.attr in READ_ONLY_METHODS and call.func.attr not in ("sample",):
        return False
    return not callee.endswith((".run_line_magic", ".run_cell_magic"))


def _imported(stmt: ast.stmt) -> tuple:
    """The top-level modules ``import a.b`` / ``from a.b import c`` import (a relative import: none)."""
    if isinstance(stmt, ast.Import):
        return tuple(sorted({alias.name.split(".")[0] for alias in stmt.names}))
    if isinstance(stmt, ast.ImportFrom) and not stmt.level and stmt.module:
        return (stmt.module.split(".")[0],)
    return ()


def _sets_output(stmt: ast.stmt) -> bool:
    """A last statement whose value IPython's display hook keeps as ``_`` (not a print or a magic)."""
    if not isinstance(stmt, ast.Expr):
        return False
    call = stmt.value
    if isinstance(call, ast.Call):
        name = _dotted(call.func) or ""
        if name in ("print", "display") or name.endswith((".run_line_magic", ".run_cell_magic", ".system", ".getoutput")):
            return False
    return True


def is_config_statement(stmt: ast.stmt) -> bool:
    """A statement that configures the process or a library (see CONFIG_CALL_RE, CONFIG_TARGET_RE)."""
    if isinstance(stmt, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)):
        targets = stmt.targets if isinstance(stmt, (ast.Assign, ast.Delete)) else [stmt.target]
        for t in targets:
            while isinstance(t, ast.Subscript):
                t = t.value
            if CONFIG_TARGET_RE.match(_dotted(t) or ""):
                return True
        return False
    if not (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)):
        return False
    call = stmt.value
    name = _dotted(call.func) or ""
    if CONFIG_CALL_RE.match(name):
        return True
    func = call.func  # logging.getLogger(...).setLevel(...)
    if isinstance(func, ast.Attribute) and func.attr == "setLevel" and isinstance(func.value, ast.Call):
        return (_dotted(func.value.func) or "") == "logging.getLogger"
    if name.endswith(".run_line_magic") and call.args and isinstance(call.args[0], ast.Constant):
        return call.args[0].value in CONFIG_MAGICS
    return False


def _dotted(node: ast.AST) -> str | None:
    """``np.random.seed`` for the expression ``np.random.seed``; None for anything but names and attributes."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([node.id] + parts[::-1])


# --------------------------------------------------------------------------- scopes


def _root_name(node: ast.AST) -> str | None:
    """``df`` for ``df``, ``df["x"]``, ``df.loc[0, "x"]``, ``model.steps[0].fit``."""
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Starred)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _method_call(call: ast.Call) -> tuple[str | None, str | None]:
    """(root name, method name) for ``root.a.method(...)``."""
    if isinstance(call.func, ast.Attribute):
        return _root_name(call.func.value), call.func.attr
    return None, None


def _has_inplace(call: ast.Call) -> bool:
    return any(
        kw.arg == "inplace" and isinstance(kw.value, ast.Constant) and kw.value.value is True
        for kw in call.keywords
    )


QUERY_NAME_RE = re.compile(r"@([A-Za-z_]\w*)")


def dynamic_names(call: ast.Call, in_function: bool = False) -> tuple[set, bool]:
    """(names read, reads others it spells at run time) of a call that reads names from a string: ``eval('x')``
    and ``exec('...')`` of a literal read its names, ``df.query('a > @limit')`` and ``df.eval`` the ``@`` ones;
    ``eval(text)`` of a string built at run time, ``globals()``, and at the top level ``locals()`` and ``vars()``
    read any."""
    callee = _dotted(call.func) or ""
    first = call.args[0] if call.args else next((k.value for k in call.keywords if k.arg in ("source", "expr")), None)
    literal = first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else None
    if callee in ("eval", "exec", "builtins.eval", "builtins.exec"):
        if literal is None:
            return set(), True
        try:
            tree = ast.parse(literal, mode="exec")
        except (SyntaxError, ValueError):
            return set(), True
        return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}, False
    if callee == "globals" or (not in_function and (callee == "locals" or (callee == "vars" and not call.args))):
        return set(), True
    if isinstance(call.func, ast.Attribute) and call.func.attr in ("query", "eval") and first is not None:
        if literal is None:
            return set(), True
        return set(QUERY_NAME_RE.findall(literal)), False
    return set(), False


def _immutable_literal(node: ast.AST) -> bool:
    """A literal whose value no call can change: a number, string, bytes, bool, None, or a tuple of those."""
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        return _immutable_literal(node.operand)
    if isinstance(node, ast.Tuple):
        return all(_immutable_literal(e) for e in node.elts)
    return False


def _bound_names(target: ast.AST) -> list[str]:
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, (ast.Tuple, ast.List)):
        return [n for elt in target.elts for n in _bound_names(elt)]
    if isinstance(target, ast.Starred):
        return _bound_names(target.value)
    return []


class _ScopeInfo:
    """Free names of a nested scope (function, lambda, class, comprehension)."""

    def __init__(self) -> None:
        self.reads: set[str] = set()
        self.writes: set[str] = set()  # globals assigned via `global` or mutated in place
        self.changes_args: set = set()  # a function's parameters (position and name) it changes in place
        self.may_writes: set[str] = set()  # globals a call it makes may change
        self.dynamic = False  # eval/exec of a string it builds, globals(), locals(), vars()

    def summary(self) -> "CallSummary":
        return CallSummary(frozenset(self.reads), frozenset(self.writes), frozenset(self.changes_args),
                           frozenset(self.may_writes), self.dynamic)


def scope_free_names(node: ast.AST) -> _ScopeInfo:
    """Globals a nested scope reads or writes, following Python's scoping rules."""
    info = _ScopeInfo()
    local: set[str] = set()
    declared_global: set[str] = set()
    declared_nonlocal: set[str] = set()
    loads: set[str] = set()
    stores: set[str] = set()
    mutated: set[str] = set()
    maybe: set[str] = set()  # objects of a method call whose effect is not known
    passed: set[tuple[str, str]] = set()  # (callee's root, name) passed to a call
    nested: list[_ScopeInfo] = []

    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
        args = node.args
        for a in args.posonlyargs + args.args + args.kwonlyargs + [args.vararg, args.kwarg]:
            if a is not None:
                local.add(a.arg)
        body = node.body if isinstance(node.body, list) else [node.body]
    elif isinstance(node, ast.ClassDef):
        body = node.body
    else:  # comprehension
        body = []
        for gen in node.generators:
            local.update(_bound_names(gen.target))
        elts = [node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]
        body = [ast.Expr(e) for e in elts]
        for i, gen in enumerate(node.generators):
            # the first iterable is evaluated in the enclosing scope; either way it is a read
            body.append(ast.Expr(gen.iter))
            body.extend(ast.Expr(c) for c in gen.ifs)

    def visit(n: ast.AST, top: bool = False) -> None:
        if not top and isinstance(n, SCOPES):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                stores.add(n.name)
                for d in n.decorator_list:
                    visit(d)
                if not isinstance(n, ast.ClassDef):
                    for d in n.args.defaults + [d for d in n.args.kw_defaults if d is not None]:
                        visit(d)
                else:
                    for b in n.bases + [k.value for k in n.keywords]:
                        visit(b)
            nested.append(scope_free_names(n))
            return
        if isinstance(n, ast.Global):
            declared_global.update(n.names)
        elif isinstance(n, ast.Nonlocal):
            declared_nonlocal.update(n.names)
        elif isinstance(n, ast.Name):
            (loads if isinstance(n.ctx, ast.Load) else stores).add(n.id)
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            for alias in n.names:
                if alias.name != "*":
                    stores.add((alias.asname or alias.name).split(".")[0])
        elif isinstance(n, ast.ExceptHandler) and n.name:
            stores.add(n.name)
        elif isinstance(n, (ast.MatchAs, ast.MatchStar)) and n.name:
            stores.add(n.name)
        elif isinstance(n, ast.MatchMapping) and n.rest:
            stores.add(n.rest)
        elif isinstance(n, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)):
            targets = n.targets if isinstance(n, (ast.Assign, ast.Delete)) else [n.target]
            for t in targets:
                for sub in ast.walk(t):
                    if isinstance(sub, (ast.Subscript, ast.Attribute)) and isinstance(sub.ctx, (ast.Store, ast.Del)):
                        root = _root_name(sub)
                        if root:
                            mutated.add(root)
        if isinstance(n, ast.Call):
            root, method = _method_call(n)
            if root and (method in MUTATING_METHODS or _has_inplace(n)):
                mutated.add(root)
            elif root and method not in READ_ONLY_METHODS and not method.startswith("to_"):
                maybe.add(root)
            callee = _dotted(n.func)
            if callee and not READ_ONLY_CALL_RE.match(callee):
                passed.update((callee.split(".")[0], r) for a in n.args + [k.value for k in n.keywords] if (r := _root_name(a)))
            literal, dynamic = dynamic_names(n, in_function=True)
            loads.update(literal)
            info.dynamic = info.dynamic or dynamic
        for child in ast.iter_child_nodes(n):
            visit(child)

    for stmt in body:
        visit(stmt, top=False)

    local |= stores
    local -= declared_global | declared_nonlocal
    if isinstance(node, ast.ClassDef):
        # class-body names are not visible to methods: nested scopes skip them
        info.reads = {n for n in loads if n not in local and n not in declared_nonlocal}
        for sub in nested:
            info.reads |= sub.reads
            info.writes |= sub.writes
            info.may_writes |= sub.may_writes
            info.dynamic = info.dynamic or sub.dynamic
    else:
        info.reads = {n for n in loads if n not in local and n not in declared_nonlocal}
        for sub in nested:
            info.reads |= {n for n in sub.reads if n not in local}
            info.writes |= {n for n in sub.writes if n not in local}
            info.may_writes |= {n for n in sub.may_writes if n not in local}
            info.dynamic = info.dynamic or sub.dynamic
    info.writes |= {n for n in stores if n in declared_global}
    info.writes |= {n for n in mutated if n not in local and n not in declared_nonlocal}
    info.reads |= {n for n in mutated | maybe if n not in local and n not in declared_nonlocal}
    info.may_writes |= {n for n in maybe if n not in local and n not in declared_nonlocal}
    info.may_writes -= info.writes
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
        # passed to a function or module function (not to a method of a local value: lst.append(x))
        changed = mutated | maybe | {name for callee, name in passed if callee not in local and callee not in stores}
        positional = [a.arg for a in node.args.posonlyargs + node.args.args]
        for i, name in enumerate(positional):
            if name in changed:
                info.changes_args |= {i, name}
        info.changes_args |= {a.arg for a in node.args.kwonlyargs if a.arg in changed}
    return info


# --------------------------------------------------------------------------- module level


class _ModuleWalker(ast.NodeVisitor):
    """Walks a cell's global scope in execution order, emitting events."""

    def __init__(self, python: str) -> None:
        self.lines = python.splitlines()
        self.events: list[Event] = []
        self.statements: list[Statement] = []
        self.summaries: dict[str, CallSummary] = {}
        self.stmt = 0

    def run(self, tree: ast.Module) -> None:
        for i, stmt in enumerate(tree.body):
            self.stmt = i
            self.visit(stmt)
            decorators = getattr(stmt, "decorator_list", [])
            start = min([stmt.lineno] + [d.lineno for d in decorators])
            end = stmt.end_lineno or stmt.lineno
            self.statements.append(
                Statement(i, start, end, "\n".join(self.lines[start - 1 : end]), is_config_statement(stmt), _imported(stmt))
            )

    # events
    def _emit(self, op: str, name: str, node: ast.AST, kind: str | None = None) -> None:
        self.events.append(Event(op, name, getattr(node, "lineno", 0) or 0, kind, self.stmt))

    def _bind_target(self, target: ast.AST, kind: str = "data") -> None:
        if isinstance(target, ast.Name):
            self._emit("bind", target.id, target, kind)
        elif isinstance(target, (ast.Tuple, ast.List)):
            for elt in target.elts:
                self._bind_target(elt, kind)
        elif isinstance(target, ast.Starred):
            self._bind_target(target.value, kind)
        elif isinstance(target, (ast.Subscript, ast.Attribute)):
            # df["x"] = ...: reads df and the index, then changes df in place
            self.visit(target.value)
            if isinstance(target, ast.Subscript):
                self.visit(target.slice)
            root = _root_name(target)
            if root:
                self._emit("mutate", root, target, "store")  # an item or attribute assigned: Counter.count += 1

    def _visit_scope_now(self, node: ast.AST) -> _ScopeInfo:
        info = scope_free_names(node)
        for name in sorted(info.reads):
            self._emit("read", name, node)
        for name in sorted(info.writes):
            self._emit("mutate", name, node)
        return info

    # names
    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            self._emit("read", node.id, node)
        elif isinstance(node.ctx, ast.Store):
            self._emit("bind", node.id, node, "data")
        else:
            self._emit("delete", node.id, node)

    # statements, in evaluation order
    def visit_Assign(self, node: ast.Assign) -> None:
        self.visit(node.value)
        kind = "function" if isinstance(node.value, ast.Lambda) else "data"
        for target in node.targets:
            if isinstance(target, ast.Name) and _immutable_literal(node.value):
                self.events.append(Event("bind", target.id, target.lineno, "data", self.stmt, const=True))
                continue
            self._bind_target(target, kind)
        if kind == "function":
            info = scope_free_names(node.value)
            for target in node.targets:
                for name in _bound_names(target):
                    self.summaries[name] = info.summary()

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        if isinstance(node.target, ast.Name):
            self._emit("read", node.target.id, node.target)
            self.visit(node.value)
            self._emit("bind", node.target.id, node.target, "data")
        else:
            self.visit(node.value)
            self._bind_target(node.target)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self.visit(node.annotation)
        if node.value is not None:
            self.visit(node.value)
            self._bind_target(node.target)

    def visit_Delete(self, node: ast.Delete) -> None:
        for target in node.targets:
            if isinstance(target, ast.Name):
                self._emit("delete", target.id, target)
            elif isinstance(target, (ast.Tuple, ast.List)):
                for elt in target.elts:
                    self.visit_Delete(ast.Delete(targets=[elt]))
            else:
                self._bind_target(target)

    def visit_For(self, node: ast.For) -> None:
        self.visit(node.iter)
        self._bind_target(node.target)
        for stmt in node.body + node.orelse:
            self.visit(stmt)

    visit_AsyncFor = visit_For

    def visit_With(self, node: ast.With) -> None:
        for item in node.items:
            self.visit(item.context_expr)
            if item.optional_vars is not None:
                self._bind_target(item.optional_vars)
        for stmt in node.body:
            self.visit(stmt)

    visit_AsyncWith = visit_With

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.type is not None:
            self.visit(node.type)
        if node.name:
            self._emit("bind", node.name, node, "data")
        for stmt in node.body:
            self.visit(stmt)
        if node.name:
            self._emit("delete", node.name, node)  # Python unbinds it after the handler

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.visit(node.value)
        self._bind_target(node.target)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._emit("bind", (alias.asname or alias.name).split(".")[0], node, "module")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        for alias in node.names:
            if alias.name == "*":
                self._emit("star", "*", node)
            else:
                self._emit("bind", alias.asname or alias.name, node, "module")

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        for d in node.decorator_list:
            self.visit(d)
        for d in node.args.defaults + [d for d in node.args.kw_defaults if d is not None]:
            self.visit(d)
        info = scope_free_names(node)
        self.summaries[node.name] = info.summary()
        self._emit("bind", node.name, node, "function")

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for d in node.decorator_list:
            self.visit(d)
        for b in node.bases + [k.value for k in node.keywords]:
            self.visit(b)
        body = copy.copy(node)
        body.bases, body.keywords, body.decorator_list = [], [], []
        body.body = [s for s in node.body if not isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef))]
        now = scope_free_names(body)  # the class body runs now
        for name in sorted(now.reads):
            self._emit("read", name, node)
        info = scope_free_names(node)
        self.summaries[node.name] = info.summary()
        self._emit("bind", node.name, node, "class")

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self._visit_scope_now(node)

    def _visit_comprehension(self, node: ast.AST) -> None:
        self._visit_scope_now(node)

    visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = _visit_comprehension

    def visit_MatchAs(self, node: ast.MatchAs) -> None:
        if node.pattern is not None:
            self.visit(node.pattern)
        if node.name:
            self._emit("bind", node.name, node, "data")

    def visit_MatchStar(self, node: ast.MatchStar) -> None:
        if node.name:
            self._emit("bind", node.name, node, "data")

    def visit_MatchMapping(self, node: ast.MatchMapping) -> None:
        self.generic_visit(node)
        if node.rest:
            self._emit("bind", node.rest, node, "data")

    def visit_Call(self, node: ast.Call) -> None:
        """Any call, a statement or inside an expression, may change its object and what is passed to it:
        ``df.pop('c')``, ``x = rng.random()``, ``next(it)``, ``random.shuffle(lst)``. A method known to change
        its object (``fit``, ``append``, ``inplace=True``) does; one known to leave it alone (``head``,
        ``predict``) does not; any other *may* — the steps that may change a value other steps read without
        it check at run time that they did not (see nb2flow.dataflow)."""
        magic = self._magic_code(node)
        if magic is not None:
            return
        self.generic_visit(node)
        literal, dynamic = dynamic_names(node)
        for name in sorted(literal):
            self._emit("read", name, node)
        if dynamic:
            self.events.append(Event("dynamic", _dotted(node.func) or "eval", getattr(node, "lineno", 0) or 0, None, self.stmt))
        root, method = _method_call(node)
        if root and (method in MUTATING_METHODS or _has_inplace(node)):
            self._emit("mutate", root, node)
        elif root and method not in READ_ONLY_METHODS and not method.startswith("to_"):
            self._emit("mutate", root, node, "may")
        callee = _dotted(node.func)
        if callee and not READ_ONLY_CALL_RE.match(callee) and not callee.endswith((".run_line_magic", ".run_cell_magic")):
            passed = [(i, a.value if isinstance(a, ast.Starred) else a) for i, a in enumerate(node.args)]
            passed += [(kw.arg, kw.value) for kw in node.keywords if kw.arg]
            for position, arg in passed:
                name = _root_name(arg)
                if name:
                    self.events.append(Event("pass", name, getattr(arg, "lineno", 0) or 0, None, self.stmt, callee, position))

    def _magic_code(self, node: ast.Call) -> str | None:
        """Analyse the Python inside ``%time x = f()`` / ``%%capture out`` cells in place."""
        func = node.func
        if not (
            isinstance(func, ast.Attribute)
            and func.attr in ("run_line_magic", "run_cell_magic")
            and isinstance(func.value, ast.Call)
            and isinstance(func.value.func, ast.Name)
            and func.value.func.id == "get_ipython"
        ):
            return None
        self._emit("read", "get_ipython", node)
        args = [a.value if isinstance(a, ast.Constant) and isinstance(a.value, str) else None for a in node.args]
        if not args or args[0] not in CODE_MAGICS:
            if args and args[0] in ("run", "load"):
                self._emit("star", "*", node)  # %run defines names nb2flow cannot see
            return ""
        code = args[-1] if func.attr == "run_cell_magic" and len(args) == 3 else (args[1] if len(args) > 1 else None)
        if func.attr == "run_cell_magic" and args[0] == "capture" and len(args) == 3 and args[1]:
            words = [w for w in args[1].split() if not w.startswith("-")]
            if words and words[0].isidentifier():
                self._emit("bind", words[0], node, "data")
        if code:
            try:
                inner = ast.parse(code)
            except SyntaxError:
                return ""
            for stmt in inner.body:
                ast.increment_lineno(stmt, node.lineno - 1)
                self.visit(stmt)
        return code or ""
