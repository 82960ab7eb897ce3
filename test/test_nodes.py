"""The three nodes and the in-process loop, over real rclpy topics in this process.

Each test makes its own Context, executor and namespace (see conftest.RosBed), spins with
timeouts while polling, and checks values, never timings.
"""

import sys
import time

import numpy as np
import pytest

pytest.importorskip('rclpy', reason='rclpy is not installed')

from geometry_msgs.msg import Transform  # noqa: E402
from geometry_msgs.msg import Vector3  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import QoSProfile  # noqa: E402
from rosgraph_msgs.msg import Clock as ClockMsg  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402
from trajectory_msgs.msg import JointTrajectoryPoint  # noqa: E402
from trajectory_msgs.msg import MultiDOFJointTrajectory  # noqa: E402
from trajectory_msgs.msg import MultiDOFJointTrajectoryPoint  # noqa: E402

from vrat_ros.clip import Clip  # noqa: E402
from vrat_ros.kinematics import quat_to_mat  # noqa: E402
from vrat_ros.kinematics import wxyz_to_xyzw  # noqa: E402
from vrat_ros.loop import run_ros_loop  # noqa: E402
from vrat_ros.node_main import make_executor  # noqa: E402
from vrat_ros.observation import build_observation  # noqa: E402
from vrat_ros.policy import OnnxPolicy  # noqa: E402
from vrat_ros.policy import SessionSettings  # noqa: E402
from vrat_ros.policy_node import interpolation_weights  # noqa: E402
from vrat_ros.policy_node import PolicyNode  # noqa: E402
from vrat_ros.reference_node import ReferenceNode  # noqa: E402
from vrat_ros.ros_messages import ns_to_duration  # noqa: E402
from vrat_ros.ros_messages import ns_to_time  # noqa: E402
from vrat_ros.ros_messages import quat_wxyz_to_msg  # noqa: E402
from vrat_ros.ros_messages import stamp_to_ns  # noqa: E402
from vrat_ros.sim_node import RatSimNode  # noqa: E402

pytestmark = pytest.mark.ros

MS = 1_000_000  # nanoseconds
DT_NS = 20 * MS


# Messages the tests send, built by hand so that each test controls every value.

def joint_state_msg(stamp_ns, names, position, velocity=(), effort=()):
    msg = JointState(name=list(names), position=[float(v) for v in position],
                     velocity=[float(v) for v in velocity], effort=[float(v) for v in effort])
    msg.header.stamp = ns_to_time(stamp_ns)
    return msg


def odom_msg(stamp_ns, qpos, linvel_body, angvel_body):
    msg = Odometry()
    msg.header.stamp = ns_to_time(stamp_ns)
    msg.pose.pose.position.x, msg.pose.pose.position.y, msg.pose.pose.position.z = qpos[:3]
    msg.pose.pose.orientation = quat_wxyz_to_msg(qpos[3:7])
    msg.twist.twist.linear = Vector3(x=linvel_body[0], y=linvel_body[1], z=linvel_body[2])
    msg.twist.twist.angular = Vector3(x=angvel_body[0], y=angvel_body[1], z=angvel_body[2])
    return msg


def window_msgs(stamp_ns, names, frames):
    """Joint and root trajectories with `frames` (K, nq) at stamp + k * 20 ms, k = 1..K."""
    joints, root = JointTrajectory(joint_names=list(names)), MultiDOFJointTrajectory()
    joints.header.stamp = root.header.stamp = ns_to_time(stamp_ns)
    root.joint_names = ['root']
    for k, q in enumerate(frames, start=1):
        after = ns_to_duration(k * DT_NS)
        joints.points.append(JointTrajectoryPoint(positions=q[7:].tolist(), time_from_start=after))
        pose = Transform(translation=Vector3(x=q[0], y=q[1], z=q[2]),
                         rotation=quat_wxyz_to_msg(q[3:7]))
        root.points.append(MultiDOFJointTrajectoryPoint(transforms=[pose], time_from_start=after))
    return joints, root


class PolicyRig:
    """A policy node fed by hand: states and windows from the synthetic clip at a chosen time."""

    def __init__(self, ros, policy_path, clip_path):
        self.ros = ros
        self.node = ros.add(PolicyNode(**ros.node_kwargs(policy_file=policy_path)))
        self.policy = OnnxPolicy(policy_path)
        self.clip = Clip.load(clip_path)
        probe = ros.probe
        self.pubs = {
            'js': probe.create_publisher(JointState, 'joint_states', 10),
            'odom': probe.create_publisher(Odometry, 'odom', 10),
            'joints': probe.create_publisher(JointTrajectory, 'reference/joint_trajectory', 10),
            'root': probe.create_publisher(
                MultiDOFJointTrajectory, 'reference/root_trajectory', 10),
        }
        self.commands = ros.collect(JointState, 'policy/effort')
        for pub in self.pubs.values():
            ros.connect(pub)

    def state(self, clip_t):
        """(qpos, qvel, linvel_body) of the clip at clip_t, and the next five frames."""
        qpos, qvel = self.clip.sample(clip_t), self.clip.velocity(clip_t)
        linvel = quat_to_mat(qpos[3:7]).T @ qvel[:3]
        return qpos, qvel, linvel, self.clip.window(clip_t + 0.02, 5, 0.02)

    def send(self, stamp_ns, clip_t, names=None, position=None, velocity=None, effort=()):
        qpos, qvel, linvel, frames = self.state(clip_t)
        joints, root = window_msgs(stamp_ns, self.clip.joint_names, frames)
        self.pubs['joints'].publish(joints)
        self.pubs['root'].publish(root)
        self.pubs['odom'].publish(odom_msg(stamp_ns, qpos, linvel, qvel[3:6]))
        names = self.clip.joint_names if names is None else names
        index = {n: i for i, n in enumerate(self.clip.joint_names)}
        if position is None:
            position = [qpos[7 + index[n]] for n in names]
        if velocity is None:
            velocity = [qvel[6 + index[n]] for n in names]
        self.pubs['js'].publish(joint_state_msg(stamp_ns, names, position, velocity, effort))

    def expected(self, clip_t, zero_velocity=False):
        """Torques computed directly (no ROS) for the clip state at clip_t."""
        qpos, qvel, linvel, frames = self.state(clip_t)
        idx = np.array([self.clip.joint_names.index(n) for n in self.policy.joint_names])
        vel = np.zeros(len(idx)) if zero_velocity else qvel[6 + idx]
        obs = build_observation(qpos[7 + idx], vel, qpos[:3], qpos[3:7], linvel, qvel[3:6],
                                frames[:, :3], frames[:, 3:7], frames[:, 7 + idx])
        return self.policy.torques(obs)

    def command_at(self, stamp_ns, timeout_s=10.0):
        """Return the torques (contract order) of the first command at `stamp_ns`, or None."""
        def find():
            return next((m for m in self.commands if stamp_to_ns(m.header.stamp) == stamp_ns),
                        None)
        self.ros.spin_until(lambda: find() is not None, timeout_s)
        msg = find()
        if msg is None:
            return None
        assert list(msg.name) == self.policy.actuator_names
        return np.array(msg.effort)


# Policy node.

def test_policy_matches_joint_states_by_name(ros, tiny_policy_path, synthetic_clip_path):
    rig = PolicyRig(ros, tiny_policy_path, synthetic_clip_path)
    rig.send(0, clip_t=0.3)
    in_order = rig.command_at(0)

    shuffled = list(np.random.default_rng(1).permutation(rig.clip.joint_names))
    rig.send(DT_NS, clip_t=0.3, names=shuffled)
    reordered = rig.command_at(DT_NS)

    np.testing.assert_allclose(in_order, rig.expected(0.3), rtol=0, atol=1e-12)
    assert np.array_equal(in_order, reordered)
    assert np.abs(in_order).max() > 0.0


def test_policy_resends_the_same_command_for_a_repeated_state(
        ros, tiny_policy_path, synthetic_clip_path):
    rig = PolicyRig(ros, tiny_policy_path, synthetic_clip_path)
    rig.send(0, clip_t=0.5)
    first = rig.command_at(0)
    rig.send(0, clip_t=0.5)
    assert ros.spin_until(lambda: len(rig.commands) == 2)
    assert rig.node.commands_resent == 1 and rig.node.commands_published == 1
    assert np.array_equal(np.array(rig.commands[1].effort), first)


def test_policy_accepts_empty_velocity_and_effort_and_warns_once(
        ros, tiny_policy_path, synthetic_clip_path, capfd):
    rig = PolicyRig(ros, tiny_policy_path, synthetic_clip_path)
    rig.send(0, clip_t=0.4, velocity=[], effort=[])
    first = rig.command_at(0)
    rig.send(DT_NS, clip_t=0.4, velocity=[], effort=[])
    second = rig.command_at(DT_NS)

    expected = rig.expected(0.4, zero_velocity=True)
    np.testing.assert_allclose(first, expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(second, expected, rtol=0, atol=1e-12)
    assert not np.allclose(expected, rig.expected(0.4))  # the velocities do matter
    assert rig.node.warnings['empty_velocity'] == 2
    assert capfd.readouterr().err.count('joint_states has no velocities') == 1


def test_policy_ignores_unknown_joints_and_waits_for_missing_ones(
        ros, tiny_policy_path, synthetic_clip_path, capfd):
    rig = PolicyRig(ros, tiny_policy_path, synthetic_clip_path)
    qpos, qvel, _, _ = rig.state(0.2)
    names = rig.clip.joint_names + ['not_a_rat_joint']
    rig.send(0, clip_t=0.2, names=names, position=list(qpos[7:]) + [9.0],
             velocity=list(qvel[6:]) + [9.0])
    np.testing.assert_allclose(rig.command_at(0), rig.expected(0.2), rtol=0, atol=1e-12)
    assert 'not_a_rat_joint' in capfd.readouterr().err

    # A joint the policy reads goes missing: no command, an error naming it, node alive.
    needed = rig.policy.joint_names[3]
    partial = [n for n in rig.clip.joint_names if n != needed]
    rig.send(DT_NS, clip_t=0.2, names=partial)
    assert ros.spin_until(lambda: rig.node.inputs_rejected == 1)
    assert rig.command_at(DT_NS, timeout_s=0.3) is None
    assert needed in capfd.readouterr().err

    # It comes back: commands resume.
    rig.send(2 * DT_NS, clip_t=0.2)
    np.testing.assert_allclose(rig.command_at(2 * DT_NS), rig.expected(0.2), rtol=0, atol=1e-12)


def test_policy_publishes_nothing_for_nan_inputs(ros, tiny_policy_path, synthetic_clip_path):
    rig = PolicyRig(ros, tiny_policy_path, synthetic_clip_path)
    qpos, _, _, _ = rig.state(0.2)
    position = qpos[7:].copy()
    position[rig.clip.joint_names.index(rig.policy.joint_names[0])] = np.nan
    rig.send(0, clip_t=0.2, position=position)
    assert ros.spin_until(lambda: rig.node.inputs_rejected == 1)
    assert rig.command_at(0, timeout_s=0.3) is None
    rig.send(DT_NS, clip_t=0.2)
    assert rig.command_at(DT_NS) is not None


def test_reference_window_is_interpolated_at_policy_times():
    times = np.array([100, 140, 180]) * MS
    i0, i1, s = interpolation_weights(times, np.array([90, 100, 120, 180, 200]) * MS)
    assert list(i0) == [0, 0, 0, 2, 2] and list(i1) == [1, 1, 1, 2, 2]
    np.testing.assert_allclose(s, [0.0, 0.0, 0.5, 0.0, 0.0])


# Sim node.

class SimRig:
    """A lockstep sim with a probe that sends commands and hears its state."""

    def __init__(self, ros, sub_namespace='', **params):
        self.ros = ros
        kwargs = ros.node_kwargs(sub_namespace, **params)
        self.node = ros.add(RatSimNode(**kwargs))
        self.probe = ros.add(Node('sim_probe', context=ros.context,
                                  namespace=kwargs['namespace']))
        self.effort_pub = self.probe.create_publisher(JointState, 'policy/effort', 10)
        self.array_pub = self.probe.create_publisher(
            Float64MultiArray, 'effort_controller/commands', 10)
        self.odoms, self.states = [], []
        self.probe.create_subscription(Odometry, 'odom', self.odoms.append, QoSProfile(depth=50))
        self.probe.create_subscription(
            JointState, 'joint_states', self.states.append, QoSProfile(depth=50))
        ros.connect(self.effort_pub)
        ros.connect(self.array_pub)
        ros.spin_until(lambda: self.node.joint_state_pub.get_subscription_count() >= 1)
        ros.spin_until(lambda: self.node.odom_pub.get_subscription_count() >= 1)

    @property
    def names(self):
        return self.node.body.actuator_names

    def send_named(self, torque, names=None, stamp_ns=None):
        names = self.names if names is None else names
        index = {n: i for i, n in enumerate(self.names)}
        stamp = self.node.time_ns if stamp_ns is None else stamp_ns
        self.effort_pub.publish(joint_state_msg(
            stamp, names, [], effort=[torque[index[n]] for n in names]))

    def step_named(self, torque, names=None):
        steps = self.node.control_steps
        self.send_named(torque, names)
        assert self.ros.spin_until(lambda: self.node.control_steps == steps + 1)


def test_sim_rejects_bad_commands_without_stepping(ros, capfd):
    rig = SimRig(ros)
    sim = rig.node
    good = 0.1 * sim.body.actuator_gain
    rig.step_named(good)
    assert sim.time_ns == DT_NS

    nan = good.copy()
    nan[5] = np.nan
    bad_commands = [
        lambda: rig.send_named(nan),
        lambda: rig.array_pub.publish(Float64MultiArray(data=[0.0] * 37)),
        lambda: rig.array_pub.publish(Float64MultiArray(data=[np.inf] + [0.0] * 37)),
        lambda: rig.send_named(good, names=rig.names[:-1]),
        lambda: rig.effort_pub.publish(joint_state_msg(
            sim.time_ns, rig.names[:-1] + ['no_such_actuator'], [], effort=good)),
    ]
    for i, send in enumerate(bad_commands, start=1):
        send()
        assert ros.spin_until(lambda: sim.rejected_commands == i), sim.last_rejection
    assert 'no_such_actuator' in sim.last_rejection

    assert sim.time_ns == DT_NS and sim.control_steps == 1
    np.testing.assert_array_equal(sim.torque, good)
    np.testing.assert_allclose(sim.body.data.ctrl, 0.1)
    assert 'command rejected' in capfd.readouterr().err

    rig.step_named(good)  # still alive and stepping
    assert sim.time_ns == 2 * DT_NS


def test_sim_ignores_stale_command_stamps(ros):
    rig = SimRig(ros)
    rig.step_named(np.zeros(rig.node.body.nu))
    rig.send_named(np.zeros(rig.node.body.nu), stamp_ns=0)  # a re-sent answer to state 0
    assert ros.spin_until(lambda: rig.node.stale_commands == 1)
    assert rig.node.control_steps == 1 and rig.node.rejected_commands == 0


@pytest.mark.parametrize('every_physics_step', [False, True], ids=['per_control', 'per_physics'])
def test_sim_clock_once_per_control_step_unless_asked(ros, every_physics_step):
    rig = SimRig(ros, clock_every_physics_step=every_physics_step)
    clocks = ros.collect(ClockMsg, f'{rig.node.get_namespace()}/clock')
    ros.connect(rig.node.clock_pub)
    for _ in range(2):
        rig.step_named(np.zeros(rig.node.body.nu))
    # Reliable and in order: once 40 ms is heard, every earlier clock has been heard too.
    assert ros.spin_until(lambda: clocks and stamp_to_ns(clocks[-1].clock) == 2 * DT_NS)
    heard = {stamp_to_ns(c.clock) for c in clocks} - {0}  # 0 is re-sent while it waits
    step_ns = 2 * MS if every_physics_step else DT_NS
    assert heard == set(range(step_ns, 2 * DT_NS + 1, step_ns))
    assert rig.node.time_ns == 2 * DT_NS and rig.node.physics_steps == 20


def test_sim_clamps_torques_to_force_limits_and_counts_saturation(ros):
    rig = SimRig(ros)
    gain = rig.node.body.actuator_gain
    torque = 0.5 * gain
    torque[::2] = -10.0 * gain[::2]
    rig.step_named(torque)
    ctrl = rig.node.body.data.ctrl
    n_over = len(torque[::2])
    np.testing.assert_allclose(ctrl[::2], -1.0)
    np.testing.assert_allclose(ctrl[1::2], 0.5)
    assert rig.node.n_saturated == n_over == 19


def test_odom_carries_the_root_quaternion_in_ros_order(ros, rat_body, tmp_path):
    # The clip: yawed 60 degrees (w, x, y, z) = (cos 30, 0, 0, sin 30), walking +x at 0.1 m/s.
    fps = 50.0
    qpos = np.tile(rat_body.default_qpos(), (20, 1))
    qpos[:, 0] = 0.1 * np.arange(20) / fps
    qpos[:, 2] = 0.04
    qpos[:, 3:7] = [np.cos(np.pi / 6), 0.0, 0.0, np.sin(np.pi / 6)]
    qpos[:, 7:] = 0.01 * np.arange(len(rat_body.hinge_names))
    path = str(tmp_path / 'yawed.npz')
    Clip(qpos=qpos, fps=fps, joint_names=rat_body.hinge_names, body_scale=0.9, meta={}).save(path)

    rig = SimRig(ros, clip_file=path, start_time_s=0.1)
    rig.node.publish_now()
    assert ros.spin_until(lambda: rig.odoms and rig.states)
    odom, js = rig.odoms[0], rig.states[0]
    q = odom.pose.pose.orientation
    np.testing.assert_allclose([q.x, q.y, q.z, q.w], [0.0, 0.0, 0.5, np.sqrt(3) / 2], atol=1e-12)
    np.testing.assert_allclose(wxyz_to_xyzw(rig.node.body.data.qpos[3:7]), [q.x, q.y, q.z, q.w])
    p = odom.pose.pose.position
    np.testing.assert_allclose([p.x, p.y, p.z], [0.01, 0.0, 0.04], atol=1e-12)
    # Twist in the root frame: +x in the world is (cos 60, -sin 60, 0) for the yawed root.
    v = odom.twist.twist.linear
    np.testing.assert_allclose([v.x, v.y, v.z], [0.05, -0.1 * np.sqrt(3) / 2, 0.0], atol=1e-9)
    assert odom.header.frame_id == 'world' and odom.child_frame_id == 'walker'
    assert js.name[10] == rat_body.hinge_names[10] and js.position[10] == pytest.approx(0.1)


def test_float64_array_drives_the_sim_like_named_effort(ros):
    named = SimRig(ros, 'named')
    order = list(reversed(named.names))
    arrays = SimRig(ros, 'arrays', command_joint_names=order)
    gain = named.node.body.actuator_gain
    rng = np.random.default_rng(3)
    shuffled = list(rng.permutation(named.names))
    for _ in range(3):
        torque = 0.3 * gain * rng.uniform(-1.0, 1.0, gain.shape)
        named.step_named(torque, names=shuffled)
        steps = arrays.node.control_steps
        index = {n: i for i, n in enumerate(arrays.names)}
        arrays.array_pub.publish(Float64MultiArray(data=[torque[index[n]] for n in order]))
        assert ros.spin_until(lambda: arrays.node.control_steps == steps + 1)

    a, b = named.node.body.data, arrays.node.body.data
    assert named.node.time_ns == arrays.node.time_ns == 3 * DT_NS
    np.testing.assert_array_equal(a.qpos, b.qpos)
    np.testing.assert_array_equal(a.qvel, b.qvel)
    assert np.abs(a.qvel[6:]).max() > 0.0


def test_sim_halts_on_non_finite_state_and_stays_alive(ros, capfd):
    rig = SimRig(ros)
    rig.node.body.data.qvel[8] = np.nan
    rig.send_named(np.zeros(rig.node.body.nu))
    assert ros.spin_until(lambda: rig.node.halted)
    n_states = len(rig.states)
    assert rig.node.control_steps == 0
    rig.send_named(np.zeros(rig.node.body.nu))
    ros.spin_for(0.3)
    assert len(rig.states) == n_states and rig.node.control_steps == 0
    assert 'physics diverged' in capfd.readouterr().err


def test_policy_takes_onnxruntime_options_and_refuses_bad_ones(ros, tiny_policy_path):
    default = ros.add(PolicyNode(**ros.node_kwargs('default', policy_file=tiny_policy_path)))
    assert default.policy.session_settings == SessionSettings()
    opts = default.policy.session.get_session_options()
    assert opts.intra_op_num_threads == 1 and opts.inter_op_num_threads == 1
    assert opts.get_session_config_entry('session.intra_op.allow_spinning') == '0'
    tuned = ros.add(PolicyNode(**ros.node_kwargs('tuned', policy_file=tiny_policy_path, **{
        'onnxruntime.intra_op_threads': 2, 'onnxruntime.allow_spinning': True})))
    opts = tuned.policy.session.get_session_options()
    assert opts.intra_op_num_threads == 2
    assert opts.get_session_config_entry('session.intra_op.allow_spinning') == '1'
    obs = np.linspace(-1.0, 1.0, default.policy.observation_size)
    np.testing.assert_allclose(tuned.policy.run(obs), default.policy.run(obs), atol=1e-6)
    with pytest.raises(ValueError, match="execution_mode should be one of .* got 'bogus'"):
        PolicyNode(**ros.node_kwargs('bad', policy_file=tiny_policy_path,
                                     **{'onnxruntime.execution_mode': 'bogus'}))


@pytest.mark.parametrize('kind, expected', [
    (None, 'EventsExecutor'), ('single_threaded', 'SingleThreadedExecutor')])
def test_node_executables_spin_on_the_executor_asked_for(ros, kind, expected):
    params = {} if kind is None else {'executor': kind}
    node = ros.add(Node('spun', **ros.node_kwargs(**params)))
    executor = make_executor(node)
    try:
        assert type(executor).__name__ == expected
    finally:
        executor.shutdown()
    bad = ros.add(Node('spun_bad', **ros.node_kwargs('bad', executor='threads')))
    with pytest.raises(ValueError, match="executor should be one of .* got 'threads'"):
        make_executor(bad)


# Reference node.

@pytest.mark.parametrize('rate_hz', [25.0, 50.0, 100.0], ids=['25Hz', '50Hz', '100Hz'])
def test_reference_picks_frames_by_time(ros, synthetic_clip_path, rate_hz):
    clip = Clip.load(synthetic_clip_path)
    assert clip.fps == 30.0
    node = ros.add(ReferenceNode(**ros.node_kwargs(
        clip_file=synthetic_clip_path, control_rate_hz=rate_hz, use_sim_time=True)))
    windows = ros.collect(JointTrajectory, 'reference/joint_trajectory')
    roots = ros.collect(MultiDOFJointTrajectory, 'reference/root_trajectory')
    clock_pub = ros.probe.create_publisher(ClockMsg, '/clock', 10)
    ros.connect(clock_pub)
    ros.spin_until(lambda: node.joint_pub.get_subscription_count() >= 1)

    # Several clock messages per tick (every 2 ms, as the sim sends them), 0.95 s to 1.0 s.
    for t_ns in range(950 * MS, 1000 * MS + 1, 2 * MS):
        clock_pub.publish(ClockMsg(clock=ns_to_time(t_ns)))
        assert ros.spin_until(lambda: node.last_clock_ns == t_ns)
    period_ns = round(1e9 / rate_hz)
    ticks = list(range((950 * MS // period_ns) * period_ns, 1000 * MS + 1, period_ns))
    # One window per tick, each sent one tick early (publish_ahead): the last is the next one.
    sent = ticks + [ticks[-1] + period_ns]
    assert ros.spin_until(lambda: len(windows) == len(roots) == len(sent))
    assert [stamp_to_ns(w.header.stamp) for w in windows] == sent
    assert [stamp_to_ns(r.header.stamp) for r in roots] == sent

    # The point aimed at t = 1.0 s carries frame 30 of the 30 Hz clip, whatever the rate.
    hits = [(w, p) for w in windows for p in w.points
            if stamp_to_ns(w.header.stamp) + stamp_to_ns(p.time_from_start) == 1000 * MS]
    assert hits
    for _, point in hits:
        np.testing.assert_array_equal(point.positions, clip.qpos[30, 7:])
    last, root = windows[-2], roots[-2]  # the window of t = 1.0 s
    assert stamp_to_ns(last.header.stamp) == 1000 * MS
    assert last.joint_names == clip.joint_names and root.joint_names == ['root']
    for k, (point, pose) in enumerate(zip(last.points, root.points), start=1):
        assert stamp_to_ns(point.time_from_start) == k * DT_NS
        q = clip.sample(1.0 + k * 0.02)
        np.testing.assert_allclose(point.positions, q[7:], rtol=0, atol=1e-12)
        qvel = clip.states([1.0 + k * 0.02])[1][0]  # per-frame velocities, interpolated
        np.testing.assert_allclose(point.velocities, qvel[6:], rtol=0, atol=1e-12)
        r = pose.transforms[0].rotation
        np.testing.assert_allclose([r.x, r.y, r.z, r.w], wxyz_to_xyzw(q[3:7]), atol=1e-12)


def test_reference_holds_or_loops_at_the_clip_end(ros, synthetic_clip_path):
    hold = ros.add(ReferenceNode(**ros.node_kwargs(
        'hold', clip_file=synthetic_clip_path, start_time_s=1.0)))
    loop = ros.add(ReferenceNode(**ros.node_kwargs(
        'loop', clip_file=synthetic_clip_path, start_time_s=1.0, loop=True)))
    duration = hold.clip.duration_s
    assert hold.clip_time(2 * 10**9) == duration
    assert loop.clip_time(2 * 10**9) == pytest.approx(3.0 % duration)


# The loop in one process.

def inline_rollout(clip_path, policy_path, n_steps):
    """Run the same physics and policy directly, without ROS."""
    from vrat_ros.rat_model import RatBody
    body = RatBody()
    clip = Clip.load(clip_path).reorder_to(body.hinge_names)
    policy = OnnxPolicy(policy_path)
    idx = np.array([body.hinge_names.index(n) for n in policy.joint_names])
    dt, k_frames = policy.reference_dt, policy.reference_frames
    body.reset(clip.sample(0.0), clip.velocity(0.0))
    qpos, torques = [body.data.qpos.copy()], []
    start = time.perf_counter()
    for step in range(n_steps):
        q, v = body.data.qpos, body.data.qvel
        ref = clip.window(step * dt + dt, k_frames, dt)
        obs = build_observation(q[7 + idx], v[6 + idx], q[:3], q[3:7],
                                quat_to_mat(q[3:7]).T @ v[:3], v[3:6],
                                ref[:, :3], ref[:, 3:7], ref[:, 7 + idx])
        torques.append(policy.torques(obs))
        body.set_ctrl_from_torque(torques[-1])
        body.step(10)
        qpos.append(body.data.qpos.copy())
    wall = time.perf_counter() - start
    return np.array(qpos), np.array(torques), n_steps / wall


def test_ros_loop_equals_inline_loop_and_repeats(tiny_policy_path, synthetic_clip_path):
    first = run_ros_loop(synthetic_clip_path, tiny_policy_path, seconds=0.6)
    second = run_ros_loop(synthetic_clip_path, tiny_policy_path, seconds=0.6)
    qpos, torques, inline_rate = inline_rollout(synthetic_clip_path, tiny_policy_path, 30)
    print(f'\ncontrol steps per second: ROS loop {first.steps_per_second:.0f}, '
          f'{second.steps_per_second:.0f}; inline {inline_rate:.0f}')

    assert first.qpos.shape == (31, 74) and first.torques.shape == (30, 38)
    assert not first.halted and first.rejected_commands == 0
    assert first.sim_seconds == pytest.approx(0.6)
    np.testing.assert_allclose(first.times, np.arange(31) * 0.02, atol=1e-12)
    np.testing.assert_array_equal(first.qpos, second.qpos)
    np.testing.assert_array_equal(first.torques, second.torques)
    np.testing.assert_allclose(first.qpos, qpos, rtol=0, atol=1e-9)
    np.testing.assert_allclose(first.torques, torques, rtol=0, atol=1e-9)
    np.testing.assert_allclose(first.ref_qpos[30], Clip.load(synthetic_clip_path).sample(0.6))
    assert np.abs(qpos[-1] - qpos[0]).max() > 1e-3  # the rat did move


def test_ros_loop_runs_where_stderr_has_no_file_descriptor(tiny_policy_path, synthetic_clip_path,
                                                           monkeypatch):
    # Jupyter and pytest's capsys replace sys.stderr; rclpy's EventsExecutor then cannot enable
    # faulthandler, and the loop must fall back to the Python executor with the same numbers.
    import io
    reference = run_ros_loop(synthetic_clip_path, tiny_policy_path, seconds=0.2)
    monkeypatch.setattr(sys, 'stderr', io.StringIO())
    result = run_ros_loop(synthetic_clip_path, tiny_policy_path, seconds=0.2)
    assert result.qpos.shape == (11, 74)
    np.testing.assert_array_equal(result.qpos, reference.qpos)
