"""Cameras for training views SfM did not register, from the prior's poses (`stage.py`)."""
