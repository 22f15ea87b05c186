"""Seconds per forward and backward pass of the pure-PyTorch rasteriser (`spars_ns/ns/cpu_rasterize.py`).

Random Gaussians in front of one 80x60 camera (the CPU training scale of the tests and the
demo), degree-3 spherical harmonics, colour and expected depth, absgrad on: what a CPU
training step of spars3r asks of it. The median of `--repeats` passes per count.

    python scripts/bench_cpu_rasterize.py --counts 3000 6000 12000
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from spars_ns.ns.cpu_rasterize import rasterization


def one_pass(count: int, generator: torch.Generator) -> tuple[float, float]:
    means = torch.rand(count, 3, generator=generator) * 2 - 1 + torch.tensor([0.0, 0.0, 4.0])
    params = [
        means,
        torch.randn(count, 4, generator=generator),
        torch.full((count, 3), -3.0),
        torch.full((count,), 0.5),
        torch.rand(count, 16, 3, generator=generator),
    ]
    for p in params:
        p.requires_grad_()
    quats = params[1] / params[1].norm(dim=-1, keepdim=True)
    intrinsics = torch.tensor([[[80.0, 0, 40], [0, 80, 30], [0, 0, 1]]])
    start = time.perf_counter()
    render, alpha, info = rasterization(
        params[0],
        quats,
        params[2].exp(),
        params[3],
        params[4],
        torch.eye(4)[None],
        intrinsics,
        80,
        60,
        sh_degree=3,
        render_mode="RGB+ED",
        absgrad=True,
    )
    info["means2d"].retain_grad()
    forward = time.perf_counter() - start
    (render.sum() + alpha.sum()).backward()
    return forward, time.perf_counter() - start - forward


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[3000, 6000, 12000])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    print("| Gaussians | forward (s) | backward (s) |\n|---|---|---|")
    for count in args.counts:
        passes = [one_pass(count, generator) for _ in range(args.repeats)]
        print(
            f"| {count} | {statistics.median(p[0] for p in passes):.3f} | "
            f"{statistics.median(p[1] for p in passes):.3f} |"
        )


if __name__ == "__main__":
    main()
