"""SfM: cameras and sparse points. `stage.py` writes and reads its outputs; `mapping.py` runs pycolmap; `config.py`
holds its options."""
