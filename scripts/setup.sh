#!/usr/bin/env bash
# Creates .venv and installs vrat_ros with the ROS 2 Python wheels, torch (CPU), Ray and test tools.
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
# A new venv's pip 23 and setuptools 65 break editable ament_python installs.
.venv/bin/python -m pip install -q -U pip 'setuptools>=70.1' wheel
.venv/bin/python -m pip install -q -e '.[ros,train,viz,test,scale]'
echo "vrat_ros installed in $(pwd)/.venv"
