"""Signatures of the files nb2flow writes in a shared folder.

Every file a step loads or executes from the notebook's folder — step specs, step notebooks and scripts,
the bundle's pipeline and source, parameter files, saved values and random states — has a signature
file beside it (``<file>.sig``): an HMAC-SHA256 of its name and bytes under the user's key. Nothing is
loaded before its signature checks, so a file a neighbour planted or changed in a team folder (where every
user's pod is uid 1000 and file modes separate no one) is refused, never loaded.

The key is 32 random bytes made on first use in the user's own ``~/.config/nb2flow/key`` (0600). The step
runner takes it from ``NB2FLOW_KEY`` (set by nb2flow for a local run, from the run's Secret in a pod) and
removes it from its environment at once, so no kernel, shell command or ``%env`` of the user's code sees it;
a kernel's load and save cells read it from a private file only this process tree knows.
"""

from __future__ import annotations

import hashlib
import hmac
import os

KEY_ENV = "NB2FLOW_KEY"
KEY_FILE = os.path.join("~", ".config", "nb2flow", "key")
SIG_SUFFIX = ".sig"
_DOMAIN = b"nb2flow-file-v1\0"
_CHUNK = 1 << 20
_key: bytes | None = None


class Untrusted(Exception):
    """A file nb2flow was about to load is not one nb2flow wrote for this user."""

    def __init__(self, path: str, why: str) -> None:
        super().__init__(f"nb2flow: {path}: {why}; refusing to load it (in a shared folder, a file someone else "
                         f"planted or changed is never loaded)")
        self.path = path


def current_key() -> bytes | None:
    return _key


def set_key(key: bytes) -> None:
    global _key
    _key = key


def take_key() -> bytes | None:
    """The user's key: from ``NB2FLOW_KEY`` (removed from the environment: children do not inherit it), else
    the user's key file when this home has one. None when neither is there."""
    global _key
    text = os.environ.pop(KEY_ENV, None)
    if text:
        try:
            _key = bytes.fromhex(text.strip())
        except ValueError:
            raise SystemExit(f"nb2flow: {KEY_ENV} is not the hexadecimal key nb2flow makes") from None
    if _key is None:
        try:
            with open(os.path.expanduser(KEY_FILE), encoding="ascii") as fh:
                _key = bytes.fromhex(fh.read().strip())
        except (OSError, ValueError):
            pass
    return _key


def use_key_file(path: str) -> None:
    """A kernel's load or save cell: read the key from the private file the step runner made (no-op when this
    process has it already, as a forked kernel does)."""
    global _key
    if _key is None:
        with open(path, encoding="ascii") as fh:
            _key = bytes.fromhex(fh.read().strip())


def private_key_file() -> tuple[str, str]:
    """(folder, file) holding the key for this step's kernel: a fresh 0700 folder under the local temporary
    folder (the pod's own, never the shared volume), the file 0600."""
    import tempfile

    key = _require_key("(a kernel's key file)")
    folder = tempfile.mkdtemp(prefix="nb2flow-key-")
    path = os.path.join(folder, "key")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(key.hex())
    return folder, path


def _require_key(path: str) -> bytes:
    if _key is None and take_key() is None:
        raise Untrusted(path, f"no key to check it with ({KEY_ENV} unset, and no {KEY_FILE} in this home)")
    return _key


def _mac(path: str, chunks) -> str:
    h = hmac.new(_require_key(path), _DOMAIN + os.path.basename(path).encode("utf-8") + b"\0", hashlib.sha256)
    for chunk in chunks:
        h.update(chunk)
    return h.hexdigest()


def _file_chunks(path: str):
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(_CHUNK)
            if not chunk:
                return
            yield chunk


def signature_of(path: str, data: bytes | None = None, *, name: str | None = None) -> str:
    """The signature of ``data`` (or of the file's bytes) under the name ``name`` (default: the file's)."""
    where = os.path.join(os.path.dirname(path), name) if name else path
    return _mac(where, [data] if data is not None else _file_chunks(path))


def write_signature(path: str, data: bytes | None = None, *, name: str | None = None) -> None:
    """Write ``<path>.sig`` for the bytes ``data`` (default: the file's bytes); ``name``: the file's final name
    when ``path`` is a temporary one."""
    sig = signature_of(path, data, name=name)
    final = os.path.join(os.path.dirname(path), name) if name else path
    tmp = f"{final}{SIG_SUFFIX}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(sig)
    os.replace(tmp, final + SIG_SUFFIX)


def verified_bytes(path: str) -> bytes:
    """The file's bytes, read once and checked against its signature: what is returned is what was checked."""
    with open(path, "rb") as fh:
        data = fh.read()
    try:
        with open(path + SIG_SUFFIX, encoding="ascii") as fh:
            expected = fh.read().strip()
    except OSError:
        raise Untrusted(path, "it has no signature beside it: nb2flow did not write it") from None
    except ValueError:
        raise Untrusted(path, "its signature is not one nb2flow writes") from None
    if not hmac.compare_digest(expected, signature_of(path, data)):
        raise Untrusted(path, "its signature was not made with your key: someone else wrote or changed it")
    return data


def verified_text(path: str) -> str:
    return verified_bytes(path).decode("utf-8")


def verified_json(path: str):
    import json

    return json.loads(verified_bytes(path))
