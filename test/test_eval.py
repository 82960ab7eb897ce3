"""`vrat eval`: episode metrics on hand-made cases, the report, worker independence, bad input."""

import json
import os
import sys

import numpy as np
import pytest

from vrat_ros import resources
from vrat_ros.cli import main
from vrat_ros.clip import Clip
from vrat_ros.clip import file_sha256
from vrat_ros.evaluate import aggregate
from vrat_ros.evaluate import EpisodeTask
from vrat_ros.evaluate import EvalError
from vrat_ros.evaluate import episode_metrics
from vrat_ros.evaluate import METRICS
from vrat_ros.evaluate import run_episode
from vrat_ros.evaluate import start_frames


@pytest.fixture(scope='module')
def ref_qpos(rat_body):
    """(20, nq) real poses: every 10th frame of the shipped default clip."""
    clip = Clip.load(resources.default_clip_path()).reorder_to(rat_body.hinge_names)
    return clip.qpos[:200:10].copy()


def test_reference_equal_to_state_is_tracked_with_zero_error(rat_body, ref_qpos):
    m = episode_metrics(rat_body, ref_qpos, ref_qpos, np.zeros((19, rat_body.nu)),
                        n_available=20)
    assert m['tracked_fraction'] == 1.0 and m['tracked_frames'] == 20
    assert m['failure_reason'] is None
    for key in ('joint_rmse_rad', 'body_pos_error_mm', 'root_pos_error_mm',
                'action_change_rms'):
        assert m[key] == pytest.approx(0.0, abs=1e-9)


def test_reference_0_2_m_away_is_not_tracked(rat_body, ref_qpos):
    sim = ref_qpos.copy()
    sim[:, 0] += 0.2
    m = episode_metrics(rat_body, sim, ref_qpos, np.zeros((19, rat_body.nu)), n_available=20)
    assert m['tracked_fraction'] == 0.0 and m['tracked_frames'] == 0
    assert m['failure_reason'] == 'root'
    # Nothing was tracked, so there is no error to report (not a misleading 0).
    assert m['body_pos_error_mm'] is None and m['joint_rmse_rad'] is None


def test_errors_count_only_the_tracked_part(rat_body, ref_qpos):
    sim = ref_qpos.copy()
    sim[8:, 0] += 0.2  # lost from frame 8 on
    torques = np.zeros((19, rat_body.nu))
    m = episode_metrics(rat_body, sim, ref_qpos, torques, n_available=25)
    assert m['first_failure_frame'] == 8 and m['tracked_fraction'] == 8 / 25
    assert m['root_pos_error_mm'] == pytest.approx(0.0, abs=1e-9)
    assert m['body_error_mm'].shape == (8,)


def test_action_change_is_the_rms_step_change_of_the_normalised_action(rat_body, ref_qpos):
    # Full-scale commands that flip sign every step change by 2 each step; beyond full scale
    # they are clipped first, so the change stays 2.
    signs = np.where(np.arange(19) % 2 == 0, 1.0, -1.0)[:, None]
    flipping = 3.0 * signs * rat_body.actuator_gain[None, :]
    m = episode_metrics(rat_body, ref_qpos, ref_qpos, flipping, n_available=20)
    assert m['action_change_rms'] == pytest.approx(2.0)
    steady = np.tile(0.5 * rat_body.actuator_gain, (19, 1))
    pooled = aggregate([m, episode_metrics(rat_body, ref_qpos, ref_qpos, steady, 20)])
    # 18 changes of 2 and 18 of 0 over every actuator: RMS sqrt(2).
    assert pooled['action_change_rms'] == pytest.approx(np.sqrt(2.0))
    assert pooled['episodes'] == 2 and pooled['tracked_fraction'] == 1.0


def test_start_frames_are_spread_evenly_and_too_many_are_refused():
    assert start_frames(300, 5) == [0, 59, 119, 179, 239]
    assert start_frames(140, 1) == [0]
    with pytest.raises(EvalError, match='5 starts need at least 6 frames'):
        start_frames(4, 5)


def test_held_out_clips_ship_and_are_not_training_clips():
    from vrat_ros.train import default_config
    assert len(resources.HELD_OUT_CLIPS) >= 2
    training = {os.path.basename(p) for p in default_config()['clips']}
    for name in resources.HELD_OUT_CLIPS:
        path = resources.resolve_clip_path(name)
        assert path == resources.data_path('clips', name + '.npz') and os.path.isfile(path)
        assert name + '.npz' not in training


def test_one_episode_on_a_real_held_out_clip():
    # The rear clip (140 frames at 30 Hz) from frame 100, PD: a real rollout scored on its
    # tracked part. (139 - 100) / 30 s = 1.3 s = 65 control steps, plus the initial state.
    path = resources.resolve_clip_path('rat7m_rear_2460_2600')
    m = run_episode(EpisodeTask(path, 'pd', None, 100))
    assert m['available_frames'] == 66
    assert 0 < m['tracked_frames'] <= m['available_frames']
    assert 0.0 < m['body_pos_error_mm'] < 100.0


def test_stopping_at_the_first_failure_changes_no_number():
    # `vrat eval` stops each episode at its first untracked frame; scored on its tracked
    # part, a run to the clip end gives the same numbers (PD loses the rear at frame 31 of
    # 232 from its start).
    from vrat_ros.controllers import PDController
    from vrat_ros.evaluate import episode_metrics
    from vrat_ros.rat_model import RatBody
    from vrat_ros.rollout import run_inline
    body = RatBody()
    clip = Clip.load(resources.resolve_clip_path('rat7m_rear_2460_2600'))
    scores = []
    for stop in (False, True):
        run = run_inline(body, clip, PDController(), stop_on_failure=stop)
        scores.append((len(run.qpos), episode_metrics(body, run.qpos, run.ref_qpos,
                                                      run.torques, run.n_steps_planned + 1)))
    (n_full, full), (n_stopped, stopped) = scores
    assert n_full == 232 and n_stopped == full['first_failure_frame'] + 1
    assert full['first_failure_frame'] == 31 and full['failure_reason'] == 'torso_height'
    np.testing.assert_equal({k: v for k, v in stopped.items() if k != 'body_error_mm'},
                            {k: v for k, v in full.items() if k != 'body_error_mm'})
    np.testing.assert_array_equal(stopped['body_error_mm'], full['body_error_mm'])


@pytest.fixture(scope='module')
def two_reports(tmp_path_factory, synthetic_clip_path, tiny_policy_path):
    """The same evaluation with 1 and 2 workers: (folder, [report_1, report_2])."""
    tmp = tmp_path_factory.mktemp('eval')
    outs = []
    for workers in (1, 2):
        path = tmp / f'w{workers}.json'
        assert main(['eval', '--clips', synthetic_clip_path, '--policy', tiny_policy_path,
                     '--starts', '2', '--workers', str(workers), '--report', str(path),
                     '--no-progress']) == 0
        outs.append(json.loads(path.read_text()))
    return tmp, outs


def test_report_has_the_keys_and_sane_values(two_reports, tiny_policy_path):
    tmp, (report, _) = two_reports
    assert set(report) >= {'clips', 'controllers', 'policy', 'overall', 'per_clip',
                           'episodes', 'settings', 'plot', 'markdown'}
    assert report['controllers'] == ['policy', 'pd', 'zero']
    assert report['policy']['sha256'] == file_sha256(tiny_policy_path)
    name = report['clips'][0]['name']
    assert name == 'synthetic_30hz' and report['clips'][0]['start_frames'] == [0, 22]
    assert list(report['per_clip']) == [name]
    for controller in report['controllers']:
        m = report['overall'][controller]
        assert m == report['per_clip'][name][controller]  # one clip: overall is that clip
        assert m['episodes'] == 2
        assert 0.0 < m['tracked_fraction'] <= 1.0
        for key in METRICS[1:]:
            assert 0.0 <= m[key] < 1e3
    assert report['overall']['zero']['action_change_rms'] == 0.0
    assert report['overall']['pd']['tracked_fraction'] > report['overall']['zero'][
        'tracked_fraction']
    assert len(report['episodes']) == 6
    from vrat_ros.mpc import RAT_SETTINGS
    assert report['settings']['mpc_settings'] == RAT_SETTINGS.as_dict()
    assert report['settings']['mpc_settings']['samples'] == RAT_SETTINGS.samples
    table = (tmp / 'w1.md').read_text()
    assert table.startswith('| clip | controller | tracked fraction |')
    assert f"| {name} | pd | {report['overall']['pd']['tracked_fraction']:.2f} |" in table
    with open(tmp / 'w1.png', 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'


def test_one_and_two_workers_give_identical_numbers(two_reports):
    _, (one, two) = two_reports
    assert one['run']['workers'] == 1 and two['run']['workers'] == 2
    for key in ('overall', 'per_clip', 'episodes', 'clips', 'policy', 'settings'):
        assert one[key] == two[key]


def test_table_is_printed(tmp_path, synthetic_clip_path, capsys):
    assert main(['eval', '--clips', synthetic_clip_path, '--controller', 'zero',
                 '--starts', '1', '--workers', '1', '--no-progress']) == 0
    out = capsys.readouterr().out
    assert out.startswith('| clip | controller |') and '| **overall** | zero |' in out
    assert 'policy `' not in out  # no policy ran
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize('argv, message', [
    (['--clips', 'no_such_clip', '--controller', 'zero'],
     "clip file 'no_such_clip' does not exist (see `vrat clips`)"),
    (['--policy', 'missing.onnx'], "policy file 'missing.onnx' does not exist"),
    (['--starts', '0', '--controller', 'zero'], '--starts should be at least 1'),
    (['--report', '.', '--controller', 'zero'], "output '.' is a folder"),
    (['--clips', 'CLIP', '--starts', '50', '--controller', 'zero'], 'starts need at least'),
], ids=['unknown-clip', 'missing-policy', 'zero-starts', 'report-is-folder', 'too-many-starts'])
def test_bad_input_gives_one_line_and_writes_nothing(argv, message, tmp_path, monkeypatch,
                                                     capsys, synthetic_clip_path):
    monkeypatch.chdir(tmp_path)
    argv = [synthetic_clip_path if a == 'CLIP' else a for a in argv]
    assert main(['eval', '--no-progress', '--workers', '1'] + argv) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def _no_episodes(*args, **kwargs):
    raise AssertionError('episodes ran although the arguments should have been refused')


@pytest.mark.parametrize('argv, message', [
    (['--report', 'out.png'], "--report 'out.png' ends in .png"),
    (['--report', 'm.md'], "--report 'm.md' ends in .md"),
    (['--report', 'r.json', '--plot', 'r.json'], "--plot 'r.json' should end in .png"),
    (['--report', 't.json', '--plot', 't.md'], "--plot 't.md' should end in .png"),
    (['--plot', 'p.jpg'], "--plot 'p.jpg' should end in .png"),
], ids=['report-png', 'report-md', 'plot-is-report', 'plot-is-table', 'plot-jpg'])
def test_outputs_that_would_overwrite_each_other_are_refused_before_any_episode(
        argv, message, tmp_path, monkeypatch, capsys):
    from vrat_ros import evaluate
    monkeypatch.setattr(evaluate, 'run_eval', _no_episodes)
    monkeypatch.chdir(tmp_path)
    assert main(['eval', '--no-progress', '--controller', 'zero'] + argv) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_a_plot_linked_to_the_report_is_refused(tmp_path, monkeypatch, capsys):
    from vrat_ros import evaluate
    monkeypatch.setattr(evaluate, 'run_eval', _no_episodes)
    (tmp_path / 'r.json').write_text('{}')
    (tmp_path / 'link.png').symlink_to(tmp_path / 'r.json')
    assert main(['eval', '--report', str(tmp_path / 'r.json'),
                 '--plot', str(tmp_path / 'link.png')]) == 1
    err = capsys.readouterr().err.strip()
    assert 'are the same file' in err and len(err.splitlines()) == 1
    assert (tmp_path / 'r.json').read_text() == '{}'


def test_output_paths_replace_the_report_suffix():
    from vrat_ros.evaluate import output_paths
    assert output_paths('a/r.v1.json', None) == ('a/r.v1.json', 'a/r.v1.md', 'a/r.v1.png')
    assert output_paths('r', 'p.PNG') == ('r', 'r.md', 'p.PNG')
    assert output_paths(None, None) == (None, None, None)


def test_without_matplotlib_a_report_is_refused_before_any_episode(tmp_path, monkeypatch,
                                                                   capsys):
    from vrat_ros import evaluate
    monkeypatch.setattr(evaluate, 'run_eval', _no_episodes)
    monkeypatch.setitem(sys.modules, 'matplotlib', None)  # what `import` does where absent
    assert main(['eval', '--report', str(tmp_path / 'x.json'), '--controller', 'zero']) == 1
    err = capsys.readouterr().err.strip()
    assert "pip install -e '.[viz]'" in err and len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_without_matplotlib_the_table_alone_still_works(tmp_path, monkeypatch, capsys,
                                                        synthetic_clip_path):
    monkeypatch.setitem(sys.modules, 'matplotlib', None)
    assert main(['eval', '--clips', synthetic_clip_path, '--controller', 'zero',
                 '--starts', '1', '--workers', '1', '--no-progress']) == 0
    assert '| **overall** | zero |' in capsys.readouterr().out


def test_report_and_table_are_written_even_when_the_plot_fails(tmp_path, monkeypatch,
                                                               capsys, synthetic_clip_path):
    from vrat_ros import evaluate

    def broken_plot(series, out, controllers):
        raise OSError(f"[Errno 28] No space left on device: '{out}'")
    monkeypatch.setattr(evaluate, 'plot_error_over_time', broken_plot)
    path = tmp_path / 'x.json'
    assert main(['eval', '--clips', synthetic_clip_path, '--controller', 'zero',
                 '--starts', '1', '--workers', '1', '--no-progress',
                 '--report', str(path)]) == 1
    assert 'No space left' in capsys.readouterr().err
    report = json.loads(path.read_text())
    assert report['overall']['zero']['episodes'] == 1 and 'plot' not in report
    assert (tmp_path / 'x.md').read_text().startswith('| clip | controller |')
    assert not (tmp_path / 'x.png').exists()


def test_report_names_the_workers_that_ran_not_the_number_asked(tmp_path, capsys,
                                                                synthetic_clip_path):
    path = tmp_path / 'w.json'
    assert main(['eval', '--clips', synthetic_clip_path, '--controller', 'zero',
                 '--starts', '2', '--workers', '100000', '--no-progress',
                 '--report', str(path)]) == 0
    assert json.loads(path.read_text())['run']['workers'] == 2  # one per episode
    out = capsys.readouterr().out
    assert 'on 2 worker(s)' in out and '100000' not in out
