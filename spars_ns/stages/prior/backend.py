"""What a dense prior is to the prior stage: one plug-in class per backend.

A backend names itself (the `--prior` choice), its options (`Config`, under
`--prior-options.<name>.*`) and the libraries its output depends on; `check` refuses options
that cannot work before any photo is read; `predict` gives one `DensePrior` per training view it
covers. Adding a prior is one module with such a class and one line in `registry.py`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from spars_ns.stages.prior.dense_prior import DensePrior

if TYPE_CHECKING:
    import pycolmap
    from rich.progress import Progress

    from spars_ns.scene import SceneFolder
    from spars_ns.stages.sfm.mapping import MatchGraph


@dataclass
class PriorInputs:
    """What a backend may read: the scene, SfM's training model and its views."""

    scene: SceneFolder
    model: pycolmap.Reconstruction
    registered: list[pycolmap.Image]
    """Training views SfM registered, sorted by name."""
    unregistered: list[str]
    """Training views SfM did not register; a backend that poses its views covers them too."""
    work: Path
    """A scratch folder for `predict`, removed by the stage afterwards."""
    cache: Path
    """The backend's folder in the scene's cache, kept across runs (`caches_outputs` backends only)."""

    @cached_property
    def matches(self) -> MatchGraph:
        """SfM's verified matches, read on first use."""
        from spars_ns.stages.sfm.stage import match_graph  # needs pycolmap, which importing the registry must not

        return match_graph(self.scene)


class PriorBackend:
    """One dense prior: subclasses set `name`, `Config` and `libraries`, and implement `predict`."""

    name: ClassVar[str]
    Config: ClassVar[type]
    libraries: ClassVar[tuple[str, ...]] = ()
    """Packages whose versions the prior's output depends on (recorded, and part of the fingerprint)."""
    caches_outputs: ClassVar[bool] = False
    """Keeps work in `scene.cache_dir(name)` to go faster next time."""

    def __init__(self, config: Any):
        self.config = config

    def check(self) -> None:
        """Refuse options that cannot work, before any photo is read."""

    def settings(self) -> dict:
        """What the prior's output depends on besides SfM (JSON-serialisable)."""
        return asdict(self.config)

    def predict(self, inputs: PriorInputs, bar: Progress) -> dict[str, DensePrior]:
        raise NotImplementedError
