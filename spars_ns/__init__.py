"""spars-ns: sparse-view Gaussian splatting from a few uncalibrated photos, for nerfstudio.

Import it before numpy and pycolmap: the two settings below only hold for libraries loaded after them
(it warns where pycolmap came first).
"""

import os
import sys
import warnings

# pycolmap's wheel links zlib statically and exports its symbols: a system libz.so.1 loaded after
# pycolmap (by Python's zlib module, or by OpenCV's libraries) binds its internal calls to
# pycolmap's copy, and the first compressed write (np.savez_compressed) corrupts the heap. Loaded
# first, libz.so.1 keeps its own functions.
import zlib  # noqa: F401
from pathlib import Path

__version__ = "0.1.0"

BLAS_KERNELS = "Haswell"


def pin_blas_kernels() -> None:
    """pycolmap carries its own OpenBLAS, which picks its kernels by the processor as it loads, and
    global mapping's sparse solvers sum in their order: the same photos gave other cameras on a
    processor with AVX-512 than on one without (a walk-around's 4 photos: 5.39 against 5.22 degrees;
    BENCHMARKS.md, "Other cameras on another processor"). OpenBLAS's Haswell kernels run on every x86
    processor with AVX2 and FMA: pinned, every such processor sums as the others do. A kernel the user
    chose stays. Where pycolmap is loaded already, its OpenBLAS has chosen: the choice is left as it is
    (for this process's children too) and a warning says how to pin it."""
    if "OPENBLAS_CORETYPE" in os.environ or not {"avx2", "fma"} <= set((cpu_info("flags") or "").split()):
        return
    if "pycolmap" in sys.modules:
        warnings.warn(
            "pycolmap was imported before spars_ns, so its OpenBLAS kept this processor's kernels: global "
            "mapping may give cameras that differ in the last digits, or by more on a fragile capture, from "
            f"another processor's. Import spars_ns first, or set OPENBLAS_CORETYPE={BLAS_KERNELS}.",
            RuntimeWarning,
            stacklevel=2,
        )
        return
    os.environ["OPENBLAS_CORETYPE"] = BLAS_KERNELS


def blas_kernels() -> str:
    """The OpenBLAS kernels pycolmap runs, for records that other machines' cameras are compared with."""
    return os.environ.get("OPENBLAS_CORETYPE", "the processor's choice")


def cpu_info(key: str) -> str | None:
    """The value of the first `key` line of Linux's /proc/cpuinfo ("flags", "model name"); None elsewhere."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    return next(
        (value.strip() for name, _, value in (line.partition(":") for line in lines) if name.strip() == key), None
    )


pin_blas_kernels()
