"""Export: `transforms.json` and `points.ply`, the nerfstudio dataset (`stage.py`)."""
