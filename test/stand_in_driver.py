"""A stand-in robot driver for tests: a trivial body that follows the driver contract.

It "moves" by replaying a clip kinematically (torques are recorded, not applied) and keeps
the lockstep part of docs/driver_contract.md: it publishes /clock, joint_states and odom at
time t, waits for a command on policy/effort stamped t, then advances one control period.
While it waits it republishes its state, so nodes that join late still start. It shares no
code with the sim node, so a test built on it shows that the reference and policy nodes need
nothing of the sim beyond the contract.

Run it as a node of a test (`StandInDriver(...)`) or as a process:
  python test/stand_in_driver.py --ros-args -p clip_file:=clip.npz
"""

from __future__ import annotations

import sys

from geometry_msgs.msg import Vector3
from nav_msgs.msg import Odometry
import numpy as np
import rclpy
from rclpy.clock import Clock
from rclpy.clock import ClockType
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import QoSProfile
from rosgraph_msgs.msg import Clock as ClockMsg
from sensor_msgs.msg import JointState

from vrat_ros.clip import Clip
from vrat_ros.kinematics import quat_to_mat
from vrat_ros.ros_messages import ns_to_time
from vrat_ros.ros_messages import quat_wxyz_to_msg
from vrat_ros.ros_messages import seconds_to_ns
from vrat_ros.ros_messages import stamp_to_ns


class StandInDriver(Node):

    def __init__(self, **kwargs):
        super().__init__('stand_in_driver', **kwargs)
        clip_file = self.declare_parameter('clip_file', '').value
        rate_hz = float(self.declare_parameter('control_rate_hz', 50.0).value)
        drop = list(self.declare_parameter('drop_joints', ['']).value)
        self.clip = Clip.load(clip_file)
        self.period_ns = seconds_to_ns(1.0 / rate_hz)
        self.joint_names = [n for n in self.clip.joint_names if n not in drop]
        self._columns = [self.clip.joint_names.index(n) for n in self.joint_names]
        self.time_ns = 0
        self.commands = {}  # stamp (ns) -> (names, efforts) of the command that stepped it

        qos = QoSProfile(depth=10)
        self.clock_pub = self.create_publisher(ClockMsg, '/clock', qos)
        self.joint_pub = self.create_publisher(JointState, 'joint_states', qos)
        self.odom_pub = self.create_publisher(Odometry, 'odom', qos)
        self.create_subscription(JointState, 'policy/effort', self._on_command, qos)
        self.create_timer(0.1, self.publish_state,
                          clock=Clock(clock_type=ClockType.STEADY_TIME))

    def state(self, t: float):
        """(qpos, qvel, linear velocity in the root frame) of the clip at t (s)."""
        qpos, qvel = self.clip.sample(t), self.clip.velocity(t)
        return qpos, qvel, quat_to_mat(qpos[3:7]).T @ qvel[:3]

    def _on_command(self, msg: JointState) -> None:
        stamp_ns = stamp_to_ns(msg.header.stamp)
        if stamp_ns != self.time_ns or len(msg.effort) != len(msg.name):
            return  # a re-sent answer to an earlier state, or not a command for now
        if not np.all(np.isfinite(msg.effort)):
            return
        self.commands[stamp_ns] = (list(msg.name), list(msg.effort))
        self.time_ns += self.period_ns
        self.publish_state()

    def publish_state(self) -> None:
        stamp = ns_to_time(self.time_ns)
        qpos, qvel, linvel = self.state(self.time_ns * 1e-9)
        self.clock_pub.publish(ClockMsg(clock=stamp))
        js = JointState(name=self.joint_names,
                        position=[float(qpos[7 + i]) for i in self._columns],
                        velocity=[float(qvel[6 + i]) for i in self._columns])
        js.header.stamp = stamp
        self.joint_pub.publish(js)
        odom = Odometry()
        odom.header.stamp = stamp
        odom.header.frame_id = 'world'
        odom.child_frame_id = 'walker'
        odom.pose.pose.position.x, odom.pose.pose.position.y = qpos[0], qpos[1]
        odom.pose.pose.position.z = qpos[2]
        odom.pose.pose.orientation = quat_wxyz_to_msg(qpos[3:7])
        odom.twist.twist.linear = Vector3(x=linvel[0], y=linvel[1], z=linvel[2])
        odom.twist.twist.angular = Vector3(x=qvel[3], y=qvel[4], z=qvel[5])
        self.odom_pub.publish(odom)


def main(args=None) -> int:
    rclpy.init(args=args)
    node = StandInDriver()
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.get_logger().info(f'{len(node.commands)} commands received')
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
