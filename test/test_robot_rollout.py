"""The inline side on robots: run_inline, the controllers, tracking, `vrat eval` and `vrat run`.

The quadruped is dm_control's suite quadruped (config/robots/quadruped.yaml, position
interface, PD at physics rate); the toy is the small legged MJCF of test/fixtures.py, written
into tmp_path, taking torques or joint targets. Policies are tiny real ONNX files
(`fixtures.make_robot_policy`), never the quadruped policy that `vrat train` makes.
"""

import json
import os

from fixtures import make_robot_clip
from fixtures import make_robot_policy
from fixtures import robot_contract
from fixtures import TOY_POSITION_YAML
from fixtures import TOY_YAML
from fixtures import write_linear_policy
from fixtures import write_toy
import numpy as np
import pytest

from vrat_ros import resources
from vrat_ros.cli import main
from vrat_ros.clip import Clip
from vrat_ros.clip import clip_from_arrays
from vrat_ros.controllers import ControllerError
from vrat_ros.controllers import PolicyController
from vrat_ros.evaluate import make_controller
from vrat_ros.evaluate import run_eval
from vrat_ros.policy import OnnxPolicy
from vrat_ros.robots import load_robot_spec
from vrat_ros.robots import Robot
from vrat_ros.robots import RobotSpecError
from vrat_ros.rollout import run_inline
from vrat_ros.tracking import tracking_limits
from vrat_ros.tracking import tracking_metrics

QUADRUPED_LIMITS = {'root_dist_m': 0.5, 'joint_sq_err_rad2': 20.0,
                    'torso_z_range_m': [0.3, 1.5]}
EVAL_CLIP = 'quadruped_eval_2010_2310'
QUADRUPED_YAML = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              'config', 'robots', 'quadruped.yaml')


@pytest.fixture(scope='module')
def quadruped():
    return Robot('quadruped')


def held(robot, qpos, seconds=1.0, rate=50.0):
    """A clip that holds one pose (zero reference velocity)."""
    n = int(round(seconds * rate)) + 1
    return clip_from_arrays(np.tile(qpos, (n, 1)), rate, robot.joint_names, robot.scale,
                            {'robot': robot.spec.name})


def one_joint_moving(robot, joint, amplitude=-0.3, seconds=2.0, rate=50.0):
    """The standing pose with one joint swinging slowly (0.5 Hz) by `amplitude` (rad)."""
    t = np.arange(int(round(seconds * rate)) + 1) / rate
    qpos = np.tile(robot.stand_qpos(), (len(t), 1))
    j = robot.joint_names.index(joint)
    qpos[:, 7 + j] += amplitude * np.sin(2.0 * np.pi * 0.5 * t)
    return clip_from_arrays(qpos, rate, robot.joint_names, robot.scale, {}), j


def joint_rmse(result, j):
    return float(np.sqrt(np.mean((result.qpos[:, 7 + j] - result.ref_qpos[:, 7 + j]) ** 2)))


# ---------------------------------------------------------------------------------------------
# The robot as a body of run_inline and tracking


def test_robot_has_the_members_the_inline_side_reads(quadruped):
    r = quadruped
    assert (r.nq, r.nv, r.nu) == (23, 22, 12)
    np.testing.assert_array_equal(r.tracked_hinge_idx, np.arange(16))
    assert [r.body_names[i] for i in r.tracked_body_ids] == [
        'torso', 'toe_front_left', 'toe_front_right', 'toe_back_right', 'toe_back_left']
    # The ankles are passive (coupled by a tendon equality): 12 of the 16 joints are driven.
    assert [r.joint_names[i] for i in r.actuated_hinge_idx if 'ankle' in r.joint_names[i]] == []
    assert len(r.actuated_hinge_idx) == 12
    assert tracking_limits(r) == QUADRUPED_LIMITS
    r.reset(r.stand_qpos(), np.zeros(r.nv), time=2.5)
    assert r.time == 2.5 and r.state_is_finite()
    with pytest.raises(ValueError, match='qvel should have shape'):
        r.reset(r.stand_qpos(), np.zeros(3))


def test_rat_keeps_its_constants(rat_body):
    assert tracking_limits(rat_body) == {'root_dist_m': 0.1, 'joint_sq_err_rad2': 20.0,
                                         'torso_z_range_m': [0.0325, 0.5]}


def test_zero_holds_a_standing_quadruped(quadruped):
    stand = quadruped.stand_qpos()
    result = run_inline(quadruped, held(quadruped, stand), make_controller('zero'), seconds=1.0)
    m = result.metrics
    assert result.n_steps_planned == 50 and result.qpos.shape == (51, 23)
    assert m['tracked_fraction'] == 1.0 and m['failure_reason'] is None
    # 'zero' on a position robot: the standing pose's joint angles as targets, every step.
    np.testing.assert_array_equal(result.torques, np.tile(quadruped.stand_targets(), (50, 1)))
    # Plain PD under the weight: the trunk sags a few cm, the feet stay put.
    assert 0.0 < m['root_pos_error_mm'] < 60.0 and m['body_pos_error_mm'] < 30.0
    assert not result.diverged and result.n_saturated == 0


def test_reference_far_from_the_robot_fails_at_frame_0_by_its_own_limits(quadruped):
    stand = quadruped.stand_qpos()
    result = run_inline(quadruped, held(quadruped, stand), make_controller('zero'), seconds=0.4)
    far = result.ref_qpos.copy()
    far[:, 0] += 1.0
    m = tracking_metrics(quadruped, result.qpos, far)
    assert (m['tracked_fraction'], m['first_failure_frame'], m['failure_reason']) == (
        0.0, 0, 'root')
    assert m['root_pos_error_mm'] == pytest.approx(1000.0, abs=40.0)
    # 0.3 m is within the quadruped's 0.5 m (it would fail the rat's 0.1 m).
    near = result.ref_qpos.copy()
    near[:, 0] += 0.3
    assert tracking_metrics(quadruped, result.qpos, near)['tracked_fraction'] == 1.0


def test_pd_follows_a_moving_joint_better_than_zero(quadruped):
    clip, j = one_joint_moving(quadruped, 'knee_front_left')
    pd = run_inline(quadruped, clip, make_controller('pd'), seconds=2.0)
    zero = run_inline(quadruped, clip, make_controller('zero'), seconds=2.0)
    assert pd.metrics['tracked_fraction'] == 1.0
    pd_err, zero_err = joint_rmse(pd, j), joint_rmse(zero, j)
    assert zero_err > 0.15  # the reference swings by 0.3 rad; 'zero' holds the stand
    assert pd_err < 0.08 and pd_err < 0.4 * zero_err
    # pd's targets are the reference of the next control step (t + 20 ms).
    act = list(quadruped.actuator_joint_idx).index(j)
    np.testing.assert_allclose(pd.torques[:, act], clip.qpos[1:101, 7 + j], atol=1e-12)


def test_pd_on_a_user_mjcf_that_takes_torques(tmp_path):
    robot = Robot(write_toy(tmp_path))  # effort, pd {kp: 20, kd: 0.5}, 50 Hz
    clip, j = one_joint_moving(robot, 'fl_knee', amplitude=-0.4)
    pd = run_inline(robot, clip, make_controller('pd'), seconds=2.0)
    zero = run_inline(robot, clip, make_controller('zero'), seconds=2.0)
    assert np.all(zero.torques == 0.0)
    assert pd.torques.shape == (100, 8) and pd.metrics['n_frames'] == 101 and not pd.diverged
    # The torques are kp (q_ref - q) + kd (qd_ref - qd), the reference 20 ms ahead.
    act = robot.actuator_names.index('fl_knee')
    t1 = 1.0 / 50.0
    expected = 20.0 * (clip.sample(t1)[7 + j] - clip.sample(0.0)[7 + j]) + 0.5 * (
        clip.velocity(t1)[6 + j] - clip.velocity(0.0)[6 + j])
    assert expected < -0.5 and pd.torques[0, act] == pytest.approx(expected, rel=1e-12)


def test_torque_pd_at_physics_rate_is_the_position_interface(tmp_path):
    # The toy's physics runs at 250 Hz: a torque PD at 250 Hz on a held pose is the very law
    # a position robot closes at every physics step (same gains, same clamping).
    effort = Robot(write_toy(tmp_path, TOY_YAML.replace('control_rate_hz: 50.0',
                                                        'control_rate_hz: 250.0'),
                             name='effort.yaml'))
    position = Robot(write_toy(tmp_path, TOY_POSITION_YAML, name='position.yaml'))
    clip = held(effort, effort.stand_qpos())
    by_torque = run_inline(effort, clip, make_controller('pd'), seconds=1.0)
    by_target = run_inline(position, clip, make_controller('zero'), seconds=1.0)
    assert by_torque.qpos.shape == (251, 15) and by_target.qpos.shape == (51, 15)
    np.testing.assert_allclose(by_torque.qpos[::5], by_target.qpos, rtol=0, atol=1e-9)
    assert np.abs(by_target.qpos[-1] - by_target.qpos[0]).max() > 0.01  # it did move
    # NOTE: kp 20, kd 0.5 make this light toy chatter (most steps clamp a motor) and creep
    # away; it is a test body, not a tuned robot.
    assert by_target.saturation_fraction > 0.3


def test_pd_on_an_effort_robot_without_gains_is_refused(tmp_path):
    robot = Robot(write_toy(tmp_path, TOY_YAML.replace('pd: {kp: 20.0, kd: 0.5}\n', '')))
    clip = held(robot, robot.stand_qpos())
    with pytest.raises(ControllerError, match="robot 'toy' has no PD gains") as err:
        run_inline(robot, clip, make_controller('pd'), seconds=0.1)
    assert '\n' not in str(err.value)


def test_zero_on_a_position_toy_holds_its_stand(tmp_path):
    robot = Robot(write_toy(tmp_path, TOY_POSITION_YAML))
    result = run_inline(robot, held(robot, robot.stand_qpos()), make_controller('zero'),
                        seconds=0.5)
    np.testing.assert_array_equal(result.torques[0], robot.stand_targets())
    assert result.metrics['tracked_fraction'] == 1.0


# ---------------------------------------------------------------------------------------------
# Policies on robots


@pytest.mark.parametrize('yaml_text', [TOY_YAML, TOY_POSITION_YAML], ids=['effort', 'position'])
def test_policy_rollout_is_the_robots_own_stepping(tmp_path, yaml_text):
    path = write_toy(tmp_path, yaml_text)
    robot = Robot(path)
    clip = Clip.load(make_robot_clip(str(tmp_path / 'clip.npz'), robot))
    policy_path = make_robot_policy(str(tmp_path / 'policy.onnx'), robot)
    result = run_inline(robot, clip, PolicyController(policy_path), seconds=0.4)
    assert result.torques.shape == (20, 8) and result.metrics['n_frames'] == 21

    # The same commands stepped by hand with Robot.step_control, as the sim node does.
    controller = PolicyController(policy_path)
    other = Robot(path)
    other.reset(clip.sample(0.0), clip.velocity(0.0))
    controller.reset(other, clip, 0.0)
    for k in range(20):
        command = controller.torques(other, k / 50.0)
        np.testing.assert_array_equal(command, result.torques[k])
        other.step_control(command)
        np.testing.assert_array_equal(other.data.qpos, result.qpos[k + 1])
    if robot.command_interface == 'position':
        offset = np.array(robot_contract(robot)['action_offset'])
        assert np.all(np.abs(result.torques - offset) <= 0.3 + 1e-12)


def test_policy_actuators_are_matched_by_name(tmp_path):
    robot = Robot(write_toy(tmp_path, TOY_POSITION_YAML))
    contract = robot_contract(robot)
    contract['actuator_names'] = contract['actuator_names'][::-1]
    contract['action_offset'] = contract['action_offset'][::-1]
    path = write_linear_policy(str(tmp_path / 'reversed.onnx'), contract, weight_scale=0.05)
    clip = Clip.load(make_robot_clip(str(tmp_path / 'clip.npz'), robot))
    controller = PolicyController(path)
    robot.reset(clip.sample(0.0), clip.velocity(0.0))
    controller.reset(robot, clip, 0.0)
    raw = OnnxPolicy(path).torques(controller.observation(robot, 0.0))  # the policy's order
    np.testing.assert_array_equal(controller.torques(robot, 0.0), raw[::-1])


def test_policy_for_another_interface_or_body_is_refused(tmp_path, quadruped):
    toy = Robot(write_toy(tmp_path))
    effort_policy = make_robot_policy(str(tmp_path / 'effort.onnx'), toy)
    position_toy = Robot(write_toy(tmp_path, TOY_POSITION_YAML, name='toy_position.yaml'))
    clip = held(position_toy, position_toy.stand_qpos())
    with pytest.raises(ControllerError, match='gives effort commands; robot .toy. takes '
                                              'position'):
        PolicyController(effort_policy).reset(position_toy, clip, 0.0)
    position_policy = make_robot_policy(str(tmp_path / 'position.onnx'), position_toy)
    with pytest.raises(ControllerError, match="root joint is 'base_free'; robot 'quadruped'"):
        PolicyController(position_policy).reset(quadruped, clip, 0.0)


# ---------------------------------------------------------------------------------------------
# Robot file defaults


def test_quadruped_defaults_name_the_eval_clip_and_the_policy_to_train():
    spec = load_robot_spec('quadruped')
    eval_clip = resources.data_path('clips', 'quadruped', EVAL_CLIP + '.npz')
    assert resources.robot_default_clip(spec) == eval_clip
    assert resources.robot_eval_clips(spec) == [eval_clip]
    assert resources.robot_default_policy(spec) == resources.data_path(
        'policies', 'quadruped_inverse_dynamics.onnx')


def test_bad_defaults_are_one_line_errors(tmp_path):
    path = write_toy(tmp_path, TOY_YAML + 'defaults: {clip: a.npz, wheels: 4}\n')
    with pytest.raises(RobotSpecError, match=r"defaults: unknown fields \['wheels'\]"):
        load_robot_spec(path)
    path = write_toy(tmp_path, TOY_YAML + 'defaults: {eval_clips: a.npz}\n')
    with pytest.raises(RobotSpecError, match='defaults.eval_clips: should be a non-empty list'):
        load_robot_spec(path)


# ---------------------------------------------------------------------------------------------
# vrat eval --robot


@pytest.fixture(scope='module')
def short_eval_clip(tmp_path_factory):
    """The first 2 s of the held-out quadruped clip (its frames and meta unchanged)."""
    clip = Clip.load(resources.resolve_clip_path(EVAL_CLIP))
    path = tmp_path_factory.mktemp('quadruped_clip') / 'quadruped_eval_first_2s.npz'
    Clip(qpos=clip.qpos[:51], fps=clip.fps, joint_names=list(clip.joint_names),
         body_scale=clip.body_scale, meta=clip.meta).save(str(path))
    return str(path)


def test_eval_on_the_quadruped_writes_a_report_with_its_limits(tmp_path, short_eval_clip,
                                                               capsys):
    pytest.importorskip('matplotlib', reason='the plot beside the report needs matplotlib')
    report_path = tmp_path / 'eval.json'
    assert main(['eval', '--robot', 'quadruped', '--controller', 'pd', 'zero', '--clips',
                 short_eval_clip, '--starts', '2', '--workers', '2', '--report',
                 str(report_path), '--no-progress']) == 0
    report = json.loads(report_path.read_text())
    settings = report['settings']
    assert report['robot']['name'] == 'quadruped'
    assert report['robot']['command_interface'] == 'position'
    assert settings['tracked_threshold'] == QUADRUPED_LIMITS
    assert settings['body_error_bodies'] == ['torso', 'toe_front_left', 'toe_front_right',
                                             'toe_back_right', 'toe_back_left']
    assert settings['control_rate_hz'] == 50.0 and 'standing pose' in settings['zero']
    from vrat_ros.mpc import MPCSettings
    assert settings['mpc_settings'] == MPCSettings().as_dict()  # not the rat's
    assert 'all 16 joints' in settings['definitions']['joint_rmse_rad']
    assert report['run']['episodes'] == 4 and report['policy'] is None
    assert [e['start_frame'] for e in report['episodes']] == [0, 25, 0, 25]
    for name in ('pd', 'zero'):
        m = report['overall'][name]
        assert 0.0 < m['tracked_fraction'] <= 1.0 and m['episodes'] == 2
        assert m['joint_rmse_rad'] > 0.0 and m['body_pos_error_mm'] > 0.0
    # PD follows the reference's joints; holding the stand does not.
    assert report['overall']['pd']['joint_rmse_rad'] < report['overall']['zero'][
        'joint_rmse_rad']
    assert (tmp_path / 'eval.md').read_text().startswith('| clip | controller |')
    assert report['plot'] == str(tmp_path / 'eval.png') and os.path.getsize(report['plot']) > 0
    assert 'robot quadruped' in capsys.readouterr().out

    # The worker processes built the robot from the task: one worker gives the same numbers.
    again = run_eval([short_eval_clip], ['pd', 'zero'], None, starts=2, workers=1,
                     robot='quadruped')
    assert again['overall'] == report['overall']


def test_eval_with_a_rat_clip_on_the_quadruped_is_refused(capsys):
    assert main(['eval', '--robot', 'quadruped', '--controller', 'zero', '--clips',
                 'rat7m_walk_2010_2310', '--no-progress']) == 1
    err = capsys.readouterr().err
    assert "clip 'rat7m_walk_2010_2310' does not fit robot 'quadruped'" in err


def test_eval_of_the_quadruped_policy_without_the_file_says_how_to_make_it(tmp_path, capsys):
    missing = tmp_path / 'not_trained_yet.onnx'
    text = open(QUADRUPED_YAML).read().replace(
        'policy: policies/quadruped_inverse_dynamics.onnx', f'policy: {missing}')
    robot_file = tmp_path / 'quadruped_copy.yaml'
    robot_file.write_text(text)
    assert main(['eval', '--robot', str(robot_file), '--no-progress']) == 1
    err = capsys.readouterr().err.strip()
    assert str(missing) in err and '`vrat train --robot quadruped`' in err
    assert '--controller pd zero' in err and '\n' not in err and 'Traceback' not in err


# ---------------------------------------------------------------------------------------------
# vrat run --robot


def test_run_quadruped_without_a_policy_file_says_how_to_make_one(capsys):
    path = resources.robot_default_policy(load_robot_spec('quadruped'))
    if os.path.exists(path):
        pytest.skip(f'{path} exists now; the message is tested with a copy of the robot file')
    assert main(['run', '--robot', 'quadruped', '--seconds', '0.1', '--no-progress']) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith('vrat run: ') and '\n' not in err
    assert path in err and '`vrat train --robot quadruped`' in err


def test_run_with_a_robot_file_whose_policy_is_missing(tmp_path, capsys):
    missing = tmp_path / 'none.onnx'
    text = open(QUADRUPED_YAML).read().replace(
        'policy: policies/quadruped_inverse_dynamics.onnx', f'policy: {missing}')
    robot_file = tmp_path / 'quadruped_copy.yaml'
    robot_file.write_text(text)
    assert main(['run', '--robot', str(robot_file), '--no-progress']) == 1
    err = capsys.readouterr().err.strip()
    assert f"'{missing}' does not exist" in err and 'vrat train --robot quadruped' in err
    assert '\n' not in err


@pytest.mark.ros
def test_run_quadruped_with_a_policy_reports_its_limits_and_baselines(tmp_path, quadruped,
                                                                      capsys):
    pytest.importorskip('rclpy', reason='rclpy is not installed')
    policy = make_robot_policy(str(tmp_path / 'quadruped_policy.onnx'), quadruped,
                               weight_scale=0.01)
    report_path = tmp_path / 'run.json'
    assert main(['run', '--robot', 'quadruped', '--policy', policy, '--seconds', '0.5',
                 '--no-progress', '--report', str(report_path),
                 '--namespace', f'/vrat_robot_run_{os.getpid()}']) == 0
    report = json.loads(report_path.read_text())
    assert report['robot'] == {'name': 'quadruped', 'file': os.path.abspath(QUADRUPED_YAML),
                               'command_interface': 'position'}
    assert report['clip'] == resources.data_path('clips', 'quadruped', EVAL_CLIP + '.npz')
    assert report['frames'] == 26 and report['sim_seconds'] == pytest.approx(0.5)
    assert not report['sim_halted'] and report['rejected_commands'] == 0
    threshold = dict(report['tracked_threshold'])
    threshold.pop('note')
    assert threshold == QUADRUPED_LIMITS
    assert report['tracking']['tracked_fraction'] > 0.0
    assert sorted(report['baselines']) == ['pd', 'zero_action']
    assert 'standing pose' in report['baselines']['zero_action']['note']
    for entry in report['baselines'].values():
        assert 0.0 < entry['tracked_fraction'] <= 1.0 and entry['joint_rmse_rad'] > 0.0
    assert json.loads(capsys.readouterr().out)['robot']['name'] == 'quadruped'


def test_eval_pd_on_an_effort_robot_without_gains_is_refused_before_any_episode(tmp_path,
                                                                                capsys):
    path = write_toy(tmp_path, TOY_YAML.replace('pd: {kp: 20.0, kd: 0.5}\n', ''))
    clip = make_robot_clip(str(tmp_path / 'clip.npz'), Robot(path))
    assert main(['eval', '--robot', path, '--controller', 'pd', '--clips', clip,
                 '--no-progress']) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("vrat eval: controller 'pd': ") and 'has no PD gains' in err
    assert '\n' not in err


def test_a_policy_is_refused_on_a_robot_controlled_at_another_rate(tmp_path, capsys):
    """The shipped 50 Hz quadruped policy on a copy of the robot file at 100 Hz."""
    import shutil
    from vrat_ros import resources
    from vrat_ros.cli import main
    policy = resources.data_path('policies', 'quadruped_inverse_dynamics.onnx')
    robots_dir = os.path.join(os.path.dirname(resources.__file__), '..', 'config', 'robots')
    source = os.path.join(robots_dir, 'quadruped.yaml')
    if not (os.path.isfile(policy) and os.path.isfile(source)):
        pytest.skip('needs the source checkout (config/robots) and the shipped policy')
    fast = tmp_path / 'quadruped_100hz.yaml'
    shutil.copy(source, fast)
    text = fast.read_text().replace('control_rate_hz: 50.0', 'control_rate_hz: 100.0')
    assert 'control_rate_hz: 100.0' in text
    fast.write_text(text)
    clip = resources.data_path('clips', 'quadruped', 'quadruped_eval_2010_2310.npz')
    assert main(['eval', '--robot', str(fast), '--clips', clip, '--policy', policy,
                 '--controller', 'policy', '--starts', '1', '--no-progress']) == 1
    err = capsys.readouterr().err
    assert 'trained at 50 Hz but the body is controlled at 100 Hz' in err
    pytest.importorskip('rclpy')
    assert main(['run', '--robot', str(fast), '--policy', policy, '--seconds', '0.5',
                 '--no-progress']) == 1
    assert "trained at 50 Hz but robot '" in capsys.readouterr().err


def test_run_refuses_seconds_shorter_than_one_control_period(capsys):
    pytest.importorskip('rclpy')
    from vrat_ros.cli import main
    assert main(['run', '--robot', 'quadruped', '--seconds', '0.001', '--no-progress']) == 1
    assert 'at least one control period (0.02 s at 50 Hz): got 0.001' in capsys.readouterr().err


def test_run_of_the_rat_refuses_a_quadruped_clip_naming_the_robot(capsys):
    from vrat_ros.cli import main
    assert main(['run', '--clip', 'quadruped_eval_2010_2310', '--seconds', '0.1',
                 '--no-progress']) == 1
    err = capsys.readouterr().err.strip()
    assert err.endswith("not for 'rat' (give --robot quadruped)")
    assert len(err.splitlines()) == 1


def test_training_actions_of_an_effort_robot_use_its_pd_gains(tmp_path):
    """train.RobotActions on the effort toy: torques = gain x action, PD from the file."""
    from vrat_ros.train import RobotActions
    robot = Robot(write_toy(tmp_path))  # effort, pd {kp: 20, kd: 0.5}
    actions = RobotActions(robot)
    assert actions.offset is None
    np.testing.assert_allclose(actions.kp, 20.0)
    np.testing.assert_allclose(actions.kd, 0.5)
    np.testing.assert_allclose(actions.per_rad, 20.0 / robot.actuator_gain)
    ref = robot.data.qpos.copy()
    ref[actions.qpos_idx] += 0.1
    action = actions.pd_action(ref, np.zeros(robot.model.nv - 6), robot.data.qpos,
                               robot.data.qvel)
    np.testing.assert_allclose(actions.command(action), 20.0 * 0.1)
    without = Robot(write_toy(tmp_path, TOY_YAML.replace('pd: {kp: 20.0, kd: 0.5}\n', '')))
    from vrat_ros.errors import VratError
    with pytest.raises(VratError, match="has no PD gains"):
        RobotActions(without)
