"""MASt3R dense prior: pairwise pointmaps and MASt3R's sparse global alignment.

The `mast3r`, `dust3r` and `croco` packages are not on PyPI under those names; the
`instantsplat` package ships them (`pip install "spars-ns[mast3r]"`). Three quirks of
that packaging are handled in `import_mast3r`: its prebuilt cuRoPE kernel does not
match current torch (croco's PyTorch RoPE is used instead), `dust3r` must be imported
before `mast3r`, and the imports prepend folders to `sys.path` that would shadow
top-level names such as `models` and `utils`.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from PIL import Image

from spars_ns.errors import InputError
from spars_ns.geometry import intrinsics_from_integer_centres
from spars_ns.scene import fingerprint, temporary_path
from spars_ns.stages.ingest.images import file_sha1
from spars_ns.stages.prior.backend import PriorBackend, PriorInputs
from spars_ns.stages.prior.dense_prior import DensePrior
from spars_ns.stages.sfm.pairs import strongest_pairs

DEFAULT_CHECKPOINT = "naver/MASt3R_ViTLarge_BaseDecoder_512_catmlpdpt_metric"
INSTALL_HINT = 'pip install "spars-ns[mast3r]"'
PATCH_SIZE = 16
# All pairs up to this many views; above it, each view's PAIRS_PER_VIEW partners with the most
# SfM-verified matches, plus a spanning tree of those matches so that no view is cut off
# (BENCHMARKS.md, "MASt3R": time against pairs, scripts/bench_mast3r.py).
COMPLETE_UP_TO = 12
PAIRS_PER_VIEW = 5


@dataclass
class Mast3rConfig:
    """MASt3R with its sparse global alignment (`--prior mast3r`)."""

    checkpoint: str = DEFAULT_CHECKPOINT
    """Checkpoint name (fetched and cached by huggingface_hub) or local .pth / folder path."""
    image_size: int = 512
    """Long side of MASt3R's working resolution (224 or 512, as the checkpoint was trained)."""
    batch_size: int = 4
    """Pairs decoded at once (each image is encoded once, whatever its number of pairs)."""
    coarse_iterations: int = 300
    fine_iterations: int = 300
    matching_conf_threshold: float = 5.0
    device: str = "auto"
    """cuda when available, else cpu."""


def import_mast3r() -> SimpleNamespace:
    saved_path = list(sys.path)
    sys.modules.setdefault("models.curope", None)  # type: ignore[arg-type]  # blocks the stale kernel
    try:
        import dust3r.model  # noqa: F401  (must precede mast3r)
        from dust3r.image_pairs import make_pairs
        from dust3r.utils.image import load_images
        from mast3r.cloud_opt.sparse_ga import sparse_global_alignment
        from mast3r.model import AsymmetricMASt3R
    except ImportError as err:
        raise InputError(f"--prior mast3r needs MASt3R ({err}). Install it with: {INSTALL_HINT}") from err
    finally:
        sys.path[:] = saved_path
    return SimpleNamespace(
        AsymmetricMASt3R=AsymmetricMASt3R,
        load_images=load_images,
        make_pairs=make_pairs,
        sparse_global_alignment=sparse_global_alignment,
    )


WEIGHTS_HINT = (
    "Download them on a machine with network access and pass the local file or folder with "
    "--prior-options.mast3r.checkpoint PATH (with ns-train, after the dataparser's name: "
    "spars-data --processing.prior-options.mast3r.checkpoint PATH), or train "
    "spars3r-sfm (ns-train spars3r-sfm), which needs no network weights."
)


def check_weights(config: Mast3rConfig) -> None:
    """Refuse, before any work, a MASt3R prior whose package or weights cannot be had: a local
    checkpoint that is missing, or a checkpoint name that is neither cached nor downloadable."""
    import importlib.util

    if importlib.util.find_spec("mast3r") is None:
        raise InputError(f"--prior mast3r needs MASt3R: {INSTALL_HINT}; or train spars3r-sfm, which needs no weights.")
    checkpoint = config.checkpoint
    if Path(checkpoint).exists():
        return
    if checkpoint.startswith((".", "/", "~")) or checkpoint.endswith((".pth", ".pt", ".safetensors")):
        raise InputError(f"MASt3R checkpoint {checkpoint} not found. {WEIGHTS_HINT}")
    from huggingface_hub import model_info, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        snapshot_download(checkpoint, local_files_only=True)
        return
    except LocalEntryNotFoundError:
        pass
    try:
        model_info(checkpoint, timeout=5)
    except Exception as err:  # offline, blocked, or no such model: all mean it cannot be downloaded
        raise InputError(
            f"MASt3R's weights '{checkpoint}' are not on this machine and cannot be downloaded "
            f"({type(err).__name__}: {str(err)[:120]}). {WEIGHTS_HINT}"
        ) from err


def resolve_device(device: str) -> str:
    import torch

    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def load_model(checkpoint: str, device: str):
    """The MASt3R model from a checkpoint name or local path, with a clear error offline."""
    api = import_mast3r()
    try:
        if Path(checkpoint).is_file():
            model = load_local_checkpoint(Path(checkpoint), api.AsymmetricMASt3R)
        else:  # the hub's layout: safetensors weights and a JSON config, which run no code
            model = api.AsymmetricMASt3R.from_pretrained(checkpoint)
    except (OSError, ValueError) as err:
        raise InputError(
            f"Cannot load the MASt3R checkpoint '{checkpoint}' ({type(err).__name__}: {str(err)[:200]}). "
            "Without network access, download it on another machine and pass its local path with "
            "--prior-options.mast3r.checkpoint PATH; or use --prior files or --prior none."
        ) from err
    return model.to(resolve_device(device)).eval()


def load_local_checkpoint(path: Path, model_class):
    """A MASt3R checkpoint file in the official layout, {'args': Namespace(model='AsymmetricMASt3R(...)'),
    'model': state_dict}, read without running anything it holds. MASt3R's own loader unpickles it
    with weights_only=False and eval()s the model string: a checkpoint from someone else could run
    code. Here the file is read with weights_only=True and the string's keyword arguments as
    literals (`inf` allowed), for the model class only; anything else is refused."""
    import argparse
    import ast
    import pickle

    import torch

    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        text = checkpoint["args"].model
        call = ast.parse(text.strip(), mode="eval").body
    except (pickle.UnpicklingError, RuntimeError, KeyError, AttributeError, TypeError, SyntaxError) as err:
        raise InputError(
            f"{path}: not a MASt3R checkpoint that can be read safely ({type(err).__name__}: {str(err)[:200]})"
        ) from err
    if not (
        isinstance(call, ast.Call)
        and isinstance(call.func, ast.Name)
        and call.func.id == model_class.__name__
        and not call.args
    ):
        raise InputError(f"{path}: its model is {text[:80]!r}, not {model_class.__name__}(keyword=value, ...)")

    class Infinity(ast.NodeTransformer):
        def visit_Name(self, node):
            return ast.Constant(float("inf")) if node.id == "inf" else node

    try:
        arguments = {k.arg: ast.literal_eval(Infinity().visit(k.value)) for k in call.keywords}
    except ValueError as err:
        raise InputError(
            f"{path}: a model argument is not a plain value ({err}); refused, as it could run code"
        ) from err
    # As MASt3R's loader: the patch embedding that takes any aspect ratio, in portrait too.
    if arguments.get("patch_embed_cls") == "ManyAR_PatchEmbed":
        arguments["patch_embed_cls"] = "PatchEmbedDust3R"
    arguments["landscape_only"] = False
    model = model_class(**arguments)
    model.load_state_dict(checkpoint["model"], strict=False)
    return model


def working_window(
    width: int, height: int, size: int
) -> tuple[tuple[float, float], tuple[float, float], tuple[int, int]]:
    """(scale, offset, (w, h)) of dust3r's `load_images` resize-and-crop for an image.

    An original pixel coordinate is `scale * working + offset` (continuous coordinates).
    """
    long_edge = round(size * max(width / height, height / width)) if size == 224 else size
    factor = long_edge / max(width, height)
    resized_w, resized_h = round(width * factor), round(height * factor)
    cx, cy = resized_w // 2, resized_h // 2
    if size == 224:
        half_w = half_h = min(cx, cy)
    else:
        half_w = ((2 * cx) // PATCH_SIZE) * PATCH_SIZE / 2
        half_h = ((2 * cy) // PATCH_SIZE) * PATCH_SIZE / 2
        if resized_w == resized_h:
            half_h = 3 * half_w / 4
    scale = (width / resized_w, height / resized_h)
    offset = ((cx - half_w) * scale[0], (cy - half_h) * scale[1])
    return scale, offset, (int(2 * half_w), int(2 * half_h))


SUBSAMPLE, DESC_CONF = 8, "desc_conf"  # sparse_global_alignment's defaults: the cache layout depends on them


def pair_cache_files(cache: Path, key1: str, key2: str) -> tuple[Path, Path, Path]:
    """Where MASt3R's `forward_mast3r` looks for a pair's outputs: both directions' pointmaps and the matches."""
    return (
        cache / "forward" / key1 / f"{key2}.pth",
        cache / "forward" / key2 / f"{key1}.pth",
        cache / f"corres_conf={DESC_CONF}_subsample={SUBSAMPLE}" / f"{key1}-{key2}.pth",
    )


def _save(value, path: Path) -> None:
    """torch.save under a temporary name, renamed in whole: a killed run leaves no half file in the cache."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    torch.save(value, tmp)
    os.replace(tmp, path)


def infer_pairs(
    model, images: list[dict], pairs: list[tuple[int, int]], cache: Path, batch_size: int, on_pair=None
) -> int:
    """MASt3R's outputs for the pairs not yet in `cache`, in the layout `forward_mast3r` reads (so
    `sparse_global_alignment` finds them and runs no inference). Unlike `forward_mast3r`, each image
    is encoded once, not once per pair, and pairs of the same shapes are decoded in batches.
    Returns the number of pairs computed."""
    import torch
    from mast3r.cloud_opt.sparse_ga import extract_correspondences
    from mast3r.utils.misc import hash_md5

    keys = [hash_md5(image["instance"]) for image in images]
    missing = [(i, j) for i, j in pairs if not all(p.exists() for p in pair_cache_files(cache, keys[i], keys[j]))]
    if not missing:
        return 0
    device = next(model.parameters()).device
    shapes = {i: torch.from_numpy(images[i]["true_shape"]).to(device) for pair in missing for i in pair}
    with torch.no_grad():
        encoded = {i: model._encode_image(images[i]["img"].to(device), shapes[i])[:2] for i in sorted(shapes)}

        def decode(first: list[int], second: list[int]):
            feat1, pos1 = (torch.cat(t) for t in zip(*(encoded[i] for i in first)))
            feat2, pos2 = (torch.cat(t) for t in zip(*(encoded[i] for i in second)))
            dec1, dec2 = model._decoder(feat1, pos1, feat2, pos2)
            shape1, shape2 = torch.cat([shapes[i] for i in first]), torch.cat([shapes[i] for i in second])
            return (
                model._downstream_head(1, [t.float() for t in dec1], shape1),
                model._downstream_head(2, [t.float() for t in dec2], shape2),
            )

        by_shape: dict[tuple, list[tuple[int, int]]] = {}
        for i, j in missing:
            by_shape.setdefault((tuple(images[i]["img"].shape), tuple(images[j]["img"].shape)), []).append((i, j))
        for group in by_shape.values():
            for start in range(0, len(group), batch_size):
                batch = group[start : start + batch_size]
                first, second = [i for i, _ in batch], [j for _, j in batch]
                res11, res21 = decode(first, second)
                res22, res12 = decode(second, first)
                for b, (i, j) in enumerate(batch):
                    outputs = [{k: v[b] for k, v in r.items()} for r in (res11, res21, res22, res12)]
                    (x11, c11), (x21, c21), (x22, c22), (x12, c12) = ((o["pts3d"], o["conf"]) for o in outputs)
                    corres = extract_correspondences(
                        [o["desc"] for o in outputs],
                        [o[DESC_CONF] for o in outputs],
                        device=device,
                        subsample=SUBSAMPLE,
                    )
                    score = (
                        float((c11.mean() * c12.mean() * c21.mean() * c22.mean()).sqrt().sqrt()),
                        float(corres[2].sum()),
                        len(corres[2]),
                    )
                    forward_ij, forward_ji, corres_ij = pair_cache_files(cache, keys[i], keys[j])
                    _save(tuple(t.cpu() for t in (x11, c11, x21, c21)), forward_ij)
                    _save(tuple(t.cpu() for t in (x22, c22, x12, c12)), forward_ji)
                    xy1, xy2, confs = (t.cpu() if torch.is_tensor(t) else t for t in corres)
                    _save((score, (xy1, xy2, confs)), corres_ij)
                    _save((score, (xy2, xy1, confs)), pair_cache_files(cache, keys[j], keys[i])[2])
                    if on_pair is not None:
                        on_pair()
    return len(missing)


def predict_priors(
    image_paths: list[Path],
    model,
    config: Mast3rConfig,
    cache_dir: Path,
    work_dir: Path,
    pairs: list[tuple[int, int]],
    on_pair=None,
) -> list[DensePrior]:
    """One DensePrior per image, in MASt3R's common world frame after sparse global alignment,
    with the alignment's camera of the image.

    `pairs` index `image_paths`; `image_paths` should name images by content (the cache is keyed by
    path). Pair outputs are kept in `cache_dir`, so a run with more photos infers only the new
    pairs; what depends on the whole set (canonical views, depth bases) goes to `work_dir`.
    """
    api = import_mast3r()
    paths = [str(p) for p in image_paths]
    images = api.load_images(paths, size=config.image_size, verbose=False)
    for image, path in zip(images, paths):
        image["instance"] = path  # sparse_global_alignment names views by path
    infer_pairs(model, images, pairs, cache_dir, config.batch_size, on_pair)
    work_dir.mkdir(parents=True, exist_ok=True)
    for name in ("forward", f"corres_conf={DESC_CONF}_subsample={SUBSAMPLE}"):
        (work_dir / name).symlink_to((cache_dir / name).resolve(), target_is_directory=True)
    symmetric = [(images[i], images[j]) for i, j in pairs] + [(images[j], images[i]) for i, j in pairs]
    scene = api.sparse_global_alignment(
        paths,
        symmetric,
        str(work_dir),
        model,
        niter1=config.coarse_iterations,
        niter2=config.fine_iterations,
        matching_conf_thr=config.matching_conf_threshold,
        device=next(model.parameters()).device,
        opt_depth=True,
        shared_intrinsics=False,
    )
    points, _, confidences = scene.get_dense_pts3d(clean_depth=True)
    # The alignment's cameras, in the frame of its points; its pixel grid has centres at integers.
    cams_from_world = np.linalg.inv(scene.get_im_poses().detach().cpu().numpy().astype(np.float64))[:, :3]
    focals = scene.get_focals().detach().cpu().numpy()
    principal_points = scene.get_principal_points().detach().cpu().numpy()
    intrinsics = [
        np.array([[f, 0, cx], [0, f, cy], [0, 0, 1]], np.float64) for f, (cx, cy) in zip(focals, principal_points)
    ]
    priors = []
    for path, pts, conf, cam_from_world, camera in zip(image_paths, points, confidences, cams_from_world, intrinsics):
        with Image.open(path) as image:
            scale, offset, (w, h) = working_window(*image.size, config.image_size)
        pts = pts.detach().cpu().numpy().reshape(h, w, 3).astype(np.float32)
        conf = conf.detach().cpu().numpy().reshape(h, w).astype(np.float32)
        priors.append(DensePrior(pts, conf, scale, offset, cam_from_world, intrinsics_from_integer_centres(camera)))
    return priors


class Mast3rPrior(PriorBackend):
    """Poses every training view, SfM's unregistered ones too; its pairs are chosen by SfM's
    verified matches."""

    name = "mast3r"
    Config = Mast3rConfig
    libraries = ("instantsplat", "torch")
    caches_outputs = True

    def check(self) -> None:
        check_weights(self.config)

    def predict(self, inputs: PriorInputs, bar) -> dict[str, DensePrior]:
        config, graph = self.config, inputs.matches
        names = sorted([*(image.name for image in inputs.registered), *inputs.unregistered])
        ids = [graph.image_ids[name] for name in names]
        weights = np.array([[graph.num_inliers(a, b) for b in ids] for a in ids], float)
        pairs = strongest_pairs(weights, PAIRS_PER_VIEW, COMPLETE_UP_TO)
        # Pair outputs are cached by image content and model: a photo added later costs only its pairs.
        cache = inputs.cache / fingerprint(config.checkpoint, config.image_size)
        links = cache / "images"
        links.mkdir(parents=True, exist_ok=True)
        paths = []
        for name in names:
            source = inputs.scene.images_dir / name
            link = links / f"{file_sha1(source)}{source.suffix}"
            if not link.is_symlink():
                link.symlink_to(source.resolve())
            paths.append(link)
        task = bar.add_task(f"MASt3R on {len(pairs)} pairs of {len(names)} views", total=len(pairs))
        network = load_model(config.checkpoint, config.device)
        priors = predict_priors(paths, network, config, cache, inputs.work, pairs, on_pair=lambda: bar.advance(task))
        return dict(zip(names, priors))
