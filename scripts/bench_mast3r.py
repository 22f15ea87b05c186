"""MASt3R prior at scale: seconds and peak memory for N views, with a randomly initialised model of
the real architecture and size (time and memory do not depend on the weights' values).

    python scripts/bench_mast3r.py --views 6 --images ../shared/data/fox/images
    python scripts/bench_mast3r.py --views 6 --images ../shared/data/fox/images --theirs   # MASt3R's own forward
    python scripts/bench_mast3r.py --components --images ../shared/data/fox/images   # per image, per pair

N photos evenly spaced by name, at MASt3R's 512 resolution. Pairs as the prior stage chooses them
(`pairs.strongest_pairs`), with view-order closeness standing in for SfM's verified matches (the
bench runs no SfM). Reports the pairs, the inference seconds (our `infer_pairs`: each image encoded
once, pairs batched; with --theirs, `forward_mast3r`, which encodes both images of every pair), the
sparse global alignment's seconds (with random weights its matches are random, so this part is
indicative only), and peak memory: the process's resident set, and on CUDA the allocator's peak.
One view count per process, so that the peaks are its own.

With --components, one image encoding, one pair's decoding (both directions, heads) and one pair's
matching (`extract_correspondences`) are timed (median of --repeats), and the inference time of
`infer_pairs` (N encodings + P pairs) and of `forward_mast3r` (2P encodings + P pairs) at 6, 12 and
24 views is derived from them, for machines where running every pair takes too long (the CPU).
"""

from __future__ import annotations

import spars_ns  # noqa: F401  # isort: skip  # first: it pins OpenBLAS's kernels before numpy and pycolmap load

import json
import math
import resource
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tyro

from spars_ns.stages.prior.mast3r import (
    COMPLETE_UP_TO,
    PAIRS_PER_VIEW,
    Mast3rConfig,
    import_mast3r,
    infer_pairs,
    resolve_device,
)
from spars_ns.stages.sfm.pairs import strongest_pairs

INF = float("inf")
# The architecture of naver/MASt3R_ViTLarge_BaseDecoder_512_catmlpdpt_metric (its checkpoint's `args.model`).
MAST3R_VIT_LARGE = dict(
    enc_depth=24,
    dec_depth=12,
    enc_embed_dim=1024,
    dec_embed_dim=768,
    enc_num_heads=16,
    dec_num_heads=12,
    pos_embed="RoPE100",
    patch_embed_cls="PatchEmbedDust3R",
    img_size=(512, 512),
    head_type="catmlp+dpt",
    output_mode="pts3d+desc24",
    depth_mode=("exp", -INF, INF),
    conf_mode=("exp", 1, INF),
    landscape_only=False,
    two_confs=True,
    desc_conf_mode=("exp", 0, INF),
)


@dataclass
class Args:
    images: Path
    """A folder of photos; the first `views` evenly spaced by name are used."""
    views: int = 6
    theirs: bool = False
    """Infer with MASt3R's own `forward_mast3r` instead of `infer_pairs`."""
    global_alignment: bool = True
    """Also run the sparse global alignment (MASt3R's default iterations)."""
    device: str = "auto"
    components: bool = False
    """Time one encoding, one decoding and one matching instead, and derive the totals."""
    repeats: int = 3
    output: Path | None = None
    """Append the result as one JSON line to this file."""


def components(model, images: list[dict], config: Mast3rConfig, repeats: int) -> dict:
    """Seconds of one image encoding, one pair's decoding and one pair's matching; derived totals."""
    from mast3r.cloud_opt.sparse_ga import extract_correspondences

    device = next(model.parameters()).device

    def timed(step) -> float:
        times = []
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            result = step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        return float(np.median(times)), result

    shape = [torch.from_numpy(im["true_shape"]).to(device) for im in images[:2]]
    pixels = [im["img"].to(device) for im in images[:2]]
    with torch.no_grad():
        encode_s, _ = timed(lambda: model._encode_image(pixels[0], shape[0]))
        (feat1, pos1, _), (feat2, pos2, _) = (model._encode_image(p, s) for p, s in zip(pixels, shape))

        def decode_both_ways():
            outputs = []
            for f1, p1, f2, p2, s1, s2 in (
                (feat1, pos1, feat2, pos2, *shape),
                (feat2, pos2, feat1, pos1, *shape[::-1]),
            ):
                dec1, dec2 = model._decoder(f1, p1, f2, p2)
                outputs += [
                    model._downstream_head(1, [t.float() for t in dec1], s1),
                    model._downstream_head(2, [t.float() for t in dec2], s2),
                ]
            return outputs

        decode_s, outputs = timed(decode_both_ways)
        match_s, _ = timed(
            lambda: extract_correspondences(
                [o["desc"][0] for o in outputs], [o["desc_conf"][0] for o in outputs], device=device, subsample=8
            )
        )
    derived = {}
    for views in (6, 12, 24):
        order = np.arange(views)
        closeness = 1000.0 / (1 + np.abs(order[:, None] - order[None, :]))
        np.fill_diagonal(closeness, 0)
        pairs = len(strongest_pairs(closeness, PAIRS_PER_VIEW, COMPLETE_UP_TO))
        derived[views] = {
            "pairs": pairs,
            "infer_pairs_s": round(views * encode_s + pairs * (decode_s + match_s), 1),
            "forward_mast3r_s": round(2 * pairs * encode_s + pairs * (decode_s + match_s), 1),
        }
    return {
        "encode_s": round(encode_s, 2),
        "decode_pair_s": round(decode_s, 2),
        "match_pair_s": round(match_s, 2),
        "derived": derived,
    }


def main(args: Args) -> dict:
    api = import_mast3r()
    device = resolve_device(args.device)
    names = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    paths = [str(names[i]) for i in np.linspace(0, len(names) - 1, args.views).round().astype(int)]
    torch.manual_seed(0)
    model = api.AsymmetricMASt3R(**MAST3R_VIT_LARGE).to(device).eval()
    parameters = sum(p.numel() for p in model.parameters())
    config = Mast3rConfig(device=device)
    images = api.load_images(paths, size=config.image_size, verbose=False)
    for image, path in zip(images, paths):
        image["instance"] = path
    order = np.arange(args.views)
    closeness = 1000.0 / (1 + np.abs(order[:, None] - order[None, :]))  # stands in for SfM's verified matches
    np.fill_diagonal(closeness, 0)
    pairs = strongest_pairs(closeness, PAIRS_PER_VIEW, COMPLETE_UP_TO)
    if args.components:
        result = {
            "device": device,
            "parameters_M": round(parameters / 1e6, 1),
            "image_shape": list(images[0]["img"].shape[-2:]),
            **components(model, images, config, args.repeats),
            "threads": torch.get_num_threads(),
        }
        return report(result, args.output)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    work = Path(tempfile.mkdtemp(prefix="bench_mast3r_"))
    try:
        start = time.perf_counter()
        if args.theirs:
            from mast3r.cloud_opt.sparse_ga import forward_mast3r

            symmetric = [(images[i], images[j]) for i, j in pairs] + [(images[j], images[i]) for i, j in pairs]
            forward_mast3r(symmetric, model, cache_path=str(work), device=device)
        else:
            infer_pairs(model, images, pairs, work, config.batch_size)
        inference = time.perf_counter() - start
        alignment = math.nan
        if args.global_alignment:
            start = time.perf_counter()
            symmetric = [(images[i], images[j]) for i, j in pairs] + [(images[j], images[i]) for i, j in pairs]
            api.sparse_global_alignment(
                paths,
                symmetric,
                str(work),
                model,
                niter1=config.coarse_iterations,
                niter2=config.fine_iterations,
                matching_conf_thr=config.matching_conf_threshold,
                device=device,
                opt_depth=True,
                shared_intrinsics=False,
            )
            alignment = time.perf_counter() - start
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "views": args.views,
        "pairs": len(pairs),
        "inference": "forward_mast3r" if args.theirs else "infer_pairs",
        "device": device,
        "parameters_M": round(parameters / 1e6, 1),
        "image_shape": list(images[0]["img"].shape[-2:]),
        "inference_s": round(inference, 1),
        "global_alignment_s": round(alignment, 1),
        "peak_rss_GiB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "cuda_peak_GiB": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else None,
        "threads": torch.get_num_threads(),
    }
    return report(result, args.output)


def report(result: dict, output: Path | None) -> dict:
    print(json.dumps(result))
    if output is not None:
        with output.open("a") as handle:
            handle.write(json.dumps(result) + "\n")
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))
