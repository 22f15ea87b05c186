"""Folders we are given and files from someone else: we remove only what our own records say we
wrote, and a scene, a run config or a checkpoint cannot run code or reach files outside itself."""

import io
import json
import logging
import os
import shlex
import shutil
import sys

import numpy as np
import pytest
from conftest import run_console_script
from PIL import Image
from rich.console import Console

import spars_ns.cli as cli
from spars_ns.errors import InputError
from spars_ns.ns.dataparser import SparsDataParserConfig
from spars_ns.ns.splat import ExportSplatConfig, export_splat
from spars_ns.ply import write_points_ply
from spars_ns.process import ProcessConfig, process
from spars_ns.scene import SceneFolder, atomic_files, temporary_path
from spars_ns.stages.ingest.images import ImageRecord, list_images, same_photos
from spars_ns.surface.command import MeshConfig, make_mesh


def snapshot(folder):
    """Every file under `folder` (hidden ones too) with its bytes; links by their target."""
    return {
        str(p.relative_to(folder)): (os.readlink(p) if p.is_symlink() else p.read_bytes())
        for p in sorted(folder.rglob("*"))
        if p.is_file() or p.is_symlink()
    }


@pytest.fixture
def scene_copy(processed, tmp_path):
    folder = tmp_path / "scene"
    shutil.copytree(processed.root, folder, symlinks=True)
    return folder


def test_an_output_folder_of_yours_is_refused_and_left_untouched(photos, tmp_path):
    folder = tmp_path / "mine"
    for name, content in {
        "images/mine.jpg": b"my photo",
        ".git/objects/.pack.partial": b"git",
        "notes/.draft.old": b"draft",
        "points.ply": b"my points",
        "images.json": b"[]",
        "sfm/.keep": b"",
    }.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    before = snapshot(folder)
    with pytest.raises(
        InputError,
        match=r"--output .*mine holds files \(\.git, images, images\.json, notes, points\.ply and 1 more\) "
        r"and is not a spars-ns scene",
    ):
        process(ProcessConfig(images=photos, output=folder))
    assert snapshot(folder) == before


def test_leftovers_are_removed_beside_the_scene_paths_only(photos, scene_copy):
    ours = [
        temporary_path(scene_copy / "images"),
        temporary_path(scene_copy / "points.ply"),
        scene_copy / "sparse" / ".0.old",
    ]
    for path in ours:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"left by a killed run")
    yours = {"notes/.draft.partial": b"mine", ".git/.index.old": b"mine", ".images.partial.bak": b"mine"}
    for name, content in yours.items():
        (scene_copy / name).parent.mkdir(parents=True, exist_ok=True)
        (scene_copy / name).write_bytes(content)
    process(
        ProcessConfig(images=photos, output=scene_copy, test_every=4)
    )  # every stage current: only the clean-up runs
    assert not any(path.exists() for path in ours)
    assert {name: (scene_copy / name).read_bytes() for name in yours} == yours


def test_photos_linked_from_inside_the_output_are_refused(scene_copy, tmp_path):
    selection = tmp_path / "selection"
    selection.mkdir()
    for photo in sorted((scene_copy / "images").iterdir())[:4]:
        (selection / photo.name).symlink_to(photo)
    before = snapshot(scene_copy / "images")
    with pytest.raises(InputError, match=r"view_000\.png is a link to .*scene/images/view_000\.png, inside --output"):
        process(ProcessConfig(images=selection, output=scene_copy))
    assert snapshot(scene_copy / "images") == before


def test_a_scene_inside_another_scene_is_refused(photos, scene_copy):
    with pytest.raises(InputError, match=r"--output .*scene/inner is inside .*scene, a spars-ns scene"):
        process(ProcessConfig(images=photos, output=scene_copy / "inner"))
    assert not (scene_copy / "inner").exists()


def test_a_manifest_that_is_not_ours_is_refused_and_an_entry_without_fingerprint_reruns(photos, scene_copy):
    manifest = json.loads((scene_copy / "manifest.json").read_text())
    (scene_copy / "manifest.json").write_text(json.dumps({**manifest, "stages": []}))
    with pytest.raises(InputError, match=r"manifest\.json: not a spars-ns manifest \(\"stages\" is not an object\)"):
        process(ProcessConfig(images=photos, output=scene_copy, test_every=4))
    outside = {**manifest, "stages": {**manifest["stages"], "export": {"outputs": ["../../elsewhere"]}}}
    (scene_copy / "manifest.json").write_text(json.dumps(outside))
    with pytest.raises(InputError, match=r'the outputs of stage "export" are not paths inside the scene'):
        process(ProcessConfig(images=photos, output=scene_copy, test_every=4))
    del manifest["stages"]["export"]["fingerprint"]  # hand-edited: the stage is not current, and runs again
    (scene_copy / "manifest.json").write_text(json.dumps(manifest))
    scene = process(ProcessConfig(images=photos, output=scene_copy, test_every=4))
    assert scene.stage_entry("export")["counts"]["frames"] == 8


def test_a_stage_switched_off_removes_only_what_its_entry_lists(tmp_path):
    scene = SceneFolder(tmp_path / "scene")
    with scene.lock():
        assert scene.begin("align", "fp", [scene.align_dir])
        (scene.align_dir / "report.json").parent.mkdir()
        (scene.align_dir / "report.json").write_text("{}")
        scene.record("align", "fp", {}, 1.0, {}, {})
        (scene.root / "refine").mkdir()  # not written by this stage: never removed by it
        scene.clear("align", [scene.align_dir, scene.refine_dir])
        scene.clear("refine", [scene.refine_dir])  # no entry: it wrote nothing here
    assert not scene.align_dir.exists() and scene.refine_dir.is_dir()
    assert scene.read_manifest()["stages"] == {}


@pytest.mark.parametrize(
    "yaml_text",
    [
        "!!python/object/apply:os.system ['touch {marker}']\n",
        "!!python/object/apply:nerfstudio.utils.scripts.run_command ['touch {marker}']\n",
        "!!python/object/new:subprocess.Popen [['touch', '{marker}']]\n",
    ],
)
def test_a_run_config_cannot_run_code(yaml_text, tmp_path):
    marker = tmp_path / "ran"
    config_path = tmp_path / "config.yml"
    config_path.write_text(yaml_text.format(marker=marker))
    with pytest.raises(InputError, match=r"config\.yml: refused, it names .*must not run code"):
        make_mesh(MeshConfig(output_dir=tmp_path / "mesh", load_config=config_path, resolution=32))
    with pytest.raises(InputError, match=r"config\.yml: refused, it names .*must not run code"):
        export_splat(ExportSplatConfig(load_config=config_path, output_dir=tmp_path / "export"))
    assert not marker.exists() and not (tmp_path / "mesh").exists() and not (tmp_path / "export").exists()


def parse(scene_folder):
    return SparsDataParserConfig(data=scene_folder).setup().get_dataparser_outputs("train")


@pytest.mark.parametrize(
    "key, value",
    [
        ("file_path", "../outside.png"),
        ("depth_file_path", "/etc/passwd"),
        ("mask_path", "images/../../outside.png"),
    ],
)
def test_a_scene_cannot_make_training_read_files_outside_it(key, value, scene_copy):
    shutil.copy(scene_copy / "images" / "view_001.png", scene_copy.parent / "outside.png")
    meta = json.loads((scene_copy / "transforms.json").read_text())
    meta["frames"][1][key] = value
    (scene_copy / "transforms.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match=rf"transforms\.json: {key} '{value}' leads outside the scene folder"):
        parse(scene_copy)


def test_a_link_out_of_the_scene_and_an_outside_ply_are_refused(scene_copy):
    shutil.copy(scene_copy / "images" / "view_001.png", scene_copy.parent / "outside.png")
    (scene_copy / "images" / "view_001.png").unlink()
    (scene_copy / "images" / "view_001.png").symlink_to(scene_copy.parent / "outside.png")
    with pytest.raises(InputError, match=r"file_path 'images/view_001\.png' leads outside the scene folder"):
        parse(scene_copy)
    (scene_copy / "images" / "view_001.png").unlink()
    shutil.copy(scene_copy.parent / "outside.png", scene_copy / "images" / "view_001.png")
    meta = json.loads((scene_copy / "transforms.json").read_text())
    (scene_copy / "transforms.json").write_text(json.dumps({**meta, "ply_file_path": "/etc/hostname"}))
    with pytest.raises(InputError, match=r"ply_file_path '/etc/hostname' leads outside"):
        parse(scene_copy)


@pytest.mark.parametrize(
    "damage, message",
    [
        (
            lambda s: (s / "transforms.json").write_text((s / "transforms.json").read_text()[:200]),
            r"transforms\.json: cannot be read as JSON",
        ),
        (
            lambda s: (s / "transforms.json").write_text('{"camera_model": "OPENCV"}'),
            r'transforms\.json: no "frames" list',
        ),
        (lambda s: (s / "points.ply").write_bytes(b"ply\nformat nonsense\n"), r"points\.ply: not a point cloud PLY"),
        (
            lambda s: write_points_ply(
                s / "points.ply",
                np.array([[0, 0, 1], [np.nan, 0, 1]], np.float32),
                np.zeros((2, 3), np.uint8),
                np.ones(2, np.float32),
                np.zeros(2, np.uint8),
            ),
            r"points\.ply: 1 of 2 points have a non-finite coordinate",
        ),
    ],
)
def test_bad_scene_files_are_named_with_the_problem(damage, message, scene_copy):
    damage(scene_copy)
    with pytest.raises(InputError, match=message):
        parse(scene_copy)


@pytest.mark.slow
def test_our_errors_in_ns_train_end_in_one_line_not_a_traceback(scene_copy, monkeypatch, capsys):
    """ns-train in this process (a fresh one spends 10 s importing): the error leaves it as Python's
    own would leave the process, and the hook ns-train installed prints what the user sees."""
    from nerfstudio.scripts.train import entrypoint

    (scene_copy / "transforms.json").write_text("{")
    monkeypatch.setattr(sys, "excepthook", sys.__excepthook__)  # ns-train must install ours itself
    argv = ["ns-train", "spars3r-sfm", "--data", str(scene_copy), "--vis", "tensorboard"]
    with pytest.raises(InputError) as raised:
        run_console_script(entrypoint, [*argv, "--output-dir", str(scene_copy.parent / "outputs")])
    capsys.readouterr()
    sys.excepthook(raised.type, raised.value, raised.tb)  # what Python calls with an uncaught exception
    printed = "".join(capsys.readouterr())
    assert "transforms.json: cannot be read as JSON" in printed
    assert "Traceback" not in printed and printed.startswith("error: ")  # the message alone (wrapped at 120)


def test_every_skipped_file_is_named_with_its_reason(photos, tmp_path, caplog):
    folder = tmp_path / "photos"
    shutil.copytree(photos, folder)
    (folder / "more").mkdir()
    shutil.copy(folder / "view_001.png", folder / "more" / "view_101.png")
    shutil.copy(folder / "view_001.png", folder / ".view_102.png")
    (folder / "view_103.heic").write_bytes(b"....ftypheic")
    (folder / "notes.txt").write_text("mine")
    pixels = np.asarray(Image.open(folder / "view_002.png").convert("RGB"))
    Image.fromarray(pixels).save(folder / "view_104.avif")
    with caplog.at_level(logging.WARNING):
        images = list_images(folder)
    assert "view_104.avif" in [p.name for p in images]
    warning = caplog.text
    for expected in (
        "more/ (a folder: only photos directly inside --images are read)",
        ".view_102.png (a hidden file",
        "view_103.heic (HEIC/HEIF: `pip install pillow-heif` reads it",
        "notes.txt (not an image)",
    ):
        assert expected in warning


def test_a_name_too_long_for_the_scene_is_refused_before_any_work(photos, tmp_path):
    folder = tmp_path / "photos"
    shutil.copytree(photos, folder)
    long_name = "v" * 230 + ".png"
    (folder / "view_001.png").rename(folder / long_name)
    with pytest.raises(InputError, match=rf"{long_name}: a name of 234 bytes; .* at most 200 bytes"):
        process(ProcessConfig(images=folder, output=tmp_path / "scene"))
    assert not (tmp_path / "scene").exists()


def test_the_same_photo_under_two_names_is_found(processed):
    records = [ImageRecord(**r) for r in json.loads(processed.images_json.read_text())]
    copy = ImageRecord(**{**records[1].to_json(), "name": "copy_of_view_001.png"})
    assert same_photos(records) == []
    assert same_photos([*records, copy]) == [[records[1].name, "copy_of_view_001.png"]]


def test_files_written_together_are_never_a_mix_of_two_runs(tmp_path, monkeypatch):
    paths = [tmp_path / "sdf.npz", tmp_path / "mesh.ply"]
    for path in paths:
        path.write_text("old")

    def killed(*args):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt), atomic_files(paths) as temporaries:
        temporaries[0].write_text("new")
        killed()
    assert [p.read_text() for p in paths] == ["old", "old"] and sorted(p.name for p in tmp_path.iterdir()) == [
        "mesh.ply",
        "sdf.npz",
    ]
    real_replace = os.replace
    for k in range(2):  # killed at each rename
        calls = iter(range(2))
        monkeypatch.setattr(
            os, "replace", lambda *a, calls=calls, k=k: killed() if next(calls) == k else real_replace(*a)
        )
        with pytest.raises(KeyboardInterrupt), atomic_files(paths) as temporaries:
            for tmp in temporaries:
                tmp.write_text(f"new {k}")
        monkeypatch.undo()
        contents = {p.read_text() for p in paths if p.exists()}
        assert len(contents) <= 1 and contents <= {f"new {k}"}, (k, contents)
        for path in paths:
            path.write_text("old")


def test_the_printed_train_command_survives_a_path_with_spaces(processed, tmp_path, monkeypatch):
    folder = tmp_path / "my scene's folder"
    shutil.copytree(processed.root, folder)
    output = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=output, width=500))
    monkeypatch.setattr("spars_ns.process.process", lambda config: SceneFolder(folder))
    cli.run_process(ProcessConfig(images=tmp_path, output=folder))
    line = next(line for line in output.getvalue().splitlines() if line.startswith("Train with:"))
    assert shlex.split(line.removeprefix("Train with:")) == ["ns-train", "spars3r", "--data", str(folder)]
