#!/usr/bin/env bash
# Runs the test suite inside .venv with ROS traffic kept on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-71}
exec .venv/bin/python -m pytest -q "$@"
