"""The skeleton every processing stage shares, written once."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from spars_ns import __version__
from spars_ns.scene import SceneFolder, fingerprint, library_versions

if TYPE_CHECKING:
    from spars_ns.options import ProcessConfig

log = logging.getLogger(__name__)

SEED = 0  # of every random choice in processing (RANSAC, sampling): the same photos give the same scene


def progress() -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=True,
    )


class Stage:
    """One stage: the outputs it owns, the settings they depend on, and how it makes them.

    `apply(upstream)` runs it when its fingerprint (its name, the package version, the
    upstream stages' fingerprints, its settings and its libraries' versions) differs from the
    manifest's or an output is missing, and records it in the manifest last; a stage switched
    off removes its outputs and its entry. Later stages learn what ran from the fingerprint
    `apply` returns (None: switched off), never from what a folder happens to hold.
    """

    name: ClassVar[str]
    libraries: tuple[str, ...] = ()

    def __init__(self, scene: SceneFolder, config: ProcessConfig):
        self.scene = scene
        self.config = config

    def enabled(self) -> bool:
        return True

    def outputs(self) -> list[Path]:
        raise NotImplementedError

    def caches(self) -> list[Path]:
        """What the stage keeps to go faster next time; not an output, but removed with them when it is switched off."""
        return []

    def settings(self) -> Any:
        """What the outputs depend on besides the upstream stages (JSON-serialisable); recorded in the manifest."""
        raise NotImplementedError

    def run(self) -> dict:
        """Write the outputs (each under a temporary name, renamed in whole); returns the manifest's counts."""
        raise NotImplementedError

    def apply(self, upstream: list[str | None]) -> str | None:
        if not self.enabled():
            self.scene.clear(self.name, self.outputs() + self.caches())
            return None
        settings = self.settings()
        versions = library_versions(*self.libraries)
        stage_fp = fingerprint(self.name, __version__, upstream, settings, versions)
        if not self.scene.begin(self.name, stage_fp, self.outputs(), self.caches()):
            log.info("%s: up to date, skipping", self.name)
            return stage_fp
        start = time.perf_counter()
        counts = self.run()
        self.scene.record(self.name, stage_fp, settings, time.perf_counter() - start, counts, versions)
        return stage_fp
