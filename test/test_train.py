"""Tests of data generation, relabelling and training (tiny configurations)."""

import pathlib
import shutil

import numpy as np
import pytest

from vrat_ros.clip import Clip
from vrat_ros.controllers import observation_from_state
from vrat_ros.controllers import PolicyController
from vrat_ros.policy import OnnxPolicy
from vrat_ros.train import batch_observations
from vrat_ros.train import default_config
from vrat_ros.train import generate_episodes
from vrat_ros.train import load_checkpoint
from vrat_ros.train import make_model
from vrat_ros.train import numpy_policy
from vrat_ros.train import relabel
from vrat_ros.train import train

torch = pytest.importorskip('torch')

DEFAULT_CLIP = (pathlib.Path(__file__).resolve().parents[1]
                / 'vrat_ros' / 'data' / 'clips' / 'rat23_dannce_1000f.npz')


def tiny_config(seed=0, n_workers=1):
    if not DEFAULT_CLIP.is_file():
        pytest.skip(f'default clip {DEFAULT_CLIP} is missing')
    config = default_config(small=True)
    config['seed'] = seed
    config['clips'] = [str(DEFAULT_CLIP)]
    config['data'].update({'n_episodes': 6, 'episode_steps': 40, 'n_workers': n_workers})
    config['rounds'].update({'count': 1, 'n_episodes': 4, 'steps': 60})
    config['relabel']['val_fraction'] = 0.2
    config['model']['hidden'] = [32, 32]
    config['train'].update({'steps': 80, 'batch_size': 64, 'lr': 3e-3,
                            'checkpoint_every': 40, 'log_every': 20})
    config['eval'].update({'every': 40, 'starts_s': [0.0], 'seconds': 0.3})
    return config


def _weights(out_dir, which='latest'):
    model, ckpt = load_checkpoint(str(pathlib.Path(out_dir) / 'checkpoint.pt'), which=which)
    return {k: v.clone() for k, v in model.state_dict().items()}, ckpt


def _assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_defaults_have_the_documented_sizes():
    config = default_config()
    assert config['model']['hidden'] == [512, 512, 512]
    assert config['relabel']['frames'] == 5
    small = default_config(small=True)
    assert small['train']['steps'] < config['train']['steps']


def test_numpy_policy_matches_torch_model():
    torch.manual_seed(0)
    model = make_model(346, 38, {'hidden': [16, 8], 'activation': 'elu'})
    with torch.no_grad():
        model.obs_std.uniform_(0.5, 2.0)
        model.act_std.fill_(0.3)
        model.act_lo.fill_(-0.2)
    obs = np.random.default_rng(0).standard_normal((5, 346)).astype(np.float32)
    state = {k: v.numpy().astype(np.float64) for k, v in model.state_dict().items()}
    with torch.no_grad():
        expected = model(torch.from_numpy(obs))[0].numpy()
    np.testing.assert_allclose(numpy_policy(state, 'elu')(obs), expected, atol=1e-5)


def test_batch_observations_match_build_observation(rat_body):
    rng = np.random.default_rng(0)
    qpos = np.tile(rat_body.default_qpos(), (4, 1))
    qpos[:, :3] += 0.01 * rng.standard_normal((4, 3))
    quat = rng.standard_normal((4, 4))
    qpos[:, 3:7] = quat / np.linalg.norm(quat, axis=1, keepdims=True)
    qpos[:, 7:] += 0.1 * rng.standard_normal((4, rat_body.nq - 7))
    qvel = rng.standard_normal((4, rat_body.nv))
    windows = qpos[:, None, :] + 0.01 * rng.standard_normal((4, 5, rat_body.nq))
    windows[:, :, 3:7] /= np.linalg.norm(windows[:, :, 3:7], axis=2, keepdims=True)
    batch = batch_observations(qpos, qvel, windows, rat_body.tracked_hinge_idx)
    assert batch.shape == (4, 346)
    for i in range(4):
        single = observation_from_state(qpos[i], qvel[i], windows[i], rat_body.tracked_hinge_idx)
        np.testing.assert_allclose(batch[i], single, rtol=1e-6, atol=1e-7)


def _assert_same_episodes(one, two):
    assert len(one) == len(two)
    for a, b in zip(one, two):
        for key in ('qpos', 'qvel', 'ctrl'):
            np.testing.assert_array_equal(a[key], b[key])


def test_data_do_not_depend_on_worker_count(rat_body):
    one = generate_episodes(tiny_config(n_workers=1))
    two = generate_episodes(tiny_config(n_workers=2))
    assert len(one) == 6
    _assert_same_episodes(one, two)
    assert any(len(e['ctrl']) > 5 for e in one)
    assert all(np.all(np.abs(e['ctrl']) <= 1.0) for e in one)

    # A closed-loop round: a (random) policy collects; still independent of the workers.
    torch.manual_seed(0)
    model = make_model(346, rat_body.nu, {'hidden': [16], 'activation': 'elu'})
    with torch.no_grad():
        model.act_std.fill_(0.01)
    state = {k: v.numpy().astype(np.float64) for k, v in model.state_dict().items()}
    one = generate_episodes(tiny_config(n_workers=1), 1, state)
    two = generate_episodes(tiny_config(n_workers=2), 1, state)
    assert len(one) == 4
    _assert_same_episodes(one, two)

    # Hindsight labels: the first window of an episode is the states reached next.
    obs, act, eps = relabel(one, tiny_config(), rat_body.tracked_hinge_idx, seed=0)
    e0 = one[0]
    expected = observation_from_state(e0['qpos'][0], e0['qvel'][0], e0['qpos'][1:6],
                                      rat_body.tracked_hinge_idx)
    np.testing.assert_allclose(obs[0], expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(act[0], e0['ctrl'][0].astype(np.float32))
    assert eps[0] == 0


def test_tiny_training_lowers_loss_and_exports(tmp_path):
    summary = train(tiny_config(), str(tmp_path / 'run'), progress=False)
    assert summary['complete']
    assert summary['final_loss'] < summary['initial_loss']
    assert summary['best_step'] in (40, 80, 120, 140)
    assert summary['n_episodes'] == 10
    policy = OnnxPolicy(summary['policy'])
    assert policy.contract['training']['steps'] == 140
    assert policy.contract['training']['clips'][0]['file'] == DEFAULT_CLIP.name
    assert policy.layer_names == ['hidden_0', 'hidden_1']


def test_same_seed_gives_identical_weights(tmp_path):
    train(tiny_config(), str(tmp_path / 'a'), progress=False, export=False)
    train(tiny_config(), str(tmp_path / 'b'), progress=False, export=False)
    a, _ = _weights(tmp_path / 'a')
    b, _ = _weights(tmp_path / 'b')
    _assert_same_weights(a, b)
    train(tiny_config(seed=1), str(tmp_path / 'c'), progress=False, export=False)
    c, _ = _weights(tmp_path / 'c')
    assert not torch.equal(a['head.weight'], c['head.weight'])


@pytest.mark.parametrize('ema_decay', [None, 0.9], ids=['raw_weights', 'ema_weights'])
def test_resume_equals_uninterrupted_run(tmp_path, ema_decay):
    config = tiny_config()
    config['train']['ema_decay'] = ema_decay
    full = tmp_path / 'full'
    train(config, str(full), progress=False, export=False)

    part = tmp_path / 'part'
    # Round 0's data are reused; round 1's are collected again by the resumed run's policy.
    shutil.copytree(full, part,
                    ignore=shutil.ignore_patterns('checkpoint.pt', 'episodes_r1.npz'))
    # Interrupted inside round 0, then at the round boundary, then inside round 1.
    for stop in (30, 80, 110):
        partial = train(config, str(part), resume=True, progress=False,
                        stop_after_steps=stop, export=False)
        assert partial['step'] == stop and not partial['complete']
    second = train(config, str(part), resume=True, progress=False, export=False)
    assert second['complete'] and second['step'] == 140

    for which in ('latest', 'best'):
        a, ckpt_a = _weights(full, which)
        b, ckpt_b = _weights(part, which)
        _assert_same_weights(a, b)
    assert ckpt_a['history'] == ckpt_b['history']
    assert ckpt_a['best']['step'] == ckpt_b['best']['step']


def test_resume_refuses_a_different_config(tmp_path):
    train(tiny_config(), str(tmp_path), progress=False, stop_after_steps=20, export=False)
    other = tiny_config()
    other['train']['lr'] = 1e-2
    with pytest.raises(ValueError, match='train'):
        train(other, str(tmp_path), resume=True, progress=False)


def test_training_clips_ship_and_keep_away_from_the_held_out_frames():
    from vrat_ros import resources
    from vrat_ros.clip import Clip
    from vrat_ros.train import DEFAULT_TRAINING_CLIPS
    config = default_config()
    assert config['clips'] == default_config(small=True)['clips']
    # The default (the quick recipe) trains on the DANNCE clip alone; the shipped policy's
    # config (config/train_rat.json) lists the Rat7M training clips beside it.
    assert [pathlib.Path(p).name for p in config['clips']] == ['rat23_dannce_1000f.npz']
    assert pathlib.Path(DEFAULT_TRAINING_CLIPS[0]).name == 'rat23_dannce_1000f.npz'
    held_out = [Clip.load(resources.resolve_clip_path(n)).meta['source_frames']
                for n in resources.HELD_OUT_CLIPS]
    rat7m_frames = 0
    for path in DEFAULT_TRAINING_CLIPS:
        assert pathlib.Path(path).is_file(), path
        meta = Clip.load(path).meta
        if meta.get('source_format') != 'rat7m':
            continue
        start, stop = meta['source_frames']
        rat7m_frames += stop - start
        assert meta['fit_options']['fill_gaps'] and meta['fit_options']['smooth_s'] > 0
        for h_start, h_stop in held_out:
            # At least 30 frames (1 s at 30 Hz) between a training clip and a held-out one.
            assert stop + 30 <= h_start or h_stop + 30 <= start, (path, h_start, h_stop)
    assert rat7m_frames == 980 + 90 + 370


# -- settings checked before any work, and no empty output folder left behind -----------------

def test_config_types_are_checked_naming_the_setting():
    from vrat_ros.train import validate_config
    config = default_config(small=True)
    validate_config(config)
    config['train']['lr'] = 1  # an int passes for a float
    config['train']['ema_decay'] = 0.99  # optional settings take a number or null
    config['model']['action_bound_quantile'] = None
    validate_config(config)
    for section, key, value, message in [
            (None, 'seed', 'abc', "setting 'seed' should be an integer: got 'abc' \\(str\\)"),
            (None, 'seed', True, "setting 'seed' should be an integer"),
            ('model', 'hidden', [128.0], r"setting 'model.hidden\[0\]' should be an integer"),
            ('data', 'speed_range', 'fast', "setting 'data.speed_range' should be a list"),
            ('eval', 'seconds', 'all', "setting 'eval.seconds' should be a number or null"),
            (None, 'clips', 'a.npz', "setting 'clips' should be a list")]:
        bad = default_config(small=True)
        (bad if section is None else bad[section])[key] = value
        with pytest.raises(ValueError, match=message):
            validate_config(bad)
    bad = default_config(small=True)
    bad['rounds']['data']['no_such'] = 1
    with pytest.raises(ValueError, match="unknown training setting 'no_such' in 'rounds.data'"):
        validate_config(bad)


def test_episode_length_is_bounded_for_train_and_bench_workers():
    from vrat_ros.train import MAX_EPISODE_STEPS
    from vrat_ros.train import round_settings
    config = tiny_config()
    config['data']['episode_steps'] = 100_000_000  # `vrat bench-workers --steps 100000000`
    with pytest.raises(ValueError, match=f"'data.episode_steps' should be an integer from 1 "
                                         f'to {MAX_EPISODE_STEPS}: got 100000000'):
        generate_episodes(config, workers=1)  # refused before any episode is built
    config = tiny_config()
    config['rounds']['data']['episode_steps'] = 0
    assert round_settings(config, 0)['episode_steps'] == 40
    with pytest.raises(ValueError, match="'rounds.data.episode_steps'"):
        round_settings(config, 1)


def test_a_failed_run_leaves_no_empty_output_folder(tmp_path, monkeypatch):
    import vrat_ros.train as train_module
    config = tiny_config()
    out = tmp_path / 'new' / 'run'
    with pytest.raises(Exception, match="training clip '.*nope.npz' does not exist"):
        train({**config, 'clips': [str(tmp_path / 'nope.npz')]}, str(out), progress=False)
    assert not (tmp_path / 'new').exists()

    def no_cluster(*args, **kwargs):
        raise ValueError('could not connect to the Ray cluster')
    monkeypatch.setattr(train_module, 'generate_episodes', no_cluster)
    with pytest.raises(ValueError, match='Ray cluster'):
        train(config, str(out), progress=False, ray_address='1.2.3.4:1')
    assert not (tmp_path / 'new').exists()  # the new folder and its new parent are gone
    out.mkdir(parents=True)
    with pytest.raises(ValueError, match='Ray cluster'):
        train(config, str(out), progress=False, ray_address='1.2.3.4:1')
    assert out.is_dir()  # a folder that existed before stays, empty or not
    (out / 'notes.txt').write_text('mine')
    with pytest.raises(ValueError, match='Ray cluster'):
        train(config, str(tmp_path / 'new' / 'run2'), progress=False)
    assert sorted(p.name for p in (tmp_path / 'new').iterdir()) == ['run']
    assert (out / 'notes.txt').read_text() == 'mine'


def tiny_robot_config(seed=0):
    """A tiny quadruped configuration on its shipped retargeted training clips."""
    config = default_config(small=True, robot='quadruped')
    assert config['clips'], 'the quadruped training clips are missing'
    config['seed'] = seed
    config['data'].update({'n_episodes': 6, 'episode_steps': 30, 'n_workers': 1})
    config['rounds'].update({'count': 1, 'n_episodes': 2, 'steps': 40})
    config['relabel']['val_fraction'] = 0.2
    config['model']['hidden'] = [32, 32]
    config['train'].update({'steps': 60, 'batch_size': 64, 'lr': 3e-3,
                            'checkpoint_every': 50, 'log_every': 20})
    config['eval'].update({'every': 50, 'starts_s': [0.0], 'seconds': 0.3})
    return config


def test_robot_training_exports_a_position_contract(tmp_path):
    from vrat_ros.robots import Robot
    from vrat_ros.train import RobotActions
    robot = Robot('quadruped')
    summary = train(tiny_robot_config(), str(tmp_path / 'run'), progress=False)
    assert summary['complete']
    assert summary['final_loss'] < summary['initial_loss']
    policy = OnnxPolicy(summary['policy'])
    contract = policy.contract
    assert contract['command_interface'] == 'position'
    assert contract['root_joint'] == 'root'
    assert contract['joint_names'] == robot.joint_names
    assert contract['actuator_names'] == robot.actuator_names
    assert contract['body']['name'] == 'quadruped'
    assert contract['reference']['dt_s'] == pytest.approx(0.02)
    # The zero action holds the standing pose: offsets are its actuated joint angles.
    actions = RobotActions(robot)
    stand = robot.stand_qpos()
    np.testing.assert_allclose(contract['action_offset'], stand[actions.qpos_idx])
    np.testing.assert_allclose(policy.command_from_action(np.zeros(robot.nu)),
                               stand[actions.qpos_idx])
    # Every joint limit is reachable: offset + scale reaches the farther limit.
    lo, hi = robot.model.jnt_range[robot.model.actuator_trnid[:, 0]].T
    reach = np.maximum(hi - stand[actions.qpos_idx], stand[actions.qpos_idx] - lo)
    np.testing.assert_allclose(contract['action_scale'], reach)
    assert contract['training']['config']['robot'] == 'quadruped'


def test_robot_pd_actions_reproduce_the_pd_law():
    """Round 0's PD action, sent through the contract mapping, is the reference target."""
    from vrat_ros.robots import Robot
    from vrat_ros.train import RobotActions
    robot = Robot('quadruped')
    actions = RobotActions(robot)
    ref = robot.stand_qpos()
    ref[actions.qpos_idx] += 0.1
    action = actions.pd_action(ref, np.zeros(robot.nq - 7), robot.data.qpos, robot.data.qvel)
    np.testing.assert_allclose(actions.command(action), ref[actions.qpos_idx])
    # The relabelling feedback: a constant 0.1 rad error on each actuated joint asks for
    # 0.1 rad more target, in action units; passive joints (the ankles) get none.
    gains = actions.feedback(len(robot.joint_names))
    error = np.full(robot.nu, 0.1)
    np.testing.assert_allclose(gains[:, actions.hinge_idx] @ error * actions.scale, error)
    ankles = [i for i, n in enumerate(robot.joint_names) if n.startswith('ankle')]
    assert np.all(gains[:, ankles] == 0.0)


def test_robot_config_is_checked_and_needs_clips(tmp_path, capsys):
    from vrat_ros.train import validate_config
    config = default_config(small=True, robot='quadruped')
    config['robot'] = 3
    with pytest.raises(ValueError, match="'robot'"):
        validate_config(config)
    from vrat_ros import cli
    from vrat_ros.robots import robot_path
    # A robot of the user's, by path, without clips of its own: named before any work.
    text = pathlib.Path(robot_path('quadruped')).read_text()
    assert 'name: quadruped' in text
    mine = tmp_path / 'my_quadruped.yaml'
    mine.write_text(text.replace('name: quadruped', 'name: my_quadruped'))
    rc = cli.main(['train', '--robot', str(mine), '--small', '--out', str(tmp_path / 'out')])
    assert rc == 1
    assert "robot 'my_quadruped' has no shipped training clips" in capsys.readouterr().err
    assert not (tmp_path / 'out').exists()
    rc = cli.main(['train', '--robot', str(tmp_path / 'nothing.yaml'), '--small',
                   '--out', str(tmp_path / 'out')])
    assert rc == 1
    assert 'is neither a robot file nor a known robot name' in capsys.readouterr().err


def test_robot_training_is_deterministic(tmp_path):
    config = tiny_robot_config()
    config['train']['steps'] = 20
    config['rounds'].update({'count': 0})
    train(config, str(tmp_path / 'a'), progress=False, export=False)
    config['data']['n_workers'] = 2   # the data do not depend on the worker count
    train(config, str(tmp_path / 'b'), progress=False, export=False)
    a, _ = _weights(tmp_path / 'a')
    b, _ = _weights(tmp_path / 'b')
    _assert_same_weights(a, b)


def config_file(name: str) -> dict:
    """The settings of a config file shipped in the checkout's config/ folder."""
    import json
    with open(pathlib.Path(__file__).resolve().parents[1] / 'config' / name) as f:
        return json.load(f)


def documented_config(name: str, robot: str = 'rat') -> dict:
    """What `vrat train [--robot ROBOT] --config config/NAME` runs: validated settings."""
    from vrat_ros.cli import _merge
    from vrat_ros.train import validate_config
    config = default_config(robot=robot)
    _merge(config, config_file(name))
    validate_config(config)
    return config


def tiny_expert_config():
    """`tiny_robot_config` with the shipped MPC-expert settings, the MPC made small."""
    from vrat_ros.cli import _merge
    config = tiny_robot_config()
    assert config['expert'] is None  # the expert is opt-in
    update = config_file('train_mpc_expert.json')
    for section in ('data', 'rounds', 'train'):
        update.pop(section)
    _merge(config, update)
    config['expert']['mpc'].update({'samples': 4, 'horizon_steps': 4, 'knots': 2,
                                    'iterations': 1})
    return config


def test_expert_training_exports_a_residual_policy(tmp_path):
    config = tiny_expert_config()
    summary = train(config, str(tmp_path / 'run'), progress=False)
    assert summary['complete'] and summary['final_loss'] < summary['initial_loss']
    policy = OnnxPolicy(summary['policy'])
    assert policy.reference_frames == 10
    assert policy.contract['training']['config']['model']['residual'] is True


def test_robot_expert_labels_every_step(tmp_path):
    # A position robot's data are labelled by the sampling MPC: one example per step, the
    # targets it was given as the window and its own action (before the collection noise)
    # as the label; the applied action differs from the label by that noise.
    from vrat_ros.train import _RobotEpisodeGenerator
    from vrat_ros.train import expert_settings
    from vrat_ros.train import generate_episodes
    from vrat_ros.train import relabel
    config = tiny_expert_config()
    episodes = generate_episodes(config, 0, workers=1)
    assert len(episodes) == 6
    for ep in episodes:
        n = len(ep['ctrl'])
        k = config['relabel']['frames']
        assert ep['label'].shape == (n, 12) and ep['window'].shape == (n, k, 23)
        assert np.all(np.abs(ep['label']) <= 1.0)
    noisy = np.concatenate([ep['ctrl'] - ep['label'] for ep in episodes])
    assert 0.0 < np.abs(noisy).max() < 0.5
    obs, act, eps = relabel(episodes, config, np.arange(16), 0)
    assert len(obs) == sum(len(ep['ctrl']) for ep in episodes)
    np.testing.assert_array_equal(
        act, np.concatenate([ep['label'] for ep in episodes]).astype(np.float32))
    gen = _RobotEpisodeGenerator('quadruped', [], 5, expert=expert_settings(config))
    assert gen.mpc.settings.samples == config['expert']['mpc']['samples']

    # expert_hindsight adds, per episode, the steps whose next k states exist, with the
    # states reached as the window and the applied (noisy) action as the label.
    config['relabel']['expert_hindsight'] = True
    obs2, act2, eps2 = relabel(episodes, config, np.arange(16), 0)
    ep = episodes[0]
    n, m = len(ep['ctrl']), len(ep['ctrl']) - k + 1
    assert len(obs2) == len(obs) + sum(len(e['ctrl']) - k + 1 for e in episodes)
    np.testing.assert_array_equal(act2[n:n + m], ep['ctrl'][:m].astype(np.float32))
    t = np.arange(m)
    window = ep['qpos'][t[:, None] + 1 + np.arange(k)]
    np.testing.assert_allclose(
        obs2[n:n + m], batch_observations(ep['qpos'][:m], ep['qvel'][:m], window,
                                          np.arange(16)))
    assert np.all(eps2[:n + m] == 0)


def test_residual_model_with_a_silent_network_follows_the_reference():
    # base(obs) must read each actuated joint's angle and its next reference error from the
    # observation: with the network's output zeroed, the command is the next reference
    # frame's joint angles, exactly what the 'pd' controller sends.
    import torch
    from vrat_ros.controllers import PDController
    from vrat_ros.robots import Robot
    from vrat_ros.train import make_model
    from vrat_ros.train import residual_base
    from vrat_ros.train import robot_policy_interface
    from vrat_ros.train import TorchPolicy
    robot = Robot('quadruped')
    interface = robot_policy_interface(robot, frames=3)
    model = make_model(interface['observation']['size'], robot.nu,
                       {'hidden': [8], 'activation': 'elu', 'residual': True})
    model.set_residual_base(*residual_base(robot, interface))
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
    model.eval()
    clip = Clip.load(robot_training_clip())
    controller = PolicyController(TorchPolicy(model, interface))
    pd = PDController()
    for t in (0.0, 1.3):
        robot.reset(clip.sample(t), clip.velocity(t))
        controller.reset(robot, clip, t)
        pd.reset(robot, clip, t)
        np.testing.assert_allclose(controller.torques(robot, t), pd.torques(robot, t), atol=1e-5)


def robot_training_clip():
    from vrat_ros.train import robot_training_clips
    return robot_training_clips('quadruped')[0]


@pytest.mark.parametrize('robot, expert, message', [
    ('rat', {'kind': 'mpc', 'mpc': {'samples': 1}},
     r"'expert.mpc' \(with vrat_ros.mpc.RAT_SETTINGS .*\): MPC setting samples"),
    ('quadruped', {'kind': 'mpc', 'mpc': {'weights': {'root': 1.0}}},
     r"'expert.mpc': unknown MPC weights"),
    ('rat', {'kind': 'mpc', 'mpc': {'weights': {'root': 1.0}}},
     r"unknown MPC weights \['root'\]"),
    ('rat', {'kind': 'mpc', 'mpc': {'horizon_steps': 3}},
     r'with vrat_ros.mpc.RAT_SETTINGS for the fields it leaves out\): MPC setting knots'),
    ('quadruped', {'kind': 'ilqr', 'mpc': {}}, "'expert.kind': unknown expert 'ilqr'"),
    ('quadruped', {'mpc': {}}, "'expert' should be null or"),
    ('quadruped', {'kind': 'mpc', 'mpc': {'samples': 0}}, "'expert.mpc': MPC setting samples"),
    ('rat', None, "'model.residual' needs a robot with the 'position' interface"),
])
def test_expert_setting_is_checked(robot, expert, message):
    from vrat_ros.train import validate_config
    config = default_config(small=True, robot=robot)
    config['expert'] = expert
    config['model']['residual'] = expert is None or config['model']['residual']
    with pytest.raises(ValueError, match=message):
        validate_config(config)


def test_rat_expert_takes_the_rats_mpc_settings_and_labels_every_step():
    # On the rat the expert's settings start from vrat_ros.mpc.RAT_SETTINGS (weights key by
    # key); its episodes carry its actions (ctrl in [-1, 1], before the collection noise)
    # and the targets it was given.
    from vrat_ros.mpc import RAT_SETTINGS
    from vrat_ros.train import expert_settings
    from vrat_ros.train import generate_episodes
    from vrat_ros.train import validate_config
    config = default_config(small=True)
    config['expert'] = {'kind': 'mpc', 'mpc': {'samples': 4, 'horizon_steps': 4, 'knots': 2,
                                               'weights': {'joints': 2.0}}}
    validate_config(config)
    settings = expert_settings(config)
    weights = dict(settings.weights)
    assert (settings.samples, settings.horizon_steps, settings.noise_rad) == (4, 4, 0.3)
    assert weights == {**dict(RAT_SETTINGS.weights), 'joints': 2.0}
    config['data'].update({'n_episodes': 2, 'episode_steps': 12, 'n_workers': 1})
    episodes = generate_episodes(config, 0, workers=1)
    k = config['relabel']['frames']
    for ep in episodes:
        n = len(ep['ctrl'])
        assert n > 0 and ep['label'].shape == (n, 38) and ep['window'].shape == (n, k, 74)
        assert np.all(np.abs(ep['label']) <= 1.0)
    noise = np.concatenate([ep['ctrl'] - ep['label'] for ep in episodes])
    assert 0.0 < np.abs(noise).max() <= 2.0
    # A run records every field it used (RAT_SETTINGS is code and may change between runs).
    from vrat_ros.train import _record_expert
    _record_expert(config)
    assert config['expert'] == {'kind': 'mpc', 'mpc': settings.as_dict()}
    assert config['expert']['mpc']['weights']['root_xy'] == dict(RAT_SETTINGS.weights)['root_xy']


def test_a_robot_experts_weights_left_out_take_the_defaults():
    from vrat_ros.mpc import MPCSettings
    from vrat_ros.train import expert_settings
    config = default_config(small=True, robot='quadruped')
    config['expert'] = {'kind': 'mpc', 'mpc': {'weights': {'root_xy': 5.0}}}
    weights = dict(expert_settings(config).weights)
    assert weights == {**dict(MPCSettings().weights), 'root_xy': 5.0}


def test_an_expert_needs_a_body_it_can_drive(tmp_path):
    from fixtures import TOY_YAML
    from fixtures import write_toy
    from vrat_ros.train import expert_settings
    config = default_config(small=True)
    config['robot'] = write_toy(tmp_path, TOY_YAML)
    config['expert'] = {'kind': 'mpc', 'mpc': {}}
    with pytest.raises(ValueError, match="needs the rat or a robot with the 'position'"):
        expert_settings(config)


def test_configs_from_before_residual_models_still_validate():
    from vrat_ros.train import validate_config
    config = default_config(small=True)
    del config['model']['residual']
    del config['expert']
    validate_config(config)


def test_shipped_quadruped_policy_fits_the_robot():
    from vrat_ros.resources import data_path
    from vrat_ros.robots import Robot
    path = data_path('policies', 'quadruped_inverse_dynamics.onnx')
    robot = Robot('quadruped')
    policy = OnnxPolicy(path)
    assert policy.contract['command_interface'] == 'position'
    assert policy.joint_names == robot.joint_names
    assert policy.contract['training']['config']['robot'] == 'quadruped'
    # Trained on the shipped training clips only: never on the held-out one.
    files = [c['file'] for c in policy.contract['training']['clips']]
    assert files and all(f.startswith('quadruped_train_') for f in files)
    # Made by the documented command: the shipped config file on the quadruped's defaults.
    config = documented_config('train_quadruped.json', robot='quadruped')
    used = policy.contract['training']['config']
    for section in ('expert', 'rl', 'relabel', 'data', 'rounds', 'train', 'model'):
        assert used[section] == config[section], section
    assert used['rl']['iterations'] == 1000 and used['relabel']['expert_hindsight']
    training = policy.contract['training']
    assert training['rl_iterations'] == 1000 and training['selected_rl_iteration'] == 800
    assert policy.reference_frames == 10


def test_shipped_rat_policy_was_made_by_the_documented_command():
    # README: vrat train --config config/train_rat.json (imitation, then RL).
    from vrat_ros import resources
    policy = OnnxPolicy(resources.default_policy_path())
    training = policy.contract['training']
    config = documented_config('train_rat.json')
    used = training['config']
    for section in ('expert', 'rl', 'relabel', 'data', 'rounds', 'train', 'model', 'eval',
                    'seed', 'body', 'mirror'):
        assert used[section] == config[section], section
    assert used['mirror'] is True  # the mirrored training clips (vrat_ros.mirror)
    assert used['clips'] == [name + '.npz' for name in config_file('train_rat.json')['clips']]
    # Never the held-out clips.
    files = {c['file'] for c in training['clips']}
    assert not files & {name + '.npz' for name in resources.HELD_OUT_CLIPS}
    assert training['rl_iterations'] == 1000


@pytest.mark.parametrize('section, key, value, message', [
    ('train', 'lr', -1e-3, "'train.lr' should be > 0.0"),
    ('train', 'batch_size', 0, "'train.batch_size' should be >= 1"),
    ('data', 'reverse_prob', 1.5, "'data.reverse_prob' should be in [0.0, 1.0]"),
    ('data', 'speed_range', [1.5, 0.5], "'data.speed_range' should be [low, high]"),
    ('model', 'hidden', [64, 0], "'model.hidden' should be >= 1"),
    ('relabel', 'val_fraction', float('nan'), "'relabel.val_fraction' should be in"),
])
def test_config_values_are_range_checked(section, key, value, message):
    from vrat_ros.train import validate_config
    config = default_config(small=True)
    config[section][key] = value
    with pytest.raises(ValueError) as info:
        validate_config(config)
    assert message in str(info.value)
    config = default_config(small=True)
    config['rounds']['data']['action_noise_rad'] = -0.1
    with pytest.raises(ValueError, match=r"'rounds.data.action_noise_rad' should be >= 0.0"):
        validate_config(config)


def test_robot_with_its_own_root_name_trains_from_clips_and_config(tmp_path):
    # A user's position robot (root joint 'base_free', no shipped clips): --clips must count
    # with --config, and the in-training evaluation must take the robot's root joint (it
    # compared against 'root' and stopped the run after collecting its data).
    import json
    from fixtures import make_robot_clip
    from fixtures import TOY_POSITION_YAML
    from fixtures import write_toy
    from vrat_ros import cli
    from vrat_ros.robots import Robot
    from vrat_ros.train import robot_policy_interface
    from vrat_ros.train import TorchPolicy
    robot_file = write_toy(tmp_path, TOY_POSITION_YAML)
    robot = Robot(robot_file)
    assert robot.spec.root_joint == 'base_free'
    interface = robot_policy_interface(robot)
    model = make_model(interface['observation']['size'], robot.nu,
                       {'hidden': [4], 'activation': 'elu'})
    assert TorchPolicy(model, interface).root_joint == 'base_free'
    clip = make_robot_clip(str(tmp_path / 'clip.npz'), robot, n_frames=60)
    settings = tmp_path / 'tiny.json'
    settings.write_text(json.dumps({
        'data': {'n_episodes': 3, 'episode_steps': 20, 'n_workers': 1},
        'rounds': {'count': 0}, 'model': {'hidden': [16]},
        'train': {'steps': 20, 'batch_size': 16, 'checkpoint_every': 20, 'log_every': 10},
        'eval': {'every': 20, 'starts_s': [0.0], 'seconds': 0.5}}))
    out = tmp_path / 'run'
    assert cli.main(['train', '--robot', robot_file, '--small', '--clips', clip, '--config',
                     str(settings), '--out', str(out), '--no-progress']) == 0
    assert OnnxPolicy(str(out / 'policy.onnx')).contract['root_joint'] == 'base_free'
