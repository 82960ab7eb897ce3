"""Starts launch/sim.launch.py in a child process and stops it as Ctrl-C would (tests only).

`ros2 launch` is used where the CLI exists; elsewhere a few lines of LaunchService do the same
(LaunchService insists on its process's main thread, hence the child process).
"""

import os
import pathlib
import shutil
import signal
import subprocess
import sys

LAUNCH_FILE = pathlib.Path(__file__).resolve().parents[1] / 'launch' / 'sim.launch.py'
_RUN_LAUNCH = """
import sys
from launch import LaunchDescription, LaunchService
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
service = LaunchService()
service.include_launch_description(LaunchDescription([IncludeLaunchDescription(
    PythonLaunchDescriptionSource(sys.argv[1]),
    launch_arguments=[a.split(':=', 1) for a in sys.argv[2:]])]))
sys.exit(service.run())
"""


def start_launch(arguments: list[str]) -> subprocess.Popen:
    """Starts sim.launch.py with `name:=value` arguments in a process group of its own."""
    if shutil.which('ros2'):
        command = ['ros2', 'launch', 'vrat_ros', 'sim.launch.py'] + arguments
    else:
        command = [sys.executable, '-c', _RUN_LAUNCH, str(LAUNCH_FILE)] + arguments
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST')
    return subprocess.Popen(command, env=env, start_new_session=True)


def stop_launch(launch: subprocess.Popen, timeout_s: float = 60.0):
    """Sends SIGINT to launch and every node, as Ctrl-C does; returns the exit code.

    launch does not forward a SIGINT to its nodes (it expects the terminal to have sent it to
    all of them) and only escalates to SIGTERM after a timeout, so the whole group gets it.
    """
    os.killpg(launch.pid, signal.SIGINT)
    try:
        return launch.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(launch.pid, signal.SIGKILL)
        launch.wait()
        return 'killed'
