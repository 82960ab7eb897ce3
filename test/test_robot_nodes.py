"""The same three nodes on other bodies: a small legged robot of our own and the quadruped.

The toy robot (test/fixtures.py) is written into tmp_path as MJCF plus a robot file, once
taking torques and once joint targets; a tiny real ONNX policy and a short clip are made
for it. Values are checked, never timings.
"""

import os
import subprocess
import sys

from fixtures import make_robot_clip
from fixtures import make_robot_policy
from fixtures import robot_contract
from fixtures import TOY_POSITION_YAML
from fixtures import TOY_YAML
from fixtures import write_linear_policy
from fixtures import write_toy
import numpy as np
import pytest

pytest.importorskip('rclpy', reason='rclpy is not installed')

from nav_msgs.msg import Odometry  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray  # noqa: E402
from trajectory_msgs.msg import MultiDOFJointTrajectory  # noqa: E402

from vrat_ros.clip import Clip  # noqa: E402
from vrat_ros.driver_check import DriverMismatchError  # noqa: E402
from vrat_ros.errors import PolicyLoadError  # noqa: E402
from vrat_ros.kinematics import quat_to_mat  # noqa: E402
from vrat_ros.loop import run_ros_loop  # noqa: E402
from vrat_ros.observation import build_observation  # noqa: E402
from vrat_ros.policy import is_body_joint  # noqa: E402
from vrat_ros.policy import OnnxPolicy  # noqa: E402
from vrat_ros.policy import read_contract  # noqa: E402
from vrat_ros.policy import root_joint  # noqa: E402
from vrat_ros.policy import validate_contract  # noqa: E402
from vrat_ros.policy_node import PolicyNode  # noqa: E402
from vrat_ros.reference_node import ReferenceNode  # noqa: E402
from vrat_ros.resources import default_policy_path  # noqa: E402
from vrat_ros.robots import Robot  # noqa: E402
from vrat_ros.ros_messages import ns_to_time  # noqa: E402
from vrat_ros.ros_messages import stamp_to_ns  # noqa: E402
from vrat_ros.sim_node import RatSimNode  # noqa: E402

pytestmark = pytest.mark.ros

INTERFACES = {'effort': TOY_YAML, 'position': TOY_POSITION_YAML}


@pytest.fixture(params=sorted(INTERFACES))
def toy(request, tmp_path):
    """(robot file, Robot, clip path, policy path) of the toy with one command interface."""
    path = write_toy(tmp_path, INTERFACES[request.param])
    robot = Robot(path)
    clip = make_robot_clip(str(tmp_path / 'toy_clip.npz'), robot)
    policy = make_robot_policy(str(tmp_path / 'toy_policy.onnx'), robot)
    return path, robot, clip, policy


def inline_rollout(robot_path, clip_path, policy_path, n_steps):
    """The same physics and policy called directly, without ROS (robots.Robot stepping)."""
    robot = Robot(robot_path)
    clip = Clip.load(clip_path).reorder_to(robot.joint_names)
    policy = OnnxPolicy(policy_path)
    idx = np.array([robot.joint_names.index(n) for n in policy.joint_names])
    dt, k_frames = policy.reference_dt, policy.reference_frames
    robot.reset(clip.sample(0.0), clip.velocity(0.0))
    qpos, commands = [robot.data.qpos.copy()], []
    for step in range(n_steps):
        q, v = robot.data.qpos, robot.data.qvel
        ref = clip.window(step * dt + dt, k_frames, dt)
        obs = build_observation(q[7 + idx], v[6 + idx], q[:3], q[3:7],
                                quat_to_mat(q[3:7]).T @ v[:3], v[3:6],
                                ref[:, :3], ref[:, 3:7], ref[:, 7 + idx])
        commands.append(policy.torques(obs))
        robot.step_control(commands[-1])
        qpos.append(robot.data.qpos.copy())
    return np.array(qpos), np.array(commands)


def test_toy_robot_loop_equals_inline_loop(toy):
    path, robot, clip_path, policy_path = toy
    result = run_ros_loop(clip_path, policy_path, seconds=0.4, robot=path)
    qpos, commands = inline_rollout(path, clip_path, policy_path, 20)

    assert result.qpos.shape == (21, 15) and result.torques.shape == (20, 8)
    assert not result.halted and result.rejected_commands == 0
    np.testing.assert_allclose(result.qpos, qpos, rtol=0, atol=1e-9)
    np.testing.assert_allclose(result.torques, commands, rtol=0, atol=1e-9)
    assert np.abs(qpos[-1] - qpos[0]).max() > 1e-2  # the robot moved
    contract = read_contract(policy_path)
    if robot.spec.command_interface == 'position':
        # Joint targets around the standing pose, within the contract's +-0.3 rad.
        offset = np.array(contract['action_offset'])
        assert np.all(np.abs(commands - offset) <= 0.3 + 1e-12)
        assert np.abs(commands - offset).max() > 1e-3
    else:
        assert np.all(np.abs(commands) <= 5.0 + 1e-12)  # the motors' gear: 5 N m at ctrl 1


def test_three_nodes_in_lockstep_speak_the_robots_names(ros, toy):
    path, robot, clip_path, policy_path = toy
    interface = robot.spec.command_interface
    sim = ros.add(RatSimNode(**ros.node_kwargs(robot=path, clip_file=clip_path)))
    reference = ros.add(ReferenceNode(**ros.node_kwargs(
        clip_file=clip_path, policy_file=policy_path, use_sim_time=True)))
    policy = ros.add(PolicyNode(**ros.node_kwargs(
        policy_file=policy_path, use_sim_time=True, publish_float64_array=True)))
    commands = ros.collect(JointState, f'policy/{interface}')
    arrays = ros.collect(Float64MultiArray, f'{interface}_controller/commands')
    states = ros.collect(JointState, 'joint_states')
    odoms = ros.collect(Odometry, 'odom')
    roots = ros.collect(MultiDOFJointTrajectory, 'reference/root_trajectory')
    assert ros.spin_until(lambda: sim.control_steps >= 5, timeout_s=30.0)
    ros.executor.remove_node(policy)  # the loop stops; the probe hears what is on its way
    stopped_ns = sim.time_ns
    assert ros.spin_until(lambda: any(stamp_to_ns(m.header.stamp) == stopped_ns - 20_000_000
                                      for m in commands))
    assert sim.time_ns == stopped_ns

    assert sim.command_interface == interface and sim.rejected_commands == 0
    assert list(states[0].name) == robot.joint_names
    assert odoms[0].child_frame_id == 'base'
    # The window's shape and root name come from the policy's contract, not from the rat.
    assert reference.window_frames == 3 and reference.root_joint == 'base_free'
    assert list(roots[0].joint_names) == ['base_free'] and len(roots[0].points) == 3
    assert policy.root_joint == 'base_free'
    first = commands[0]
    assert list(first.name) == robot.actuator_names
    values = getattr(first, interface)
    other = first.effort if interface == 'position' else first.position
    assert len(values) == 8 and len(other) == 0
    assert arrays and np.array_equal(arrays[0].data, values)
    # The command the sim applied at the last step is the policy's, in actuator order.
    last = max(commands, key=lambda m: stamp_to_ns(m.header.stamp))
    assert stamp_to_ns(last.header.stamp) == sim.time_ns - 20_000_000
    np.testing.assert_array_equal(sim.command, getattr(last, interface))


@pytest.mark.parametrize('interface', sorted(INTERFACES))
def test_sim_takes_commands_by_joint_name(ros, tmp_path, interface):
    path = write_toy(tmp_path, INTERFACES[interface])
    sim = ros.add(RatSimNode(**ros.node_kwargs(robot=path)))
    names = sim.body.actuator_names
    # Rad for targets (hips forward, knees bent: inside the joint ranges), N m for torques.
    values = 0.1 * np.arange(1, 9) * np.tile([1.0, -1.0], 4)
    joints = sim.body.model.jnt_qposadr[sim.body.model.actuator_trnid[:, 0]]
    before = sim.body.data.qpos[joints].copy()
    order = np.random.default_rng(3).permutation(8)
    pub = ros.probe.create_publisher(JointState, f'policy/{interface}', 10)
    ros.connect(pub)
    msg = JointState(name=[names[i] for i in order])
    setattr(msg, interface, [float(values[i]) for i in order])
    msg.header.stamp = ns_to_time(0)
    pub.publish(msg)
    assert ros.spin_until(lambda: sim.control_steps == 1)
    np.testing.assert_array_equal(sim.command, values)
    assert sim.rejected_commands == 0
    if interface == 'effort':
        np.testing.assert_allclose(sim.body.data.ctrl, values / 5.0)  # gear 5 N m
    else:
        # The PD law tracks the targets at every physics step: the joints head for them.
        np.testing.assert_array_equal(sim.body.target, values)
        after = sim.body.data.qpos[joints]
        assert np.abs(values - after).sum() < 0.8 * np.abs(values - before).sum()
    # The other interface's topic is not the sim's: nothing subscribes to it.
    other = 'effort' if interface == 'position' else 'position'
    assert ros.probe.count_subscribers(f'{ros.namespace}/policy/{other}') == 0


def test_quadruped_starts_standing_and_publishes_its_joints(ros):
    sim = ros.add(RatSimNode(**ros.node_kwargs(robot='quadruped')))
    states = ros.collect(JointState, 'joint_states')
    odoms = ros.collect(Odometry, 'odom')
    pub = ros.probe.create_publisher(JointState, 'policy/position', 10)
    ros.connect(pub)
    assert ros.spin_until(lambda: states and odoms)
    names = list(states[-1].name)
    actuated = sim.body.actuator_names
    assert len(actuated) == 12 and set(actuated) <= set(names)
    assert len(names) == 16 and sorted(set(names) - set(actuated)) == [
        'ankle_back_left', 'ankle_back_right', 'ankle_front_left', 'ankle_front_right']
    assert odoms[-1].child_frame_id == 'torso'
    assert odoms[-1].pose.pose.position.z == pytest.approx(0.52, abs=1e-6)  # toes on the floor
    assert sim.command_interface == 'position' and sim.n_substeps == 4

    # Holding the standing pose by name: the PD loop keeps the 107 kg body up.
    m = sim.body.model
    stand = sim.body.stand_qpos()[m.jnt_qposadr[m.actuator_trnid[:, 0]]]
    for step in range(25):
        msg = JointState(name=actuated, position=[float(v) for v in stand])
        msg.header.stamp = ns_to_time(step * 20_000_000)
        pub.publish(msg)
        assert ros.spin_until(lambda: sim.control_steps == step + 1)
    assert sim.rejected_commands == 0 and not sim.halted
    assert 0.42 < sim.body.data.xpos[sim.body.torso_id, 2] < 0.52


def test_unknown_robot_cannot_start(tmp_path):
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST')
    env.setdefault('ROS_DOMAIN_ID', '95')
    proc = subprocess.run(
        [sys.executable, '-m', 'vrat_ros.sim_node', '--ros-args', '-p', 'robot:=hexapod'],
        capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.splitlines() if 'cannot start' in ln]
    assert len(lines) == 1 and "robot 'hexapod' is neither a robot file" in lines[0]


def test_a_policy_for_another_body_is_refused(ros, tmp_path, synthetic_clip_path):
    path = write_toy(tmp_path)
    robot = Robot(path)
    policy_path = make_robot_policy(str(tmp_path / 'toy_policy.onnx'), robot)
    clip_path = make_robot_clip(str(tmp_path / 'toy_clip.npz'), robot)
    # The rat's sim does not publish the toy's joints: the policy node stops, naming them.
    ros.add(RatSimNode(**ros.node_kwargs(clip_file=synthetic_clip_path)))
    ros.add(PolicyNode(**ros.node_kwargs(policy_file=policy_path, use_sim_time=True)))
    with pytest.raises(DriverMismatchError, match='lacks 8 of the 8 joints.*fl_hip'):
        ros.spin_until(lambda: False, timeout_s=10.0)
    # A robot with the policy's joints but another command interface: refused before running.
    position_path = write_toy(tmp_path, TOY_POSITION_YAML, name='toy_position.yaml')
    with pytest.raises(ValueError, match="takes position commands; the policy's contract "
                                         'gives effort'):
        run_ros_loop(clip_path, policy_path, seconds=0.1, robot=position_path)


def test_contract_fields_for_other_bodies(tmp_path):
    # The shipped rat policy's contract is still valid and means what it meant.
    rat = read_contract(default_policy_path())
    assert root_joint(rat) == 'root' and 'action_offset' not in rat
    assert is_body_joint(rat, 'vertebra_C1_extend') and not is_body_joint(rat, 'fl_hip')

    robot = Robot(write_toy(tmp_path, TOY_POSITION_YAML))
    contract = robot_contract(robot)
    assert validate_contract(dict(contract)) and root_joint(contract) == 'base_free'
    assert not is_body_joint(contract, 'vertebra_C1_extend')
    for change, message in (
            ({'command_interface': 'velocity'}, "should be one of \\['effort', 'position'\\]"),
            ({'action_offset': [0.0] * 7}, 'action_offset has 7 entries for 8 actuators'),
            ({'root_joint': 'fl_hip'}, 'is also one of its joint_names'),
            ({'body_joints': ['fl_hip']}, 'body_joints lacks joints the policy reads')):
        with pytest.raises(PolicyLoadError, match=message):
            validate_contract(dict(contract, **change))
    # An offset moves the command: targets = offset + scale * action.
    path = write_linear_policy(str(tmp_path / 'p.onnx'), contract, seed=1)
    policy = OnnxPolicy(path)
    action = np.linspace(-1.0, 1.0, 8)
    np.testing.assert_allclose(policy.command_from_action(action),
                               np.array(contract['action_offset']) + 0.3 * action)
