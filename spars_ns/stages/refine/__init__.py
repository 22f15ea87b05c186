"""Frozen-depth refinement of the aligned depth (`frozen_depth.py`), written as `refine/` and `depth/` (`stage.py`)."""
