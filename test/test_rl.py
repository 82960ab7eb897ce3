"""Tests of the RL fine-tuning stage (vrat_ros/rl.py) and its place in `vrat train`."""

import copy
import shutil

import mujoco
import numpy as np
import pytest

from vrat_ros.clip import Clip
from vrat_ros.controllers import observation_from_state
from vrat_ros.policy import OnnxPolicy
from vrat_ros.resources import data_path
from vrat_ros.rl import DEFAULT_RL
from vrat_ros.rl import rl_settings
from vrat_ros.rl import TrackingEnvs
from vrat_ros.robots import Robot
from vrat_ros.train import default_config
from vrat_ros.train import load_checkpoint
from vrat_ros.train import robot_training_clips
from vrat_ros.train import RobotActions
from vrat_ros.train import train
from vrat_ros.train import validate_config

torch = pytest.importorskip('torch')


def _envs(n=4, **overrides):
    robot = Robot('quadruped')
    clips = [Clip.load(p).reorder_to(robot.hinge_names)
             for p in robot_training_clips('quadruped')[:2]]
    cfg = rl_settings({'rl': {'envs': n, 'threads': 1, **overrides}})
    return robot, clips, TrackingEnvs(robot, clips, 5, np.arange(len(robot.joint_names)), cfg)


def test_environments_step_the_robots_own_physics_and_observation():
    # One control step of the batched environments equals Robot.step_control from the
    # same state with the same targets, and their observation equals the policy node's.
    robot, clips, envs = _envs()
    envs.reset(np.arange(envs.n), np.random.default_rng(1))
    c, t = int(envs.clip[2]), int(envs.t[2])
    q0, v0 = envs.qpos()[2].copy(), envs.qvel()[2].copy()
    window = envs.ref_q[c, t + 1:t + 6]
    np.testing.assert_allclose(
        envs.observe()[2], observation_from_state(q0, v0, window, np.arange(16)), atol=1e-5)
    actions = np.random.default_rng(2).uniform(-0.3, 0.3, (envs.n, robot.nu))
    envs.step(actions)
    robot.reset(q0, v0)
    robot.step_control(RobotActions(robot).command(actions[2]))
    np.testing.assert_allclose(envs.qpos()[2], robot.data.qpos, atol=1e-9)
    assert envs.t[2] == t + 1 and envs.age[2] == 1


def test_rat_environments_step_the_rats_torque_physics(rat_body):
    # On the rat (effort: the action is the motor's ctrl) one control step equals
    # RatBody.set_ctrl_from_torque + 10 physics steps, and the rat's limits apply.
    from vrat_ros.resources import default_clip_path
    clip = Clip.load(default_clip_path()).reorder_to(rat_body.hinge_names)
    cfg = rl_settings({'rl': {'envs': 2, 'threads': 1}})
    envs = TrackingEnvs(rat_body, [clip], 5, rat_body.tracked_hinge_idx, cfg)
    assert envs.limits['root_dist_m'] == 0.1 and envs.substeps == 10
    envs.reset(np.arange(2), np.random.default_rng(0))
    q0, v0 = envs.qpos()[1].copy(), envs.qvel()[1].copy()
    actions = np.random.default_rng(1).uniform(-0.2, 0.2, (2, rat_body.nu))
    envs.step(actions)
    rat_body.reset(q0, v0)
    rat_body.set_ctrl_from_torque(actions[1] * rat_body.actuator_gain)
    rat_body.step(10)
    np.testing.assert_allclose(envs.qpos()[1], rat_body.data.qpos, atol=1e-9)


def test_reward_is_high_on_the_reference_and_a_lost_root_fails():
    robot, clips, envs = _envs(n=2)
    envs.reset(np.arange(2), np.random.default_rng(0))
    # Environment 1's trunk is moved 0.6 m away: beyond the quadruped's 0.5 m limit.
    envs.state[1, 1] += 0.6
    actions = RobotActions(robot)
    # Commanding the next reference frame's joint angles keeps environment 0 tracked.
    targets = envs.ref_q[envs.clip, envs.t + 1][:, robot.actuator_qposadr]
    reward, failed, truncated = envs.step(actions.action_of(targets))
    assert not failed[0] and failed[1]
    assert reward[1] == 0.0
    weights = DEFAULT_RL['reward']['weights']
    assert 0.8 * sum(weights.values()) < reward[0] <= sum(weights.values())
    assert not truncated.any()
    # With episodes ending only 0.7 m away, the same 0.6 m is not a failure (no root reward).
    robot, clips, envs = _envs(n=2, end_root_m=0.7)
    envs.reset(np.arange(2), np.random.default_rng(0))
    envs.state[1, 1] += 0.6
    targets = envs.ref_q[envs.clip, envs.t + 1][:, robot.actuator_qposadr]
    reward, failed, _ = envs.step(actions.action_of(targets))
    assert not failed.any()
    assert 0.0 < reward[1] < reward[0] - 0.9 * weights['root']
    # It loosens the end only: a limit below the body's own is refused, naming both.
    with pytest.raises(ValueError, match=r"'rl.end_root_m' \(0.2 m\) should be at least the "
                                         r"body's tracking limit \(0.5 m\)"):
        _envs(n=2, end_root_m=0.2)


def tiny_rl_config(iterations=3):
    config = default_config(small=True, robot='quadruped')
    config['data'].update({'n_episodes': 4, 'episode_steps': 30, 'n_workers': 1})
    config['rounds'].update({'count': 0})
    config['model']['hidden'] = [32, 32]
    config['train'].update({'steps': 20, 'batch_size': 64, 'checkpoint_every': 20,
                            'log_every': 10})
    config['eval'].update({'every': 20, 'starts_s': [0.0], 'seconds': 0.3})
    config['rl'] = {'iterations': iterations, 'envs': 4, 'steps_per_iteration': 12,
                    'minibatch': 16, 'epochs': 2, 'value_warmup': 1, 'eval_every': 2,
                    'checkpoint_every': 1, 'log_every': 1, 'threads': 1}
    return config


def test_rl_stage_changes_the_policy_and_resumes_exactly(tmp_path):
    config = tiny_rl_config()
    full = train(config, str(tmp_path / 'full'), progress=False)
    assert full['complete'] and full['rl_iterations'] == 3
    assert [h['iteration'] for h in full['rl_history']] == [1, 2, 3]
    # Iteration 1 trains only the critic; later ones move the policy.
    assert full['rl_history'][0]['policy_loss'] is None
    assert full['rl_history'][1]['policy_loss'] is not None
    assert [e.get('rl_iteration') for e in full['evals']] == [None, 2, 3]
    model, ckpt = load_checkpoint(str(tmp_path / 'full' / 'checkpoint.pt'), which='latest')
    imitation = ckpt['best']['model'] if ckpt['best'].get('rl_iteration') is None else None
    if imitation is not None:  # the best weights are the imitation ones: RL moved on
        assert not torch.equal(model.state_dict()['head.weight'], imitation['head.weight'])
    assert (tmp_path / 'full' / 'policy.onnx').is_file()

    # Interrupted after 1 and 2 iterations, resumed: the same weights and history.
    part = tmp_path / 'part'
    shutil.copytree(tmp_path / 'full', part,
                    ignore=shutil.ignore_patterns('checkpoint.pt', 'policy.onnx'))
    first = train(config, str(part), progress=False, stop_after_rl_iterations=1)
    assert first['rl_iterations'] == 1 and not first['complete']
    assert not (part / 'policy.onnx').exists()
    train(config, str(part), resume=True, progress=False, stop_after_rl_iterations=2)
    # A config that spells out RL defaults is the same run (it used to be refused).
    spelled = copy.deepcopy(config)
    spelled['rl'].update({'gamma': DEFAULT_RL['gamma'], 'lr': DEFAULT_RL['lr']})
    last = train(spelled, str(part), resume=True, progress=False)
    assert last['complete'] and last['rl_history'] == full['rl_history']
    for key in ('n_episodes', 'n_transitions', 'n_examples'):
        assert last[key] == full[key], key
    contract = OnnxPolicy(str(tmp_path / 'full' / 'policy.onnx')).contract['training']
    assert contract['rl_iterations'] == 3
    assert contract['selected_rl_iteration'] == full['best_rl_iteration']
    for which in ('latest', 'best'):
        a = load_checkpoint(str(tmp_path / 'full' / 'checkpoint.pt'), which=which)[0]
        b = load_checkpoint(str(part / 'checkpoint.pt'), which=which)[0]
        for k, v in a.state_dict().items():
            assert torch.equal(v, b.state_dict()[k]), k


@pytest.mark.parametrize('rl, robot, message', [
    ({'iterations': 5, 'gama': 0.9}, 'quadruped', "unknown training setting 'gama' in 'rl'"),
    ({'iterations': -1}, 'quadruped', "'rl.iterations' should be an integer >= 0"),
    ({'iterations': 10 ** 30}, 'quadruped', "'rl.iterations' should be an integer >= 0 and"),
    ({'lr': 0}, 'quadruped', "'rl.lr' should be a number > 0"),
    ({'gamma': 1.5}, 'quadruped', "'rl.gamma' should be a number > 0 and <= 1"),
    ({'init_std': 1e-50}, 'quadruped', "'rl.init_std' should be a number >= 0.0001"),
    ({'max_episode_s': 1e-9}, 'quadruped', "'rl.max_episode_s' should be a number >= 0.1"),
    ({'envs': 1, 'steps_per_iteration': 1}, 'quadruped', "should give 2 to 1048576 samples"),
    ({'envs': 4096, 'steps_per_iteration': 10 ** 5}, 'quadruped', 'should give 2 to'),
    ({'iterations': 5, 'value_warmup': 5}, 'quadruped', "'rl.value_warmup' (5) should be below"),
    ({'reward': {'weights': {'trunk': 1.0}}}, 'quadruped', "'rl.reward.weights' should have"),
    ({'reward': {'weights': {'root': 0, 'joints': 0, 'orientation': 0}}}, 'quadruped',
     'at least one term a weight > 0'),
    ({'value_hidden': []}, 'quadruped', "'rl.value_hidden' should be a list"),
    ({'init_std_of_labels': 0}, 'rat', "'rl.init_std_of_labels' should be a number >= 0.001"),
    ({'value_hidden': [10 ** 23]}, 'quadruped', "'rl.value_hidden' should be a list"),
    ('many', 'quadruped', "setting 'rl' should be null or a mapping"),
    ({'end_root_m': -0.1}, 'rat', "'rl.end_root_m' should be a number > 0"),
    ({'reward': {'weights': {'motor_joints': 1e308}}}, 'rat',
     "'rl.reward.weights.motor_joints' should be a number >= 0 and <= 1000"),
    ({'reward': {'motor_joints_rad2': 0}}, 'rat', "'rl.reward.motor_joints_rad2' should be"),
    ({'reward': {'weights': {'motor_joints': -1}}}, 'rat',
     "'rl.reward.weights.motor_joints' should be a number >= 0"),
])
def test_rl_settings_are_checked(rl, robot, message):
    config = default_config(small=True, robot=robot)
    config['rl'] = rl
    with pytest.raises(ValueError, match=message.replace('(', r'\(').replace(')', r'\)')):
        validate_config(config)


def test_configs_without_an_rl_section_still_validate():
    config = default_config(small=True, robot='quadruped')
    del config['rl']
    validate_config(config)
    assert rl_settings(config)['iterations'] == 0


def test_held_out_clip_is_not_an_rl_clip():
    held_out = data_path('clips', 'quadruped', 'quadruped_eval_2010_2310.npz')
    assert held_out not in default_config(robot='quadruped')['clips']


def test_effort_robot_environments_step_like_the_robot(tmp_path):
    # A user's effort robot (the toy fixture, geared motors): the action is its ctrl.
    from fixtures import make_robot_clip
    from fixtures import write_toy
    robot = Robot(write_toy(tmp_path))
    clip = Clip.load(make_robot_clip(str(tmp_path / 'toy.npz'), robot))
    envs = TrackingEnvs(robot, [clip], 3, np.arange(len(robot.joint_names)),
                        rl_settings({'rl': {'envs': 2, 'threads': 1}}))
    envs.reset(np.arange(2), np.random.default_rng(0))
    q0, v0 = envs.qpos()[0].copy(), envs.qvel()[0].copy()
    actions = np.random.default_rng(1).uniform(-0.5, 0.5, (2, robot.nu))
    envs.step(actions)
    robot.reset(q0, v0)
    robot.set_command(RobotActions(robot).command(actions[0]))
    robot.step(robot.n_substeps)
    np.testing.assert_allclose(envs.qpos()[0], robot.data.qpos, atol=1e-9)


def test_robots_rl_cannot_drive_get_no_rl_stage_by_default(tmp_path):
    # Motors with actuator dynamics cannot carry the PD law into the rollout model: the
    # default configuration leaves RL out and an explicit 'rl' is refused up front.
    from fixtures import TOY_POSITION_YAML
    from fixtures import TOY_XML
    from fixtures import write_toy
    from vrat_ros.rl import unsupported_reason
    xml = TOY_XML.replace('<motor ', '<general dyntype="filter" dynprm="0.05" ')
    path = write_toy(tmp_path, TOY_POSITION_YAML, xml)
    assert 'RL fine-tuning needs joint motors without actuator dynamics' in \
        unsupported_reason(Robot(path))
    assert default_config(robot=path)['rl'] is None
    assert default_config(robot='quadruped')['rl'] == {'iterations': 600}
    (tmp_path / 'effort').mkdir()
    assert unsupported_reason(Robot(write_toy(tmp_path / 'effort'))) is None


def test_a_config_file_sets_any_rl_setting_over_a_robots_default(tmp_path, capsys):
    # The quadruped's default 'rl' names only its iterations; a --config file may still set
    # every setting of DEFAULT_RL (and the reward's), which the CLI merges in.
    import json
    from vrat_ros.cli import _merge
    config = default_config(robot='quadruped')
    _merge(config, {'rl': {'envs': 32, 'reward': {'root_m': 0.1}}})
    assert config['rl'] == {'iterations': 600, 'envs': 32, 'reward': {'root_m': 0.1}}
    validate_config(config)
    assert rl_settings(config)['reward']['weights'] == DEFAULT_RL['reward']['weights']
    path = tmp_path / 'c.json'
    path.write_text(json.dumps({'rl': {'envs': 0}}))
    from vrat_ros.cli import main
    assert main(['train', '--robot', 'quadruped', '--config', str(path),
                 '--out', str(tmp_path / 'run')]) != 0
    assert "'rl.envs' should be an integer >= 1" in capsys.readouterr().err


def test_diverging_ppo_stops_with_a_clear_error():
    from vrat_ros.rl import PPOFineTuner
    from vrat_ros.rl import RLDivergedError
    from vrat_ros.train import make_model
    robot, clips, envs = _envs(n=2, steps_per_iteration=4, value_warmup=0)
    model = make_model(envs.observe().shape[1], robot.nu, default_config()['model'])
    with torch.no_grad():
        model.head.bias.fill_(float('nan'))
    tuner = PPOFineTuner(model, envs, envs.cfg, seed=0)
    with pytest.raises(RLDivergedError, match='diverged at iteration 1: the policy gave'):
        tuner.iterate()


def test_noise_can_follow_each_actuators_label_spread():
    from vrat_ros.rl import PPOFineTuner
    from vrat_ros.train import make_model
    robot, clips, envs = _envs(n=2, init_std_of_labels=0.5)
    model = make_model(envs.observe().shape[1], robot.nu, default_config()['model'])
    with torch.no_grad():
        model.act_std.copy_(torch.linspace(0.01, 0.2, robot.nu))
    tuner = PPOFineTuner(model, envs, envs.cfg, seed=0)
    np.testing.assert_allclose(torch.exp(tuner.log_std).detach().numpy(),
                               0.5 * np.linspace(0.01, 0.2, robot.nu), rtol=1e-5)
    plain = PPOFineTuner(model, _envs(n=2)[2], rl_settings({'rl': {'envs': 2}}), seed=0)
    np.testing.assert_allclose(torch.exp(plain.log_std).detach().numpy(), 0.05, rtol=1e-5)


def test_smoothness_term_rewards_unchanged_actions():
    only_smooth = {'weights': {'root': 0.0, 'joints': 0.0, 'orientation': 0.0, 'smooth': 1.0}}
    robot, clips, envs = _envs(n=2, reward=only_smooth)
    envs.reset(np.arange(2), np.random.default_rng(0))
    actions = RobotActions(robot)
    a = actions.action_of(envs.ref_q[envs.clip, envs.t + 1][:, robot.actuator_qposadr])
    reward, failed, _ = envs.step(a)          # no previous action: full reward
    np.testing.assert_allclose(reward, 1.0)
    b = a.copy()
    b[1] += 0.1                               # mean squared change 0.01 = smooth_action
    reward, failed, _ = envs.step(b)
    assert not failed.any()
    np.testing.assert_allclose(reward, [1.0, np.exp(-1.0)], rtol=1e-9)
    # A resumed run keeps the last actions (exact resume with the term on).
    snap = envs.snapshot()
    envs.has_prev[:] = False
    envs.restore(snap)
    assert envs.has_prev.all() and np.array_equal(envs.prev, b)


def test_motor_joint_term_sees_only_the_joints_with_a_motor_of_their_own(rat_body):
    # On the rat the spine and neck move through shared tendons: an error there must not
    # lower the motor-joint term, an error on a limb joint must, by its mean squared error.
    from vrat_ros.resources import default_clip_path
    from vrat_ros.tracking import directly_actuated_hinges
    clip = Clip.load(default_clip_path()).reorder_to(rat_body.hinge_names)
    only_motor = {'weights': {'root': 0.0, 'joints': 0.0, 'orientation': 0.0,
                              'motor_joints': 1.0}}
    envs = TrackingEnvs(rat_body, [clip], 5, rat_body.tracked_hinge_idx,
                        rl_settings({'rl': {'envs': 2, 'threads': 1, 'reward': only_motor}}))
    motor = directly_actuated_hinges(rat_body)
    assert len(motor) == 30 and len(envs.motor_joints) == 30
    tendon = np.setdiff1d(rat_body.tracked_hinge_idx, motor)
    ref = np.repeat(envs.ref_q[0, 10][None], 2, axis=0)
    q = ref.copy()
    q[0, 7 + tendon[0]] += 0.3                  # a spine or neck joint: no effect
    q[1, 7 + motor[0]] += 0.05 * np.sqrt(30)   # mean squared error 0.0025 = motor_joints_rad2
    np.testing.assert_allclose(envs.reward_of(q, ref, np.zeros(2)), [1.0, np.exp(-1.0)],
                               rtol=1e-9)
    # Off by default: the default reward is unchanged by a limb error's motor-joint term.
    assert DEFAULT_RL['reward']['weights']['motor_joints'] == 0.0


def test_root_velocity_term_compares_the_roots_motion_over_the_step(rat_body):
    # The term rewards moving the root as fast as the reference root moves: a walking
    # reference left behind by a body standing still must score below one that keeps up.
    from vrat_ros.resources import data_path
    clip = Clip.load(data_path('clips', 'rat7m_walk_2010_2310.npz')).reorder_to(
        rat_body.hinge_names)
    only_vel = {'weights': {'root': 0.0, 'joints': 0.0, 'orientation': 0.0,
                            'root_velocity': 1.0}, 'root_velocity_m_s': 0.1}
    envs = TrackingEnvs(rat_body, [clip], 5, rat_body.tracked_hinge_idx,
                        rl_settings({'rl': {'envs': 2, 'threads': 1, 'reward': only_vel}}))
    ref = np.repeat(envs.ref_q[0, 10][None], 2, axis=0)
    np.testing.assert_allclose(envs.reward_of(ref, ref, np.zeros(2), np.array([0.0, 0.1])),
                               [1.0, np.exp(-1.0)], rtol=1e-12)
    with pytest.raises(ValueError, match='needs root_velocity_error'):
        envs.reward_of(ref, ref, np.zeros(2))
    # One step from t = 30: the reward is exp(-(v / 0.1)^2) with v the distance between the
    # root's and the reference root's mean velocities over the step, from the states.
    envs.reset(np.arange(2), np.random.default_rng(0))
    envs.clip[:] = 0
    envs.t[:] = 30
    for i in range(2):
        envs._scratch.qpos[:] = envs.ref_q[0, 30]
        envs._scratch.qvel[:] = envs.ref_v[0, 30] * (1.0 - i)  # env 1 starts at rest
        mujoco.mj_forward(envs.model, envs._scratch)
        mujoco.mj_getState(envs.model, envs._scratch, envs.state[i],
                           mujoco.mjtState.mjSTATE_FULLPHYSICS)
    before = envs.qpos()[:, :3].copy()
    reward, failed, _ = envs.step(np.zeros((2, rat_body.nu)))
    assert not failed.any()
    moved = envs.qpos()[:, :3] - before
    ref_moved = envs.ref_q[0, 31, :3] - envs.ref_q[0, 30, :3]
    v = np.linalg.norm(moved - ref_moved, axis=1) / envs.dt
    np.testing.assert_allclose(reward, np.exp(-(v / 0.1) ** 2), rtol=1e-9)
    assert np.linalg.norm(ref_moved) / envs.dt > 0.05  # the reference root does move here
    assert reward[0] > reward[1]                       # keeping up beats starting at rest
    assert DEFAULT_RL['reward']['weights']['root_velocity'] == 0.0
