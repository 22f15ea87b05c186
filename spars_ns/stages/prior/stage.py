"""Dense prior: `prior/<stem>.npz` (a `DensePrior`) per registered training view, and per training
view SfM did not register whose prior poses it (the cameras stage places those); a backend that
keeps work across runs keeps it in `cache/<backend>/` (MASt3R's per-pair outputs), removed with
the stage. Which backend runs is `--prior` (`registry.py`).

Test views get no prior: they must not add seed points.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from spars_ns.scene import SceneFolder, atomic_dir
from spars_ns.stages.base import Stage, progress
from spars_ns.stages.prior.backend import PriorInputs
from spars_ns.stages.prior.dense_prior import DensePrior
from spars_ns.stages.prior.registry import PRIORS, make_backend
from spars_ns.stages.sfm.stage import registered_train


def prior_path(scene: SceneFolder, image_name: str) -> Path:
    return scene.prior_dir / f"{Path(image_name).stem}.npz"


def load_priors(scene: SceneFolder, images) -> dict[str, DensePrior]:
    """The prior of each of `images` (pycolmap images), by name."""
    return {im.name: DensePrior.load(prior_path(scene, im.name)) for im in images}


class PriorStage(Stage):
    name = "prior"

    def __init__(self, scene: SceneFolder, config, train: list[str]):
        super().__init__(scene, config)
        self.train = train
        self.backend = make_backend(config.prior, config.prior_options)

    @property
    def libraries(self) -> tuple[str, ...]:
        return self.backend.libraries if self.backend else ()

    def enabled(self) -> bool:
        return self.backend is not None

    def outputs(self) -> list[Path]:
        return [self.scene.prior_dir]

    def caches(self) -> list[Path]:
        return [self.scene.cache_dir(name) for name, backend in PRIORS.items() if backend.caches_outputs]

    def settings(self) -> dict:
        return {"prior": self.backend.name, self.backend.name: self.backend.settings(), "record": DensePrior.VERSION}

    def run(self) -> dict:
        scene, name = self.scene, self.backend.name
        model, images = registered_train(scene)
        registered = {image.name for image in images}
        unregistered = [n for n in self.train if n not in registered]
        with atomic_dir(scene.prior_dir) as tmp, progress() as bar:
            inputs = PriorInputs(scene, model, images, unregistered, work=tmp / name, cache=scene.cache_dir(name))
            priors = self.backend.predict(inputs, bar)
            shutil.rmtree(inputs.work, ignore_errors=True)  # inside the stage's output folder: not an output
            for view, prior in priors.items():
                prior.save(tmp / prior_path(scene, view).name)
        return {"images": len(priors), "unregistered": sum(n in priors for n in unregistered)}
