"""The SfM stage: pycolmap tuned for 3-24 photos.

COLMAP's defaults are made for hundreds of overlapping photos. With a handful they reject
the initial pair (100 inliers and 16 degrees of triangulation angle required) and drop
images whose 2D-3D inlier count is under 30. Here the thresholds are lowered to what a
sparse capture gives; for a few wide-baseline photos SIFT is affine-covariant with
domain-size pooling and matching is guided; the mapper starts from several initial pairs,
and the model that registers most images, explains the verified matches of every pair
(model_check.py) and has the lowest reprojection error is kept. Where that model leaves photos
out or in doubt (photos far apart), global mapping gives the other hypothesis. Photos without
an EXIF focal length give a third: their pairs matched again with the focal length the pairs
themselves give (`calibrated_matches`: from 4 photos their fundamental matrices'; for three whose
first model stands short, the plane's, plane.py), mapped where the first model stands short or
those pairs doubt it.

Only training views are mapped. Test views are registered afterwards by absolute pose
against the training model's points, with nothing else refined, so a test view never
moves a training camera nor adds a point.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from itertools import groupby
from pathlib import Path

import numpy as np
import pycolmap

from spars_ns import machine
from spars_ns.errors import SfMError
from spars_ns.metrics import model_poses, pair_errors_deg
from spars_ns.stages.base import SEED
from spars_ns.stages.ingest.images import ImageRecord
from spars_ns.stages.sfm.adjustment import focal_length_undetermined, refine_robustly, with_second_radial_term
from spars_ns.stages.sfm.config import SfMConfig
from spars_ns.stages.sfm.distinctive import Descriptors, refit_on_distinctive_tracks
from spars_ns.stages.sfm.features import extract, global_descriptor, load_extractor, load_matcher, match
from spars_ns.stages.sfm.model_check import ModelCheck, check_model
from spars_ns.stages.sfm.pairs import EXHAUSTIVE_UP_TO, select_pairs, thumbnail_descriptor
from spars_ns.stages.sfm.plane import focal_length_from_plane

log = logging.getLogger(__name__)

# Measured on Strecha scenes and fox at 3-12 views (BENCHMARKS.md, "Wide baselines", "Cameras"):
WIDE_BASELINE_UP_TO = 8  # up to this many photos SIFT is affine-covariant with domain-size pooling and
# matching is guided (halves the pair error at 3 Strecha views; without guidance fountain-P11 at 3 views
# registers nothing); above it plain SIFT unguided is as accurate at a sixth of the time (12 fox photos)
SIFT_MAX_SIDE = 3200  # COLMAP's default: larger photos are scaled down to this for SIFT
# Peak memory of one SIFT extraction thread per pixel of the photo as extracted (its first octave is twice
# the photo's size): 242-307 bytes on 0.5 and 6.8 MP photos, with and without domain-size pooling
# (BENCHMARKS.md, "Memory of feature extraction").
SIFT_BYTES_PER_PIXEL = 310
SIFT_MEMORY_SHARE = 0.75  # of the free memory, for the extraction threads
# The distinctive refit (distinctive.py) is tried where most verified matches could have been made by a
# copy, as on the fox's wallpaper (its captures 37-79%, its three models held by copies 63-69%); the
# repeated walk-arounds, whose copies seldom meet twice in a photo, have 26-54% (there the refit moved wrong
# models either way, by up to 1.3 degrees), Strecha 15-48%, the synthetic rooms 14-24% (BENCHMARKS.md,
# "Matches no look-alike could have made").
MIN_LOOK_ALIKE_SHARE = 0.5
MIN_DISTINCTIVE_GAIN = 0.01  # of the distinctive matches explained, for the refit to be kept
MIN_NUM_INLIERS = 15  # verified matches a pair needs to count as overlapping
INIT_MIN_NUM_INLIERS = 30  # an initial pair's inliers (COLMAP: 100)
INIT_MIN_TRI_ANGLE = 4.0  # an initial pair's triangulation angle, degrees (COLMAP: 16)
ABS_POSE_MIN_NUM_INLIERS = 15  # 2D-3D inliers an image needs to be registered (COLMAP: 30)
ABS_POSE_MIN_INLIER_RATIO = 0.1
MAX_INIT_PAIRS = 6  # starts of the mapper: COLMAP's choice of initial pair, then the strongest pairs
MAX_EXTRA_STARTS = 3  # starts from pairs whose matches the best model leaves unexplained (model_check.py)
# Up to this many training views every start is mapped and the best model kept (at 4 fountain-P11
# views COLMAP's own start errs by 3 degrees, another by 0.4); above it the starts stop at the first
# complete model the model check finds no doubt in: the starts agree there, and each costs seconds
# to minutes.
ALL_STARTS_UP_TO = 8
CHECK_MIN_MATCHES = 50  # verified matches a pair needs to witness for or against a model (model_check.py)

# Photos taken from nearly one place (frames of a walk-around video, steps apart) match well
# but give COLMAP too little triangulation angle: no initial pair (fox 0001-0003: 2,084-2,398
# verified matches per pair, 0 of 3 registered), or a model whose points are all filtered out
# (fox 0002-0004: 3 cameras, 0 points, 4.8-15.7 degrees off). Mapping again with these angles
# registered both, with 1,771 and 1,835 points (BENCHMARKS.md, "Low parallax").
LOW_PARALLAX_INIT_ANGLE = 1.0  # degrees of triangulation angle an initial pair needs (ours: 4)
LOW_PARALLAX_MIN_ANGLE = 0.5  # degrees a point needs to be triangulated and kept (COLMAP: 1.5)
LOW_PARALLAX_MIN_POINTS = 50  # fewer points than this: too few seeds, map again
LOW_PARALLAX_MIN_MATCHES = 200  # only where every training image has a pair this strong, unlike a
# wide-baseline capture that fails for want of matches, which the lower angles would not help

# Photos 45 degrees apart or more share few points three at a time, which incremental mapping starts
# from and registers on; global mapping from the pairs alone placed them (BENCHMARKS.md, "Global
# mapping where incremental mapping falls short"). Its model rests on the pairs where fewer than this
# many of its points are seen in three photos or more (the inliers an initial pair needs): its
# models the check found nothing against yet 6-67 degrees off had 0-19.
GLOBAL_MIN_MULTIVIEW_POINTS = INIT_MIN_NUM_INLIERS
# Where the global model is kept over an incremental one with no photo in doubt, each explains the
# pairs; if they place two photos both register further apart than this (a pair's rotation or
# direction, degrees: what the benchmark calls wrong), one of them is wrong and the pairs cannot say
# which, so every photo is in doubt. Of 90 global models kept on 208 captures, 9 were kept over such
# a model: the one 17.7 degrees off disagreed by 7.2, the right ones not resting on their pairs by
# 0.2-4.7 (BENCHMARKS.md, "Two mappings that disagree").
MAX_MAPPINGS_DISAGREEMENT_DEG = 5.0
# Where structure repeats along a wall (arcades, rows of windows), matches of a copy one period along pass
# verification beside the right ones, in every pair of photos taken beside each other, and a wrong model
# explains its pairs as well as the right one: none of its photos stands out. What shows is how much of
# the evidence no model explains: under this share of all the checked pairs' verified matches, every photo
# is in doubt. Right models explained 81-99% on the fox, Strecha and synthetic photos, models of walls of
# repeated arches 43-69%, right or wrong, and the true cameras there 47-71% (BENCHMARKS.md, "Walls that
# repeat"): chosen between the two, so a capture near it may go either way.
MIN_EXPLAINED_SHARE = 0.75
# A focal length from the pairs further than this factor from COLMAP's start (1.2 times the larger side)
# is not taken: 0.4 to 3.6 times the larger side is 14 to 125 mm equivalent on a 4:3 photo, phone lenses
# from ultra-wide to tele. On 93 captures the pairs gave 0.51-1.0 times the start, and twice far from it:
# 8.2 (fox, 8 photos, near-planar pairs) and 0.27 (a walk-around, 5 photos), which put right models 5.6
# and 28.8 degrees off (BENCHMARKS.md, "A focal length from the pairs").
FOCAL_FROM_PAIRS_MAX_RATIO = 3.0
# Photos the focal length from the pairs needs: of 14 three-photo captures the calibration rejected its
# own estimate on 6, and of those it kept, one wide walk-around went from 4.9 to 20.1 degrees off.
FOCAL_FROM_PAIRS_MIN_VIEWS = 4


@dataclass
class SfMResult:
    train: pycolmap.Reconstruction
    with_test: pycolmap.Reconstruction
    unregistered: dict[str, str] = field(default_factory=dict)
    """Image name -> why it was not registered."""
    init_pairs_tried: int = 0
    check: ModelCheck | None = None
    """The training model against its verified pairs (model_check.py)."""
    doubtful_images: list[str] = field(default_factory=list)
    """Photos whose cameras may be wrong: the check's; every photo of a model that rests on two of
    several photos and few points (`rests_on_two_of_many`), of a global model on the pairs alone
    (`rests_on_pairs`), of a global model the incremental one contradicts (`mappings_disagreement`), and of
    a model that leaves much of its verified matches unexplained (`mostly_unexplained`)."""
    seconds: dict[str, float] = field(default_factory=dict)
    """Time of each step: features and matches, mapping, test views."""
    low_parallax: bool = False
    """The model came from mapping again with low-parallax angles (LOW_PARALLAX_*)."""
    robust_adjustment: bool = False
    """The model's residuals were heavy-tailed and it got the robust last adjustment (adjustment.py)."""
    second_radial_term: bool = False
    """The camera got a second radial distortion term (RADIAL), which the residuals supported (adjustment.py)."""
    global_mapping: bool = False
    """The model came from global mapping (`map_globally`), incremental mapping having fallen short."""
    mappings_disagreement_deg: float | None = None
    """Where the global model was kept over an incremental one with no photo in doubt: the most they
    disagree on a pair of the photos both register (`mappings_disagreement`)."""
    focal_from_pairs: dict[str, float] = field(default_factory=dict)
    """Where the model comes from the pairs verified with the focal length the pairs give
    (`calibrated_matches`): image name -> that focal length, its camera's start."""
    focal_length_undetermined: bool = False
    """The photos without an EXIF focal length leave it open (`adjustment.focal_length_undetermined`):
    their cameras' focal length is the mapper's guess."""
    distinctive_gain: float | None = None
    """The share of the distinctive matches the refit explains beyond the model; None where none was made
    (learned features, few look-alikes, too few distinctive tracks, or a photo lost)."""
    look_alike_share: float | None = None
    """The share of the verified matches a look-alike could have made (distinctive.py); None for learned
    features, whose descriptors the database does not keep."""

    @property
    def distinctive_refit(self) -> bool:
        """The model was refitted on its tracks without look-alikes (distinctive.py): the refit explains
        `MIN_DISTINCTIVE_GAIN` more of the distinctive matches."""
        return distinctive_refit_kept(self.distinctive_gain)


def extract_and_match(
    database: Path,
    image_dir: Path,
    images: list[ImageRecord],
    config: SfMConfig,
) -> None:
    """Features for every image and verified matches for the selected pairs, into a new database.

    Images share a camera when their size and EXIF focal length agree. Pairs: all of them up
    to `EXHAUSTIVE_UP_TO` images, else a retrieval shortlist (pairs.py).
    """
    names = [r.name for r in images]
    pairs_path = database.with_name("pairs.txt")
    # Images enter the database in a fixed order before extraction: extraction alone numbers them
    # in the order its threads finish, which changes the mapper's results from run to run.
    import_images(database, image_dir, images, config)
    if config.features == "sift":
        extract_sift(database, image_dir, images, config)
        descriptors = None
        if len(names) > EXHAUSTIVE_UP_TO:
            descriptors = np.stack([thumbnail_descriptor(image_dir / n) for n in names])
        write_pairs(pairs_path, select_pairs(names, descriptors))
        match_sift(database, pairs_path, len(images))
        return
    extractor = load_extractor(config.features, config.learned)
    found = {n: extract(extractor, image_dir / n, config.learned) for n in names}
    del extractor
    pairs = select_pairs(names, np.stack([global_descriptor(found[n]) for n in names]))
    matcher = load_matcher(config.features, config.learned)
    matches = {(a, b): match(matcher, found[a], found[b]) for a, b in pairs}
    write_keypoints_and_matches(database, {n: f.keypoints for n, f in found.items()}, matches)
    write_pairs(pairs_path, pairs)
    pycolmap.verify_matches(database, pairs_path, options=verification_options())


def calibrated_matches(
    database: Path,
    calibrated: Path,
    images: list[ImageRecord],
    config: SfMConfig,
    graph: MatchGraph,
    stands_short: bool,
) -> dict[str, float]:
    """A copy of `database` at `calibrated` whose cameras without an EXIF focal length have one from
    the pairs as their prior, and whose pairs are matched again from it (guided matching follows each
    pair's geometry) and verified as photos with EXIF are: with an essential matrix, which a wrong
    focal length cannot fit. The focal length is the one the pairs' fundamental matrices give
    (`focal_lengths_from_pairs`, from `FOCAL_FROM_PAIRS_MIN_VIEWS` photos), or for fewer photos, only
    where the first model `stands_short`, the one where the pairs (`graph`, the database's) agree on
    a plane (`focal_lengths_from_plane`). Returns those focal lengths by image name; none (and no
    copy) where every photo has an EXIF focal length or where the pairs give none."""
    few = len(images) < FOCAL_FROM_PAIRS_MIN_VIEWS
    if (few and not stands_short) or all(focal_prior(r) is not None for r in images):
        return {}
    calibrated.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(database, calibrated)
    # From 4 photos only the fundamental matrices: the plane's focal length where they gave none put 2 of 74
    # wide walk-arounds' models (in doubt either way) 13-18% off in focal length where they were 3-4%
    # (BENCHMARKS.md, "A focal length from the plane").
    names = [r.name for r in images]
    focal_lengths = focal_lengths_from_plane(calibrated, graph, names) if few else focal_lengths_from_pairs(calibrated)
    if not focal_lengths:
        calibrated.unlink()
        return {}
    guided = config.features == "sift" and wide_baseline(len(images))
    db = pycolmap.Database.open(calibrated)
    try:
        db.clear_two_view_geometries()
        if guided:
            db.clear_matches()
    finally:
        db.close()
    pairs_path = database.with_name("pairs.txt")
    if guided:
        match_sift(calibrated, pairs_path, len(images))
    else:
        pycolmap.verify_matches(calibrated, pairs_path, options=verification_options())
    return focal_lengths


def verification_options() -> pycolmap.TwoViewGeometryOptions:
    verification = pycolmap.TwoViewGeometryOptions()
    verification.min_num_inliers = MIN_NUM_INLIERS
    verification.ransac.random_seed = SEED
    return verification


def extract_sift(
    database: Path, image_dir: Path, images: list[ImageRecord], config: SfMConfig, threads: int | None = None
) -> None:
    """SIFT features of every image, on `threads` threads (by default `sift_threads`: as many as the
    cores and the free memory allow). The features do not depend on it."""
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.max_image_size = SIFT_MAX_SIDE
    extraction.num_threads = threads or sift_threads(images, machine.free_memory(), machine.cores())
    extraction.sift.max_num_features = config.max_num_features
    extraction.sift.domain_size_pooling = extraction.sift.estimate_affine_shape = wide_baseline(len(images))
    for group, reader in camera_groups(images, config):
        pycolmap.extract_features(
            database,
            image_dir,
            image_names=group,
            camera_mode=pycolmap.CameraMode.SINGLE,
            reader_options=reader,
            extraction_options=extraction,
            device=pycolmap.Device.cpu,
        )


def sift_threads(images: list[ImageRecord], available_bytes: int, cores: int) -> int:
    """Threads for SIFT extraction: one per core, as COLMAP's default, but no more than
    SIFT_MEMORY_SHARE of the free memory holds for the largest photo. A 12 MP photo takes about
    2.4 GB a thread, so one per core would ask 38 GB of a 16-core machine."""
    per_thread = SIFT_BYTES_PER_PIXEL * max(sift_pixels(r.width, r.height) for r in images)
    threads = max(1, min(cores, int(SIFT_MEMORY_SHARE * available_bytes // per_thread)))
    if threads < cores:
        log.info(
            "Extracting features on %d of %d cores: each thread takes about %.1f GB for these photos, "
            "and %.1f GB of memory is free",
            threads,
            cores,
            per_thread / 1e9,
            available_bytes / 1e9,
        )
    return threads


def sift_pixels(width: int, height: int) -> float:
    """Pixels of a photo as SIFT sees it: scaled down to SIFT_MAX_SIDE where larger."""
    return width * height * min(1.0, SIFT_MAX_SIDE / max(width, height)) ** 2


def wide_baseline(num_images: int) -> bool:
    """Few photos, so likely far apart: affine-covariant SIFT with domain-size pooling, guided matching."""
    return num_images <= WIDE_BASELINE_UP_TO


def match_sift(database: Path, pairs_path: Path, num_images: int) -> None:
    matching = pycolmap.FeatureMatchingOptions()
    matching.guided_matching = wide_baseline(num_images)
    pycolmap.match_image_pairs(
        database,
        matching_options=matching,
        pairing_options=pycolmap.ImportedPairingOptions(match_list_path=pairs_path),
        verification_options=verification_options(),
        device=pycolmap.Device.cpu,
    )


def focal_lengths_from_pairs(database: Path) -> dict[str, float]:
    """Focal lengths for the cameras without an EXIF one, from the verified pairs' fundamental
    matrices (GLOMAP's view-graph calibration), written into `database` (a copy: the calibration
    rewrites it) as those cameras' priors. Returns them by image name. COLMAP starts such a camera at
    1.2 times the photo's larger side (the fox's: 1,152 px for a true 688); the pairs gave 690 px
    there. A camera keeps COLMAP's start where the calibration rejects its estimate, or where the
    estimate is over FOCAL_FROM_PAIRS_MAX_RATIO times from that start (near-planar pairs fit almost
    any focal length: 8 fox photos gave 9,480 px)."""
    db = pycolmap.Database.open(database)
    try:
        cameras = {c.camera_id: c for c in db.read_all_cameras()}
    finally:
        db.close()
    start = {camera_id: c for camera_id, c in cameras.items() if not c.has_prior_focal_length}
    if not start:
        return {}
    options = pycolmap.ViewGraphCalibrationOptions()
    options.random_seed = SEED
    options.cross_validate_prior_focal_lengths = False
    if not pycolmap.calibrate_view_graph(database, options):
        return {}
    db = pycolmap.Database.open(database)
    try:
        estimates = {c.camera_id: c.mean_focal_length() for c in db.read_all_cameras() if c.camera_id in start}
    finally:
        db.close()
    accepted = {
        camera_id: focal
        for camera_id, focal in estimates.items()
        if focal != start[camera_id].mean_focal_length()  # the calibration's own rejection resets it
        and 1 / FOCAL_FROM_PAIRS_MAX_RATIO <= focal / start[camera_id].mean_focal_length() <= FOCAL_FROM_PAIRS_MAX_RATIO
    }
    return set_focal_priors(database, cameras, accepted)


def focal_lengths_from_plane(database: Path, graph: MatchGraph, names: list[str]) -> dict[str, float]:
    """The focal length where the pairs of `graph` agree on a plane (plane.py), written into `database`
    (a copy) as the prior of the cameras without an EXIF one: for photos too few for the view-graph
    calibration. Returns them by image name. On the fox's three wide photos of its wall it came within
    0.3-9% of the truth (BENCHMARKS.md, "A focal length from the plane")."""
    db = pycolmap.Database.open(database)
    try:
        cameras = {c.camera_id: c for c in db.read_all_cameras()}
        images = db.read_all_images()
    finally:
        db.close()
    sizes = {image.image_id: (cameras[image.camera_id].width, cameras[image.camera_id].height) for image in images}
    by_size = focal_length_from_plane(graph, names, sizes)
    return set_focal_priors(
        database,
        cameras,
        {
            i: by_size[(c.width, c.height)]
            for i, c in cameras.items()
            if not c.has_prior_focal_length and (c.width, c.height) in by_size
        },
    )


def set_focal_priors(
    database: Path, cameras: dict[int, pycolmap.Camera], focal_lengths: dict[int, float]
) -> dict[str, float]:
    """Every camera of `database` as in `cameras`, but those of `focal_lengths` starting from that focal
    length as a prior. Returns the focal lengths by image name."""
    db = pycolmap.Database.open(database)
    try:
        for camera_id, camera in cameras.items():
            if camera_id in focal_lengths:
                camera.params[camera.focal_length_idxs()] = focal_lengths[camera_id]
                camera.has_prior_focal_length = True
            db.update_camera(camera)
        return {
            image.name: focal_lengths[image.camera_id]
            for image in db.read_all_images()
            if image.camera_id in focal_lengths
        }
    finally:
        db.close()


def write_keypoints_and_matches(
    database: Path, keypoints: dict[str, np.ndarray], matches: dict[tuple[str, str], np.ndarray]
) -> None:
    """Keypoints (N, 2) per image name and raw matches (M, 2) per pair, into a database whose
    cameras and images exist; pycolmap.verify_matches then adds the two-view geometries."""
    db = pycolmap.Database.open(database)
    try:
        ids = {image.name: image.image_id for image in db.read_all_images()}
        for name, points in keypoints.items():
            db.write_keypoints(ids[name], np.ascontiguousarray(points, np.float32))
        for (a, b), pairs in matches.items():
            db.write_matches(ids[a], ids[b], np.ascontiguousarray(pairs, np.uint32))
    finally:
        db.close()


def camera_groups(images: list[ImageRecord], config: SfMConfig):
    """(image names, reader options) per camera: one per size and EXIF focal length (`focal_prior`)."""

    def camera_key(record: ImageRecord):
        return (record.width, record.height, focal_prior(record) or 0.0)

    for (width, height, focal), group in groupby(sorted(images, key=camera_key), key=camera_key):
        reader = pycolmap.ImageReaderOptions(camera_model=config.camera_model)
        if focal:
            camera = pycolmap.Camera.create_from_model_name(0, config.camera_model, focal, width, height)
            reader.camera_params = camera.params_to_string()
        yield [r.name for r in group], reader


def focal_prior(record: ImageRecord) -> float | None:
    """The photo's EXIF focal length where a lens could give it: within the bounds COLMAP's mapper
    holds a camera to (`implausible_cameras`), 0.1-10 times the photo's larger side. Some cameras
    write 35 mm equivalents hundreds of times too long (exiftool's forum lists a dozen models), and
    as a prior such a value leaves no model standing: fountain-P11, 5 photos, a prior 1,000 times the
    true focal length registered none of them (BENCHMARKS.md, "EXIF focal lengths far off")."""
    if record.focal_prior is None:
        return None
    width, height = record.width, record.height
    camera = pycolmap.Camera.create_from_model_name(0, "SIMPLE_PINHOLE", record.focal_prior, width, height)
    return None if implausible(camera, pycolmap.IncrementalMapperOptions()) else record.focal_prior


def import_images(database: Path, image_dir: Path, images: list[ImageRecord], config: SfMConfig) -> None:
    """Cameras and images, without features, into a new database, numbered camera group by
    camera group (`camera_groups` order), in name order within each."""
    ignored = [r for r in images if r.focal_prior is not None and focal_prior(r) is None]
    if ignored:
        bounds = pycolmap.IncrementalMapperOptions()
        log.warning(
            "EXIF focal lengths no lens gives (outside %g-%g times the photo's larger side), ignored: the focal "
            "length is estimated from the photos instead. %s",
            bounds.min_focal_length_ratio,
            bounds.max_focal_length_ratio,
            "; ".join(f"{r.name}: {r.focal_prior:.0f} px for {r.width}x{r.height}" for r in ignored),
        )
    pycolmap.Database.open(database).close()
    for group, reader in camera_groups(images, config):
        pycolmap.import_images(
            database, image_dir, camera_mode=pycolmap.CameraMode.SINGLE, image_names=group, options=reader
        )


def write_pairs(path: Path, pairs: list[tuple[str, str]]) -> None:
    path.write_text("".join(f"{a} {b}\n" for a, b in pairs))


def mapper_options(image_names: list[str], low_parallax: bool = False) -> pycolmap.IncrementalPipelineOptions:
    options = pycolmap.IncrementalPipelineOptions()
    options.image_names = image_names
    options.min_model_size = 2
    # One model per start: after its first model COLMAP starts new ones from the images left over
    # (up to 50, 7 s on the repeated-wall test scene), which our other starts already cover.
    options.multiple_models = False
    options.min_num_matches = MIN_NUM_INLIERS
    # One thread: COLMAP bundle-adjusts on several above 50,000 residuals (768x512 photos reach
    # it), and their sums depend on which thread finishes first: the same photos gave other
    # cameras from run to run (fox, 12 views, with it forced on: 4 models in 4 runs).
    options.num_threads = 1
    options.random_seed = SEED
    options.mapper.init_min_num_inliers = INIT_MIN_NUM_INLIERS
    options.mapper.init_min_tri_angle = INIT_MIN_TRI_ANGLE
    options.mapper.abs_pose_min_num_inliers = ABS_POSE_MIN_NUM_INLIERS
    options.mapper.abs_pose_min_inlier_ratio = ABS_POSE_MIN_INLIER_RATIO
    options.mapper.random_seed = SEED
    options.triangulation.random_seed = SEED
    if low_parallax:
        options.mapper.init_min_tri_angle = min(INIT_MIN_TRI_ANGLE, LOW_PARALLAX_INIT_ANGLE)
        options.mapper.filter_min_tri_angle = options.triangulation.min_angle = LOW_PARALLAX_MIN_ANGLE
    return options


class MatchGraph:
    """Verified inlier matches between images, read from a COLMAP database."""

    def __init__(self, database: Path):
        db = pycolmap.Database.open(database)
        try:
            self.image_ids = {image.name: image.image_id for image in db.read_all_images()}
            self.num_keypoints = {i: db.num_keypoints_for_image(i) for i in self.image_ids.values()}
            self.keypoints = {i: db.read_keypoints(i)[:, :2] for i in self.image_ids.values()}
            pair_ids, geometries = db.read_two_view_geometries()
        finally:
            db.close()
        self.inliers: dict[tuple[int, int], np.ndarray] = {}
        self.configs: dict[tuple[int, int], pycolmap.TwoViewGeometryConfiguration] = {}
        for pair_id, geometry in zip(pair_ids, geometries):
            matches = np.asarray(geometry.inlier_matches)
            if len(matches):
                id1, id2 = pycolmap.pair_id_to_image_pair(pair_id)
                self.inliers[(id1, id2)] = matches
                self.inliers[(id2, id1)] = matches[:, ::-1]
                self.configs[(id1, id2)] = self.configs[(id2, id1)] = geometry.config

    def num_inliers(self, id1: int, id2: int) -> int:
        return len(self.inliers.get((id1, id2), ()))

    def points_seen(self, model: pycolmap.Reconstruction, image_id: int) -> tuple[np.ndarray, np.ndarray]:
        """(keypoints (N, 2), SfM points (N, 3)) of an image: its verified matches to registered
        images' keypoints that have a 3D point, each of its keypoints once."""
        points2d, points3d, seen = [], [], set()
        for registered_id in model.reg_image_ids():
            registered = model.image(registered_id)
            for own, other in self.inliers.get((image_id, registered_id), np.zeros((0, 2), int)).tolist():
                observation = registered.point2D(other)
                if observation.has_point3D() and own not in seen:
                    seen.add(own)
                    points2d.append(self.keypoints[image_id][own])
                    points3d.append(model.point3D(observation.point3D_id).xyz)
        return np.reshape(points2d, (-1, 2)).astype(float), np.reshape(points3d, (-1, 3)).astype(float)

    def seen_in_a_third(self, id1: int, id2: int) -> int:
        """How many of the pair's verified matches have a keypoint matched in a third image too:
        the tracks a model can start from (COLMAP's first pair triangulates none seen in two photos
        only, and needs 15 points)."""

        def matched_elsewhere(image: int, other: int) -> set[int]:
            return {k for (i, j), m in self.inliers.items() if i == image and j != other for k in m[:, 0].tolist()}

        first, second = matched_elsewhere(id1, id2), matched_elsewhere(id2, id1)
        pair = self.inliers.get((id1, id2), np.zeros((0, 2), int))
        return sum(k1 in first or k2 in second for k1, k2 in pair.tolist())

    def strongest_pairs(self, image_ids: list[int]) -> list[tuple[int, int]]:
        pairs = [(a, b) for i, a in enumerate(image_ids) for b in image_ids[i + 1 :] if self.num_inliers(a, b)]
        return sorted(pairs, key=lambda p: -self.num_inliers(*p))


def map_training_views(
    database: Path,
    graph: MatchGraph,
    image_dir: Path,
    train_names: list[str],
    work_dir: Path,
    on_attempt: Callable[[int], None] | None = None,
    low_parallax: bool = False,
) -> tuple[pycolmap.Reconstruction | None, ModelCheck | None, int]:
    """Incremental mapping of the training views from several initial pairs; the best model wins.

    COLMAP's own choice of initial pair comes first, then the strongest pairs by verified
    inliers. With few views one start can settle in a poor minimum (on fountain-P11 at 4
    views: 3.1 degrees median pair error, against 0.4 from another pair, same images
    registered), and on repetitive structure a start from a pair that matched the wrong
    copy builds a wrong model. Models rank by registered images, then by the pairs whose
    verified matches they leave unexplained (model_check.py), then by mean reprojection
    error. While the best model has doubtful images (placed against most of their pairs), the
    pairs it leaves unexplained are tried as initial pairs too (a start from a right pair
    builds the right model). Above `ALL_STARTS_UP_TO` views starts stop at the first
    complete model without doubtful images. Returns the best model, its check and the number
    of starts.
    """
    train_ids = [graph.image_ids[n] for n in train_names]
    queue: list[tuple[int, int] | None] = [None, *graph.strongest_pairs(train_ids)[: MAX_INIT_PAIRS - 1]]
    tried: list[tuple[int, int] | None] = []
    best, best_rank, best_check = None, None, None
    implausible: list[str] = []  # the discarded models' cameras, described
    many_views = len(train_names) > ALL_STARTS_UP_TO
    while queue and len(tried) < MAX_INIT_PAIRS + MAX_EXTRA_STARTS:
        pair = queue.pop(0)
        if many_views and best is not None and best_rank[0] == len(train_names) and not best_check.doubtful_images:
            break
        tried.append(pair)
        if on_attempt:
            on_attempt(len(tried) - 1)
        options = mapper_options(train_names, low_parallax)
        if pair is not None:
            options.init_image_id1, options.init_image_id2 = pair
        pycolmap.set_random_seed(SEED)
        out = work_dir / f"attempt_{len(tried) - 1}"
        out.mkdir(parents=True, exist_ok=True)
        for model in pycolmap.incremental_mapping(database, image_dir, out, options).values():
            if implausible_cameras(model, options.mapper):
                implausible.append(describe_cameras(model))
                continue
            check = check_model_of(model, graph)
            rank = (model.num_reg_images(), -len(check.unexplained), -model.compute_mean_reprojection_error())
            if best is None or rank > best_rank:
                best, best_rank, best_check = model, rank, check
        if not queue and best is not None and best_check.doubtful_images:
            for p in best_check.unexplained:
                candidate = tuple(sorted((graph.image_ids[p.image1], graph.image_ids[p.image2])))
                if candidate not in tried and candidate not in queue:
                    queue.append(candidate)
    if implausible:
        log.warning(
            "%d of %d starts gave models with implausible intrinsics (%s), discarded: the photos may share "
            "too little 3D structure to fix the focal length.",
            len(implausible),
            len(tried),
            "; ".join(sorted(set(implausible))),
        )
    return best, best_check, len(tried)


def implausible_cameras(model: pycolmap.Reconstruction, options: pycolmap.IncrementalMapperOptions) -> bool:
    """Whether a camera has intrinsics no lens gives, by COLMAP's own bounds (a focal length of 0.1-10
    times the photo's larger side, distortion parameters up to 1), which its mapper applies only
    from 20 registered images on: three fox photos far apart gave a model at 16,763 px for a true
    688, with k1 = -85, 100 degrees off."""
    return any(implausible(camera, options) for camera in model.cameras.values())


def implausible(camera: pycolmap.Camera, options: pycolmap.IncrementalMapperOptions) -> bool:
    bounds = options.min_focal_length_ratio, options.max_focal_length_ratio, options.max_extra_param
    return camera.has_bogus_params(*bounds)


def describe_cameras(model: pycolmap.Reconstruction) -> str:
    return ", ".join(
        f"focal length {camera.mean_focal_length():.0f} px for {camera.width}x{camera.height} photos, "
        f"extra parameters {np.round(camera.params[camera.extra_params_idxs()], 3).tolist()}"
        for camera in model.cameras.values()
    )


def map_globally(
    database: Path, image_dir: Path, train_names: list[str], work_dir: Path
) -> pycolmap.Reconstruction | None:
    """Global mapping of the training views (GLOMAP: rotations averaged over the verified pairs, then
    positions and points together), the points seen in only two photos kept as tracks. COLMAP's and
    GLOMAP's defaults keep tracks of three photos or more, which photos far apart hardly have; the
    pairs alone still fix the rotations and the directions between the photos. Returns the model
    with most photos; None under two photos or with intrinsics no lens has."""
    options = pycolmap.GlobalPipelineOptions()
    options.image_names = train_names
    options.min_num_matches = MIN_NUM_INLIERS
    options.num_threads = options.mapper.num_threads = 1  # one thread, as `mapper_options` says why
    options.random_seed = options.mapper.random_seed = SEED
    options.mapper.track_min_num_views_per_track = 2
    options.mapper.global_positioning.min_num_view_per_track = 2
    options.mapper.bundle_adjustment.min_track_length = 2
    options.mapper.retriangulation.ignore_two_view_tracks = False
    work_dir.mkdir(parents=True, exist_ok=True)
    models = pycolmap.global_mapping(database, image_dir, work_dir, options).values()
    best = max(models, key=lambda model: model.num_reg_images(), default=None)
    if best is None or best.num_reg_images() < 2 or implausible_cameras(best, pycolmap.IncrementalMapperOptions()):
        return None
    return best


def multiview_points(model: pycolmap.Reconstruction) -> int:
    """Points seen in three photos or more."""
    return sum(point.track.length() >= 3 for point in model.points3D.values())


def distinctive_refit_kept(gain: float | None) -> bool:
    return gain is not None and gain > MIN_DISTINCTIVE_GAIN


def distinctive_inliers(graph: MatchGraph, descriptors: Descriptors) -> dict[tuple[int, int], np.ndarray]:
    """The distinctive verified matches (distinctive.py) of each overlapping pair, each pair once."""
    return {
        pair: m[descriptors.distinctive(*pair, m)]
        for pair, m in graph.inliers.items()
        if pair[0] < pair[1] and len(m) >= MIN_NUM_INLIERS
    }


def check_model_of(model: pycolmap.Reconstruction, graph: MatchGraph) -> ModelCheck:
    return check_model(model, graph.inliers, graph.keypoints, min_matches=CHECK_MIN_MATCHES)


def register_test_views(
    train: pycolmap.Reconstruction, database: Path, graph: MatchGraph, test_names: list[str]
) -> tuple[pycolmap.Reconstruction, dict[str, str]]:
    """A copy of `train` with each test view added by absolute pose against its points.

    Training cameras, intrinsics and points are left exactly as they are; test views add
    observations to no track. Returns the model and the reasons for test views left out.
    """
    db = pycolmap.Database.open(database)
    try:
        db_images = {image.name: image for image in db.read_all_images()}
        db_cameras = {camera.camera_id: camera for camera in db.read_all_cameras()}
    finally:
        db.close()

    with_test = pycolmap.Reconstruction(train)
    left_out = {}
    for name in test_names:
        image_id = graph.image_ids[name]
        points2d, points3d = graph.points_seen(train, image_id)
        if len(points2d) < ABS_POSE_MIN_NUM_INLIERS:
            left_out[name] = f"only {len(points2d)} matches to triangulated points (needs {ABS_POSE_MIN_NUM_INLIERS})"
            continue

        camera_id = db_images[name].camera_id
        shared_camera = with_test.exists_camera(camera_id)
        camera = with_test.camera(camera_id) if shared_camera else db_cameras[camera_id]
        estimation = pycolmap.AbsolutePoseEstimationOptions()
        estimation.estimate_focal_length = not shared_camera
        estimation.ransac.random_seed = SEED
        refinement = pycolmap.AbsolutePoseRefinementOptions()
        refinement.refine_focal_length = not shared_camera
        # Keypoints are stored with COLMAP's convention (pixel centre at +0.5): use as is.
        result = pycolmap.estimate_and_refine_absolute_pose(points2d, points3d, camera, estimation, refinement)
        num_inliers = int(result["num_inliers"]) if result else 0
        if num_inliers < ABS_POSE_MIN_NUM_INLIERS:
            left_out[name] = (
                f"pose estimation kept {num_inliers} of {len(points2d)} 2D-3D matches (needs "
                f"{ABS_POSE_MIN_NUM_INLIERS})"
            )
            continue
        if not shared_camera:
            with_test.add_camera_with_trivial_rig(camera)
        image = pycolmap.Image(
            name=name, keypoints=graph.keypoints[image_id].astype(float), camera_id=camera_id, image_id=image_id
        )
        with_test.add_image_with_trivial_frame(image, result["cam_from_world"])
    return with_test, left_out


# Two-view geometries where a homography fits the matches as well as the epipolar geometry: a
# rotation on the spot or a plane, no parallax to triangulate from.
HOMOGRAPHY_CONFIGS = {
    pycolmap.TwoViewGeometryConfiguration.PLANAR,
    pycolmap.TwoViewGeometryConfiguration.PANORAMIC,
    pycolmap.TwoViewGeometryConfiguration.PLANAR_OR_PANORAMIC,
}


class Remedy(Enum):
    """What the photos need, said when they do not register (run_sfm's error lists each that applies)."""

    FURTHER_APART = "photos taken from further apart (a step or two sideways between shots)"
    IN_BETWEEN = "more photos in between those you have (neighbouring views 30 degrees apart or closer)"


def explain_unregistered(
    graph: MatchGraph, name: str, model: pycolmap.Reconstruction | None, train_names: list[str]
) -> tuple[str, Remedy | None]:
    """Why `name` is not in `model`, and what would help: against the registered images, or, when
    there is no model at all, against the other training images (the mapper found no initial pair)."""
    image_id = graph.image_ids[name]
    if graph.num_keypoints[image_id] < 50:
        return f"only {graph.num_keypoints[image_id]} features (blurred, dark or textureless?)", None
    registered = [model.image(i).name for i in model.reg_image_ids()] if model else []
    others = registered or [n for n in train_names if n != name]
    best, best_name = 0, None
    for other in others:
        n = graph.num_inliers(image_id, graph.image_ids[other])
        if n > best:
            best, best_name = n, other
    if best_name is None:
        which = "registered" if registered else "other training"
        return f"no verified matches (>= {MIN_NUM_INLIERS}) with any {which} image", None
    matches = f"{best} verified matches with {best_name}"
    if registered:
        at_points = len(graph.points_seen(model, image_id)[0])
        if at_points < ABS_POSE_MIN_NUM_INLIERS:
            return (
                f"{matches}, but only {at_points} of its matches to the model are at its points (registering needs "
                f"{ABS_POSE_MIN_NUM_INLIERS}): it shares too little with the registered photos",
                Remedy.IN_BETWEEN,
            )
        return f"{matches}, but its pose could not be estimated from them", None
    in_a_third = graph.seen_in_a_third(image_id, graph.image_ids[best_name])
    if len(train_names) > 2 and in_a_third < INIT_MIN_NUM_INLIERS:
        # Before the homography: in walk-arounds with views 48-97 degrees apart (BENCHMARKS.md,
        # "Walked all round") 0-37 of a neighbouring pair's 45-255 verified matches are seen in a
        # third photo (the room's neighbours, 22-33 degrees apart: 85-218), and their pairs are
        # often explained by a homography of the far walls, which photos further apart would not help.
        return (
            f"{matches}, but only {in_a_third} of them are matched in a third photo too, and a model starts from "
            "points seen in three photos (photos far apart around the scene share few)",
            Remedy.IN_BETWEEN,
        )
    if graph.configs[(image_id, graph.image_ids[best_name])] in HOMOGRAPHY_CONFIGS:
        return (
            f"{matches}, but one homography explains most of them (photos taken from one spot, or of one flat "
            "surface): they give no depth to start a model from",
            Remedy.FURTHER_APART,
        )
    return (
        f"{matches}, but no pair could start the model: an initial pair needs {INIT_MIN_NUM_INLIERS} inliers seen at "
        f"{INIT_MIN_TRI_ANGLE} degrees of triangulation angle (photos from nearly one place give too little; photos "
        "far apart, too few matches that agree on one geometry)",
        Remedy.FURTHER_APART,
    )


@dataclass
class Hypothesis:
    """A model of the training photos from one database, by the mappers of `map_hypothesis`."""

    train: pycolmap.Reconstruction | None
    check: ModelCheck | None
    train_names: list[str]
    attempts: int
    low_parallax: bool
    global_mapping: bool
    disagreement: float | None

    @property
    def standing(self) -> tuple[int, bool]:
        return standing(self.train, self.check, self.train_names, self.global_mapping)

    def doubted_by(self, graph: MatchGraph) -> bool:
        """Whether the pairs of another database leave photos of this model in doubt."""
        return self.train is not None and bool(check_model_of(self.train, graph).doubtful_images)


def map_hypothesis(
    database: Path,
    graph: MatchGraph,
    image_dir: Path,
    train_names: list[str],
    work_dir: Path,
    on_attempt: Callable[[int], None] | None,
) -> Hypothesis:
    """Incremental mapping from several starts, again with low-parallax angles where it finds too
    few points, and global mapping where it leaves photos out or in doubt."""
    train, check, attempts = map_training_views(
        database, graph, image_dir, train_names, work_dir / "models", on_attempt
    )
    low_parallax = False
    if too_few_points(train) and well_matched(graph, train_names):
        # Every start, as above: the first complete model of fox 0002-0004 was 3.6-8.4 degrees off,
        # the best of all starts 2.7-2.9 (each start costs 20-40 s on these 540x960 photos).
        again, again_check, more = map_training_views(
            database,
            graph,
            image_dir,
            train_names,
            work_dir / "models_low_parallax",
            on_attempt,
            low_parallax=True,
        )
        attempts += more
        if again is not None and (again.num_reg_images(), again.num_points3D()) > (
            (train.num_reg_images(), train.num_points3D()) if train else (0, 0)
        ):
            train, check, low_parallax = again, again_check, True
    global_mapping, disagreement = False, None
    if standing(train, check, train_names, False) < (len(train_names), True):  # photos left out or in doubt
        globally = map_globally(database, image_dir, train_names, work_dir / "models_global")
        if globally is not None:
            global_check = check_model_of(globally, graph)
            global_mapping, disagreement = prefer_global(train, check, globally, global_check, train_names)
            if global_mapping:
                train, check = globally, global_check

    return Hypothesis(train, check, train_names, attempts, low_parallax, global_mapping, disagreement)


def run_sfm(
    image_dir: Path,
    images: list[ImageRecord],
    train_names: list[str],
    test_names: list[str],
    work_dir: Path,
    config: SfMConfig,
    on_attempt: Callable[[int], None] | None = None,
) -> SfMResult:
    """Features, matches, mapping of training views, registration of test views.

    `work_dir` receives `database.db`. Raises SfMError when fewer than two training
    views register.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    database = work_dir / "database.db"
    database.unlink(missing_ok=True)
    clock = time.perf_counter()
    seconds = {}

    def lap(step: str) -> None:
        nonlocal clock
        seconds[step] = round(time.perf_counter() - clock, 2)
        clock = time.perf_counter()

    extract_and_match(database, image_dir, images, config)
    lap("features_and_matches")
    graph = MatchGraph(database)
    mapped = map_hypothesis(database, graph, image_dir, train_names, work_dir, on_attempt)
    attempts = mapped.attempts
    calibrated = work_dir / "calibrated" / "database.db"
    focal_from_pairs = calibrated_matches(
        database, calibrated, images, config, graph, mapped.standing < (len(train_names), True)
    )
    if focal_from_pairs:
        # Where the model stands short, or the pairs verified with the focal length from the pairs put its
        # photos in doubt, the photos are mapped again from those pairs, and the model that ranks higher is
        # kept; a tie goes to the calibrated pairs where they doubt the first model. A fox capture's silent
        # model 46.8 degrees off, right by its own pairs, is doubted by them; its photos mapped again from
        # them come out 0.84 degrees off (BENCHMARKS.md, "A focal length from the pairs").
        calibrated_graph = MatchGraph(calibrated)
        doubted = mapped.doubted_by(calibrated_graph)
        other = None
        if mapped.standing < (len(train_names), True) or doubted:
            other = map_hypothesis(calibrated, calibrated_graph, image_dir, train_names, calibrated.parent, on_attempt)
            attempts += other.attempts
        if other is not None and (other.standing > mapped.standing or (other.standing == mapped.standing and doubted)):
            log.info(
                "No EXIF focal length: the cameras come from the pairs matched again with %s px, the focal "
                "length their fundamental matrices give, or for photos of one plane its homographies "
                "(sfm/report.json, focal_from_pairs).",
                ", ".join(f"{f:.0f}" for f in sorted(set(focal_from_pairs.values()))),
            )
            os.replace(calibrated, database)
            graph, mapped = calibrated_graph, other
        else:
            focal_from_pairs = {}
        shutil.rmtree(calibrated.parent)
    train, check = mapped.train, mapped.check
    low_parallax, global_mapping, disagreement = mapped.low_parallax, mapped.global_mapping, mapped.disagreement
    if low_parallax:
        log.warning(
            "Low parallax: the photos were taken from nearly one place, so the cameras come from mapping with "
            "initial pairs down to %.1f degrees of triangulation angle, and the %d points from angles down to %.1f "
            "degrees (less certain in depth). Photos a step or two apart from each other give better cameras.",
            LOW_PARALLAX_INIT_ANGLE,
            train.num_points3D(),
            LOW_PARALLAX_MIN_ANGLE,
        )

    robust_adjustment = train is not None and refine_robustly(train)
    two_terms = None if train is None or robust_adjustment else with_second_radial_term(train)
    second_radial_term = two_terms is not None and not implausible_cameras(
        two_terms, pycolmap.IncrementalMapperOptions()
    )
    if second_radial_term:
        train = two_terms
    if robust_adjustment or second_radial_term:
        check = check_model_of(train, graph)
    look_alike_share = distinctive_gain = None
    if train is not None and config.features == "sift":
        # Learned features keep no descriptors in the database.
        descriptors = Descriptors(database, graph.keypoints, graph.inliers)
        distinctive = distinctive_inliers(graph, descriptors)
        overlapping = sum(len(m) for pair, m in graph.inliers.items() if pair in distinctive)
        look_alike_share = 1 - sum(map(len, distinctive.values())) / max(overlapping, 1)
        if look_alike_share > MIN_LOOK_ALIKE_SHARE:
            options = mapper_options(train_names)
            refit = refit_on_distinctive_tracks(train, database, image_dir, descriptors, options, robust_adjustment)
            if refit is not None and refit.num_reg_images() == train.num_reg_images():
                shares = [check_model(m, distinctive, graph.keypoints, 1).explained_share for m in (refit, train)]
                distinctive_gain = shares[0] - shares[1]
    if distinctive_refit_kept(distinctive_gain):
        train, check = refit, check_model_of(refit, graph)
    guessed = {r.name for r in images if focal_prior(r) is None}
    undetermined = train is not None and focal_length_undetermined(
        train, {train.image(i).camera_id for i in train.reg_image_ids() if train.image(i).name in guessed}
    )
    registered = sorted(train.image(i).name for i in train.reg_image_ids()) if train else []
    explained = {n: explain_unregistered(graph, n, train, train_names) for n in train_names if n not in registered}
    unregistered = {n: why for n, (why, _) in explained.items()}
    if train is None or train.num_reg_images() < 2:
        lines = "\n".join(f"  {n}: {why}" for n, why in unregistered.items())
        remedies = [r.value for r in Remedy if r in {remedy for _, remedy in explained.values()}]
        raise SfMError(
            f"Structure-from-Motion registered {len(registered)} of {len(train_names)} training images "
            f"after {attempts} initial pairs ({', '.join(registered) or 'none'}).\n{lines}\nTry: "
            + "".join(f"{remedy}, " for remedy in remedies)
            + "photos with more overlap (neighbouring views should share most of their content), "
            "less blur, more texture; or more photos of the same scene."
        )
    if too_few_points(train):
        log.warning(
            "Only %d SfM points: training starts from few seed points (a dense prior, --prior stereo or mast3r, "
            "gives more), and the cameras rest on little evidence.",
            train.num_points3D(),
        )
    for name, why in unregistered.items():
        log.warning("Training image %s not registered: %s", name, why)
    doubtful = set(doubtful_photos(train, check, train_names, global_mapping, disagreement))
    if mostly_unexplained(check):
        doubtful = set(registered)
        log.warning(
            "The cameras of %s may be wrong: they explain %.0f%% of the verified matches between the photos. "
            "Repeated structure (rows of windows, arcades) matches the wrong copy in every pair, and a wrong model "
            "then explains its pairs as well as the right one. Photos of the whole place, all round it, or of what "
            "is unique in it, give cameras the matches can check (sfm/report.json, model_check).",
            ", ".join(registered),
            100 * check.explained_share,
        )
    if global_mapping:
        log.warning(
            "Incremental mapping left photos out or in doubt; the cameras come from global mapping, which places "
            "the photos from their pairs (sfm/report.json, global_mapping)."
        )
    if disputed(disagreement):
        log.warning(
            "The cameras of %s may be wrong: global and incremental mapping, each explaining the photos' pairs, "
            "place photos %.1f degrees apart (sfm/report.json, mappings_disagreement_deg).",
            ", ".join(registered),
            disagreement,
        )
    if global_mapping and rests_on_pairs(train):
        log.warning(
            "The cameras of %s may be wrong: only %d points are seen in three photos or more, so they rest on the "
            "pairs alone. Photos in between (neighbouring views 30 degrees apart or closer) give cameras that "
            "the photos check.",
            ", ".join(registered),
            multiview_points(train),
        )
    if rests_on_two_of_many(train, len(train_names)):
        log.warning(
            "The cameras of %s may be wrong: the model rests on 2 of the %d photos and %d points, one pair that "
            "nothing else checks.",
            " and ".join(registered),
            len(train_names),
            train.num_points3D(),
        )
    for pair in check.unexplained:
        log.log(
            logging.WARNING if doubtful & {pair.image1, pair.image2} else logging.INFO,
            "The model explains %.0f%% of the %d verified matches of %s and %s "
            "(repeated structure such as windows or facades can match the wrong copy)",
            100 * pair.explained,
            pair.matches,
            pair.image1,
            pair.image2,
        )
    if check.doubtful_images:
        log.warning(
            "The cameras of %s may be wrong: placed against most of their pairs' matches. "
            "Check them before training (sfm/report.json, model_check), or leave those photos out.",
            ", ".join(check.doubtful_images),
        )
    if undetermined:
        log.warning(
            "The photos leave the focal length open (taken from nearly one place, or moving without turning): "
            "%.0f px is the mapper's guess, and a tenth shorter or longer explains them as well, so the "
            "depth and the seed points stretch with that guess (sfm/report.json, focal_length_undetermined). "
            "Photos a few steps apart, turned toward the subject, fix it.",
            np.median([train.camera(train.image(i).camera_id).mean_focal_length() for i in train.reg_image_ids()]),
        )
    lap("mapping")

    with_test, test_left_out = register_test_views(train, database, graph, test_names)
    lap("test_views")
    for name, why in test_left_out.items():
        log.warning("Test image %s not registered: %s", name, why)
    return SfMResult(
        train,
        with_test,
        {**unregistered, **test_left_out},
        attempts,
        check,
        sorted(doubtful),
        seconds,
        low_parallax,
        robust_adjustment,
        second_radial_term,
        global_mapping,
        disagreement,
        focal_from_pairs,
        undetermined,
        distinctive_gain,
        look_alike_share,
    )


def doubtful_photos(
    model: pycolmap.Reconstruction,
    check: ModelCheck,
    train_names: list[str],
    global_mapping: bool = False,
    disagreement: float | None = None,
) -> list[str]:
    """The check's doubtful photos, or every photo of a model that rests on one pair of many
    (`rests_on_two_of_many`) or, from global mapping, on the pairs alone (`rests_on_pairs`) or
    against the incremental model (`disagreement` over MAX_MAPPINGS_DISAGREEMENT_DEG)."""
    if rests_on_two_of_many(model, len(train_names)) or (
        global_mapping and (rests_on_pairs(model) or disputed(disagreement))
    ):
        return sorted(model.image(i).name for i in model.reg_image_ids())
    return check.doubtful_images


def prefer_global(
    incremental: pycolmap.Reconstruction | None,
    incremental_check: ModelCheck | None,
    globally: pycolmap.Reconstruction,
    global_check: ModelCheck,
    train_names: list[str],
) -> tuple[bool, float | None]:
    """Whether the global model ranks above the incremental one (`standing`) and, where it does and
    the incremental one has no photo in doubt, how far the two disagree (`mappings_disagreement`)."""
    before = standing(incremental, incremental_check, train_names, False)
    if standing(globally, global_check, train_names, True) <= before:
        return False, None
    return True, mappings_disagreement(globally, incremental) if before[1] else None


def standing(
    model: pycolmap.Reconstruction | None, check: ModelCheck | None, train_names: list[str], global_mapping: bool
) -> tuple[int, bool]:
    """How a mapper's model ranks against another's: by photos registered, then by having none in doubt.
    Two models with photos in doubt tie, and `run_sfm` keeps the incremental one: ranked by fewer
    photos in doubt, a fox model 46 degrees off gave way to one 12 degrees off with fewer pairs right."""
    if model is None:
        return (0, False)
    return (model.num_reg_images(), not doubtful_photos(model, check, train_names, global_mapping))


def mappings_disagreement(model: pycolmap.Reconstruction, other: pycolmap.Reconstruction) -> float | None:
    """The largest pair error of `model` against `other` over the photos both register; None under two."""
    poses = [model_poses(model), model_poses(other)]
    shared = sorted(poses[0].keys() & poses[1].keys())
    if len(shared) < 2:
        return None
    return max(pair_errors_deg({n: poses[0][n] for n in shared}, {n: poses[1][n] for n in shared}).values())


def mostly_unexplained(check: ModelCheck) -> bool:
    """Whether the model explains under MIN_EXPLAINED_SHARE of all the checked pairs' verified matches."""
    return check.explained_share < MIN_EXPLAINED_SHARE


def disputed(disagreement: float | None) -> bool:
    return disagreement is not None and disagreement > MAX_MAPPINGS_DISAGREEMENT_DEG


def rests_on_pairs(model: pycolmap.Reconstruction) -> bool:
    """Under GLOBAL_MIN_MULTIVIEW_POINTS points seen in three photos or more: the cameras rest on the
    pairs of photos alone, which a wrong focal length satisfies as well as the right one (three fox
    photos of a wall: 2.5 times the true focal length, 59 degrees off, no pair unexplained)."""
    return multiview_points(model) < GLOBAL_MIN_MULTIVIEW_POINTS


def rests_on_two_of_many(model: pycolmap.Reconstruction, num_train: int) -> bool:
    """Two of three or more photos registered, on fewer than LOW_PARALLAX_MIN_POINTS points: one
    pair, nothing to check it against. On the walk-arounds 4 of 5 such models were 11-94 degrees
    off (BENCHMARKS.md, "Walked all round")."""
    return model.num_reg_images() == 2 < num_train and too_few_points(model)


def too_few_points(model: pycolmap.Reconstruction | None) -> bool:
    return model is None or model.num_points3D() < LOW_PARALLAX_MIN_POINTS


def well_matched(graph: MatchGraph, names: list[str]) -> bool:
    """Whether every image has a pair with LOW_PARALLAX_MIN_MATCHES verified matches."""
    ids = [graph.image_ids[n] for n in names]
    return all(max(graph.num_inliers(a, b) for b in ids if b != a) >= LOW_PARALLAX_MIN_MATCHES for a in ids)
