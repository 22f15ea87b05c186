"""The environment the README's install gives: one OpenCV, and a lock that fits pyproject.toml."""

import contextlib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import cv2
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
OPENCV_DISTRIBUTIONS = (
    "opencv-python",
    "opencv-python-headless",
    "opencv-contrib-python",
    "opencv-contrib-python-headless",
)


def test_every_installed_opencv_is_the_cv2_that_loads():
    # Each of these distributions writes the same cv2 package: at different versions, which one
    # a user gets depends on the order they were installed in.
    installed = {}
    for name in OPENCV_DISTRIBUTIONS:
        with contextlib.suppress(PackageNotFoundError):
            installed[name] = version(name)
    assert installed
    loaded = cv2.__version__.split(".")[:3]
    assert {name: v for name, v in installed.items() if v.split(".")[:3] != loaded} == {}, f"cv2 is {cv2.__version__}"


def locked_versions() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, pinned = line.partition("==")
            assert pinned, f"constraints.txt: {line!r} is not an exact pin"
            pins[canonicalize_name(name)] = pinned.strip()
    return pins


def test_lock_satisfies_every_requirement_in_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(r) for r in project["dependencies"]]
    requirements += [Requirement(r) for extra in project["optional-dependencies"].values() for r in extra]
    pins = locked_versions()
    outside = {}
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        if name == "spars-ns":
            continue  # the dev extra names the other extras
        if name not in pins or not requirement.specifier.contains(pins[name], prereleases=True):
            outside[str(requirement)] = pins.get(name, "not locked")
    assert outside == {}
