"""`spars-ns` command line: `spars-ns process --images DIR --output DIR`, `spars-ns demo`,
`spars-ns export-splat --load-config config.yml --output-dir DIR`,
`spars-ns mesh --scene DIR|--load-config config.yml --output-dir DIR`."""

from __future__ import annotations

import concurrent.futures
import errno
import logging
import os
import shlex
import sys

import tyro
from rich import get_console
from rich.console import Console
from rich.logging import RichHandler

from spars_ns.demo import DemoConfig, run_demo
from spars_ns.errors import SparsError
from spars_ns.ns.splat import ExportSplatConfig, export_splat
from spars_ns.options import ProcessConfig
from spars_ns.surface.command import MeshConfig, make_mesh

console = Console(stderr=True)


def run_process(config: ProcessConfig) -> None:
    from spars_ns.process import process  # pycolmap: not needed to export a trained run

    scene = process(config)
    counts = scene.stage_entry("export")["counts"]
    console.print(
        f"[green]Processed scene in {scene.root}[/green]: {counts['frames']} registered views, "
        f"{counts['points']} seed points.\n"
        f"Train with: ns-train spars3r --data {shlex.quote(str(scene.root))}"
    )


def run_export_splat(config: ExportSplatConfig) -> None:
    path, count = export_splat(config)
    console.print(f"[green]Wrote {count} Gaussians to {path}[/green]")


def run_mesh(config: MeshConfig) -> None:
    result = make_mesh(config, console)
    console.print(
        f"[green]Wrote {result.mesh_path}[/green] ({result.vertices} vertices, {result.faces} faces) and "
        f"{result.sdf_path}, from {result.views} views in {result.seconds:.0f} s"
    )


def run_interruptibly(run, config) -> None:
    """`run(config)` in a worker thread, so that Ctrl-C reaches the main thread at once even while
    the worker is inside a long pycolmap call (a signal is handled only between Python steps).
    Stopping then is safe: every output is written under a temporary name and renamed in whole."""
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    future = pool.submit(run, config)
    pool.shutdown(wait=False)  # an interrupt must not wait for the worker
    while True:
        try:
            return future.result(timeout=0.2)
        except concurrent.futures.TimeoutError:
            continue


def entrypoint() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(message)s", handlers=[RichHandler(console=console, show_path=False)]
    )
    logging.getLogger("pycolmap").setLevel(logging.WARNING)
    commands = {
        "process": (ProcessConfig, run_process),
        "demo": (DemoConfig, run_demo),
        "export-splat": (ExportSplatConfig, run_export_splat),
        "mesh": (MeshConfig, run_mesh),
    }
    config = tyro.extras.subcommand_cli_from_dict({name: command for name, (command, _) in commands.items()})
    run = next(run for command, run in commands.values() if isinstance(config, command))
    try:
        run_interruptibly(run, config)
    except SparsError as err:
        console.print(f"[red]error:[/red] {err}")
        sys.exit(1)
    except OSError as err:  # a folder that cannot be written, a full disk: the path and the reason, no traceback
        output = getattr(config, "output", None) or getattr(config, "output_dir", None)
        if err.errno in (errno.ENOSPC, errno.EDQUOT) and output:
            where = f"writing under {output}"  # the disk is full, not the file it names (if any)
        else:
            where = err.filename2 or err.filename or ""  # a copy or a rename names its destination second
        console.print(f"[red]error:[/red] {where}: {err.strerror or err}")
        sys.exit(1)
    except KeyboardInterrupt:
        get_console().show_cursor(True)  # the progress display hid it, and os._exit skips its clean-up
        console.print(
            "[yellow]interrupted[/yellow]: the stages that finished are kept; run the same command to resume."
        )
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)  # the worker may be inside pycolmap, which does not return for many seconds


if __name__ == "__main__":
    entrypoint()
