"""The robot description layer: the rat and the quadruped files, a user MJCF, bad files."""

from fixtures import TOY_XML
from fixtures import TOY_YAML
from fixtures import write_toy
import mujoco
import numpy as np
import pytest

from vrat_ros import robots
from vrat_ros.rat_model import RatBody
from vrat_ros.robots import load_robot
from vrat_ros.robots import Robot
from vrat_ros.robots import RobotSpecError


def test_shipped_robot_names():
    assert {'rat', 'quadruped'} <= set(robots.robot_names())


def test_rat_file_builds_the_same_body_as_ratbody():
    model, spec = load_robot('rat')
    rat = RatBody()
    ref = rat.model
    assert (model.nq, model.nv, model.nu) == (ref.nq, ref.nv, ref.nu) == (74, 73, 38)
    robot = Robot(model=model, spec=spec)
    assert robot.actuator_names == rat.actuator_names
    assert robot.joint_names == rat.hinge_names
    for attr in ('body_mass', 'body_pos', 'geom_size', 'geom_contype', 'jnt_range',
                 'actuator_gainprm', 'actuator_forcerange'):
        np.testing.assert_allclose(getattr(model, attr), getattr(ref, attr), err_msg=attr)
    np.testing.assert_allclose(robot.actuator_gain, rat.actuator_gain)
    assert spec.physics_timestep_s == model.opt.timestep == 0.002
    assert spec.n_substeps == 10 and spec.command_interface == 'effort'
    assert spec.healthy_z_range == (0.0325, 0.5)
    assert [f.site for f in spec.feet] == ['sole_L', 'sole_R', 'palm_L', 'palm_R']


def test_quadruped_from_dm_control_package():
    model, spec = load_robot('quadruped')
    assert (model.nq, model.nv, model.nu) == (23, 22, 12)  # the ball is gone
    assert model.neq == 4  # the suite's ankle couplings are kept
    assert spec.command_interface == 'position' and spec.n_substeps == 4
    robot = Robot(model=model, spec=spec)
    assert len(robot.joint_names) == 16
    assert robot.actuator_names[:3] == ['yaw_front_left', 'pitch_front_left',
                                        'knee_front_left']
    np.testing.assert_allclose(robot.max_force, 300.0)
    assert robot.model.body_subtreemass[1] == pytest.approx(107.118, abs=1e-3)
    stand = robot.stand_qpos()
    assert stand[2] == pytest.approx(0.52, abs=1e-6)  # toe spheres (r 0.08) touch the floor

    # PD at physics rate holds the stand; no torque lets it fall on its belly.
    robot.reset(stand)
    targets = stand[robot.model.jnt_qposadr[robot.model.actuator_trnid[:, 0]]]
    for _ in range(50):
        robot.step_control(targets)
    held = robot.data.xpos[robot.torso_id, 2]
    robot.reset(stand)
    for _ in range(50):
        robot.step_control(None)
    fallen = robot.data.xpos[robot.torso_id, 2]
    assert 0.42 < held < 0.52
    assert fallen < 0.25


def test_quadruped_motors_apply_torque_without_delay():
    # The suite's default class filters each actuator's command over 0.1 s; our motors must
    # not inherit it: a PD torque computed at a physics step acts at that step.
    robot = Robot('quadruped')
    assert robot.model.na == 0
    assert np.all(robot.model.actuator_dyntype == mujoco.mjtDyn.mjDYN_NONE)
    robot.reset(robot.stand_qpos())
    robot.data.ctrl[:] = 0.5
    mujoco.mj_forward(robot.model, robot.data)
    np.testing.assert_allclose(robot.data.actuator_force, 150.0)


def _lift_one_foot(robot, sway=0.1, lift=0.12):
    """PD on a hand-made reference: the trunk sways away from the front left foot, which rises.

    Returns the foot's height before, its highest point while lifted, the trunk's lowest height
    and its standing height.
    """
    from vrat_ros import retarget as rt
    opts = rt.RetargetOptions()
    ik = rt.FootIK(robot, opts)
    stand = robot.retarget_stand_qpos()
    home = rt._home_feet(robot, opts)
    homes = np.stack([home[limb.name] for limb in robot.spec.limbs])
    leg = [limb.name for limb in robot.spec.limbs].index('front_left')
    radius = robot.foot_radius(robot.spec.foot('front_left'))
    away = -homes[leg] / np.linalg.norm(homes[leg])
    fps, n = 50, 120  # sway over 0.5-1.0 s, lift over 1.0-1.6 s, sway back until 2.1 s
    q = ik.stand.copy()
    refs = np.zeros((n, robot.nq))
    for k in range(n):
        t = k / fps
        weight = np.clip(min((t - 0.5) / 0.5, (2.1 - t) / 0.5), 0.0, 1.0)
        refs[k, :7] = stand[:7]
        refs[k, :2] = away * sway * weight
        feet = np.column_stack([homes, np.full(len(homes), radius)])
        feet[leg, 2] += lift * np.sin(np.pi * np.clip((t - 1.0) / 0.6, 0.0, 1.0))
        q, _ = ik.solve(refs[k, :7], feet, q)
        refs[k, 7:] = q
    m = robot.model
    act_q = m.jnt_qposadr[m.actuator_trnid[:, 0]]
    site = robot.spec.foot('front_left').site
    robot.reset(refs[0])
    heights, trunk = [], []
    for k in range(1, n):
        robot.step_control(refs[k, act_q])
        heights.append(robot.data.site(site).xpos[2])
        trunk.append(robot.data.qpos[2])
    heights = np.array(heights)
    return heights[45], heights[50:80].max(), min(trunk), stand[2]


def test_quadruped_lifts_a_foot_under_position_pd():
    # The foot the reference lifts 12 cm must leave the floor, and the trunk stay up.
    robot = Robot('quadruped')
    before, peak, lowest, standing = _lift_one_foot(robot)
    assert peak - before > 0.06
    assert lowest > standing - 0.05


def test_suite_zero_pose_keeps_the_lifted_foot_down():
    # The cause of retarget.stand in quadruped.yaml: with the suite's sprawled zero pose, the
    # two legs next to the lifted one sag (P error of their hip pitch under half the weight,
    # on a 0.55 m lever) as far as the foot rises, so it stays on the floor.
    import dataclasses
    model, spec = load_robot('quadruped')
    spec = dataclasses.replace(spec, retarget_stand=None)
    robot = Robot(model=model, spec=spec)
    before, peak, lowest, standing = _lift_one_foot(robot)
    assert standing == pytest.approx(0.52, abs=1e-6)
    assert peak - before < 0.02
    assert lowest < standing - 0.04


def test_user_mjcf_by_path(tmp_path):
    path = write_toy(tmp_path)
    model, spec = load_robot(path)
    assert spec.name == 'toy' and model.nu == 8 and model.nq == 7 + 8
    robot = Robot(model=model, spec=spec)
    assert robot.actuator_names[0] == 'fl_hip'
    assert robot.foot_radius(spec.foot('fl')) == pytest.approx(0.02)
    stand = robot.stand_qpos()
    assert stand[2] == pytest.approx(0.24 + 0.02)  # two 0.12 m links and the foot sphere
    robot.reset(stand)
    robot.step_control(np.full(8, 100.0))  # torques saturate at the motor gear (5 N m)
    np.testing.assert_allclose(robot.data.ctrl, 1.0)
    np.testing.assert_allclose(robot.data.qfrc_actuator[6:], 5.0)  # joint torque = gear


def test_user_mjcf_with_motors_and_position_interface(tmp_path):
    text = TOY_YAML.replace(
        'actuation: {actuators: model, names: all}',
        'actuation: {actuators: motors, joints: [fl_knee, fr_knee], max_effort: 3.0}').replace(
        'command_interface: effort', 'command_interface: position').replace(
        'pd: {kp: 20.0, kd: 0.5}', 'pd: {kp: 2.0, kd: {fl_knee: 0.05, default: 0.04}}')
    model, spec = load_robot(write_toy(tmp_path, text))
    robot = Robot(model=model, spec=spec)
    assert robot.actuator_names == ['fl_knee', 'fr_knee']
    np.testing.assert_allclose(robot.kd, [0.05, 0.04])
    robot.reset()
    knees = robot.model.jnt_qposadr[robot.model.actuator_trnid[:, 0]]
    for _ in range(25):
        robot.step_control([-0.5, -0.5])
    assert np.all(np.abs(robot.data.actuator_force) <= 3.0 + 1e-9)
    # The knees settle near the target, a little past it under the body's weight.
    np.testing.assert_allclose(robot.data.qpos[knees], -0.5, atol=0.15)


@pytest.mark.parametrize('old, new, message', [
    ('path: models/toy.xml', 'path: models/nope.xml', 'does not exist'),
    ('names: all', 'names: [fl_hip, not_a_motor]', "no actuator named 'not_a_motor'"),
    ('fl: {site: fl_foot}', 'fl: {site: paw}', "feet.fl.site: the model has no site named "
                                               "'paw'"),
    ('root: {joint: base_free, body: base}', 'root: {joint: fl_hip, body: base}',
     'is not a free joint'),
    ('torso: {body: base,', 'torso: {body: chest,', "torso.body: the model has no body"),
    ('command_interface: effort', 'command_interface: velocity', "should be one of"),
    ('timing: {physics_timestep_s: 0.004', 'timing: {physics_timestep_s: 0.003',
     'not a whole number'),
    ('name: toy', 'name: toy\nwheels: 4', "unknown fields ['wheels']"),
    ('fl: {base: ShoulderL, end: ArmL, foot: fl}', 'fl: {base: ShoulderL, end: ArmL, foot: x}',
     "'x' is not one of the feet"),
])
def test_bad_robot_files_give_one_line_errors(tmp_path, old, new, message):
    assert old in TOY_YAML
    path = write_toy(tmp_path, TOY_YAML.replace(old, new))
    with pytest.raises(RobotSpecError) as err:
        load_robot(path)
    text = str(err.value)
    assert message in text and '\n' not in text and 'toy.yaml' in text


def test_malformed_yaml_and_unknown_name(tmp_path):
    path = write_toy(tmp_path, 'name: toy\nmjcf: {path: [unclosed\n')
    with pytest.raises(RobotSpecError, match=r'not valid YAML \(line \d+'):
        load_robot(path)
    with pytest.raises(RobotSpecError, match="robot 'hexapod' is neither"):
        load_robot('hexapod')


def test_broken_mjcf_is_reported(tmp_path):
    path = write_toy(tmp_path, xml_text='<mujoco><worldbody><body name="b">'
                                        '</worldbody></mujoco>')
    with pytest.raises(RobotSpecError, match='cannot load') as err:
        load_robot(path)
    assert '\n' not in str(err.value)


def test_ball_joints_are_refused(tmp_path):
    xml = TOY_XML.replace('<joint name="fl_hip" axis="0 1 0" range="-60 60"/>',
                          '<joint name="fl_hip" type="ball"/>')
    xml = xml.replace('<motor name="fl_hip" joint="fl_hip" gear="5" ctrlrange="-1 1" '
                      'ctrllimited="true"/>', '')
    text = TOY_YAML
    with pytest.raises(RobotSpecError, match='ball joints are not supported'):
        load_robot(write_toy(tmp_path, text, xml))


def test_toy_model_compiles_on_its_own():
    model = mujoco.MjModel.from_xml_string(TOY_XML)
    assert model.nsite == 4
