"""How values travel between steps: pickle protocol 5 (cloudpickle where plain pickle fails),
plain numpy arrays as ``.npy``; each file written to a temporary name, then renamed."""

from __future__ import annotations

import io
import os
import pickle
import types

from .auth import verified_bytes, write_signature
from .files import check_inside, make_private_dirs, unlink


class UntransportableValue(Exception):
    """A value a later step reads cannot be saved (open file, connection, generator, lock ...)."""


_KNOWN_UNTRANSPORTABLE = (
    ("_io.", "an open file"),
    ("io.", "an open file or stream"),
    ("socket.", "a network socket"),
    ("sqlite3.", "a database connection"),
    ("_thread.", "a thread lock"),
    ("threading.", "a thread or lock"),
    ("multiprocessing.", "a process or pool"),
    ("asyncio.", "an event-loop object"),
    ("psycopg", "a database connection"),
    ("pymysql.", "a database connection"),
    ("sqlalchemy.engine", "a database engine or connection"),
)


def _untransportable_kind(value) -> str | None:
    if isinstance(value, (types.GeneratorType, types.AsyncGeneratorType)):
        return "a generator"
    if isinstance(value, types.CoroutineType):
        return "a coroutine"
    if isinstance(value, types.FrameType):
        return "a stack frame"
    if isinstance(value, io.IOBase):
        return "an open file or stream"
    qualname = f"{type(value).__module__}.{type(value).__qualname__}"
    for prefix, kind in _KNOWN_UNTRANSPORTABLE:
        if qualname.startswith(prefix) and not isinstance(value, (type, types.ModuleType)):
            if prefix in ("io.", "_io.") and not hasattr(value, "read") and not hasattr(value, "write"):
                continue
            return kind
    return None


def _is_plain_ndarray(value) -> bool:
    mod = type(value).__module__
    if mod != "numpy":
        return False
    import numpy as np

    return type(value) is np.ndarray and value.dtype != object and not value.dtype.hasobject


def dump_value(value, path_base: str) -> str:
    """Save one value next to ``path_base`` (``.npy`` for plain arrays, else ``.pkl``); return the file."""
    if _is_plain_ndarray(value):
        import numpy as np

        final = path_base + ".npy"
        tmp = f"{final}.tmp-{os.getpid()}"
        try:
            with _private_file(tmp) as fh:
                np.save(fh, value, allow_pickle=False)
            write_signature(tmp, name=os.path.basename(final))
            os.replace(tmp, final)
        except BaseException:
            unlink(tmp)
            raise
        return final
    final = path_base + ".pkl"
    tmp = f"{final}.tmp-{os.getpid()}"
    try:
        with _private_file(tmp) as fh:
            try:
                if _defined_in_notebook(value):  # plain pickle would store only its name, not the changed class
                    raise pickle.PicklingError("a class or function of the notebook travels by value")
                try:
                    pickle.dump(value, fh, protocol=5)
                except RecursionError:  # nested deeper than the default limit: as deep as one process holds it
                    fh.seek(0)
                    fh.truncate()
                    _with_deep_stack(lambda: pickle.dump(value, fh, protocol=5))
            except (pickle.PicklingError, TypeError, AttributeError) as plain_error:
                fh.seek(0)
                fh.truncate()
                try:
                    import cloudpickle  # only where plain pickle cannot work
                except ImportError:
                    raise plain_error from None
                cloudpickle.dump(value, fh, protocol=5)
        write_signature(tmp, name=os.path.basename(final))
        os.replace(tmp, final)
    except BaseException:
        unlink(tmp)
        raise
    return final


DEEP_STACK = 1 << 30  # bytes of stack for pickling a deeply nested value (reserved address space, used as needed)
DEEP_RECURSION = 2_000_000


def _with_deep_stack(fn):
    """``fn()`` in a thread with a large stack and recursion limit: a value nested deeper than Python's default
    limit (a long linked list, a deep tree) is saved as the process that built it holds it, not refused."""
    import sys
    import threading

    outcome: dict = {}

    def run():
        old = sys.getrecursionlimit()
        sys.setrecursionlimit(max(old, DEEP_RECURSION))
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - raised again in the caller's thread
            outcome["error"] = exc
        finally:
            sys.setrecursionlimit(old)

    size = threading.stack_size()
    threading.stack_size(DEEP_STACK)
    try:
        worker = threading.Thread(target=run, name="nb2flow-deep-pickle")
        worker.start()
    finally:
        threading.stack_size(size)
    worker.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def _private_file(path: str):
    """A new file for writing, owner-only (0600) whatever the umask."""
    return os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600), "w+b")


def _defined_in_notebook(value) -> bool:
    """A class or function the notebook itself defined (its module is the kernel's ``__main__``)."""
    return isinstance(value, (type, types.FunctionType)) and getattr(value, "__module__", None) == "__main__"


def load_value(path_base: str):
    """A saved value, once its signature checks (the bytes loaded are the bytes checked)."""
    if os.path.exists(path_base + ".npy"):
        import numpy as np

        return np.load(io.BytesIO(verified_bytes(path_base + ".npy")), allow_pickle=False)
    return pickle.loads(verified_bytes(path_base + ".pkl"))


def load_values(namespace: dict, entries: list, values_root: str) -> None:
    """Load each (name, providing step task, providing step name) into ``namespace``."""
    for name, task, step, *optional in entries:
        base = os.path.join(values_root, task, name)
        if not (os.path.exists(base + ".npy") or os.path.exists(base + ".pkl")):
            if optional:
                continue  # given to a step that reads names at run time; it could not travel
            raise FileNotFoundError(
                f"nb2flow: `{name}` from step {step} is missing ({base}.pkl); did step {step} finish in this run?"
            )
        namespace[name] = load_value(base)


def save_random_state(path: str) -> None:
    """The state of ``random`` and, when imported, ``numpy.random``'s global generator."""
    import random
    import sys

    from .files import write_atomic

    states = {"random": random.getstate()}
    if "numpy" in sys.modules:
        states["numpy"] = sys.modules["numpy"].random.get_state()
    if "torch" in sys.modules:
        states["torch"] = sys.modules["torch"].get_rng_state()
    write_atomic(path, pickle.dumps(states, protocol=5), signed=True)


def load_random_state(path: str) -> None:
    """Continue the global generators where an earlier step left them."""
    import random

    states = pickle.loads(verified_bytes(path))
    random.setstate(states["random"])
    if "numpy" in states:
        import numpy

        numpy.random.set_state(states["numpy"])
    if "torch" in states:
        import torch

        torch.set_rng_state(states["torch"])


def save_values(namespace: dict, names: list, out_dir: str, step: str, consumers: dict, optional=()) -> None:
    """Save the values later steps read; a value that cannot travel fails with the fix."""
    check_inside(out_dir, os.path.dirname(os.path.dirname(out_dir)))
    make_private_dirs(out_dir)
    check_inside(out_dir, os.path.dirname(os.path.dirname(out_dir)))
    for name in names:
        readers = ", ".join(consumers.get(name, [])) or "a later step"
        first_reader = (consumers.get(name) or ["the consuming step"])[0]
        if name not in namespace:
            continue  # unbound on this path (e.g. a branch not taken); the reader will say so
        value = namespace[name]
        type_name = f"{type(value).__module__}.{type(value).__qualname__}"
        kind = _untransportable_kind(value)
        fix = f"re-create it in step {first_reader}, or move the cell that creates it to a setup cell"
        if name in optional:  # only for steps that read names at run time: what cannot travel stays here
            try:
                if not kind:
                    dump_value(value, os.path.join(out_dir, name))
            except Exception:  # noqa: BLE001 - any value that cannot be written is left out
                pass
            continue
        if kind:
            raise UntransportableValue(
                f"cannot pass `{name}` ({kind}, {type_name}) from step {step} to step {readers}: {fix}"
            ) from None
        try:
            dump_value(value, os.path.join(out_dir, name))
        except (pickle.PicklingError, TypeError, AttributeError, ValueError) as exc:
            raise UntransportableValue(
                f"cannot pass `{name}` ({type_name}) from step {step} to step {readers}: it cannot be pickled ({exc}); {fix}"
            ) from None
        except (RecursionError, MemoryError) as exc:
            why = "it is nested too deeply to pickle" if isinstance(exc, RecursionError) else "pickling it ran out of memory"
            raise UntransportableValue(
                f"cannot pass `{name}` ({type_name}) from step {step} to step {readers}: {why}; {fix}") from None


class ValueChanged(Exception):
    """A step changed a value that a step which may run before it read as it was: top to bottom would differ."""


def value_fingerprint(value) -> str | None:
    """A digest of the value's pickled state (None: it cannot be pickled, so no step reads it from another)."""
    import hashlib

    try:
        return hashlib.sha256(pickle.dumps(value, protocol=4)).hexdigest()
    except Exception:  # noqa: BLE001 - any failure to pickle means: cannot tell
        return None


def note_unchanged(namespace: dict, names: list, path: str) -> None:
    """Fingerprint, before the step's own cells, the values it must leave as they are."""
    from .files import write_json

    write_json(path, {name: value_fingerprint(namespace[name]) if name in namespace else None for name in names}, signed=True)


def check_unchanged(namespace: dict, unchanged: dict, path: str, step: str) -> None:
    """After the step's own cells: each value it had to leave as it was still has its fingerprint; else the step
    fails, naming the value, the cell that may have changed it and the steps that read it unchanged."""
    from .auth import verified_json

    before = verified_json(path)
    for name, where in unchanged.items():
        was = before.get(name)
        if was is None or name not in namespace or value_fingerprint(namespace[name]) == was:
            continue
        readers = where.get("readers") or []
        raise ValueChanged(
            f"step {step} changed `{name}` (cell {where.get('cell')} calls a method on it or passes it to a call), "
            f"but step {', '.join(readers)} may run before step {step} and read `{name}` without that change; "
            f"top to bottom it would see the change: add {where.get('tag', 'after')}:{step} to step {readers[0] if readers else '?'}")
