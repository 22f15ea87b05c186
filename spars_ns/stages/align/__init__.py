"""Alignment of the prior to the SfM frame: a Sim3 per image and per region (`similarity.py`, `regions.py`)."""
