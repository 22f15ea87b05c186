"""Surfaces from a reconstruction (`spars-ns mesh`): the depth of many views fused into a
truncated signed-distance volume (`tsdf.py`), its zero level set as a coloured mesh
(`mesh.py`), the views read from a processed scene or rendered from a trained run
(`sources.py`), and the distances that score a mesh against a synthetic scene's true
surfaces (`evaluate.py`, for the tests and `scripts/bench_mesh.py`).

Nothing here imports pycolmap, and nerfstudio only to load a trained run, so a GPU node
installed from `scripts/offline_wheels.sh` meshes a scene or a run.
"""
