"""The user's key, which signs every file nb2flow writes for a step to load (see :mod:`nb2flow.runner.auth`).

Made on first use in the user's own config folder, ``~/.config/nb2flow/key`` (the folder 0700, the file
0600): on JupyterHub that is the user's home volume, which no neighbour mounts. ``NB2FLOW_KEY`` (hex)
overrides it. Local runs hand it to the step runner in the environment, which the runner clears at once;
Argo runs carry it in the run's Secret.
"""

from __future__ import annotations

import os
import secrets

from .runner import auth


def user_key() -> bytes:
    """The user's key (made now when there is none), and the runner's module set to use it in this process."""
    text = os.environ.get(auth.KEY_ENV)
    if text:
        try:
            key = bytes.fromhex(text.strip())
        except ValueError:
            from .errors import UsageError

            raise UsageError(f"{auth.KEY_ENV} is not a hexadecimal key", hint=f"unset it to use {auth.KEY_FILE}") from None
    else:
        key = _key_file()
    auth.set_key(key)
    return key


def _key_file() -> bytes:
    path = os.path.expanduser(auth.KEY_FILE)
    try:
        with open(path, encoding="ascii") as fh:
            return bytes.fromhex(fh.read().strip())
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as exc:
        from .errors import UsageError

        raise UsageError(f"{path}: cannot read nb2flow's key: {exc}", hint="remove it: a new one is made (runs signed with "
                         "the old one can then not be resumed)") from None
    from .runner.files import make_private_dirs

    make_private_dirs(os.path.dirname(path))
    key = secrets.token_bytes(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another nb2flow made it meanwhile
        return _key_file()
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(key.hex())
    return key
