"""Dense prior: `prior/<stem>.npz` (a `priors.DensePrior`) per registered training view.

Test views get no prior: they must not add seed points.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict
from pathlib import Path

from spars_ns.images import file_sha1
from spars_ns.priors import DensePrior
from spars_ns.priors.files import load_file_prior
from spars_ns.priors.mast3r import load_model, predict_priors
from spars_ns.scene import SceneFolder, atomic_dir
from spars_ns.stages.sfm import registered_train
from spars_ns.stages.stage import Stage, progress


def load_priors(scene: SceneFolder, images) -> dict[str, DensePrior]:
    """The prior of each of `images` (pycolmap images), by name."""
    return {im.name: DensePrior.load(scene.prior_dir / f"{Path(im.name).stem}.npz") for im in images}


class PriorStage(Stage):
    name = "prior"

    @property
    def libraries(self) -> tuple[str, ...]:
        return ("instantsplat", "torch") if self.config.prior == "mast3r" else ()

    def enabled(self) -> bool:
        return self.config.prior != "none"

    def outputs(self) -> list[Path]:
        return [self.scene.prior_dir]

    def settings(self) -> dict:
        if self.config.prior == "files":
            folder = self.config.prior_options.dir
            sources = sorted(p for p in folder.iterdir() if p.suffix in (".npy", ".npz"))
            return {"prior": "files", "files": [(p.name, file_sha1(p)) for p in sources]}  # by content, not by folder
        return {"prior": "mast3r", "mast3r": asdict(self.config.prior_options.mast3r)}

    def run(self) -> dict:
        options, scene = self.config.prior_options, self.scene
        model, images = registered_train(scene)
        with atomic_dir(scene.prior_dir) as tmp, progress() as bar:
            task = bar.add_task(f"Dense prior ({self.config.prior})", total=len(images))
            if self.config.prior == "files":
                priors = []
                for image in images:
                    priors.append(load_file_prior(options.dir, image.name, model.camera(image.camera_id)))
                    bar.advance(task)
            else:
                network = load_model(options.mast3r.checkpoint, options.mast3r.device)
                priors = predict_priors([scene.images_dir / im.name for im in images], network, options.mast3r, tmp / "cache")
                shutil.rmtree(tmp / "cache")
                bar.update(task, completed=len(images))
            for image, prior in zip(images, priors):
                prior.save(tmp / f"{Path(image.name).stem}.npz")
        return {"images": len(images)}
