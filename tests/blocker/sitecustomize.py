"""Makes nb2flow and papermill unimportable, as in a notebook image where neither is installed.

Tests put this folder on PYTHONPATH for step processes (and the kernels they start).
"""

import sys


class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("nb2flow", "papermill"):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked for this test)", name=name)
        return None


sys.meta_path.insert(0, _Block())
