"""The `reference` node: publishes the next frames of a clip, picked by time, every control tick.

Each tick at time t publishes a window of K points at t + k * window_dt_s (k = 1..K):
  reference/joint_trajectory  trajectory_msgs/JointTrajectory, the clip's hinges (rad, rad/s)
  reference/root_trajectory   trajectory_msgs/MultiDOFJointTrajectory, one joint (the root,
                              `root_joint`): the root pose in the world (quaternion x, y, z, w)
header.stamp is t; time_from_start is k * window_dt_s; the clip is sampled at
start_time_s + t + k * window_dt_s (interpolated between frames, so any rate works). Point
velocities interpolate the clip's per-frame velocities (`Clip.states`); the policy reads only
the positions.

With use_sim_time the node follows /clock itself: it publishes once when sim time reaches a
control tick (stamped with that tick), and again when the clock repeats (the lockstep sim
waiting for a command), so a lost window is resent. With `publish_ahead` (the default) the
window of the next tick goes out at the same time, one tick early: the policy then holds it
before the sim reaches that tick, so in lockstep the loop does not wait for this node. Each
window is still sent once per tick. Without use_sim_time, a wall timer drives the node and t
counts from its first tick.

Nothing here is specific to one body: the joints are the clip's, and the window (frames,
spacing, rate) and the root joint's name come from the policy's contract when `policy_file`
is given (each can still be set on its own). Without it: 5 frames 20 ms apart at 50 Hz and
the clip's `root_joint` (its meta data), else 'root'.
"""

from __future__ import annotations

import array
import sys

from geometry_msgs.msg import Quaternion
from geometry_msgs.msg import Transform
from geometry_msgs.msg import Vector3
from rcl_interfaces.msg import FloatingPointRange
from rcl_interfaces.msg import IntegerRange
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile
from rclpy.qos import ReliabilityPolicy
from rosgraph_msgs.msg import Clock as ClockMsg
from trajectory_msgs.msg import JointTrajectory
from trajectory_msgs.msg import JointTrajectoryPoint
from trajectory_msgs.msg import MultiDOFJointTrajectory
from trajectory_msgs.msg import MultiDOFJointTrajectoryPoint

from vrat_ros.clip import Clip
from vrat_ros.node_main import spin_node
from vrat_ros.policy import DEFAULT_ROOT_JOINT
from vrat_ros.policy import read_contract
from vrat_ros.policy import root_joint
from vrat_ros.resources import default_clip_path
from vrat_ros.ros_messages import ns_to_duration
from vrat_ros.ros_messages import ns_to_time
from vrat_ros.ros_messages import seconds_to_ns
from vrat_ros.ros_messages import stamp_to_ns

JOINT_TOPIC = 'reference/joint_trajectory'
ROOT_TOPIC = 'reference/root_trajectory'
# Window defaults without a policy file (those of the shipped policy's contract).
DEFAULT_WINDOW_FRAMES = 5
DEFAULT_WINDOW_DT_S = 0.02
DEFAULT_RATE_HZ = 50.0


class ReferenceNode(Node):

    def __init__(self, **kwargs):
        super().__init__('reference', **kwargs)

        # Parameters.
        self.declare_parameter('clip_file', default_clip_path(), ParameterDescriptor(
            description='Reference clip (.npz) to publish', read_only=True))
        self.declare_parameter('policy_file', '', ParameterDescriptor(
            description='Optional ONNX policy whose contract gives the defaults of '
                        'window_frames, window_dt_s, control_rate_hz and root_joint',
            read_only=True))
        # Typed without a default: unset (None) takes the contract's value, else the default.
        window = {
            'window_frames': (Parameter.Type.INTEGER, ParameterDescriptor(
                description='Future frames K per window (points at k * window_dt_s, '
                            f"k = 1..K; default: the contract's, else {DEFAULT_WINDOW_FRAMES})",
                integer_range=[IntegerRange(from_value=1, to_value=1000, step=1)],
                read_only=True)),
            'window_dt_s': (Parameter.Type.DOUBLE, ParameterDescriptor(
                description="Time between window points (s; default: the contract's "
                            f'reference dt_s, else {DEFAULT_WINDOW_DT_S})',
                floating_point_range=[FloatingPointRange(from_value=1e-4, to_value=10.0)],
                read_only=True)),
            'control_rate_hz': (Parameter.Type.DOUBLE, ParameterDescriptor(
                description='Windows per second (Hz); match the sim in lockstep (default: '
                            f"the contract's, else {DEFAULT_RATE_HZ:g})",
                floating_point_range=[FloatingPointRange(from_value=0.1, to_value=1000.0)],
                read_only=True)),
            'root_joint': (Parameter.Type.STRING, ParameterDescriptor(
                description="Joint name of the root trajectory (default: the contract's "
                            "root_joint, else the clip's, else 'root')", read_only=True)),
        }
        values = {name: self.declare_parameter(name, kind, descriptor).value
                  for name, (kind, descriptor) in window.items()}
        self.declare_parameter('start_time_s', 0.0, ParameterDescriptor(
            description='Clip time (s) at time 0', read_only=True))
        self.declare_parameter('loop', False, ParameterDescriptor(
            description='Restart the clip at its end instead of holding the last frame',
            read_only=True))
        self.declare_parameter('publish_ahead', True, ParameterDescriptor(
            description='With use_sim_time, publish the next tick\'s window one tick early, '
                        'so the lockstep loop need not wait for it', read_only=True))

        clip_file = self.get_parameter('clip_file').value
        policy_file = self.get_parameter('policy_file').value
        contract = read_contract(policy_file) if policy_file else None

        def setting(name, from_contract, default):
            value = values[name]
            if value is not None:
                return value
            return from_contract(contract) if contract is not None else default

        self.window_frames = int(setting(
            'window_frames', lambda c: c['reference']['frames'], DEFAULT_WINDOW_FRAMES))
        self.window_dt_ns = seconds_to_ns(setting(
            'window_dt_s', lambda c: c['reference']['dt_s'], DEFAULT_WINDOW_DT_S))
        rate_hz = float(setting('control_rate_hz', lambda c: c['control_rate_hz'],
                                DEFAULT_RATE_HZ))
        self.start_time_s = float(self.get_parameter('start_time_s').value)
        self.loop = bool(self.get_parameter('loop').value)
        self.publish_ahead = bool(self.get_parameter('publish_ahead').value)
        self.use_sim_time = bool(self.get_parameter('use_sim_time').value)

        # Validation and the clip.
        self.period_ns = seconds_to_ns(1.0 / rate_hz)
        if self.period_ns <= 0 or self.window_dt_ns <= 0:
            raise ValueError('control_rate_hz and window_dt_s should give positive periods')
        self.clip = Clip.load(clip_file)
        clip_root = str(self.clip.meta.get('root_joint', DEFAULT_ROOT_JOINT))
        self.root_joint = str(setting(
            'root_joint', lambda c: root_joint(c) if 'root_joint' in c else clip_root,
            clip_root))
        if not 0.0 <= self.start_time_s <= self.clip.duration_s:
            raise ValueError(
                f'start_time_s should be in [0, {self.clip.duration_s:.3f}] s for '
                f"'{clip_file}': got {self.start_time_s}")

        # Tick state.
        self.windows_published = 0
        self._last_tick_ns = None
        self.last_clock_ns = None
        self._wall_start_ns = None
        self._cache = None  # (stamp_ns, joint msg, root msg) of the last window
        self._end_logged = False
        self._ahead_ns = None  # stamp of the window already sent one tick early

        # Publishers and the time source.
        qos = QoSProfile(depth=10)
        self.joint_pub = self.create_publisher(JointTrajectory, JOINT_TOPIC, qos)
        self.root_pub = self.create_publisher(MultiDOFJointTrajectory, ROOT_TOPIC, qos)
        self.clock_sub = None
        if self.use_sim_time:
            # Best effort matches reliable and best-effort /clock publishers. Depth 1: only the
            # newest time matters, and the sim's ten clocks per control step cost one callback.
            clock_qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
            self.clock_sub = self.create_subscription(
                ClockMsg, '/clock', self._on_clock, clock_qos)
        else:
            self.create_timer(1.0 / rate_hz, self._on_wall_timer)

        self.get_logger().info(
            f"publishing '{clip_file}' ({self.clip.n_frames} frames at {self.clip.fps:g} Hz, "
            f'{self.clip.duration_s:.2f} s) from {self.start_time_s} s: {self.window_frames} '
            f'frames every {self.window_dt_ns * 1e-6:g} ms, {rate_hz:g} windows/s on '
            f"{'/clock' if self.use_sim_time else 'a wall timer'}, "
            f"{'looping' if self.loop else 'holding the last frame'} at the end, root joint "
            f"'{self.root_joint}'")

    def _on_clock(self, msg: ClockMsg) -> None:
        now_ns = stamp_to_ns(msg.clock)
        if self.last_clock_ns is not None and now_ns < self.last_clock_ns:
            self.get_logger().warning(
                f'/clock jumped back to {now_ns * 1e-9:.3f} s; restarting the ticks')
            self._last_tick_ns = self._ahead_ns = None
        repeated = now_ns == self.last_clock_ns
        self.last_clock_ns = now_ns
        tick_ns = (now_ns // self.period_ns) * self.period_ns
        if self._last_tick_ns is None or tick_ns > self._last_tick_ns:
            self._last_tick_ns = tick_ns
            if tick_ns != self._ahead_ns:
                self.publish_window(tick_ns, tick_ns)
            if self.publish_ahead:
                self._ahead_ns = tick_ns + self.period_ns
                self.publish_window(self._ahead_ns, self._ahead_ns)
        elif repeated:
            # The lockstep sim republishes while it waits: resend (or fill in) its window.
            self.publish_window(now_ns, now_ns)

    def _on_wall_timer(self) -> None:
        now_ns = self.get_clock().now().nanoseconds
        if self._wall_start_ns is None:
            self._wall_start_ns = now_ns
        self.publish_window(now_ns, now_ns - self._wall_start_ns)

    def clip_time(self, elapsed_ns: int) -> float:
        """Clip time (s) for `elapsed_ns` after time 0, wrapped or held at the end."""
        t = self.start_time_s + elapsed_ns * 1e-9
        if t <= self.clip.duration_s:
            return t
        # Logged once by hand: rclpy's `once=True` inspects the caller's frame on every call.
        if self.loop:
            if not self._end_logged:
                self._end_logged = True
                self.get_logger().info('clip ended; looping back to its start')
            return t % self.clip.duration_s
        if not self._end_logged:
            self._end_logged = True
            self.get_logger().warning(
                f'clip ended at {self.clip.duration_s:.3f} s; holding its last frame')
        return self.clip.duration_s

    def publish_window(self, stamp_ns: int, elapsed_ns: int) -> None:
        """Publish the window stamped `stamp_ns` whose first point is elapsed_ns + dt."""
        if self._cache is None or self._cache[0] != stamp_ns:
            self._cache = (stamp_ns, *self._build_window(stamp_ns, elapsed_ns))
        self.joint_pub.publish(self._cache[1])
        self.root_pub.publish(self._cache[2])
        self.windows_published += 1

    def _build_window(self, stamp_ns: int, elapsed_ns: int):
        offsets_ns = [k * self.window_dt_ns for k in range(1, self.window_frames + 1)]
        qpos, qvel = self.clip.states([self.clip_time(elapsed_ns + o) for o in offsets_ns])
        stamp = ns_to_time(stamp_ns)
        joint_msg = JointTrajectory(joint_names=self.clip.joint_names)
        joint_msg.header.stamp = stamp
        root_msg = MultiDOFJointTrajectory(joint_names=[self.root_joint])
        root_msg.header.stamp = stamp
        root_msg.header.frame_id = 'world'
        # Sequence fields take array.array('d') as it is; a list would be checked item by item.
        positions, velocities = qpos[:, 7:], qvel[:, 6:]
        for k, offset_ns in enumerate(offsets_ns):
            after = ns_to_duration(offset_ns)
            joint_msg.points.append(JointTrajectoryPoint(
                positions=array.array('d', positions[k].tobytes()),
                velocities=array.array('d', velocities[k].tobytes()), time_from_start=after))
            x, y, z, qw, qx, qy, qz = qpos[k, :7].tolist()
            root = Transform(translation=Vector3(x=x, y=y, z=z),
                             rotation=Quaternion(x=qx, y=qy, z=qz, w=qw))
            root_msg.points.append(MultiDOFJointTrajectoryPoint(
                transforms=[root], time_from_start=after))
        return joint_msg, root_msg


def main(args=None) -> int:
    return spin_node(ReferenceNode, 'reference', args)


if __name__ == '__main__':
    sys.exit(main())
