"""spars-ns: sparse-view Gaussian splatting from a few uncalibrated photos, for nerfstudio."""

__version__ = "0.1.0"
