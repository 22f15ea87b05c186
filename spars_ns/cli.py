"""`spars-ns` command line: `spars-ns process --images DIR --output DIR`, `spars-ns demo`."""

from __future__ import annotations

import logging
import sys

import tyro
from rich.console import Console
from rich.logging import RichHandler

from spars_ns.demo import DemoConfig, run_demo
from spars_ns.errors import SparsError
from spars_ns.pipeline import ProcessConfig, process

console = Console(stderr=True)


def run_process(config: ProcessConfig) -> None:
    scene = process(config)
    counts = scene.stage_entry("export")["counts"]
    console.print(
        f"[green]Processed scene in {scene.root}[/green]: {counts['frames']} registered views, {counts['points']} seed points.\n"
        f"Train with: ns-train spars3r --data {scene.root}"
    )


def entrypoint() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[RichHandler(console=console, show_path=False)])
    logging.getLogger("pycolmap").setLevel(logging.WARNING)
    commands = {"process": ProcessConfig, "demo": DemoConfig}
    config = tyro.extras.subcommand_cli_from_dict(commands)
    try:
        if isinstance(config, DemoConfig):
            run_demo(config)
        else:
            run_process(config)
    except SparsError as err:
        console.print(f"[red]error:[/red] {err}")
        sys.exit(1)


if __name__ == "__main__":
    entrypoint()
