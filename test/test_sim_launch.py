"""Runs launch/sim.launch.py for real where launch_ros imports (a ROS 2 install).

The PyPI-only runtime has no launch/launch_ros, so elsewhere this module is skipped with a reason;
test_launch_static.py checks what the launch file names on every machine. The launch runs in a
child process (LaunchService insists on its process's main thread), as `ros2 launch` would,
with the installed package found through the ament index.
"""

import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip(
    'launch_ros', reason='launch_ros is not installed (needs a ROS 2 install, not on PyPI)')

import rclpy  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402

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


def _launch_command(arguments):
    if shutil.which('ros2'):
        return ['ros2', 'launch', 'vrat_ros', 'sim.launch.py'] + arguments
    return [sys.executable, '-c', _RUN_LAUNCH, str(LAUNCH_FILE)] + arguments


def test_sim_launch_brings_up_the_loop_and_shuts_down_cleanly():
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST')
    # Its own process group, so that SIGINT reaches launch and every node as Ctrl-C would:
    # launch does not forward a SIGINT to its children, it expects them to have had it too.
    launch = subprocess.Popen(_launch_command(['mode:=lockstep']), env=env,
                              start_new_session=True)
    context = rclpy.Context()
    rclpy.init(context=context, args=[])
    node = rclpy.create_node('launch_probe', context=context)
    seen = {'joint_states': 0, 'policy/effort': 0}

    def counter(topic):
        def on_msg(msg: JointState):
            seen[topic] += int(all(v == v for v in msg.position + msg.effort))  # no NaN
        return on_msg

    for topic in seen:
        node.create_subscription(JointState, topic, counter(topic), 10)
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(node)
    deadline = time.monotonic() + 60.0
    try:
        while time.monotonic() < deadline and min(seen.values()) < 20:
            executor.spin_once(timeout_sec=0.1)
        nodes = set(node.get_node_names())
    finally:
        os.killpg(launch.pid, signal.SIGINT)
        try:
            code = launch.wait(timeout=60)
        except subprocess.TimeoutExpired:
            launch.kill()
            code = 'killed'
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    assert seen['joint_states'] >= 20 and seen['policy/effort'] >= 20, seen
    assert {'reference', 'policy', 'rat_sim'} <= nodes
    assert code == 0
