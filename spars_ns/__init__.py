"""spars-ns: sparse-view Gaussian splatting from a few uncalibrated photos, for nerfstudio."""

# pycolmap's wheel links zlib statically and exports its symbols: a system libz.so.1 loaded after
# pycolmap (by Python's zlib module, or by OpenCV's libraries) binds its internal calls to
# pycolmap's copy, and the first compressed write (np.savez_compressed) corrupts the heap. Loaded
# first, libz.so.1 keeps its own functions.
import zlib  # noqa: F401

__version__ = "0.1.0"
