"""vrat_ros: a ROS 2 bridge for an inverse-dynamics controlled virtual rat in MuJoCo."""

import os

__version__ = '0.1.0'

# onnxruntime 1.32 queues usage telemetry (with the Python path and a device id) under
# ~/.cache/Microsoft on every import unless this is set. vrat_ros is imported before it loads
# onnxruntime, and its node and worker processes inherit the environment. A user who wants
# the telemetry sets ORT_DISABLE_TELEMETRY=0 themselves.
os.environ.setdefault('ORT_DISABLE_TELEMETRY', '1')
