#!/usr/bin/env bash
# Raise the lock: resolve the newest versions pyproject.toml allows in a fresh virtual
# environment, run the whole suite and `pip check` there, and only then write constraints.txt.
# Commit the new constraints.txt with the suite's result. Usage: bash scripts/refresh_lock.sh
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
. "$work/venv/bin/activate"
pip install -e ".[dev]"
# nerfstudio pins opencv-python-headless, while its nuscenes-devkit and instantsplat ask for
# opencv-python: both write the same cv2 package. At one version, the cv2 that loads is the
# same whichever was written last (tests/test_environment.py checks it).
pip install "opencv-python==$(python -c 'from importlib.metadata import version; print(version("opencv-python-headless"))')"
pip check
python -m pytest -q
{
    echo "# The exact versions the whole suite passed on: pip install -c constraints.txt -e \".[dev]\"."
    echo "# Written by scripts/refresh_lock.sh on $(date -u +%F), $(python -V), $(uname -sm)."
    pip freeze --exclude-editable
} > constraints.txt
echo "constraints.txt written: commit it"
