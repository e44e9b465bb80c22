"""Files a step writes: always to a temporary name in the same folder, then renamed."""

from __future__ import annotations

import json
import os

from .auth import write_signature


def make_private_dirs(path: str) -> str:
    """``path`` and any missing folder on its way, each created owner-only (0700) whatever the umask."""
    path = os.path.abspath(path)
    missing = []
    while path and not os.path.isdir(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            continue
        os.chmod(folder, 0o700)
    return missing[0] if missing else path


def write_atomic(path: str, data, *, signed: bool = False) -> None:
    """Write to a temporary name in the same folder (owner-only, 0600), then rename over ``path``;
    ``signed``: with its signature beside it (see :mod:`auth`), for a file a step will load."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    folder = os.path.dirname(path) or "."
    make_private_dirs(folder)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp-{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
        if signed:
            write_signature(path, data)
        os.replace(tmp, path)
    except BaseException:
        unlink(tmp)
        raise


def write_json(path: str, data: dict, *, sort_keys: bool = True, signed: bool = False, compact: bool = False) -> None:
    """``sort_keys=False`` keeps the order the data has (a run record lists its steps in notebook order);
    ``compact``: no indentation (json's C encoder: files only nb2flow reads, written by the hundred)."""
    write_atomic(path, json.dumps(data, indent=None if compact else 1, sort_keys=sort_keys, default=str), signed=signed)


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
    """Create ``path`` (inside ``root``, owner-only), checking before and after that no symlink leads out."""
    check_inside(path, root)
    make_private_dirs(path)
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
