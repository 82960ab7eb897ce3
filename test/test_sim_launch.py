"""Runs launch/sim.launch.py for real where launch_ros imports (a ROS 2 install).

The PyPI-only runtime has no launch/launch_ros, so elsewhere this module is skipped with a reason;
test_launch_static.py checks what the launch file names on every machine.
"""

import os
import pathlib
import threading
import time

import pytest

launch = pytest.importorskip(
    'launch_ros', reason='launch_ros is not installed (needs a ROS 2 install, not on PyPI)')

import rclpy  # noqa: E402
from launch import LaunchDescription  # noqa: E402
from launch import LaunchService  # noqa: E402
from launch.actions import IncludeLaunchDescription  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402

LAUNCH_FILE = pathlib.Path(__file__).resolve().parents[1] / 'launch' / 'sim.launch.py'


def test_sim_launch_brings_up_the_loop():
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    service = LaunchService()
    service.include_launch_description(LaunchDescription([IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(LAUNCH_FILE)),
        launch_arguments={'mode': 'lockstep'}.items())]))
    runner = threading.Thread(target=service.run, daemon=True)
    runner.start()

    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node('launch_probe', context=context)
    seen = {'joint_states': 0, 'policy/effort': 0}

    def counter(topic):
        def on_msg(msg: JointState):
            if all(map(lambda v: v == v, msg.position)):  # no NaN
                seen[topic] += 1
        return on_msg

    for topic in seen:
        node.create_subscription(JointState, topic, counter(topic), 10)
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(node)
    deadline = time.monotonic() + 60.0
    try:
        while time.monotonic() < deadline and min(seen.values()) < 20:
            executor.spin_once(timeout_sec=0.1)
    finally:
        service.shutdown()
        runner.join(timeout=30)
        node.destroy_node()
        rclpy.shutdown(context=context)
    assert seen['joint_states'] >= 20 and seen['policy/effort'] >= 20, seen
    assert service.return_code in (0, None) or service.return_code == 0
