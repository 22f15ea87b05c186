"""The nerfstudio side: entry points, the spars-data dataparser on real processed scenes, what
training imports, and the `spars-ns` command's errors and interrupts."""

import json
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import ENV, run_console_script

import spars_ns.cli as cli
from spars_ns.ns.dataparser import SparsDataParserConfig, default_scene_dir, resolve_scene
from spars_ns.options import PriorConfig
from spars_ns.process import ProcessOptions
from spars_ns.stages.prior.files import FilesConfig

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def ns_train_help(args: list[str], capsys) -> str:
    """What `ns-train ARGS --help` prints."""
    from nerfstudio.scripts.train import entrypoint

    run_console_script(entrypoint, ["ns-train", *args, "--help"])
    return capsys.readouterr().out


def test_ns_train_lists_both_methods_with_what_they_need(capsys):
    listing = " ".join(ns_train_help([], capsys).split())
    assert re.search(r"spars3r\s.*Needs MASt3R's weights", listing)
    assert re.search(r"spars3r-sfm\s.*without network weights", listing)
    method_help = ns_train_help(["spars3r-sfm"], capsys)
    assert "spars-data" in method_help and "pipeline.model" in method_help


def test_methods_differ_in_processing_only():
    from spars_ns.configs import spars3r_method, spars3r_sfm_method

    full, weight_free = (
        m.config.pipeline.datamanager.dataparser.processing for m in (spars3r_method, spars3r_sfm_method)
    )
    assert (full.prior, full.align, full.regions, full.refine) == ("mast3r", "two-stage", "auto", "global")
    assert weight_free.prior == "none"
    assert spars3r_method.config.pipeline.model == spars3r_sfm_method.config.pipeline.model


def test_a_photo_folder_is_reused_only_with_the_same_processing_options(processed, photos, prior_files, tmp_path):
    """Each set of options gets its own scene folder beside the photos; the same options find it again."""
    folder = tmp_path / "photos"
    shutil.copytree(photos, folder)
    sfm_only = ProcessOptions(test_every=4)
    with_prior = ProcessOptions(
        test_every=4, prior="files", prior_options=PriorConfig(files=FilesConfig(dir=prior_files))
    )
    first, second = default_scene_dir(folder, sfm_only), default_scene_dir(folder, with_prior)
    assert first != second and first == default_scene_dir(folder, ProcessOptions(test_every=4))
    for target in (first, second):
        shutil.copytree(processed.root, target)  # as a first processing would have left them (same photos, same SfM)
    before = json.loads((first / "manifest.json").read_text())

    assert resolve_scene(SparsDataParserConfig(data=folder, processing=with_prior)) == second
    assert resolve_scene(SparsDataParserConfig(data=folder, processing=sfm_only)) == first
    assert json.loads((first / "manifest.json").read_text()) == before  # reused: nothing ran again
    assert "prior" in json.loads((second / "manifest.json").read_text())["stages"]
    assert "prior" not in before["stages"]


def test_dataparser_loads_a_processed_scene(processed):
    parser = SparsDataParserConfig(data=processed.root).setup()
    train = parser.get_dataparser_outputs("train")
    test = parser.get_dataparser_outputs("test")
    assert [p.name for p in train.image_filenames] == [f"view_00{i}.png" for i in (1, 2, 3, 5, 6, 7)]
    assert [p.name for p in test.image_filenames] == ["view_000.png", "view_004.png"]
    assert train.cameras.camera_to_worlds.shape == (6, 3, 4)
    points = train.metadata["points3D_xyz"]
    assert points.shape[0] > 200 and torch.isfinite(points).all()
    # Poses and points are normalised together: the points sit inside the cameras' unit box.
    assert points.abs().median() < 1.0


@pytest.mark.slow  # a full processing run
def test_dataparser_processes_a_photo_folder_on_first_use(photos, tmp_path):
    scene_dir = tmp_path / "processed"
    parser = SparsDataParserConfig(data=photos, scene_dir=scene_dir, processing=ProcessOptions(test_every=4)).setup()
    outputs = parser.get_dataparser_outputs("train")
    assert len(outputs.image_filenames) == 6 and (scene_dir / "manifest.json").exists()
    assert all(p.parent == scene_dir / "images" for p in outputs.image_filenames)
    assert parser.config.data == scene_dir  # the parser's private copy, not the user's config


def test_cli_reports_bad_input_without_a_traceback(tmp_path, capsys):
    argv = ["spars-ns", "process", "--images", str(tmp_path / "missing"), "--output", str(tmp_path / "o")]
    run_console_script(cli.entrypoint, argv, exit_code=1)  # an exception other than our errors would escape
    err = capsys.readouterr().err
    assert "missing does not exist" in err and "Traceback" not in err


def test_cli_reports_an_os_error_as_one_line_naming_the_path(photos, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    argv = ["spars-ns", "process", "--images", str(photos), "--output", str(blocker / "scene")]
    run_console_script(cli.entrypoint, argv, exit_code=1)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"error: {blocker / 'scene'}: Not a directory" in " ".join(err.split())


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of 512 KiB (the photos' copies alone need about 900): a full disk, where this
    machine lets us mount one."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    if (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount_point)], capture_output=True, check=False
        ).returncode
        != 0
    ):
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


@pytest.mark.slow
def test_a_full_disk_stops_with_one_line_and_the_run_resumes_once_there_is_room(photos, small_disk, capsys):
    """Full while the photos are copied: one line, nothing half-written. Room for the photos but not
    for SfM's database: refused before pycolmap starts (it aborts the process when a write fails, so
    that run is a process of its own: a regression would not take the test session down with it).
    Room for all: the run resumes, keeping what finished."""
    scene = small_disk / "scene"
    argv = ["spars-ns", "process", "--images", str(photos), "--output", str(scene), "--test-every", "4"]
    run_console_script(cli.entrypoint, argv, exit_code=1)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert re.search(
        rf"error: (writing under )?{re.escape(str(scene))}\S*: No space left on device", " ".join(err.split())
    )
    assert not list(scene.rglob(".*.partial")) and not (scene / "images").exists()  # nothing half-written

    subprocess.run(["mount", "-o", "remount,size=2M", str(small_disk)], check=True)
    command = [sys.executable, "-m", "spars_ns.cli", *argv[1:]]
    out = subprocess.run(command, capture_output=True, text=True, env=ENV, check=False)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert re.search(
        rf"error: {re.escape(str(scene))}: SfM needs up to \d+ MiB of disk and [\d.]+ MiB are free",
        " ".join(out.stderr.split()),
    )
    finished = finished_stages(scene)
    assert list(finished) == ["ingest"]

    subprocess.run(["mount", "-o", "remount,size=64M", str(small_disk)], check=True)
    run_console_script(cli.entrypoint, argv)
    stages = json.loads((scene / "manifest.json").read_text())["stages"]
    assert stages["ingest"] == finished["ingest"] and "export" in stages  # what finished was kept, the rest ran
    assert len(json.loads((scene / "transforms.json").read_text())["frames"]) == 8


def finished_stages(scene) -> dict:
    """The manifest's entries of stages that finished (one that began lists its outputs and has no fingerprint)."""
    try:
        stages = json.loads((scene / "manifest.json").read_text())["stages"]
    except (OSError, ValueError):
        return {}
    return {name: entry for name, entry in stages.items() if "fingerprint" in entry}


@pytest.mark.slow
def test_ctrl_c_stops_processing_with_one_line_and_keeps_finished_stages(photos, tmp_path):
    output = tmp_path / "scene"
    run = subprocess.Popen(
        [sys.executable, "-m", "spars_ns.cli", "process", "--images", str(photos), "--output", str(output)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        # As in a terminal: a suite started in the background by a shell (`cmd &`) ignores SIGINT, and
        # its children inherit that (Python then installs no KeyboardInterrupt handler).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 60
    while "ingest" not in finished_stages(output) and time.monotonic() < deadline:  # ingest recorded, SfM under way
        time.sleep(0.05)
    run.send_signal(signal.SIGINT)
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 130 and "Traceback" not in stderr
    assert "interrupted: the stages that finished are kept" in " ".join(stderr.split())
    assert finished_stages(output).keys() == {"ingest"}


@pytest.mark.slow
def test_training_a_processed_scene_needs_no_pycolmap(processed):
    """The offline GPU install (scripts/offline_wheels.sh) leaves pycolmap out: the method, the
    dataparser on a processed scene and the `spars-ns` commands must not import it."""
    code = (
        "import sys; sys.modules['pycolmap'] = None\n"  # any import of pycolmap now fails
        "import spars_ns.configs, spars_ns.cli, spars_ns.ns.runs\n"
        "from pathlib import Path\nfrom spars_ns.ns.dataparser import SparsDataParserConfig\n"
        f"outputs = SparsDataParserConfig(data=Path({str(processed.root)!r})).setup().get_dataparser_outputs('train')\n"
        "print(len(outputs.image_filenames))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-1] == "6"
