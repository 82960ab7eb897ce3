"""The `safety` node: checks the policy's commands on their way to the body (sim or driver).

Commands (by the contract's command_interface):
  effort
    in   policy/effort (input_topic)   sensor_msgs/JointState, named torques (N m) in `effort`
    out  safety/effort (output_topic)  the same form, the contract's actuator names and order,
                                       stamped like the command it answers
         safety/effort_controller/commands  std_msgs/Float64MultiArray in contract order
                                            (with publish_float64_array)
  position
    in   policy/position               named joint targets (rad, or m for slides) in `position`
    out  safety/position               the same form and order, stamped like the command
         safety/position_controller/commands  Float64MultiArray (publish_float64_array)
    Targets are clamped to the joint ranges of the robot model (`robot`, default the
    contract's body; joints matched by actuator name), optionally tightened by
    position_margin_rad or position_lower_rad / position_upper_rad; velocity_limit_rad_s
    replaces the torque rate limit and the soft start ramps from the measured joint positions
    (joint_states) to the targets. The torque parameters (torque_*, rate_*, safe_output,
    damping_gain_s) do not apply to position contracts.
Observations (with relay_observations; point the policy at them to give it the delay):
  joint_states -> safety/joint_states, odom -> safety/odom: stamps that go back are dropped
  with a warning, non-finite joint states too, and with observation_delay_steps = N each
  message carries the state of N steps earlier under the current stamp.
E-stop: std_srvs/SetBool ~/estop (true latches) or std_msgs/Bool on `estop` (true latches);
std_srvs/Trigger ~/reset releases it. While latched every command becomes the safe output:
zero torque or damping for effort contracts; for position contracts, the joint positions last
measured (joint_states) when the stop began are held, never zero targets (those would slam the
joints to 0 rad). With no joint_states yet, a position stop holds the last target sent, or
sends nothing when there is none.

Each command goes through `vrat_ros.safety.SafetyFilter` (limits, soft start, rate limit,
action delay) in its own callback and goes out at once, stamped as it came, so a lockstep run
stays deterministic. The watchdog runs on wall time and only in mode 'realtime': in lockstep
the body waits for the next command, so a slow policy is not a fault there. In realtime,
no valid command for command_timeout_s makes the node publish the safe output every control
period until commands resume (logged once per episode), then ramp up again.
"""

from __future__ import annotations

import sys

from nav_msgs.msg import Odometry
import numpy as np
from rcl_interfaces.msg import FloatingPointRange
from rcl_interfaces.msg import IntegerRange
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.clock import Clock
from rclpy.clock import ClockType
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import SetBool
from std_srvs.srv import Trigger

from vrat_ros.node_main import spin_node
from vrat_ros.policy import read_contract
from vrat_ros.resources import default_policy_path
from vrat_ros.ros_messages import command_topics
from vrat_ros.ros_messages import ns_to_time
from vrat_ros.ros_messages import stamp_to_ns
from vrat_ros.safety import DelayLine
from vrat_ros.safety import limits_from_contract
from vrat_ros.safety import position_limits_from_contract
from vrat_ros.safety import PositionFilter
from vrat_ros.safety import robot_joint_ranges
from vrat_ros.safety import SAFE_OUTPUTS
from vrat_ros.safety import SafetyFilter
from vrat_ros.safety import StampOrder
from vrat_ros.safety import Watchdog

MODES = ('lockstep', 'realtime')


def _preview(names, limit: int = 5) -> str:
    names = list(names)
    more = f' (+{len(names) - limit} more)' if len(names) > limit else ''
    return f'{names[:limit]}{more}'


class _Relay:
    """Out-of-order guard and delay line of one observation topic."""

    def __init__(self, node: 'SafetyNode', topic: str, msg_type, out_topic: str,
                 delay_steps: int, restart_after: int, qos: QoSProfile):
        self.node = node
        self.topic = topic
        self.order = StampOrder(restart_after)
        self.delay = DelayLine(delay_steps)
        self.pub = node.create_publisher(msg_type, out_topic, qos)
        self.rejected = 0

    def forward(self, msg) -> None:
        stamp_ns = stamp_to_ns(msg.header.stamp)
        verdict = self.order.check(stamp_ns)
        if verdict == 'backwards':
            self.rejected += 1
            self.node.get_logger().warning(
                f'{self.topic} stamped {stamp_ns * 1e-9:.6f} s is older than '
                f'{self.order.newest_ns * 1e-9:.6f} s: dropped', throttle_duration_sec=1.0)
            return
        if verdict == 'restart':
            self.node.get_logger().warning(
                f'{self.topic} restarted at {stamp_ns * 1e-9:.6f} s; delay line cleared')
            self.delay.clear()
        out = self.delay.push(stamp_ns, msg)
        out.header.stamp = msg.header.stamp
        self.pub.publish(out)


class SafetyNode(Node):

    def __init__(self, **kwargs):
        super().__init__('safety', **kwargs)

        # Parameters.
        non_negative = FloatingPointRange(from_value=0.0, to_value=1e6)
        steps = IntegerRange(from_value=0, to_value=1000, step=1)

        def declare(name, value, description, **extra):
            return self.declare_parameter(name, value, ParameterDescriptor(
                description=description, read_only=True, **extra)).value

        policy_file = declare('policy_file', default_policy_path(),
                              'ONNX policy whose contract names the actuators and limits')
        self.contract = read_contract(policy_file)
        self.command_interface = self.contract['command_interface']
        self._field = self.command_interface  # the JointState field of the commands
        named_topic, array_default = command_topics(self.command_interface)
        self.mode = declare('mode', 'realtime',
                            "'lockstep': no watchdog (the body waits for commands); "
                            "'realtime': watchdog on wall time")
        # The topic defaults follow the contract: policy/effort -> safety/effort, or
        # policy/position -> safety/position.
        input_topic = declare('input_topic', named_topic,
                              'Commands to check (JointState); default by the contract\'s '
                              'command_interface: policy/effort or policy/position')
        output_topic = declare('output_topic', 'safety/' + named_topic.split('/')[-1],
                               'Checked commands (JointState): safety/effort or safety/position')
        publish_array = declare('publish_float64_array', False,
                                'Also publish the checked commands as Float64MultiArray')
        array_topic = declare('array_topic', 'safety/' + array_default,
                              'Topic of the Float64MultiArray commands (contract order)')
        timeout_s = declare('command_timeout_s', 0.1,
                            'Realtime: longest gap (s) between valid commands; 0 turns it off',
                            floating_point_range=[non_negative])
        safe_output = declare('safe_output', 'zero',
                              "Output while stopped: 'zero' torque or 'damping' (-kd qdot)")
        damping_gain_s = declare(
            'damping_gain_s', 0.1, 'Damping kd per N m of torque limit (s/rad): the damping '
            'torque reaches the limit at 1/damping_gain_s rad/s',
            floating_point_range=[non_negative])
        torque_limits = self.declare_parameter(
            'torque_limits_nm', Parameter.Type.DOUBLE_ARRAY, ParameterDescriptor(
                description='Torque limits (N m), one or one per actuator (contract order); '
                            'unset: action_scale * max |action_clip| of the contract',
                read_only=True)).value
        limit_scale = declare('torque_limit_scale', 1.0, 'Factor applied to the torque limits',
                              floating_point_range=[non_negative])
        rate_limits = self.declare_parameter(
            'rate_limit_nm_s', Parameter.Type.DOUBLE_ARRAY, ParameterDescriptor(
                description='Rate limits (N m/s), one or one per actuator; unset: '
                            'rate_limit_per_s', read_only=True)).value
        rate_per_s = declare('rate_limit_per_s', 0.0,
                             'Rate limit as torque limits per second (10: zero to full in '
                             '0.1 s); 0: none', floating_point_range=[non_negative])
        soft_start_s = declare('soft_start_s', 0.0,
                               'Ramp (s) from zero to full output after activation, '
                               'an e-stop reset or a timeout', floating_point_range=[non_negative])
        action_delay = declare('action_delay_steps', 0, 'Commands to delay each command by',
                               integer_range=[steps])
        observation_delay = declare('observation_delay_steps', 0,
                                    'Steps to delay the relayed joint_states and odom by',
                                    integer_range=[steps])
        relay = declare('relay_observations', True,
                        'Relay joint_states and odom to safety/joint_states and safety/odom')
        robot = declare('robot', '',
                        'Position contracts: the robot whose joint ranges bound the targets (a '
                        'name in config/robots or a robot YAML path); empty: the contract\'s '
                        'body name')
        margin = declare('position_margin_rad', 0.0,
                         'Position contracts: shrink each joint range by this at both ends '
                         '(rad, or m for slides)', floating_point_range=[non_negative])
        lower_override = self.declare_parameter(
            'position_lower_rad', Parameter.Type.DOUBLE_ARRAY, ParameterDescriptor(
                description='Position contracts: lower target limits, one or one per actuator '
                            '(contract order); they only tighten the joint range; unset: the '
                            'range', read_only=True)).value
        upper_override = self.declare_parameter(
            'position_upper_rad', Parameter.Type.DOUBLE_ARRAY, ParameterDescriptor(
                description='Position contracts: upper target limits, as position_lower_rad',
                read_only=True)).value
        velocity_limit = self.declare_parameter(
            'velocity_limit_rad_s', Parameter.Type.DOUBLE_ARRAY, ParameterDescriptor(
                description='Position contracts: largest target velocity (rad/s), one or one '
                            'per actuator; unset: none', read_only=True)).value
        restart_after = declare('restart_after', 10,
                                'Backward stamps in a row taken as a restarted source',
                                integer_range=[IntegerRange(from_value=1, to_value=1000, step=1)])

        # Validation and the core objects.
        if self.mode not in MODES:
            raise ValueError(f"mode should be one of {MODES}: got '{self.mode}'")
        if safe_output not in SAFE_OUTPUTS:
            raise ValueError(f"safe_output should be one of {SAFE_OUTPUTS}: got '{safe_output}'")
        self.period_s = 1.0 / float(self.contract['control_rate_hz'])
        if self.command_interface == 'position':
            robot = robot or str((self.contract.get('body') or {}).get('name', ''))
            if not robot:
                raise ValueError('the contract names no body: set the robot parameter')
            names = list(self.contract['actuator_names'])
            lower, upper = robot_joint_ranges(robot, names)
            limits = position_limits_from_contract(
                self.contract, lower, upper, lower_override=lower_override or (),
                upper_override=upper_override or (), margin=margin,
                velocity_limit=velocity_limit or (), soft_start_s=soft_start_s)
            self.filter = PositionFilter(limits, self.period_s, action_delay)
        else:
            limits = limits_from_contract(
                self.contract, torque_limits_nm=torque_limits or (),
                torque_limit_scale=limit_scale, rate_limit_nm_s=rate_limits or (),
                rate_limit_per_s=rate_per_s, soft_start_s=soft_start_s,
                damping_gain_s=damping_gain_s)
            self.filter = SafetyFilter(limits, safe_output, action_delay)
        self.actuator_names = limits.actuator_names
        self._index = {n: i for i, n in enumerate(self.actuator_names)}
        self.watchdog = Watchdog(timeout_s if self.mode == 'realtime' else 0.0)

        # Run state and counters (read by tests).
        self.commands_in = 0
        self.commands_out = 0
        self.safe_outputs = 0
        self.commands_rejected = 0
        self.last_rejection = ''
        self._velocity = None           # latest joint velocities in actuator order
        self._velocity_layout = (None, None)
        self._steady = Clock(clock_type=ClockType.STEADY_TIME)

        # Publishers, subscriptions, services and the watchdog timer.
        qos = QoSProfile(depth=10)
        self.output_pub = self.create_publisher(JointState, output_topic, qos)
        self.array_pub = (self.create_publisher(Float64MultiArray, array_topic, qos)
                          if publish_array else None)
        self.create_subscription(JointState, input_topic, self._on_command, qos)
        self.create_subscription(JointState, 'joint_states', self._on_joint_state, qos)
        self.create_subscription(Bool, 'estop', self._on_estop_topic, qos)
        self.create_service(SetBool, '~/estop', self._on_estop_service)
        self.create_service(Trigger, '~/reset', self._on_reset_service)
        self.joint_relay = self.odom_relay = None
        if relay:
            self.joint_relay = _Relay(self, 'joint_states', JointState, 'safety/joint_states',
                                      observation_delay, restart_after, qos)
            self.odom_relay = _Relay(self, 'odom', Odometry, 'safety/odom',
                                     observation_delay, restart_after, qos)
            self.create_subscription(Odometry, 'odom', self.odom_relay.forward, qos)
        if self.watchdog.enabled:
            tick_s = min(self.period_s, timeout_s / 2.0)
            self.create_timer(tick_s, self._on_watchdog_timer, clock=self._steady)

        if self.command_interface == 'position':
            speed = limits.velocity
            unbounded = [n for n, lo, hi in zip(self.actuator_names, limits.lower, limits.upper)
                         if not (np.isfinite(lo) and np.isfinite(hi))]
            if unbounded:
                self.get_logger().warning(
                    f'{len(unbounded)} joints of {robot} have no range and no position limit '
                    f'was set: their targets are not clamped: {_preview(unbounded)}')
            shaping = (f"targets within the joint ranges of {robot}"
                       f"{f' less {margin:g}' if margin else ''}, velocity limit "
                       f'{"off" if speed is None else f"{speed.min():g}..{speed.max():g}/s"}')
            stopped = 'hold the measured pose'
        else:
            rate = limits.rate_nm_s
            shaping = (f'torque limits {limits.torque_nm.min():g}..{limits.torque_nm.max():g} '
                       f'N m, rate limit '
                       f'{"off" if rate is None else f"{rate.min():g}..{rate.max():g} N m/s"}')
            stopped = safe_output
        self.get_logger().info(
            f'{self.mode} safety for {len(self.actuator_names)} actuators: {input_topic} -> '
            f'{output_topic}{" and " + array_topic if publish_array else ""}; {shaping}, soft '
            f'start {soft_start_s:g} s, action delay {action_delay} and observation delay '
            f'{observation_delay if relay else "- (no relay)"} steps, watchdog '
            f'{f"{timeout_s:g} s" if self.watchdog.enabled else "off"} -> {stopped}')

    # Time.

    def _wall_s(self) -> float:
        return self._steady.now().nanoseconds * 1e-9

    # Commands.

    def _reject(self, problem: str) -> None:
        self.commands_rejected += 1
        self.last_rejection = problem
        self.get_logger().error(f'command rejected: {problem}', throttle_duration_sec=1.0)

    def _torque_from_msg(self, msg: JointState) -> np.ndarray | None:
        """The command's torques (effort) or targets (position) in contract order, or None."""
        names = list(msg.name)
        values = getattr(msg, self._field)
        if len(values) != len(names):
            self._reject(f'{len(values)} {self._field}s for {len(names)} names')
            return None
        index = {n: i for i, n in enumerate(names)}
        missing = [n for n in self.actuator_names if n not in index]
        unknown = [n for n in names if n not in self._index]
        if missing or unknown or len(index) != len(names):
            self._reject(f'names should be the contract actuators once each: missing '
                         f'{_preview(missing)}, unknown {_preview(unknown)}')
            return None
        return np.array([values[index[n]] for n in self.actuator_names], dtype=np.float64)

    def _on_command(self, msg: JointState) -> None:
        self.commands_in += 1
        torque = self._torque_from_msg(msg)
        if torque is None:
            return
        stamp_ns = stamp_to_ns(msg.header.stamp)
        if self.command_interface == 'position':
            out = self.filter.command(stamp_ns, torque)
        else:
            out = self.filter.command(stamp_ns, torque, self._velocity)
        if out is None:
            self._reject(self.filter.last_problem)
            return
        if self.watchdog.enabled:
            if self.watchdog.feed(self._wall_s()):
                self.get_logger().info('commands resumed; ramping up again')
            if self.filter.estopped:
                return  # in realtime the timer sends the safe output while latched
        self._publish(stamp_ns, out)

    def _publish(self, stamp_ns: int, torque: np.ndarray) -> None:
        msg = JointState()
        msg.header.stamp = ns_to_time(stamp_ns)
        msg.name = self.actuator_names
        setattr(msg, self._field, torque.tolist())
        self.output_pub.publish(msg)
        if self.array_pub is not None:
            self.array_pub.publish(Float64MultiArray(data=torque.tolist()))
        self.commands_out += 1

    def _safe_output(self) -> np.ndarray | None:
        if self.command_interface == 'position':
            return self.filter.safe_output()
        return self.filter.safe_output(self._velocity)

    def _safe_text(self) -> str:
        if self.command_interface == 'position':
            return 'the measured pose as targets'
        return f'{self.filter.safe_mode} torque'

    def _publish_safe(self) -> None:
        out = self._safe_output()
        if out is None:  # position, before any joint_states or target: nothing to hold
            self.get_logger().error('stopped before any joint_states: no pose to hold, '
                                    'nothing sent', throttle_duration_sec=1.0)
            return
        self._publish(self.get_clock().now().nanoseconds, out)
        self.safe_outputs += 1

    def _on_watchdog_timer(self) -> None:
        now = self._wall_s()
        timed_out = self.watchdog.timed_out
        if self.watchdog.expired(now) and not timed_out:
            self.get_logger().warning(
                f'no valid command for {self.watchdog.timeout_s:g} s: sending '
                f'{self._safe_text()} until commands resume '
                f'(timeout {self.watchdog.episodes} of this run)')
            if self.command_interface == 'position':
                self.filter.stop()  # holds the pose measured now
            else:
                self.filter.stop(self.filter.safe_output(self._velocity))
        if self.watchdog.timed_out or self.filter.estopped:
            self._publish_safe()

    # Observations.

    def _on_joint_state(self, msg: JointState) -> None:
        self.watchdog.arm(self._wall_s())
        position = np.asarray(msg.position, dtype=np.float64)
        velocity = np.asarray(msg.velocity, dtype=np.float64)
        if not (np.all(np.isfinite(position)) and np.all(np.isfinite(velocity))):
            self.get_logger().error('joint_states has non-finite values: not relayed, '
                                    'not used for damping or holding', throttle_duration_sec=1.0)
            if self.joint_relay is not None:
                self.joint_relay.rejected += 1
            return
        names = tuple(msg.name)
        if self._velocity_layout[0] != names:
            index = {n: i for i, n in enumerate(names)}
            cols = np.array([index.get(n, -1) for n in self.actuator_names])
            self._velocity_layout = (names, cols)
            undamped = [n for n, c in zip(self.actuator_names, cols) if c < 0]
            if undamped and self.filter.safe_mode == 'damping':
                self.get_logger().warning(
                    f'{len(undamped)} actuators have no joint of their name in joint_states '
                    f'(tendons?); the damping safe output gives them zero torque: '
                    f'{_preview(undamped)}', once=True)
            if undamped and self.command_interface == 'position':
                self.get_logger().warning(
                    f'{len(undamped)} actuators have no joint of their name in joint_states: '
                    f'no measured pose, so no soft start, velocity limit start or hold from '
                    f'it: {_preview(undamped)}', once=True)
        cols = self._velocity_layout[1]
        known = cols >= 0
        if len(velocity) == len(names):
            vel = np.full(len(cols), np.nan)
            vel[known] = velocity[cols[known]]
            self._velocity = vel
        if self.command_interface == 'position' and len(position) == len(names):
            pos = np.full(len(cols), np.nan)
            pos[known] = position[cols[known]]
            self.filter.observe(pos)  # refused (kept out) when a joint is missing
        if self.joint_relay is not None:
            self.joint_relay.forward(msg)

    # E-stop.

    def _latch(self, source: str) -> None:
        if not self.filter.estopped:
            self.get_logger().error(
                f'E-STOP from {source}: sending {self._safe_text()} until ~/reset is '
                'called')
        self.filter.estop()
        if self.watchdog.enabled:
            self._publish_safe()

    def _on_estop_topic(self, msg: Bool) -> None:
        if msg.data:
            self._latch('the estop topic')

    def _on_estop_service(self, request: SetBool.Request,
                          response: SetBool.Response) -> SetBool.Response:
        if request.data:
            self._latch('~/estop')
            response.success, response.message = True, 'e-stop latched; call ~/reset to release'
        else:
            response.success = False
            response.message = 'the e-stop latches: call ~/reset (std_srvs/Trigger) to release'
        return response

    def _on_reset_service(self, request: Trigger.Request,
                          response: Trigger.Response) -> Trigger.Response:
        was = self.filter.reset()
        if was:
            self.get_logger().warning('e-stop released; commands ramp up again')
            if self.watchdog.enabled:
                self.watchdog.feed(self._wall_s())  # a fresh timeout from now
        response.success = True
        response.message = 'e-stop released' if was else 'the e-stop was not latched'
        return response


def main(args=None) -> int:
    return spin_node(SafetyNode, 'safety', args)


if __name__ == '__main__':
    sys.exit(main())
