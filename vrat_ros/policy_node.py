"""The `policy` node: runs the ONNX inverse-dynamics network on joint states and the reference.

Inputs are matched by name to the policy contract, so their order does not matter:
  joint_states                 sensor_msgs/JointState (position rad, velocity rad/s)
  odom                         nav_msgs/Odometry (root pose in the world, twist in the root)
  reference/joint_trajectory   trajectory_msgs/JointTrajectory
  reference/root_trajectory    trajectory_msgs/MultiDOFJointTrajectory (the contract's
                               root joint, 'root' unless it names another)
Output, by the contract's command interface, stamped with the joint state it answers:
  effort    policy/effort, sensor_msgs/JointState with the contract's actuator names and
            torques (N m) in `effort`; optionally also effort_controller/commands
  position  policy/position, the same with joint targets (rad, or m for slide joints) in
            `position`; optionally also position_controller/commands
(the optional topics: std_msgs/Float64MultiArray in the contract's actuator order). Nothing
in here is specific to one body: joints, actuators and root come from the contract.

Introspection (see `vrat_ros.introspection`):
  ~/activations/<layer>   std_msgs/Float32MultiArray, one per layer named in the contract, and
  ~/observation           the observation the network saw, published once per command while
                          `publish_activations` is true; layout.dim[0].label names the layer.
                          Off (the default), the network computes the action alone.
  lesion.<layer>.silence / .clamp / .clamp_value / .noise / .noise_std
                          virtual lesions, changeable while running (checked, and refused
                          with a reason when a unit or value is bad);
  ~/clear_lesions         std_srvs/Trigger that resets every lesion parameter.
In-process users (the `vrat run` recorder) may set `on_step` to a callable that gets an
`introspection.PolicyStep` after each command.

One command per joint-state stamp t, computed when joint_states(t), odom(t) and reference
windows covering t + dt .. t + K dt are all there (whichever comes last triggers it), so a
lockstep run is deterministic. A joint state repeated with the same stamp (the lockstep sim
waiting) gets the same command again.
"""

from __future__ import annotations

import array
import collections
import sys

from nav_msgs.msg import Odometry
import numpy as np
from rcl_interfaces.msg import FloatingPointRange
from rcl_interfaces.msg import IntegerRange
from rcl_interfaces.msg import ParameterDescriptor
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile
from sensor_msgs.msg import JointState
from std_msgs.msg import Float32MultiArray
from std_msgs.msg import Float64MultiArray
from std_msgs.msg import MultiArrayDimension
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory
from trajectory_msgs.msg import MultiDOFJointTrajectory

from vrat_ros.clip import quat_slerp
from vrat_ros.driver_check import command_interfaces
from vrat_ros.driver_check import INTERFACE_TOPICS
from vrat_ros.driver_check import DriverCheck
from vrat_ros.introspection import LesionablePolicy
from vrat_ros.introspection import normalize_lesions
from vrat_ros.introspection import PolicyStep
from vrat_ros.node_main import spin_node
from vrat_ros.observation import build_observation
from vrat_ros.policy import EXECUTION_MODES
from vrat_ros.policy import is_body_joint
from vrat_ros.policy import SessionSettings
from vrat_ros.resources import default_policy_path
from vrat_ros.safety import StampOrder
from vrat_ros.ros_messages import command_topics
from vrat_ros.ros_messages import ns_to_time
from vrat_ros.ros_messages import quat_msg_to_wxyz
from vrat_ros.ros_messages import seconds_to_ns
from vrat_ros.ros_messages import stamp_to_ns
from vrat_ros.ros_messages import vector_to_array

EFFORT_TOPIC, ARRAY_TOPIC = command_topics('effort')
# The driver check's command topics, plus the named position topic the sim takes.
_INTERFACE_TOPICS = dict(INTERFACE_TOPICS, position=tuple(INTERFACE_TOPICS['position'])
                         + (command_topics('position')[0],))
_HISTORY = 8          # odometry messages and reference windows kept for matching
_MAX_LAYOUTS = 16     # cached name orders of incoming messages
_LESION_PREFIX = 'lesion.'
_LESION_PARAMETERS = (
    ('silence', Parameter.Type.INTEGER_ARRAY, 'units forced to 0 (unset or [] for none)'),
    ('clamp', Parameter.Type.INTEGER_ARRAY, 'units forced to clamp_value'),
    ('clamp_value', 0.0, 'value of the clamped units'),
    ('noise', Parameter.Type.INTEGER_ARRAY, 'units that get Gaussian noise on every step'),
    ('noise_std', 0.0, 'standard deviation of that noise (>= 0)'),
)


def _preview(names, limit: int = 5) -> str:
    names = list(names)
    more = f' (+{len(names) - limit} more)' if len(names) > limit else ''
    return f'{names[:limit]}{more}'


def window_covers(times_ns: np.ndarray, targets_ns: np.ndarray, tolerance_ns: int) -> bool:
    """Tell whether a window's point times span the targets, give or take `tolerance_ns`."""
    return bool(times_ns[0] <= targets_ns[0] + tolerance_ns
                and times_ns[-1] >= targets_ns[-1] - tolerance_ns)


def interpolation_weights(times_ns: np.ndarray, targets_ns: np.ndarray):
    """Return (i0, i1, s) arrays so that value(target) = (1 - s) v[i0] + s v[i1].

    Targets outside the window hold its first or last point; a target on a point takes it
    exactly (s = 0).
    """
    n = len(times_ns)
    i0 = np.clip(np.searchsorted(times_ns, targets_ns, side='right') - 1, 0, n - 1)
    i1 = np.minimum(i0 + 1, n - 1)
    span = (times_ns[i1] - times_ns[i0]).astype(np.float64)
    offset = (targets_ns - times_ns[i0]).astype(np.float64)
    s = np.where(span > 0, np.clip(offset / np.where(span > 0, span, 1.0), 0.0, 1.0), 0.0)
    return i0, i1, s


def interpolate_rows(values: np.ndarray, i0, i1, s) -> np.ndarray:
    """Linear interpolation of (n, m) rows; rows with s == 0 are copied exactly."""
    out = values[i0].copy()
    moving = s > 0
    if moving.any():
        w = s[moving, None]
        out[moving] = (1.0 - w) * values[i0[moving]] + w * values[i1[moving]]
    return out


def interpolate_quats(quats: np.ndarray, i0, i1, s) -> np.ndarray:
    """Slerp of (n, 4) (w, x, y, z) rows; rows with s == 0 are copied exactly."""
    out = quats[i0].copy()
    for j in np.flatnonzero(s > 0):
        out[j] = quat_slerp(quats[i0[j]], quats[i1[j]], float(s[j]))
    return out


class PolicyNode(Node):

    def __init__(self, **kwargs):
        super().__init__('policy', **kwargs)

        # Parameters.
        tolerance_range = FloatingPointRange(from_value=0.0, to_value=10.0)
        self.declare_parameter('policy_file', default_policy_path(), ParameterDescriptor(
            description='ONNX policy with a vrat contract', read_only=True))
        self.declare_parameter('publish_float64_array', False, ParameterDescriptor(
            description='Also publish effort_controller/commands or '
                        'position_controller/commands (by the contract\'s interface; '
                        'Float64MultiArray, contract order)', read_only=True))
        self.declare_parameter('reference_tolerance_s', 0.001, ParameterDescriptor(
            description='How far (s) the reference window may fall short of t + dt .. t + K dt '
                        '(its end points are held); about one control period for realtime use',
            floating_point_range=[tolerance_range], read_only=True))
        self.declare_parameter('odom_tolerance_s', 0.001, ParameterDescriptor(
            description='Largest stamp difference (s) between joint_states and odom',
            floating_point_range=[tolerance_range], read_only=True))
        self.declare_parameter('publish_activations', False, ParameterDescriptor(
            description='Publish ~/observation and ~/activations/<layer> with each command'))
        self.declare_parameter('lesion_seed', 0, ParameterDescriptor(
            description='Seed of the noise lesions', read_only=True))
        self.declare_parameter('check_driver', True, ParameterDescriptor(
            description='Stop when the driver joint names, command interface or rate '
                        'disagree with the contract (docs/driver_contract.md)', read_only=True))
        threads = IntegerRange(from_value=1, to_value=256, step=1)
        self.declare_parameter('onnxruntime.intra_op_threads', 1, ParameterDescriptor(
            description='onnxruntime threads inside an operator (1: the calling thread only)',
            integer_range=[threads], read_only=True))
        self.declare_parameter('onnxruntime.inter_op_threads', 1, ParameterDescriptor(
            description="onnxruntime threads across operators (used in 'parallel' mode)",
            integer_range=[threads], read_only=True))
        self.declare_parameter('onnxruntime.allow_spinning', False, ParameterDescriptor(
            description='Let idle onnxruntime threads spin instead of sleeping (burns a core)',
            read_only=True))
        self.declare_parameter('onnxruntime.execution_mode', 'sequential', ParameterDescriptor(
            description=f'onnxruntime execution mode, one of {list(EXECUTION_MODES)}',
            read_only=True))

        policy_file = self.get_parameter('policy_file').value
        self.publish_array = bool(self.get_parameter('publish_float64_array').value)
        self.reference_tolerance_ns = seconds_to_ns(
            self.get_parameter('reference_tolerance_s').value)
        self.odom_tolerance_ns = seconds_to_ns(self.get_parameter('odom_tolerance_s').value)

        self.publish_activations = bool(self.get_parameter('publish_activations').value)

        # The policy (a bad file, contract or option raises here, not in a callback).
        settings = SessionSettings(
            intra_op_threads=int(self.get_parameter('onnxruntime.intra_op_threads').value),
            inter_op_threads=int(self.get_parameter('onnxruntime.inter_op_threads').value),
            allow_spinning=bool(self.get_parameter('onnxruntime.allow_spinning').value),
            execution_mode=str(self.get_parameter('onnxruntime.execution_mode').value))
        self.policy = LesionablePolicy(
            policy_file, seed=int(self.get_parameter('lesion_seed').value),
            session_settings=settings)
        for layer in self.policy.layer_names:
            for field, default, text in _LESION_PARAMETERS:
                self.declare_parameter(f'{_LESION_PREFIX}{layer}.{field}', default,
                                       ParameterDescriptor(description=f'{layer}: {text}'))
        self.policy.set_lesions(self._lesions_from(self._lesion_values()))  # bad ones raise
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.add_post_set_parameters_callback(self._after_set_parameters)
        self.joint_names = list(self.policy.joint_names)
        self.command_interface = self.policy.command_interface
        self.root_joint = self.policy.root_joint
        self.command_topic, self.array_topic = command_topics(self.command_interface)
        self.driver_check = (DriverCheck(self.policy.contract)
                             if self.get_parameter('check_driver').value else None)
        self._stamp_order = StampOrder()
        self.dt_ns = seconds_to_ns(self.policy.reference_dt)
        offsets = np.arange(1, self.policy.reference_frames + 1, dtype=np.int64)
        self._target_offsets_ns = offsets * self.dt_ns

        # Input state and counters (read by tests).
        self._layouts = {}
        self._pending = None            # (stamp_ns, joint_pos, joint_vel) awaiting a command
        self._odoms = collections.deque(maxlen=_HISTORY)
        self._joint_windows = collections.deque(maxlen=_HISTORY)
        self._root_windows = collections.deque(maxlen=_HISTORY)
        self.last_stamp_ns = None
        self.last_command = None
        self.commands_published = 0
        self.commands_resent = 0
        self.inputs_rejected = 0
        self.warnings = collections.Counter()
        self.on_step = None             # callable(PolicyStep), for in-process recorders

        # Publishers and subscriptions.
        qos = QoSProfile(depth=10)
        # `effort_pub` is the command publisher of either interface (the name is older).
        self.effort_pub = self.create_publisher(JointState, self.command_topic, qos)
        self.command_pub = self.effort_pub
        self.array_pub = (self.create_publisher(Float64MultiArray, self.array_topic, qos)
                          if self.publish_array else None)
        self.observation_pub = self.create_publisher(Float32MultiArray, '~/observation', qos)
        self.activation_pubs = {
            layer: self.create_publisher(Float32MultiArray, f'~/activations/{layer}', qos)
            for layer in self.policy.layer_names}
        self.create_service(Trigger, '~/clear_lesions', self._on_clear_lesions)
        self.create_subscription(JointState, 'joint_states', self._on_joint_state, qos)
        self.create_subscription(Odometry, 'odom', self._on_odom, qos)
        self.create_subscription(
            JointTrajectory, 'reference/joint_trajectory', self._on_joint_reference, qos)
        self.create_subscription(
            MultiDOFJointTrajectory, 'reference/root_trajectory', self._on_root_reference, qos)

        self.get_logger().info(
            f"policy '{policy_file}': {len(self.joint_names)} joints, "
            f'{len(self.policy.actuator_names)} actuators, observation '
            f'{self.policy.observation_size}, {self.policy.reference_frames} reference frames '
            f'{self.dt_ns * 1e-6:g} ms apart, trained at {self.policy.control_rate_hz:g} Hz; '
            f"{self.command_interface} commands on {self.command_topic}"
            f"{' and ' + self.array_topic if self.publish_array else ''}; "
            f'layers {self.policy.layer_sizes or "none"}'
            f"{', activations published' if self.publish_activations else ''}"
            f"{', lesions ' + str(self._lesion_summary()) if self.policy.lesioned else ''}")

    # Lesions and introspection parameters.

    def _lesion_values(self, changes=()) -> dict:
        """Returns {(layer, field): value} of the lesion parameters, with `changes` applied."""
        values = {}
        for layer in self.policy.layer_names:
            for field, default, _ in _LESION_PARAMETERS:
                name = f'{_LESION_PREFIX}{layer}.{field}'
                unset = Parameter(name, Parameter.Type.INTEGER_ARRAY, [])
                value = self.get_parameter_or(name, unset).value
                values[(layer, field)] = [] if value is None else value
        for param in changes:
            if param.name.startswith(_LESION_PREFIX):
                layer, _, field = param.name[len(_LESION_PREFIX):].rpartition('.')
                values[(layer, field)] = [] if param.value is None else param.value
        return values

    def _lesions_from(self, values: dict) -> dict:
        fields = {}
        for (layer, field), value in values.items():
            if not isinstance(value, (int, float)):
                value = [int(v) for v in value]
            fields.setdefault(layer, {})[field] = value
        return normalize_lesions(fields, self.policy.layer_sizes)

    def _lesion_summary(self) -> dict:
        return {layer: lesion.to_dict() for layer, lesion in self.policy.lesions.items()}

    def _on_set_parameters(self, params) -> SetParametersResult:
        try:
            self._lesions_from(self._lesion_values(params))
        except ValueError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    def _after_set_parameters(self, params) -> None:
        for param in params:
            if param.name == 'publish_activations':
                self.publish_activations = bool(param.value)
        if any(p.name.startswith(_LESION_PREFIX) for p in params):
            self.policy.set_lesions(self._lesions_from(self._lesion_values()))
            self.get_logger().info(f'lesions now {self._lesion_summary() or "none"}')

    def _on_clear_lesions(self, request, response):
        params = []
        for layer in self.policy.layer_names:
            for field, default, _ in _LESION_PARAMETERS:
                name = f'{_LESION_PREFIX}{layer}.{field}'
                params.append(Parameter(name, default, []) if isinstance(default, Parameter.Type)
                              else Parameter(name, value=default))
        result = self.set_parameters_atomically(params) if params else None
        response.success = result is None or result.successful
        response.message = (result.reason if not response.success
                            else f'cleared the lesions of {len(self.policy.layer_names)} layers')
        return response

    def _publish_step(self, observation: np.ndarray, layers: dict) -> None:
        outgoing = [('observation', observation, self.observation_pub)]
        outgoing += [(layer, layers[layer], self.activation_pubs[layer]) for layer in layers]
        for label, values, pub in outgoing:
            values = np.ascontiguousarray(values, dtype=np.float32)
            msg = Float32MultiArray()
            msg.layout.dim = [MultiArrayDimension(label=label, size=values.size,
                                                  stride=values.size)]
            msg.data = array.array('f', values.tobytes())
            pub.publish(msg)

    # Logging helpers.

    def _warn_once(self, key: str, text: str) -> None:
        self.warnings[key] += 1
        if self.warnings[key] == 1:
            self.get_logger().warning(text)

    def _input_error(self, text: str) -> None:
        self.inputs_rejected += 1
        self.get_logger().error(f'no command: {text}', throttle_duration_sec=1.0)

    # Name matching.

    def _columns(self, names: tuple, source: str):
        """Return the column of each contract joint in `names`, or None (error logged)."""
        key = (source, names)
        if key not in self._layouts:
            if len(self._layouts) >= _MAX_LAYOUTS:
                self._layouts.clear()
            index = {}
            for i, n in enumerate(names):
                index.setdefault(n, i)
            missing = [n for n in self.joint_names if n not in index]
            # Joints of the body that the policy does not read (the contract's body_joints)
            # are expected, not unknown.
            contract = self.policy.contract
            unknown = [n for n in index if not is_body_joint(contract, n)]
            if unknown:
                self._warn_once(f'unknown_joints:{source}:{sorted(unknown)}',
                                f'{source} has joints the policy does not know (ignored): '
                                f'{_preview(unknown)}')
            cols = None if missing else np.array([index[n] for n in self.joint_names])
            self._layouts[key] = (cols, missing)
        cols, missing = self._layouts[key]
        if cols is None:
            self._input_error(f'{source} lacks joints the policy needs: {_preview(missing)}')
        return cols

    # Callbacks.

    def _on_joint_state(self, msg: JointState) -> None:
        stamp_ns = stamp_to_ns(msg.header.stamp)
        if self.driver_check is not None and self.driver_check.pending:
            # Raises DriverMismatchError: the node stops, naming the mismatch.
            self.driver_check.observe(msg.name, stamp_ns,
                                      command_interfaces(self, _INTERFACE_TOPICS))
        order = self._stamp_order.check(stamp_ns)
        if order == 'backwards':
            self._input_error(f'joint_states stamped {stamp_ns * 1e-9:.6f} s is older than '
                              f'{self._stamp_order.newest_ns * 1e-9:.6f} s: dropped')
            return
        if self.last_stamp_ns is not None and stamp_ns == self.last_stamp_ns:
            self.effort_pub.publish(self.last_command)  # the sim is still waiting for it
            self.commands_resent += 1
            return
        if order == 'restart' and self.last_stamp_ns is not None:
            self.get_logger().warning(
                f'joint_states went back in time to {stamp_ns * 1e-9:.3f} s (a restarted '
                'sim?); forgetting odometry and reference windows from later times')
            self.last_stamp_ns = self.last_command = None
            self._forget_after(stamp_ns)
        repeated = self._pending is not None and self._pending[0] == stamp_ns
        self._pending = self._parse_joint_state(msg, stamp_ns)
        self._try_compute(report_wait=repeated)

    def _forget_after(self, stamp_ns: int) -> None:
        first_target_ns = stamp_ns + self._target_offsets_ns[0] + self.reference_tolerance_ns
        for history, newest in ((self._odoms, stamp_ns + self.odom_tolerance_ns),
                                (self._joint_windows, first_target_ns),
                                (self._root_windows, first_target_ns)):
            kept = [item for item in history if np.min(item[0]) <= newest]
            history.clear()
            history.extend(kept)

    def _parse_joint_state(self, msg: JointState, stamp_ns: int):
        names = tuple(msg.name)
        if len(msg.position) != len(names):
            self._input_error(
                f'joint_states has {len(msg.position)} positions for {len(names)} names')
            return None
        if len(msg.velocity) not in (0, len(names)):
            self._input_error(
                f'joint_states has {len(msg.velocity)} velocities for {len(names)} names')
            return None
        cols = self._columns(names, 'joint_states')
        if cols is None:
            return None
        pos = np.asarray(msg.position, dtype=np.float64)[cols]
        if len(msg.velocity) == 0:
            self._warn_once('empty_velocity',
                            'joint_states has no velocities; the policy sees zero joint velocity')
            vel = np.zeros(len(cols))
        else:
            vel = np.asarray(msg.velocity, dtype=np.float64)[cols]
        bad = ~(np.isfinite(pos) & np.isfinite(vel))
        if bad.any():
            self._input_error('joint_states has non-finite values for '
                              f'{_preview([self.joint_names[i] for i in np.flatnonzero(bad)])}')
            return None
        return stamp_ns, pos, vel

    def _on_odom(self, msg: Odometry) -> None:
        pose, twist = msg.pose.pose, msg.twist.twist
        self._odoms.append((
            stamp_to_ns(msg.header.stamp), vector_to_array(pose.position),
            quat_msg_to_wxyz(pose.orientation), vector_to_array(twist.linear),
            vector_to_array(twist.angular)))
        self._try_compute()

    def _on_joint_reference(self, msg: JointTrajectory) -> None:
        window = self._parse_window(msg, 'reference/joint_trajectory')
        if window is None:
            return
        cols = self._columns(tuple(msg.joint_names), 'reference/joint_trajectory')
        if cols is None:
            return
        n = len(msg.joint_names)
        if any(len(p.positions) != n for p in msg.points):
            self._input_error(f'reference/joint_trajectory points should have {n} positions')
            return
        positions = np.array([p.positions for p in msg.points], dtype=np.float64)[:, cols]
        self._joint_windows.append((window, positions))
        self._try_compute()

    def _on_root_reference(self, msg: MultiDOFJointTrajectory) -> None:
        window = self._parse_window(msg, 'reference/root_trajectory')
        if window is None:
            return
        names = list(msg.joint_names)
        if self.root_joint not in names:
            self._input_error(f"reference/root_trajectory has no joint '{self.root_joint}': "
                              f'{_preview(names)}')
            return
        j = names.index(self.root_joint)
        if any(len(p.transforms) != len(names) for p in msg.points):
            self._input_error(
                f'reference/root_trajectory points should have {len(names)} transforms')
            return
        pos = np.array([vector_to_array(p.transforms[j].translation) for p in msg.points])
        quat = np.array([quat_msg_to_wxyz(p.transforms[j].rotation) for p in msg.points])
        self._root_windows.append((window, pos, quat))
        self._try_compute()

    def _parse_window(self, msg, source: str):
        """Return the absolute point times (ns) of a trajectory, or None (error logged)."""
        if not msg.points:
            self._input_error(f'{source} has no points')
            return None
        times = stamp_to_ns(msg.header.stamp) + np.array(
            [stamp_to_ns(p.time_from_start) for p in msg.points], dtype=np.int64)
        if np.any(np.diff(times) <= 0):
            self._input_error(f'{source} point times should increase')
            return None
        return times

    # The command.

    def _find_window(self, windows, targets_ns):
        for window in reversed(windows):
            if window_covers(window[0], targets_ns, self.reference_tolerance_ns):
                return window
        return None

    def _try_compute(self, report_wait: bool = False) -> None:
        if self._pending is None:
            return
        stamp_ns, joint_pos, joint_vel = self._pending
        odom = min(self._odoms, key=lambda o: abs(o[0] - stamp_ns), default=None)
        if odom is not None and abs(odom[0] - stamp_ns) > self.odom_tolerance_ns:
            odom = None
        targets_ns = stamp_ns + self._target_offsets_ns
        joint_window = self._find_window(self._joint_windows, targets_ns)
        root_window = self._find_window(self._root_windows, targets_ns)
        if odom is None or joint_window is None or root_window is None:
            if report_wait:
                waiting = [name for name, item in (
                    ('odom', odom), ('reference/joint_trajectory', joint_window),
                    ('reference/root_trajectory', root_window)) if item is None]
                self.get_logger().warning(
                    f'joint state at {stamp_ns * 1e-9:.3f} s still waits for {waiting} '
                    f'covering {targets_ns[0] * 1e-9:.3f}..{targets_ns[-1] * 1e-9:.3f} s',
                    throttle_duration_sec=5.0)
            return
        self._pending = None

        # Reference at t + k dt, interpolated within the windows (the lockstep reference
        # node's points fall on the targets exactly: then they are taken as they are).
        if np.array_equal(joint_window[0], targets_ns):
            ref_joints = joint_window[1]
        else:
            i0, i1, s = interpolation_weights(joint_window[0], targets_ns)
            ref_joints = interpolate_rows(joint_window[1], i0, i1, s)
        if np.array_equal(root_window[0], targets_ns):
            ref_root_pos, ref_root_quat = root_window[1], root_window[2]
        else:
            i0, i1, s = interpolation_weights(root_window[0], targets_ns)
            ref_root_pos = interpolate_rows(root_window[1], i0, i1, s)
            ref_root_quat = interpolate_quats(root_window[2], i0, i1, s)

        _, root_pos, root_quat, linvel, angvel = odom
        inputs = (root_pos, root_quat, linvel, angvel, ref_joints, ref_root_pos, ref_root_quat)
        if not all(np.isfinite(x).all() for x in inputs):
            self._input_error(f'odom or reference has non-finite values at {stamp_ns * 1e-9} s')
            return
        obs = build_observation(joint_pos, joint_vel, root_pos, root_quat, linvel, angvel,
                                ref_root_pos, ref_root_quat, ref_joints)
        layers = None
        if self.publish_activations or self.on_step is not None:
            action, layers = self.policy.run(obs, with_layers=True)
        else:
            action = self.policy.run(obs)
        torques = self.policy.command_from_action(action)  # joint targets for 'position'
        if not np.isfinite(torques).all():
            self._input_error(f'the network returned non-finite {self.command_interface} '
                              'commands')
            return

        msg = JointState()
        msg.header.stamp = ns_to_time(stamp_ns)
        msg.name = self.policy.actuator_names
        values = array.array('d', torques.tobytes())  # taken as is; a list is checked
        if self.command_interface == 'effort':
            msg.effort = values
        else:
            msg.position = values
        self.effort_pub.publish(msg)
        if self.array_pub is not None:
            self.array_pub.publish(Float64MultiArray(data=values))
        self.last_stamp_ns = stamp_ns
        self.last_command = msg
        self.commands_published += 1
        if self.publish_activations:
            self._publish_step(obs, layers)
        if self.on_step is not None:
            self.on_step(PolicyStep(
                stamp_ns=stamp_ns, observation=obs, action=action, torques=torques,
                layers=layers, ref_root_pos=ref_root_pos, ref_root_quat=ref_root_quat,
                ref_joint_pos=ref_joints))


def main(args=None) -> int:
    return spin_node(PolicyNode, 'policy', args)


if __name__ == '__main__':
    sys.exit(main())
