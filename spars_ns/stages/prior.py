"""Dense prior: `prior/<stem>.npz` (a `priors.DensePrior`) per registered training view, and per
training view SfM did not register whose prior poses it (the cameras stage places those); for
MASt3R, its per-pair outputs in `cache/mast3r/` (kept across runs, removed with the stage).

Test views get no prior: they must not add seed points.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np

from spars_ns.images import file_sha1
from spars_ns.pairs import strongest_pairs
from spars_ns.priors import DensePrior
from spars_ns.priors.files import load_file_prior
from spars_ns.priors.mast3r import load_model, predict_priors
from spars_ns.priors.stereo import choose_partners, stereo_prior, views_from_model
from spars_ns.scene import SceneFolder, atomic_dir, fingerprint
from spars_ns.sfm import MatchGraph
from spars_ns.stages.ingest import load_records
from spars_ns.stages.sfm import registered_train
from spars_ns.stages.stage import Stage, progress


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

    @property
    def libraries(self) -> tuple[str, ...]:
        return {"mast3r": ("instantsplat", "torch"), "stereo": ("opencv-python",)}.get(self.config.prior, ())

    def enabled(self) -> bool:
        return self.config.prior != "none"

    def outputs(self) -> list[Path]:
        return [self.scene.prior_dir]

    def caches(self) -> list[Path]:
        return [self.scene.mast3r_cache_dir]

    def settings(self) -> dict:
        record = {"record": DensePrior.VERSION}
        if self.config.prior == "files":
            folder = self.config.prior_options.dir
            sources = sorted(p for p in folder.iterdir() if p.suffix in (".npy", ".npz"))
            return {"prior": "files", "files": [(p.name, file_sha1(p)) for p in sources], **record}  # by content, not by folder
        if self.config.prior == "stereo":
            return {"prior": "stereo", "stereo": asdict(self.config.prior_options.stereo), **record}
        return {"prior": "mast3r", "mast3r": asdict(self.config.prior_options.mast3r), **record}

    def run(self) -> dict:
        options, scene = self.config.prior_options, self.scene
        model, images = registered_train(scene)
        registered = {image.name: image for image in images}
        unregistered = [name for name in self.train if name not in registered]
        with atomic_dir(scene.prior_dir) as tmp, progress() as bar:
            if self.config.prior == "files":
                sizes = {r.name: (r.width, r.height) for r in load_records(scene)}
                task = bar.add_task("Reading prior files", total=len(images) + len(unregistered))
                priors = {}
                for image in images:
                    priors[image.name] = load_file_prior(options.dir, image.name, model.camera(image.camera_id))
                    bar.advance(task)
                for name in unregistered:  # placed by the cameras stage when their files pose them
                    prior = load_file_prior(options.dir, name, None, sizes[name])
                    if prior is not None:
                        priors[name] = prior
                    bar.advance(task)
            elif self.config.prior == "stereo":  # needs SfM's cameras: registered views only
                priors = self._stereo(model, images, bar)
            else:  # MASt3R poses every view: the unregistered ones too
                names = sorted([*registered, *unregistered])
                priors = dict(zip(names, self._mast3r(names, tmp / "mast3r", bar)))
            for name, prior in priors.items():
                prior.save(tmp / prior_path(scene, name).name)
        return {"images": len(priors), "unregistered": sum(name in priors for name in unregistered)}

    def _stereo(self, model, images, bar) -> dict[str, DensePrior]:
        config = self.config.prior_options.stereo
        views = views_from_model(model, images, self.scene.images_dir)
        partners = choose_partners(views, config.partners)
        task = bar.add_task(f"Stereo on {len(views)} views, {config.partners} partners each", total=len(views))
        priors = {}
        for name, view in views.items():
            priors[name] = stereo_prior(view, [views[p] for p in partners[name]], config)
            bar.advance(task)
        return priors

    def _mast3r(self, names: list[str], work: Path, bar) -> list[DensePrior]:
        """MASt3R over the training views, its pairs chosen by SfM's verified matches."""
        config = self.config.prior_options.mast3r
        graph = MatchGraph(self.scene.sfm_dir / "database.db")
        ids = [graph.image_ids[name] for name in names]
        weights = np.array([[graph.num_inliers(a, b) for b in ids] for a in ids], float)
        pairs = strongest_pairs(weights, config.pairs_per_view, config.complete_up_to)
        # Pair outputs are cached by image content and model: a photo added later costs only its pairs.
        cache = self.caches()[0] / fingerprint(config.checkpoint, config.image_size)
        links = cache / "images"
        links.mkdir(parents=True, exist_ok=True)
        paths = []
        for name in names:
            source = self.scene.images_dir / name
            link = links / f"{file_sha1(source)}{source.suffix}"
            if not link.is_symlink():
                link.symlink_to(source.resolve())
            paths.append(link)
        task = bar.add_task(f"MASt3R on {len(pairs)} pairs of {len(names)} views", total=len(pairs))
        network = load_model(config.checkpoint, config.device)
        priors = predict_priors(paths, network, config, cache, work, pairs, on_pair=lambda: bar.advance(task))
        shutil.rmtree(work)
        return priors
