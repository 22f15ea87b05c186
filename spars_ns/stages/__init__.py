"""The processing stages, one folder each, in the order they run:
ingest -> sfm -> prior -> cameras -> align -> refine -> export.

Each folder holds its stage class (`stage.py`), its options, its algorithms and its file
formats; a stage declares every file it writes and the others read them through it
(`SceneFolder` holds the paths). `base.Stage` is the skeleton they share: fingerprint, skip
when current, clear when switched off, time, record. `spars_ns.process` only orders them.
No module here imports nerfstudio; the stages' option modules import no pycolmap.
"""
