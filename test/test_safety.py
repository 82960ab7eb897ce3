"""The safety layer: its core (limits, ramp, delay, e-stop, watchdog) and the `safety` node.

Torque commands (the rat) and position commands (the quadruped's joint targets) both.

Core tests feed stamps by hand and check exact values. Node tests run on real rclpy topics in
this process (conftest.RosBed) and check what comes out, never how fast. The last tests cover
the sim's own safety: a clear halt on diverged physics and its realtime command timeout.
"""

import numpy as np
import pytest

from vrat_ros.policy import read_contract
from vrat_ros.resources import data_path
from vrat_ros.safety import DelayLine
from vrat_ros.safety import joint_ranges
from vrat_ros.safety import limits_from_contract
from vrat_ros.safety import position_limits_from_contract
from vrat_ros.safety import PositionFilter
from vrat_ros.safety import PositionLimits
from vrat_ros.safety import robot_joint_ranges
from vrat_ros.safety import SafetyFilter
from vrat_ros.safety import SafetyLimits
from vrat_ros.safety import StampOrder
from vrat_ros.safety import Watchdog

MS = 1_000_000  # nanoseconds
DT_NS = 20 * MS
QUADRUPED_POLICY = data_path('policies', 'quadruped_inverse_dynamics.onnx')


def make_filter(nu=3, torque=1.0, **kwargs):
    filter_kwargs = {k: kwargs.pop(k) for k in ('safe_output', 'action_delay_steps')
                     if k in kwargs}
    limits = SafetyLimits(actuator_names=[f'a{i}' for i in range(nu)], torque_nm=torque,
                          **kwargs)
    return SafetyFilter(limits, **filter_kwargs)


def feed(safety, commands, start_ns=0):
    """Send commands at 20 ms steps; return the outputs as an array."""
    return np.array([safety.command(start_ns + k * DT_NS, np.asarray(c, dtype=float))
                     for k, c in enumerate(commands)])


# Core.

def test_torque_is_clamped_to_per_actuator_limits():
    safety = make_filter(torque=[1.0, 2.0, 0.5])
    out = safety.command(0, np.array([3.0, -3.0, 0.25]))
    np.testing.assert_array_equal(out, [1.0, -2.0, 0.25])
    assert safety.clamped == 2


def test_limits_come_from_the_contract_and_its_overrides(tiny_policy_path, rat_body):
    contract = read_contract(tiny_policy_path)
    limits = limits_from_contract(contract)
    np.testing.assert_allclose(limits.torque_nm, rat_body.actuator_gain)
    assert limits.rate_nm_s is None and limits.soft_start_s == 0.0

    half = limits_from_contract(contract, torque_limit_scale=0.5, rate_limit_per_s=10.0,
                                damping_gain_s=0.2)
    np.testing.assert_allclose(half.torque_nm, 0.5 * rat_body.actuator_gain)
    np.testing.assert_allclose(half.rate_nm_s, 5.0 * rat_body.actuator_gain)
    np.testing.assert_allclose(half.damping, 0.1 * rat_body.actuator_gain)
    explicit = limits_from_contract(contract, torque_limits_nm=[0.3], rate_limit_nm_s=[2.0])
    assert np.all(explicit.torque_nm == 0.3) and np.all(explicit.rate_nm_s == 2.0)
    with pytest.raises(ValueError, match='1 or 38 values'):
        limits_from_contract(contract, torque_limits_nm=[1.0, 2.0])


def test_rate_limit_bounds_the_change_per_step():
    # 10 N m/s over 20 ms steps: at most 0.2 N m per step, either way.
    safety = make_filter(nu=2, torque=5.0, rate_nm_s=10.0)
    out = feed(safety, [[0.0, 0.0], [1.0, -0.1], [1.0, -0.1], [1.0, -0.1], [0.0, 0.0]])
    np.testing.assert_allclose(out[:, 0], [0.0, 0.2, 0.4, 0.6, 0.4])
    np.testing.assert_allclose(out[:, 1], [0.0, -0.1, -0.1, -0.1, 0.0])
    assert safety.rate_limited == 4


def test_soft_start_ramps_from_zero_over_soft_start_s():
    safety = make_filter(nu=1, torque=5.0, soft_start_s=0.1)
    out = feed(safety, [[2.0]] * 8)
    np.testing.assert_allclose(out[:, 0], [0.0, 0.4, 0.8, 1.2, 1.6, 2.0, 2.0, 2.0])


def test_non_finite_commands_are_refused_and_named():
    safety = make_filter()
    assert safety.command(0, np.array([0.1, np.nan, 0.2])) is None
    assert safety.command(0, np.array([np.inf, 0.0, 0.2])) is None
    assert safety.rejected == 2 and 'a0' in safety.last_problem
    np.testing.assert_array_equal(safety.command(0, np.array([0.1, 0.2, 0.3])), [0.1, 0.2, 0.3])


def test_estop_latches_the_safe_output_until_reset():
    safety = make_filter(nu=2, torque=[1.0, 1.0], damping=[0.5, 0.5], safe_output='damping')
    np.testing.assert_array_equal(safety.command(0, np.array([0.5, 0.5])), [0.5, 0.5])
    safety.estop()
    velocity = np.array([1.0, -10.0])
    for k in range(1, 4):  # latched: commands keep coming, the damping goes out
        out = safety.command(k * DT_NS, np.array([0.5, 0.5]), velocity)
        np.testing.assert_allclose(out, [-0.5, 1.0])  # -kd v, clamped to the 1 N m limit
    assert safety.estopped
    assert safety.reset() and not safety.reset()
    np.testing.assert_array_equal(safety.command(4 * DT_NS, np.array([0.5, 0.5])), [0.5, 0.5])

    zero = make_filter(nu=2)
    zero.estop()
    np.testing.assert_array_equal(zero.command(0, np.ones(2), velocity), [0.0, 0.0])


def test_action_delay_shifts_commands_by_n_steps():
    safety = make_filter(nu=1, torque=10.0, action_delay_steps=3)
    commands = [[float(k + 1)] for k in range(7)]
    out = feed(safety, commands)
    np.testing.assert_array_equal(out[:, 0], [0.0, 0.0, 0.0, 1.0, 2.0, 3.0, 4.0])
    # A re-sent command (same stamp, a lockstep driver waiting) is not a new step.
    np.testing.assert_array_equal(safety.command(6 * DT_NS, np.array([99.0])), [4.0])
    np.testing.assert_array_equal(safety.command(7 * DT_NS, np.array([8.0])), [5.0])


def test_commands_stamped_back_in_time_are_refused():
    safety = make_filter()
    safety.command(2 * DT_NS, np.zeros(3))
    assert safety.command(DT_NS, np.zeros(3)) is None
    assert 'older than' in safety.last_problem


def test_delay_line_holds_its_first_item_and_refuses_old_stamps():
    line = DelayLine(2)
    assert [line.push(k, f'm{k}') for k in range(5)] == ['m0', 'm0', 'm0', 'm1', 'm2']
    assert line.push(4, 'again') == 'm2'
    assert line.push(3, 'old') is None
    line.clear()
    assert line.push(0, 'x') == 'x'
    with pytest.raises(ValueError, match='whole number'):
        DelayLine(-1)


def test_stamp_order_rejects_going_back_and_accepts_a_restart():
    order = StampOrder(restart_after=3)
    assert [order.check(s) for s in (10, 20, 20, 15, 30)] == [
        'new', 'new', 'repeat', 'backwards', 'new']
    assert [order.check(s) for s in (0, 0, 0, 20)] == ['backwards', 'backwards', 'restart',
                                                       'new']
    assert order.rejected == 3


def test_watchdog_expires_after_one_timeout_and_recovers():
    dog = Watchdog(0.1)
    assert not dog.expired(100.0)  # never fed: nothing to time out yet
    dog.feed(0.0)
    assert not dog.expired(0.1)
    assert dog.expired(0.1001) and dog.expired(0.5)
    assert dog.episodes == 1
    assert dog.feed(0.6) and not dog.expired(0.65)
    assert not dog.feed(0.66)
    assert dog.expired(0.8) and dog.episodes == 2
    assert not Watchdog(0.0).enabled


def test_filter_restarts_the_ramp_after_a_stop():
    safety = make_filter(nu=1, torque=5.0, soft_start_s=0.04, rate_nm_s=100.0)
    out = feed(safety, [[1.0]] * 4)
    np.testing.assert_allclose(out[:, 0], [0.0, 0.5, 1.0, 1.0])
    safety.stop()
    # Resumed 1 s later: ramps again; the rate limit uses one usual step (2 N m), not 1 s.
    out = [safety.command(1000 * MS + k * DT_NS, np.array([1.0]))[0] for k in range(3)]
    np.testing.assert_allclose(out, [0.0, 0.5, 1.0])


# Core: position commands (joint targets).

def make_position_filter(lower, upper, measured=None, action_delay_steps=0, **kwargs):
    limits = PositionLimits(actuator_names=[f'j{i}' for i in range(len(lower))], lower=lower,
                            upper=upper, **kwargs)
    safety = PositionFilter(limits, DT_NS * 1e-9, action_delay_steps)
    if measured is not None:
        assert safety.observe(measured)
    return safety


def test_position_targets_are_clamped_to_the_joint_range():
    safety = make_position_filter([-1.0, -0.5, 0.0], [1.0, 0.5, 2.0])
    out = safety.command(0, np.array([1.5, -2.0, 0.3]))
    np.testing.assert_array_equal(out, [1.0, -0.5, 0.3])
    assert safety.clamped == 2


def test_position_limits_come_from_the_robot_model_and_only_tighten():
    contract = read_contract(QUADRUPED_POLICY)
    names = contract['actuator_names']
    lower, upper = robot_joint_ranges('quadruped', names)
    knee, yaw = names.index('knee_front_left'), names.index('yaw_back_left')
    # dm_control's quadruped: knees -60..50 degrees, hip yaws -50..50 degrees.
    assert (lower[knee], upper[knee]) == pytest.approx(np.deg2rad([-60.0, 50.0]))
    assert (lower[yaw], upper[yaw]) == pytest.approx(np.deg2rad([-50.0, 50.0]))

    limits = position_limits_from_contract(contract, lower, upper, lower_override=[-2.0],
                                           upper_override=[0.5], margin=0.1,
                                           velocity_limit=[3.0], soft_start_s=1.0)
    # -2 rad is looser than every range: the range stays; 0.5 rad tightens the upper ends.
    assert limits.lower[knee] == pytest.approx(np.deg2rad(-60.0) + 0.1)
    assert limits.upper[knee] == pytest.approx(0.4)
    assert limits.lower[yaw] == pytest.approx(np.deg2rad(-50.0) + 0.1)
    np.testing.assert_array_equal(limits.velocity, np.full(len(names), 3.0))
    assert limits.soft_start_s == 1.0
    with pytest.raises(ValueError, match='no range'):
        position_limits_from_contract(contract, lower, upper, margin=1.0)
    with pytest.raises(ValueError, match=r"no hinge or slide joint named \['root', 'nose'\]"):
        robot_joint_ranges('quadruped', ['yaw_front_left', 'root', 'nose'])


def test_joints_without_a_range_are_not_clamped():
    import mujoco
    model = mujoco.MjModel.from_xml_string(
        '<mujoco><worldbody><body><joint name="free_spin" type="hinge"/><geom size="0.1"/>'
        '</body></worldbody></mujoco>')
    lower, upper = joint_ranges(model, ['free_spin'])
    assert lower[0] == -np.inf and upper[0] == np.inf
    safety = make_position_filter(lower, upper)
    np.testing.assert_array_equal(safety.command(0, np.array([12.0])), [12.0])


def test_position_jump_is_rate_limited_to_vmax_times_dt():
    # 1.5 rad/s over 20 ms steps: at most 0.03 rad per step, the first from the measured pose.
    safety = make_position_filter([-1.0, -1.0], [1.0, 1.0], measured=[0.1, 0.0], velocity=1.5)
    out = feed(safety, [[0.5, 0.01]] * 4 + [[0.0, 0.0]])
    np.testing.assert_allclose(out[:, 0], [0.13, 0.16, 0.19, 0.22, 0.19])
    np.testing.assert_allclose(out[:, 1], [0.01, 0.01, 0.01, 0.01, 0.0])
    assert safety.rate_limited == 5
    # A 60 ms gap between stamps allows three steps' worth.
    np.testing.assert_allclose(safety.command(7 * DT_NS, np.array([0.5, 0.0])), [0.28, 0.0])


def test_position_soft_start_begins_at_the_measured_pose():
    safety = make_position_filter([-1.0, -1.0], [1.0, 1.0], measured=[0.5, -0.2],
                                  soft_start_s=0.1)
    out = feed(safety, [[0.0, 3.0]] * 7)  # 3 rad is clamped to the 1 rad end of the range
    np.testing.assert_allclose(out[:, 0], [0.5, 0.4, 0.3, 0.2, 0.1, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(out[:, 1], [-0.2, 0.04, 0.28, 0.52, 0.76, 1.0, 1.0])
    # Without joint_states there is no pose to ramp from: refused, nothing goes out.
    blind = make_position_filter([-1.0], [1.0], soft_start_s=0.1)
    assert blind.command(0, np.array([0.3])) is None
    assert 'joint_states' in blind.last_problem and blind.last_output is None


def test_position_estop_holds_the_measured_pose_not_zero():
    safety = make_position_filter([-1.0, -1.0], [1.0, 1.0], measured=[0.3, -0.4])
    np.testing.assert_array_equal(safety.command(0, np.array([0.5, 0.5])), [0.5, 0.5])
    safety.observe([0.45, 0.2])  # the body moved towards the target
    safety.estop()
    safety.observe([0.4, 0.1])   # and sags on: the hold stays the pose measured at the latch
    for k in range(1, 4):
        out = safety.command(k * DT_NS, np.array([0.9, -0.9]))
        np.testing.assert_array_equal(out, [0.45, 0.2])
    np.testing.assert_array_equal(safety.safe_output(), [0.45, 0.2])
    assert safety.reset() and not safety.reset()
    np.testing.assert_array_equal(safety.command(4 * DT_NS, np.array([0.5, 0.5])), [0.5, 0.5])
    # A second e-stop holds the pose of its own moment.
    safety.observe([0.5, 0.45])
    safety.estop()
    np.testing.assert_array_equal(safety.command(5 * DT_NS, np.zeros(2)), [0.5, 0.45])


def test_position_stop_holds_and_resumes_one_step_from_the_held_pose():
    safety = make_position_filter([-1.0], [1.0], measured=[0.0], velocity=1.0)
    np.testing.assert_allclose(feed(safety, [[0.5]] * 3)[:, 0], [0.02, 0.04, 0.06])
    safety.observe([0.05])
    safety.stop()  # the watchdog timed out: the pose measured now is held
    np.testing.assert_array_equal(safety.safe_output(), [0.05])
    # Resumed 1 s later: one usual step (0.02 rad) from the held pose, not 1 s worth.
    np.testing.assert_allclose(safety.command(1000 * MS, np.array([0.5])), [0.07])


def test_position_nan_and_wrong_size_are_refused_and_the_last_safe_target_kept():
    safety = make_position_filter([-1.0] * 3, [1.0] * 3, measured=np.zeros(3), velocity=2.0)
    np.testing.assert_allclose(safety.command(0, np.array([0.01, 0.02, 0.03])),
                               [0.01, 0.02, 0.03])
    assert safety.command(DT_NS, np.array([0.1, np.nan, 0.2])) is None
    assert 'j1' in safety.last_problem
    assert safety.command(DT_NS, np.array([0.1, 0.2])) is None
    assert 'expected 3' in safety.last_problem and safety.rejected == 2
    np.testing.assert_array_equal(safety.last_output, [0.01, 0.02, 0.03])
    # The next valid command moves on from the last safe target: 0.04 rad per step.
    np.testing.assert_allclose(safety.command(DT_NS, np.ones(3)), [0.05, 0.06, 0.07])
    assert not safety.observe([0.0, np.nan, 0.0])  # a NaN measurement is not recorded
    np.testing.assert_array_equal(safety.measured, np.zeros(3))


def test_position_action_delay_holds_the_measured_pose_while_it_fills():
    safety = make_position_filter([-1.0], [1.0], measured=[0.25], action_delay_steps=2)
    out = feed(safety, [[0.1], [0.2], [0.3], [0.4]])
    np.testing.assert_allclose(out[:, 0], [0.25, 0.25, 0.1, 0.2])


# The node.

rclpy = pytest.importorskip('rclpy', reason='rclpy is not installed')

from nav_msgs.msg import Odometry  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Bool  # noqa: E402
from std_msgs.msg import Float64MultiArray  # noqa: E402
from std_srvs.srv import SetBool  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402
from trajectory_msgs.msg import JointTrajectoryPoint  # noqa: E402

from vrat_ros.policy_node import PolicyNode  # noqa: E402
from vrat_ros.reference_node import ReferenceNode  # noqa: E402
from vrat_ros.ros_messages import ns_to_duration  # noqa: E402
from vrat_ros.ros_messages import ns_to_time  # noqa: E402
from vrat_ros.ros_messages import stamp_to_ns  # noqa: E402
from vrat_ros.safety_node import SafetyNode  # noqa: E402
from vrat_ros.sim_node import RatSimNode  # noqa: E402


def effort_msg(stamp_ns, names, effort):
    msg = JointState(name=list(names), effort=[float(v) for v in effort])
    msg.header.stamp = ns_to_time(stamp_ns)
    return msg


class SafetyRig:
    """A safety node with a probe that sends policy commands and hears the checked ones."""

    def __init__(self, ros, policy_path, sub_namespace='', **params):
        self.ros = ros
        self.node = ros.add(SafetyNode(**ros.node_kwargs(
            sub_namespace, policy_file=policy_path, **params)))
        self.names = self.node.actuator_names
        self.limits = self.node.filter.limits.torque_nm
        ns = self.node.get_namespace()
        probe = ros.probe
        self.command_pub = probe.create_publisher(JointState, f'{ns}/policy/effort', 10)
        self.state_pub = probe.create_publisher(JointState, f'{ns}/joint_states', 10)
        self.estop_pub = probe.create_publisher(Bool, f'{ns}/estop', 10)
        self.out = []
        probe.create_subscription(JointState, f'{ns}/safety/effort', self.out.append, 100)
        self.arrays = []
        probe.create_subscription(
            Float64MultiArray, f'{ns}/safety/effort_controller/commands', self.arrays.append, 100)
        self.relayed = []
        probe.create_subscription(
            JointState, f'{ns}/safety/joint_states', self.relayed.append, 100)
        self.estop_client = probe.create_client(SetBool, f'{ns}/safety/estop')
        self.reset_client = probe.create_client(Trigger, f'{ns}/safety/reset')
        for pub in (self.command_pub, self.state_pub, self.estop_pub):
            ros.connect(pub)
        assert ros.spin_until(lambda: self.node.output_pub.get_subscription_count() >= 1)

    def send(self, stamp_ns, torque):
        self.command_pub.publish(effort_msg(stamp_ns, self.names, torque))

    def step(self, stamp_ns, torque):
        """Send one command and return the torques that came out for it (same stamp)."""
        n = len(self.out)
        self.send(stamp_ns, torque)

        def answer():
            return next((m for m in self.out[n:] if stamp_to_ns(m.header.stamp) == stamp_ns),
                        None)
        assert self.ros.spin_until(lambda: answer() is not None), 'no output'
        msg = answer()
        assert list(msg.name) == self.names
        return stamp_ns, np.array(msg.effort)

    def call(self, client, request):
        assert client.wait_for_service(timeout_sec=5.0)
        future = client.call_async(request)
        assert self.ros.spin_until(future.done)
        return future.result()


def test_node_forwards_clamped_commands_at_once_in_lockstep(ros, tiny_policy_path):
    rig = SafetyRig(ros, tiny_policy_path, mode='lockstep', torque_limit_scale=0.5,
                    publish_float64_array=True)
    torque = 0.3 * rig.limits / 0.5
    torque[:5] = 2.0 * rig.limits[:5] / 0.5
    stamp, out = rig.step(DT_NS, torque)
    assert stamp == DT_NS
    np.testing.assert_allclose(out[:5], rig.limits[:5])
    np.testing.assert_allclose(out[5:], torque[5:])
    assert rig.ros.spin_until(lambda: rig.arrays)
    np.testing.assert_array_equal(rig.arrays[0].data, out)
    # No watchdog in lockstep: silence sends nothing.
    ros.spin_for(0.3)
    assert len(rig.out) == 1 and rig.node.safe_outputs == 0


def test_node_rejects_non_finite_and_misnamed_commands(ros, tiny_policy_path, capfd):
    rig = SafetyRig(ros, tiny_policy_path, mode='lockstep')
    bad = np.zeros(len(rig.names))
    bad[2] = np.nan
    rig.send(0, bad)
    assert ros.spin_until(lambda: rig.node.commands_rejected == 1)
    assert rig.names[2] in capfd.readouterr().err
    rig.command_pub.publish(effort_msg(0, rig.names[:-1], np.zeros(len(rig.names) - 1)))
    assert ros.spin_until(lambda: rig.node.commands_rejected == 2)
    assert rig.names[-1] in rig.node.last_rejection
    ros.spin_for(0.2)
    assert rig.out == []


def test_watchdog_sends_the_safe_output_and_recovers(ros, tiny_policy_path, capfd):
    rig = SafetyRig(ros, tiny_policy_path, mode='realtime', command_timeout_s=0.1)
    torque = 0.2 * rig.limits
    _, out = rig.step(0, torque)
    np.testing.assert_allclose(out, torque)

    # Silence: zero torque comes out, without any command, and the warning says so once.
    n = len(rig.out)
    assert ros.spin_until(lambda: rig.node.safe_outputs >= 3)
    assert all(not np.any(m.effort) for m in rig.out[n:])
    assert rig.node.watchdog.episodes == 1
    assert capfd.readouterr().err.count('no valid command for 0.1 s') == 1

    # Commands resume: they go out again (rate and ramp are off by default).
    _, out = rig.step(10 * DT_NS, torque)
    np.testing.assert_allclose(out, torque)
    assert not rig.node.watchdog.timed_out


def test_watchdog_damping_uses_joint_velocities(ros, tiny_policy_path, rat_body):
    rig = SafetyRig(ros, tiny_policy_path, mode='realtime', command_timeout_s=0.05,
                    safe_output='damping', damping_gain_s=0.1)
    names = rat_body.hinge_names
    velocity = np.full(len(names), 2.0)
    state = JointState(name=names, position=[0.0] * len(names), velocity=velocity.tolist())
    rig.state_pub.publish(state)
    assert ros.spin_until(lambda: rig.node._velocity is not None)
    rig.step(0, np.zeros(len(rig.names)))
    assert ros.spin_until(lambda: rig.node.safe_outputs >= 2)
    out = np.array(rig.out[-1].effort)
    by_name = dict(zip(rig.names, out))
    gain = dict(zip(rig.names, rig.limits))
    assert by_name['knee_L'] == pytest.approx(-0.1 * gain['knee_L'] * 2.0)
    assert by_name['lumbar_extend'] == 0.0  # a tendon: no joint of its name to damp


def test_estop_service_and_topic_latch_until_reset(ros, tiny_policy_path):
    rig = SafetyRig(ros, tiny_policy_path, mode='lockstep')
    torque = 0.1 * rig.limits
    np.testing.assert_allclose(rig.step(0, torque)[1], torque)

    response = rig.call(rig.estop_client, SetBool.Request(data=True))
    assert response.success and 'reset' in response.message
    for k in range(1, 4):
        np.testing.assert_array_equal(rig.step(k * DT_NS, torque)[1], 0.0)
    response = rig.call(rig.estop_client, SetBool.Request(data=False))
    assert not response.success  # false does not release it
    np.testing.assert_array_equal(rig.step(4 * DT_NS, torque)[1], 0.0)

    assert rig.call(rig.reset_client, Trigger.Request()).success
    np.testing.assert_allclose(rig.step(5 * DT_NS, torque)[1], torque)

    rig.estop_pub.publish(Bool(data=True))
    assert ros.spin_until(lambda: rig.node.filter.estopped)
    np.testing.assert_array_equal(rig.step(6 * DT_NS, torque)[1], 0.0)
    assert rig.call(rig.reset_client, Trigger.Request()).message == 'e-stop released'


def test_node_delays_actions_by_n_steps(ros, tiny_policy_path):
    rig = SafetyRig(ros, tiny_policy_path, mode='lockstep', action_delay_steps=2)
    sent = [0.1 * (k + 1) * rig.limits for k in range(5)]
    outs = [rig.step(k * DT_NS, t) for k, t in enumerate(sent)]
    assert [s for s, _ in outs] == [k * DT_NS for k in range(5)]
    np.testing.assert_array_equal(outs[0][1], 0.0)
    np.testing.assert_array_equal(outs[1][1], 0.0)
    for k in range(2, 5):
        np.testing.assert_allclose(outs[k][1], sent[k - 2])


def test_relay_delays_observations_and_drops_stamps_going_back(ros, tiny_policy_path, capfd):
    rig = SafetyRig(ros, tiny_policy_path, mode='lockstep', observation_delay_steps=1)

    def state(stamp_ns, value):
        msg = JointState(name=['knee_L'], position=[value], velocity=[0.0])
        msg.header.stamp = ns_to_time(stamp_ns)
        return msg

    for k, stamp in enumerate([0, DT_NS, 2 * DT_NS]):
        rig.state_pub.publish(state(stamp, float(k)))
        assert ros.spin_until(lambda: len(rig.relayed) == k + 1)
    rig.state_pub.publish(state(DT_NS, 9.0))  # older than the newest: dropped
    assert ros.spin_until(lambda: rig.node.joint_relay.rejected == 1)
    rig.state_pub.publish(state(3 * DT_NS, 3.0))
    assert ros.spin_until(lambda: len(rig.relayed) == 4)
    assert [stamp_to_ns(m.header.stamp) for m in rig.relayed] == [0, DT_NS, 2 * DT_NS, 3 * DT_NS]
    assert [m.position[0] for m in rig.relayed] == [0.0, 0.0, 1.0, 2.0]
    assert 'older than' in capfd.readouterr().err


def test_policy_rejects_a_reference_window_whose_times_do_not_increase(
        ros, tiny_policy_path, capfd):
    node = ros.add(PolicyNode(**ros.node_kwargs(policy_file=tiny_policy_path)))
    pub = ros.probe.create_publisher(JointTrajectory, 'reference/joint_trajectory', 10)
    ros.connect(pub)
    window = JointTrajectory(joint_names=node.joint_names)
    for k in (1, 2, 2):
        window.points.append(JointTrajectoryPoint(
            positions=[0.0] * len(node.joint_names), time_from_start=ns_to_duration(k * DT_NS)))
    pub.publish(window)
    assert ros.spin_until(lambda: node.inputs_rejected == 1)
    assert 'point times should increase' in capfd.readouterr().err


def test_node_clamps_the_quadrupeds_position_targets_and_holds_on_estop(ros):
    node = ros.add(SafetyNode(**ros.node_kwargs(
        policy_file=QUADRUPED_POLICY, mode='lockstep', publish_float64_array=True,
        position_margin_rad=0.05)))
    assert node.command_interface == 'position'
    names = node.actuator_names
    ns = node.get_namespace()
    probe = ros.probe
    command_pub = probe.create_publisher(JointState, f'{ns}/policy/position', 10)
    state_pub = probe.create_publisher(JointState, f'{ns}/joint_states', 10)
    out = ros.collect(JointState, f'{ns}/safety/position')
    arrays = ros.collect(Float64MultiArray, f'{ns}/safety/position_controller/commands')
    efforts = ros.collect(JointState, f'{ns}/safety/effort')
    estop_client = probe.create_client(SetBool, f'{ns}/safety/estop')
    for pub in (command_pub, state_pub):
        ros.connect(pub)
    assert ros.spin_until(lambda: node.output_pub.get_subscription_count() >= 1)

    # The measured pose: every joint of the body (the passive ankles too), in another order.
    joints = names + [f'ankle_{leg}' for leg in ('front_left', 'front_right', 'back_right',
                                                 'back_left')]
    measured = {n: 0.01 * k for k, n in enumerate(joints)}
    state = JointState(name=joints[::-1], position=[measured[n] for n in joints[::-1]],
                       velocity=[0.0] * len(joints))
    state_pub.publish(state)
    assert ros.spin_until(lambda: node.filter.measured is not None)

    def send(stamp_ns, targets):
        msg = JointState(name=list(names), position=[float(targets[n]) for n in names])
        msg.header.stamp = ns_to_time(stamp_ns)
        n = len(out)
        command_pub.publish(msg)
        assert ros.spin_until(lambda: len(out) > n), 'no output'
        assert stamp_to_ns(out[-1].header.stamp) == stamp_ns and list(out[-1].name) == names
        return dict(zip(out[-1].name, out[-1].position))

    targets = dict.fromkeys(names, 0.2)
    targets['knee_front_left'] = 3.0    # beyond the knee's 50 degrees
    targets['yaw_back_left'] = -3.0     # beyond the yaw's -50 degrees
    got = send(DT_NS, targets)
    assert got['knee_front_left'] == pytest.approx(np.deg2rad(50.0) - 0.05)
    assert got['yaw_back_left'] == pytest.approx(np.deg2rad(-50.0) + 0.05)
    assert all(got[n] == 0.2 for n in names if n not in ('knee_front_left', 'yaw_back_left'))
    assert ros.spin_until(lambda: arrays)
    np.testing.assert_array_equal(arrays[0].data, out[-1].position)

    # A NaN target is refused: nothing goes out (the body keeps the last safe target).
    bad = dict(targets, pitch_back_right=float('nan'))
    bad_msg = JointState(name=list(names), position=[bad[n] for n in names])
    bad_msg.header.stamp = ns_to_time(2 * DT_NS)
    command_pub.publish(bad_msg)
    assert ros.spin_until(lambda: node.commands_rejected == 1)
    assert 'pitch_back_right' in node.last_rejection and len(out) == 1

    # E-stop: the measured joint positions go out as targets, never zeros.
    assert estop_client.wait_for_service(timeout_sec=5.0)
    future = estop_client.call_async(SetBool.Request(data=True))
    assert ros.spin_until(future.done) and future.result().success
    got = send(3 * DT_NS, targets)
    assert got == pytest.approx({n: measured[n] for n in names})
    assert efforts == []


# The whole lockstep loop with the safety node between policy and sim.

def remapped(kwargs, *rules):
    return {**kwargs, 'cli_args': kwargs['cli_args'] + [a for r in rules for a in ('-r', r)]}


def run_loop(ros, sub, clip_path, policy_path, n_steps, safety=None):
    """Reference, policy, (safety,) sim in lockstep for n_steps; returns the final qpos.

    With the safety node, the sim takes safety/effort and the policy reads the relayed
    safety/joint_states and safety/odom, as sim.launch.py wires them with safety:=true.
    """
    sim_rules = ['policy/effort:=safety/effort'] if safety is not None else []
    policy_rules = (['joint_states:=safety/joint_states', 'odom:=safety/odom']
                    if safety is not None else [])
    sim = ros.add(RatSimNode(**remapped(ros.node_kwargs(
        sub, clip_file=clip_path, mode='lockstep'), *sim_rules)))
    ros.add(ReferenceNode(**ros.node_kwargs(sub, clip_file=clip_path, use_sim_time=True)))
    ros.add(PolicyNode(**remapped(ros.node_kwargs(
        sub, policy_file=policy_path, use_sim_time=True), *policy_rules)))
    if safety is not None:
        ros.add(SafetyNode(**ros.node_kwargs(
            sub, policy_file=policy_path, mode='lockstep', **safety)))
    assert ros.spin_until(lambda: sim.control_steps >= n_steps, timeout_s=30.0)
    assert sim.control_steps == n_steps and sim.rejected_commands == 0
    return sim.body.data.qpos.copy()


def test_safety_node_keeps_the_lockstep_loop_deterministic(
        ros, tiny_policy_path, synthetic_clip_path):
    args = (synthetic_clip_path, tiny_policy_path, 15)
    plain = run_loop(ros, 'plain', *args)
    checked = run_loop(ros, 'checked', *args, safety={})
    np.testing.assert_array_equal(plain, checked)  # default limits: the policy's own range
    for j, delays in enumerate(({'action_delay_steps': 2}, {'observation_delay_steps': 1})):
        runs = [run_loop(ros, f'delay{j}_run{i}', *args, safety=delays) for i in range(2)]
        np.testing.assert_array_equal(runs[0], runs[1])
        assert np.abs(runs[0] - plain).max() > 0.0, delays


# The sim's own safety.

def test_sim_halts_with_a_clear_error_when_mujoco_flags_the_state(ros, capfd):
    sim = ros.add(RatSimNode(**ros.node_kwargs(mode='lockstep')))
    states = ros.collect(JointState, 'joint_states')
    pub = ros.probe.create_publisher(JointState, 'policy/effort', 10)
    ros.connect(pub)
    n_states = len(states)
    sim.body.data.qvel[14] = 1e11  # MuJoCo's huge-value check trips and resets the state
    pub.publish(effort_msg(0, sim.body.actuator_names, np.zeros(sim.body.nu)))
    assert ros.spin_until(lambda: sim.halted)
    assert 'velocity at dof 14' in sim.halt_reason and 'hip_L_extend' in sim.halt_reason
    ros.spin_for(0.3)
    pub.publish(effort_msg(0, sim.body.actuator_names, np.zeros(sim.body.nu)))
    ros.spin_for(0.3)
    assert sim.control_steps == 0
    assert len(states) <= n_states + 1  # at most the initial state, never the reset one
    err = capfd.readouterr().err
    assert 'physics diverged' in err and 'hip_L_extend' in err


def test_realtime_sim_drops_to_zero_torque_after_the_command_timeout(ros, capfd):
    sim = ros.add(RatSimNode(**ros.node_kwargs(mode='realtime', command_timeout_s=0.1,
                                               publish_clock=False)))
    pub = ros.probe.create_publisher(JointState, 'policy/effort', 10)
    ros.connect(pub)
    torque = 0.1 * sim.body.actuator_gain
    pub.publish(effort_msg(0, sim.body.actuator_names, torque))
    assert ros.spin_until(lambda: np.array_equal(sim.torque, torque))
    assert ros.spin_until(lambda: sim.command_timeouts == 1)
    np.testing.assert_array_equal(sim.torque, 0.0)
    pub.publish(effort_msg(0, sim.body.actuator_names, torque))
    assert ros.spin_until(lambda: np.array_equal(sim.torque, torque))
    assert 'no valid command for 0.1 s' in capfd.readouterr().err


def test_odom_relay_follows_joint_states(ros, tiny_policy_path):
    rig = SafetyRig(ros, tiny_policy_path, mode='lockstep', observation_delay_steps=1)
    ns = rig.node.get_namespace()
    pub = ros.probe.create_publisher(Odometry, f'{ns}/odom', 10)
    relayed = ros.collect(Odometry, f'{ns}/safety/odom')
    ros.connect(pub)
    for k in range(3):
        msg = Odometry()
        msg.header.stamp = ns_to_time(k * DT_NS)
        msg.pose.pose.position.x = float(k)
        pub.publish(msg)
        assert ros.spin_until(lambda: len(relayed) == k + 1)
    assert [m.pose.pose.position.x for m in relayed] == [0.0, 0.0, 1.0]
    assert [stamp_to_ns(m.header.stamp) for m in relayed] == [0, DT_NS, 2 * DT_NS]
