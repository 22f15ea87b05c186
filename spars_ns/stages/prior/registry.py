"""The dense priors a user can choose (`--prior NAME`), and their options, from one list."""

from __future__ import annotations

from dataclasses import field, make_dataclass
from typing import Literal

from spars_ns.stages.prior.backend import PriorBackend
from spars_ns.stages.prior.files import FilesPrior
from spars_ns.stages.prior.mast3r import Mast3rPrior
from spars_ns.stages.prior.stereo import StereoPrior

PRIORS: dict[str, type[PriorBackend]] = {backend.name: backend for backend in (FilesPrior, Mast3rPrior, StereoPrior)}

PriorName = Literal[("none", *PRIORS)]  # type: ignore[valid-type]  # the --prior choices

# `--prior-options.<name>.*`: each backend's options, under its name.
PriorConfig = make_dataclass(
    "PriorConfig",
    [(name, backend.Config, field(default_factory=backend.Config)) for name, backend in PRIORS.items()],
)
PriorConfig.__module__ = __name__  # found by name when a run's config.yml is read back
PriorConfig.__doc__ = "Options of the dense priors, each under its name."


def make_backend(name: str, options) -> PriorBackend | None:
    """The backend `--prior NAME` chooses, with its options (None for `none`)."""
    return None if name == "none" else PRIORS[name](getattr(options, name))
