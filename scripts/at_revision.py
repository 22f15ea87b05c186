"""Run a script, or a module with -m, on the spars_ns package of another checkout:

    git worktree add /tmp/previous-main HEAD~1
    python scripts/at_revision.py /tmp/previous-main scripts/bench_cameras.py --output /tmp/before.json
    python scripts/at_revision.py /tmp/previous-main -m spars_ns.cli process --images ... --output ...

The editable install's import hook finds this checkout's package before anything on PYTHONPATH,
so PYTHONPATH alone would measure this checkout twice; the hook is taken out here first.
"""

from __future__ import annotations

import importlib
import runpy
import sys
from pathlib import Path

if __name__ == "__main__":
    root = Path(sys.argv[1]).resolve()
    # This checkout's package first, for the OpenBLAS kernels it pins (older ones did not): both sides of
    # a comparison then run the same kernels; then the other checkout's package in its place.
    importlib.import_module("spars_ns")
    del sys.modules["spars_ns"]
    sys.meta_path[:] = [finder for finder in sys.meta_path if "editable" not in getattr(finder, "__module__", "")]
    sys.path.insert(0, str(root))
    import spars_ns

    if not Path(spars_ns.__file__).resolve().is_relative_to(root):
        raise SystemExit(f"spars_ns came from {spars_ns.__file__}, not from {root}")
    if sys.argv[2] == "-m":
        sys.argv = [sys.argv[3], *sys.argv[4:]]
        runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
    else:
        sys.argv = sys.argv[2:]
        sys.path.insert(1, str(Path(sys.argv[0]).resolve().parent))  # the script's folder, as python puts it first
        runpy.run_path(sys.argv[0], run_name="__main__")
