"""Options of the refinement stage a user would change; importable without torch.

The solver's measured weights and schedules are constants in `frozen_depth.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class RefineConfig:
    """Options of the refinement stage. Defaults measured with scripts/bench_refine.py."""

    input: Literal["depth", "disparity"] = "depth"
    """What a files prior holds when it is refined without alignment (aligned priors are depth)."""
    grid: int = 5
    """Local grid size (G x G scale multipliers and shifts per image)."""
    iterations: int = 200
    """Steps of the local stage."""
    refine_poses: bool = False
    """Also correct each view's pose (rotation and translation) in the local stage."""
    refine_focal: bool = False
    """Also correct each view's focal length (one factor on fx and fy) in the local stage."""
