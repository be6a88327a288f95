"""Make the project importable from inside a Triton Python stub.

The stub runs isolated (it ignores PYTHONPATH), so each backend/model file finds the project root
from its own real location: build/backends/* and build/repos/* hold symlinks into this tree.
"""

from __future__ import annotations

import os
import sys


def add_project_root(file: str) -> str:
    here = os.path.realpath(file)
    root = here
    while root != os.path.dirname(root):
        root = os.path.dirname(root)
        if os.path.isfile(os.path.join(root, "model_repository", "models.yaml")):
            break
    else:
        raise RuntimeError(f"cannot find the project root above {here}")
    if root not in sys.path:
        sys.path.insert(0, root)
    return root
