"""The `rat_sim` node: MuJoCo physics of a robot (the rat by default), driven over ROS.

The body is a robot file (`robot`: a name in config/robots, or a YAML path; see
vrat_ros/robots.py), which sets the model, the joint and root names, the physics and
control rates and the command interface:
  effort    torques (N m) on policy/effort (sensor_msgs/JointState, `effort`) or
            effort_controller/commands (std_msgs/Float64MultiArray)
  position  joint targets on policy/position (sensor_msgs/JointState, `position`) or
            position_controller/commands (std_msgs/Float64MultiArray); the sim closes the
            robot file's PD loop on them before every physics step
joint_states names the robot's joints (every joint but the root), odom's child frame is its
root body. Without a clip the robot starts in its standing pose (robots.Robot.stand_qpos).

Modes:
  lockstep  the sim advances exactly one control period per accepted command, so a run is
            deterministic however slow the other nodes are. While it waits it republishes
            its state and /clock on a slow wall timer, so late joiners never deadlock.
  realtime  a wall timer steps the sim at the control rate with the latest valid command;
            after command_timeout_s (wall) without one, the torque drops to zero until
            commands resume.

When the physics diverges (MuJoCo's bad qpos/qvel/qacc warnings, after which MuJoCo would
reset the state by itself, or a non-finite state) the node halts: it logs an error naming the
joint, publishes no further state and ignores commands. It never resets silently.
docs/driver_contract.md describes the topics, units and timing a real driver must match.

Sim time starts at 0 s, which is the clip's `start_time_s` when a clip gives the initial state.
Stamps are sim time, except in realtime mode without /clock, where they are wall time. /clock
goes out once per control step, before the state it stamps (`clock_every_physics_step` adds
one after each physics step; those arrive in a burst, as the step runs in one callback).
"""

from __future__ import annotations

import array
import sys
import time

import mujoco
from nav_msgs.msg import Odometry
import numpy as np
from rcl_interfaces.msg import FloatingPointRange
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.clock import Clock
from rclpy.clock import ClockType
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile
from rosgraph_msgs.msg import Clock as ClockMsg
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray

from vrat_ros.clip import Clip
from vrat_ros.node_main import spin_node
from vrat_ros.kinematics import quat_to_mat
from vrat_ros.robots import load_robot
from vrat_ros.robots import Robot
from vrat_ros.ros_messages import command_topics
from vrat_ros.ros_messages import ns_to_time
from vrat_ros.ros_messages import seconds_to_ns
from vrat_ros.ros_messages import stamp_to_ns

MODES = ('lockstep', 'realtime')
EFFORT_TOPIC, ARRAY_TOPIC = command_topics('effort')
POSITION_TOPIC, POSITION_ARRAY_TOPIC = command_topics('position')
# MuJoCo resets the state by itself after these warnings; we stop instead (see `_diverged`).
# Each one's `lastinfo` is the index of the offending value: a qpos address or a DOF.
_RESET_WARNINGS = {
    mujoco.mjtWarning.mjWARN_BADQACC: ('acceleration', 'dof'),
    mujoco.mjtWarning.mjWARN_BADQPOS: ('position', 'qpos'),
    mujoco.mjtWarning.mjWARN_BADQVEL: ('velocity', 'dof'),
}


def _names_preview(names, limit: int = 5) -> str:
    names = list(names)
    more = f' (+{len(names) - limit} more)' if len(names) > limit else ''
    return f'{names[:limit]}{more}'


class RatSimNode(Node):

    def __init__(self, **kwargs):
        super().__init__('rat_sim', **kwargs)

        # Parameters.
        rate_range = FloatingPointRange(from_value=1.0, to_value=1000.0)
        self.declare_parameter('mode', 'lockstep', ParameterDescriptor(
            description="'lockstep': one control period per command; 'realtime': wall timer",
            read_only=True))
        self.declare_parameter('robot', 'rat', ParameterDescriptor(
            description='The body: a robot name in config/robots (rat, quadruped, ...) or the '
                        'path of a robot YAML file', read_only=True))
        # Typed without a default: unset (None) takes the robot file's value.
        rate_hz = self.declare_parameter(
            'control_rate_hz', Parameter.Type.DOUBLE, ParameterDescriptor(
                description="Control rate (Hz; default: the robot file's); the physics "
                            'timestep must divide its period',
                floating_point_range=[rate_range], read_only=True)).value
        scale = self.declare_parameter('body_scale', Parameter.Type.DOUBLE, ParameterDescriptor(
            description="Length scale of the body's MJCF (default: the robot file's "
                        'build.scale; 0.9 for the rat)', read_only=True)).value
        self.declare_parameter('clip_file', '', ParameterDescriptor(
            description='Optional clip (.npz) whose state at start_time_s is the initial state',
            read_only=True))
        self.declare_parameter('start_time_s', 0.0, ParameterDescriptor(
            description='Clip time (s) of the initial state', read_only=True))
        self.declare_parameter('publish_clock', True, ParameterDescriptor(
            description='Publish sim time on /clock after every control step', read_only=True))
        self.declare_parameter('clock_every_physics_step', False, ParameterDescriptor(
            description='Also publish /clock after each physics step inside a control step '
                        '(ten per step at 50 Hz; off: one per control step, far cheaper)',
            read_only=True))
        # Typed without a default: unset (None) means the body's actuator order.
        command_names = self.declare_parameter(
            'command_joint_names', Parameter.Type.STRING_ARRAY, ParameterDescriptor(
                description='Actuator order of Float64MultiArray commands (default: body order)',
                read_only=True)).value
        self.declare_parameter('republish_period_s', 0.2, ParameterDescriptor(
            description='Lockstep: wall period (s) of state republishing while waiting',
            read_only=True))
        self.declare_parameter('command_timeout_s', 0.5, ParameterDescriptor(
            description='Realtime: wall time (s) without a valid command after which the '
                        'torque drops to zero until commands resume; 0 holds the last one',
            floating_point_range=[FloatingPointRange(from_value=0.0, to_value=1e6)],
            read_only=True))

        self.mode = self.get_parameter('mode').value
        robot = self.get_parameter('robot').value
        clip_file = self.get_parameter('clip_file').value
        start_time_s = float(self.get_parameter('start_time_s').value)
        self.publish_clock = bool(self.get_parameter('publish_clock').value)
        self.clock_every_physics_step = bool(
            self.get_parameter('clock_every_physics_step').value)
        republish_s = float(self.get_parameter('republish_period_s').value)
        self.command_timeout_s = float(self.get_parameter('command_timeout_s').value)

        # Validation and the core objects.
        if self.mode not in MODES:
            raise ValueError(f"mode should be one of {MODES}: got '{self.mode}'")
        if not republish_s > 0.0:
            raise ValueError(f'republish_period_s should be > 0: got {republish_s}')
        model, self.robot_spec = load_robot(robot, scale=scale)
        self.body = Robot(model=model, spec=self.robot_spec)
        scale = self.body.scale
        rate_hz = self.robot_spec.control_rate_hz if rate_hz is None else float(rate_hz)
        self.command_interface = self.robot_spec.command_interface
        self.command_topic, self.array_topic = command_topics(self.command_interface)
        self._command_field = self.command_interface  # the JointState field it reads
        self.n_substeps = int(round(1.0 / (rate_hz * self.body.timestep)))
        if self.n_substeps < 1 or abs(self.n_substeps * self.body.timestep * rate_hz - 1) > 1e-6:
            raise ValueError(
                f'control period 1/{rate_hz} Hz should be a multiple of the physics timestep '
                f'{self.body.timestep} s')
        self.timestep_ns = seconds_to_ns(self.body.timestep)
        self._actuator_index = {n: i for i, n in enumerate(self.body.actuator_names)}
        self.command_joint_names = self._check_command_names(command_names)
        self._array_order = np.array(
            [self._actuator_index[n] for n in self.command_joint_names])
        self._reset_state(clip_file, start_time_s, scale)

        # Run state and counters (read by tests and by the in-process loop). The command is
        # torques (effort) or joint targets (position); None (position only) is no command:
        # zero torque, as zero torques are for effort.
        self.command = self._no_command()
        self.physics_steps = 0
        self.control_steps = 0
        self.n_saturated = 0
        self.rejected_commands = 0
        self.stale_commands = 0
        self.halted = False
        self.halt_reason = ''
        self.command_timeouts = 0
        self.last_rejection = ''
        self._last_command_wall = None
        self._in_timeout = False
        self._lockstep_source = None
        self._last_publish = 0.0
        self._wall_clock = Clock(clock_type=ClockType.SYSTEM_TIME)
        self._warning_counts = self._reset_warning_counts()
        self._next_saturation_log = 0.0
        self._js, self._odom = self._state_messages()

        # Publishers, subscriptions and timers (timers on the steady clock: /clock may stop).
        qos = QoSProfile(depth=10)
        self.joint_state_pub = self.create_publisher(JointState, 'joint_states', qos)
        self.odom_pub = self.create_publisher(Odometry, 'odom', qos)
        # With clock_every_physics_step, ten clock messages per control step: a deeper history
        # lets a reliable recorder keep them all while the executor is busy with the step.
        self.clock_pub = (self.create_publisher(ClockMsg, '/clock', QoSProfile(depth=100))
                          if self.publish_clock else None)
        self.create_subscription(JointState, self.command_topic, self._on_effort, qos)
        self.create_subscription(Float64MultiArray, self.array_topic, self._on_array, qos)
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        if self.mode == 'lockstep':
            self._republish_period = republish_s
            self.create_timer(republish_s / 2.0, self._on_republish_timer, clock=steady)
        else:
            self._period_s = 1.0 / rate_hz
            self.create_timer(self._period_s, self._on_step_timer, clock=steady)
        self.publish_now()

        self.get_logger().info(
            f"{self.mode} sim of robot '{self.robot_spec.name}' at {rate_hz:g} Hz "
            f'({self.n_substeps} x {self.body.timestep} s physics steps), body scale {scale}, '
            f'{self.body.nu} actuators taking {self.command_interface} commands on '
            f'{self.command_topic} or {self.array_topic}, {len(self.body.hinge_names)} '
            'joints, initial state from '
            f"{clip_file + f' at {start_time_s} s' if clip_file else 'the standing pose'}, "
            f'/clock {self._clock_text()}')
        if self.mode == 'lockstep' and not self.publish_clock:
            self.get_logger().warning(
                'lockstep without publish_clock: nodes that follow /clock will not advance')

    # Construction helpers.

    def _clock_text(self) -> str:
        if not self.publish_clock:
            return 'off'
        return 'after every physics step' if self.clock_every_physics_step else 'on'

    def _state_messages(self):
        """The joint state and odometry messages, built once and refilled on every publish."""
        js = JointState()
        js.name = list(self.body.hinge_names)
        odom = Odometry()
        odom.header.frame_id = 'world'
        odom.child_frame_id = self.robot_spec.root_body
        return js, odom

    def _check_command_names(self, names) -> list[str]:
        if names is None or len(names) == 0:
            return list(self.body.actuator_names)
        names = list(names)
        unknown = [n for n in names if n not in self._actuator_index]
        missing = [n for n in self.body.actuator_names if n not in names]
        if unknown or missing or len(set(names)) != len(names):
            raise ValueError(
                'command_joint_names should list every actuator once: unknown '
                f'{_names_preview(unknown)}, missing {_names_preview(missing)}; '
                f'actuators are {self.body.actuator_names}')
        return names

    def _no_command(self):
        return np.zeros(self.body.nu) if self.command_interface == 'effort' else None

    @property
    def torque(self):
        """The current command (the name is older than the position interface)."""
        return self.command

    @torque.setter
    def torque(self, value) -> None:
        self.command = value

    def _reset_state(self, clip_file: str, start_time_s: float, scale: float) -> None:
        if not clip_file:
            self.body.reset()
            return
        clip = Clip.load(clip_file)
        made_for = clip.meta.get('robot') if isinstance(clip.meta, dict) else None
        if made_for is not None and made_for != self.robot_spec.name:
            self.get_logger().warning(
                f"clip '{clip_file}' was made for robot '{made_for}', the sim runs "
                f"'{self.robot_spec.name}'")
        clip = clip.reorder_to(self.body.hinge_names)
        if not 0.0 <= start_time_s <= clip.duration_s:
            raise ValueError(
                f'start_time_s should be in [0, {clip.duration_s:.3f}] s for '
                f"'{clip_file}': got {start_time_s}")
        if abs(clip.body_scale - scale) > 1e-6:
            self.get_logger().warning(
                f'clip was fitted for body scale {clip.body_scale}, the sim uses {scale}')
        self.body.reset(clip.sample(start_time_s), clip.velocity(start_time_s))

    def _reset_warning_counts(self) -> list[int]:
        return [int(self.body.data.warning[w].number) for w in _RESET_WARNINGS]

    def _name_of(self, kind: str, index: int) -> str:
        m = self.body.model
        if kind == 'dof':
            joint = int(m.dof_jntid[index]) if 0 <= index < m.nv else -1
        else:
            joint = int(np.searchsorted(m.jnt_qposadr, index, side='right')) - 1
        if joint < 0:
            return f'{kind} {index}'
        return f"{kind} {index}, joint '{mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_JOINT, joint)}'"

    # Time.

    @property
    def time_ns(self) -> int:
        """Sim time in integer nanoseconds (exact: a count of physics steps)."""
        return self.physics_steps * self.timestep_ns

    def _stamp_ns(self) -> int:
        if self.mode == 'realtime' and not self.publish_clock:
            return self._wall_clock.now().nanoseconds
        return self.time_ns

    # Commands.

    def _reject(self, problem: str) -> None:
        self.rejected_commands += 1
        self.last_rejection = problem
        self.get_logger().error(
            f'command rejected, keeping the last valid one: {problem}', throttle_duration_sec=1.0)

    def torque_from_joint_state(self, msg: JointState) -> np.ndarray | None:
        """Return the command in body actuator order from a named command, or None (logged).

        Torques come from `effort`, joint targets from `position`, by the command interface.
        """
        topic, field = self.command_topic, self._command_field
        names = list(msg.name)
        values = getattr(msg, field)
        if len(values) != len(names):
            self._reject(f'{topic} has {len(values)} {field}s for {len(names)} names')
            return None
        if len(set(names)) != len(names):
            self._reject(f'{topic} repeats actuator names')
            return None
        unknown = [n for n in names if n not in self._actuator_index]
        if unknown:
            self._reject(f'{topic} has unknown actuators {_names_preview(unknown)}; '
                         f'known: {_names_preview(self.body.actuator_names, 3)}')
            return None
        if len(names) != self.body.nu:
            missing = [n for n in self.body.actuator_names if n not in set(names)]
            self._reject(f'{topic} lacks actuators {_names_preview(missing)}')
            return None
        values = np.asarray(values, dtype=np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            what = 'torques' if field == 'effort' else 'positions'
            self._reject(f'{topic} has non-finite {what} for '
                         f'{_names_preview([n for n, b in zip(names, bad) if b])}')
            return None
        command = np.empty(self.body.nu)
        command[[self._actuator_index[n] for n in names]] = values
        return command

    command_from_joint_state = torque_from_joint_state

    def torque_from_array(self, msg: Float64MultiArray) -> np.ndarray | None:
        """Return the command in body actuator order from a Float64MultiArray, or None."""
        topic = self.array_topic
        data = np.asarray(msg.data, dtype=np.float64)
        if data.shape != (len(self.command_joint_names),):
            self._reject(f'{topic} has {data.size} values; expected '
                         f'{len(self.command_joint_names)} (command_joint_names order)')
            return None
        bad = ~np.isfinite(data)
        if bad.any():
            self._reject(f'{topic} has non-finite values at indices '
                         f'{_names_preview(np.flatnonzero(bad).tolist())}')
            return None
        command = np.empty(self.body.nu)
        command[self._array_order] = data
        return command

    command_from_array = torque_from_array

    def _lockstep_accepts(self, source: str) -> bool:
        # Two command forms for the same step would step twice: the first form seen drives.
        if self._lockstep_source is None:
            self._lockstep_source = source
        if source != self._lockstep_source:
            self.get_logger().warning(
                f'lockstep follows {self._lockstep_source}; ignoring commands on {source}',
                once=True)
            return False
        return True

    def _accept_realtime(self, torque: np.ndarray) -> None:
        if self._in_timeout:
            self._in_timeout = False
            self.get_logger().info('commands resumed after the timeout')
        self.torque = torque
        self._last_command_wall = time.monotonic()

    @property
    def torque_timed_out(self) -> bool:
        """Realtime: the last valid command is older than command_timeout_s."""
        return (self.mode == 'realtime' and self.command_timeout_s > 0.0
                and self._last_command_wall is not None
                and time.monotonic() - self._last_command_wall > self.command_timeout_s)

    def _on_effort(self, msg: JointState) -> None:
        if self._refuse_when_halted():
            return
        torque = self.torque_from_joint_state(msg)
        if torque is None:
            return
        if self.mode == 'realtime':
            self._accept_realtime(torque)
            return
        if not self._lockstep_accepts(self.command_topic):
            return
        stamp_ns = stamp_to_ns(msg.header.stamp)
        if stamp_ns < self.time_ns:
            self.stale_commands += 1  # a re-sent answer to a state we already stepped past
            return
        if stamp_ns > self.time_ns:
            self._reject(f'{self.command_topic} stamped {stamp_ns * 1e-9:.6f} s is ahead of '
                         f'sim time {self.time_ns * 1e-9:.6f} s')
            return
        self.torque = torque
        self.control_step()

    def _on_array(self, msg: Float64MultiArray) -> None:
        if self._refuse_when_halted():
            return
        torque = self.torque_from_array(msg)
        if torque is None:
            return
        if self.mode == 'realtime':
            self._accept_realtime(torque)
            return
        if self._lockstep_accepts(self.array_topic):
            self.torque = torque
            self.control_step()

    def _refuse_when_halted(self) -> bool:
        if self.halted:
            self.get_logger().error(
                'sim halted after the physics diverged; ignoring commands (restart the node)',
                throttle_duration_sec=5.0)
        return self.halted

    # Stepping.

    def control_step(self) -> bool:
        """Apply `self.command` for one control period; False if the sim halted.

        Torques are clamped to the force limits; joint targets go through the robot's PD law
        before every physics step, its torques clamped the same way.
        """
        if self.halted:
            return False
        self._count_saturated(self.body.set_command(self.command))
        if self.clock_every_physics_step and self.clock_pub is not None:
            chunks = [1] * self.n_substeps
        else:
            # One call for the whole period: MuJoCo's warning counters still record any
            # reset inside it, and nothing of the state inside it is published.
            chunks = [self.n_substeps]
        for n in chunks:
            self._count_saturated(self.body.step(n))
            self.physics_steps += n
            problem = self._diverged()
            if problem:
                self.halted = True
                self.halt_reason = problem
                self.get_logger().error(
                    f'physics diverged by sim time {self.time_ns * 1e-9:.3f} s ({problem}); '
                    'stepping stopped, no further state is published, commands are ignored; '
                    'restart the node to run again')
                return False
            if self.clock_pub is not None:
                self.clock_pub.publish(ClockMsg(clock=ns_to_time(self.time_ns)))
        self.control_steps += 1
        self._publish_state()
        return True

    def _count_saturated(self, saturated: int) -> None:
        if not saturated:
            return
        self.n_saturated += saturated
        # Throttled by hand: rclpy's throttle inspects the caller's source on every call.
        now = time.monotonic()
        if now >= self._next_saturation_log:
            self._next_saturation_log = now + 5.0
            self.get_logger().warning(
                f'{saturated} of {self.body.nu} torques clamped to the force limits')

    def _diverged(self) -> str:
        counts = self._reset_warning_counts()
        if counts != self._warning_counts:
            flagged = [(w, label, kind) for (w, (label, kind)), before, now
                       in zip(_RESET_WARNINGS.items(), self._warning_counts, counts)
                       if now > before]
            what = ', '.join(
                f'{label} at {self._name_of(kind, int(self.body.data.warning[w].lastinfo))}'
                for w, label, kind in flagged)
            self._warning_counts = counts
            return (f'MuJoCo found a NaN, Inf or huge {what} and reset the state; the reset '
                    'state is not published')
        data = self.body.data
        for label, values, kind in (('qpos', data.qpos, 'qpos'), ('qvel', data.qvel, 'dof')):
            bad = np.flatnonzero(~np.isfinite(values))
            if bad.size:
                return f'non-finite {label} at {self._name_of(kind, int(bad[0]))}'
        return ''

    def _on_step_timer(self) -> None:
        if self.halted:
            return
        if self.torque_timed_out and not self._in_timeout:
            self._in_timeout = True
            self.command_timeouts += 1
            self.command = self._no_command()
            self.get_logger().warning(
                f'no valid command for {self.command_timeout_s:g} s: zero torque until '
                f'commands resume (timeout {self.command_timeouts})')
        start = time.perf_counter()
        self.control_step()
        elapsed = time.perf_counter() - start
        if elapsed > self._period_s:
            self.get_logger().warning(
                f'a control step took {elapsed * 1e3:.1f} ms, longer than the '
                f'{self._period_s * 1e3:.1f} ms period: slower than real time',
                throttle_duration_sec=5.0)

    def _on_republish_timer(self) -> None:
        if self.halted or time.monotonic() - self._last_publish < self._republish_period:
            return
        self.publish_now()

    # Publishing.

    def publish_now(self) -> None:
        """Publish /clock (when on) and the current state, e.g. once subscribers joined."""
        if self.clock_pub is not None:
            self.clock_pub.publish(ClockMsg(clock=ns_to_time(self.time_ns)))
        self._publish_state()

    def _publish_state(self) -> None:
        # The same two messages every time: publish() serialises them at once, and refilling
        # array.array fields skips rclpy's per-item checks of Python lists.
        data = self.body.data
        stamp = ns_to_time(self._stamp_ns())
        js = self._js
        js.header.stamp = stamp
        js.position = array.array('d', data.qpos[7:].tobytes())
        js.velocity = array.array('d', data.qvel[6:].tobytes())
        js.effort = array.array('d', data.qfrc_actuator[6:].tobytes())
        self.joint_state_pub.publish(js)

        odom = self._odom
        odom.header.stamp = stamp
        pose, twist = odom.pose.pose, odom.twist.twist
        qpos = data.qpos
        pose.position.x, pose.position.y, pose.position.z = qpos[0:3].tolist()
        o = pose.orientation
        o.w, o.x, o.y, o.z = qpos[3:7].tolist()
        # Twist in the child (root) frame: MuJoCo's free-joint linear velocity is in the world.
        lin = quat_to_mat(qpos[3:7]).T @ data.qvel[0:3]
        twist.linear.x, twist.linear.y, twist.linear.z = lin.tolist()
        twist.angular.x, twist.angular.y, twist.angular.z = data.qvel[3:6].tolist()
        self.odom_pub.publish(odom)
        self._last_publish = time.monotonic()


def main(args=None) -> int:
    return spin_node(RatSimNode, 'rat_sim', args)


if __name__ == '__main__':
    sys.exit(main())
