"""Measured constants tried at other values, for the benchmarks that measured them.

Processing exposes only what a user would change; the thresholds and weights the benchmarks
chose are module constants beside the code that reads them. `--set module.NAME=value` (a
Python literal) sets one for the run, e.g.

    python scripts/bench_align.py --set spars_ns.stages.align.similarity.INLIER_THRESHOLD=0.02
"""

from __future__ import annotations

import ast
import importlib


def apply(settings: list[str]) -> dict[str, object]:
    """Sets each `module.NAME=value`; returns what was set, by dotted name, for the report."""
    applied = {}
    for setting in settings:
        target, _, text = setting.partition("=")
        module_name, _, name = target.strip().rpartition(".")
        module = importlib.import_module(module_name)
        if not name.isupper() or not hasattr(module, name):
            raise SystemExit(f"--set {setting}: {module_name} has no constant {name}")
        value = ast.literal_eval(text.strip())
        setattr(module, name, value)
        applied[target.strip()] = value
    return applied
