"""Files a step writes: always to a temporary name in the same folder, then renamed."""

from __future__ import annotations

import json
import os


def write_atomic(path: str, data) -> None:
    """Write to a temporary name in the same folder, then rename over ``path``."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
        os.replace(tmp, path)
    except BaseException:
        unlink(tmp)
        raise


def write_json(path: str, data: dict, *, sort_keys: bool = True) -> None:
    """``sort_keys=False`` keeps the order the data has (a run record lists its steps in notebook order)."""
    write_atomic(path, json.dumps(data, indent=1, sort_keys=sort_keys, default=str))


def write_new(path: str, data) -> str:
    """Write a new file at ``path``, or at ``path`` with ``-2``, ``-3``... before its extension when a file
    is there already: never overwrites anything. Returns the path written."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    stem, ext = os.path.splitext(path)
    for n in range(1, 1000):
        candidate = path if n == 1 else f"{stem}-{n}{ext}"
        try:
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return candidate
    raise FileExistsError(path)


def unlink(path: str) -> None:
    """Remove a file if it is there."""
    try:
        os.unlink(path)
    except OSError:
        pass


def check_inside(path: str, root: str) -> str:
    """``path`` with symlinks resolved, refusing one that leads out of ``root`` (the run folder)."""
    real, real_root = os.path.realpath(path), os.path.realpath(root)
    if real != real_root and not real.startswith(real_root + os.sep):
        raise PermissionError(f"nb2flow: {path} leads out of the run folder (to {real}); refusing to write there")
    return path


def make_dir_inside(path: str, root: str) -> str:
    """Create ``path`` (inside ``root``), checking before and after that no symlink leads out."""
    check_inside(path, root)
    os.makedirs(path, exist_ok=True)
    return check_inside(path, root)


def remove_partial_files(*folders: str) -> None:
    """Temporary files a killed process left mid-write (nothing ever reads them)."""
    for folder in folders:
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            if ".tmp-" in name:
                unlink(os.path.join(folder, name))
