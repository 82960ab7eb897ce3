"""Runs launch/sim.launch.py for real where launch_ros imports (a ROS 2 install).

The PyPI-only runtime has no launch/launch_ros, so elsewhere this module is skipped with a reason;
test_launch_static.py checks what the launch file names on every machine. The launch runs in a
child process (see launch_runner.py), with the installed package found through the ament
index.
"""

import time

import pytest

pytest.importorskip(
    'launch_ros', reason='launch_ros is not installed (needs a ROS 2 install, not on PyPI)')

import rclpy  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402

from launch_runner import start_launch  # noqa: E402
from launch_runner import stop_launch  # noqa: E402


def test_sim_launch_brings_up_the_loop_and_shuts_down_cleanly():
    launch = start_launch(['mode:=lockstep'])
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
        code = stop_launch(launch)
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    assert seen['joint_states'] >= 20 and seen['policy/effort'] >= 20, seen
    assert {'reference', 'policy', 'rat_sim'} <= nodes
    assert code == 0
