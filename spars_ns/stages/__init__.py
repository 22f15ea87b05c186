"""The processing stages, one module each, in the order they run:
ingest -> sfm -> prior -> align -> refine -> export.

Each module owns its stage's inputs, outputs and file formats (`SceneFolder` holds the
paths); `stage.Stage` is the skeleton they share: fingerprint, skip when current, clear when
switched off, time, record. `spars_ns.process` only orders them. No module here imports
nerfstudio.
"""
