"""Ingest: the photos copied into the scene (`images/`, `images.json`). `stage.py` writes them; `images.py` reads
photos."""
