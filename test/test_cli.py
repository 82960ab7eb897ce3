"""The `vrat` command: model summary, clip names, and one-line errors for bad input."""

import json
import os
import subprocess
import sys

import pytest

from vrat_ros import resources
from vrat_ros.cli import main


def test_model_json_lists_the_body(capsys):
    assert main(['model', '--json']) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info['nq'], info['nv'], info['nu']) == (74, 73, 38)
    assert info['mass_kg'] == pytest.approx(0.2462, abs=1e-3)
    assert len(info['joint_names']) == 67 and info['actuator_names'][0] == 'lumbar_extend'


def test_clip_names_from_vrat_clips_resolve_to_shipped_files():
    path = resources.resolve_clip_path('rat7m_walk_2010_2310')
    assert path == resources.data_path('clips', 'rat7m_walk_2010_2310.npz')
    assert resources.resolve_clip_path('no_such_clip') == 'no_such_clip'


@pytest.mark.parametrize('argv, message', [
    (['run', '--report', '.'], "output '.' is a folder"),
    (['run', '--report', 'missing_dir/r.json'], 'output folder'),
    (['run', '--namespace', 'bad ns!'], 'namespace should look like'),
    (['run', '--clip', 'no_such_clip'], "clip file 'no_such_clip' does not exist"),
], ids=['report-is-folder', 'report-folder-missing', 'bad-namespace', 'unknown-clip'])
def test_run_refuses_bad_arguments_before_any_work(argv, message, capsys, tmp_path,
                                                   monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_text_file_is_neither_a_clip_nor_a_checkpoint(tmp_path, capsys):
    text = tmp_path / 'notes.txt'
    text.write_text('hello')
    assert main(['run', '--clip', str(text)]) == 1
    assert 'not an .npz archive' in capsys.readouterr().err
    assert main(['export', str(text), '--out', str(tmp_path / 'p.onnx')]) == 1
    assert 'is not a vrat training checkpoint' in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ['notes.txt']


@pytest.mark.ros
def test_node_with_a_parameter_of_the_wrong_type_says_so_and_exits_1():
    pytest.importorskip('rclpy')
    proc = subprocess.run(
        [sys.executable, '-m', 'vrat_ros.sim_node', '--ros-args', '-p', 'control_rate_hz:=100'],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert 'cannot start' in proc.stderr and 'control_rate_hz' in proc.stderr
    assert 'Traceback' not in proc.stderr


def test_a_missing_gl_library_named_by_mujoco_gl_is_a_one_line_error(tmp_path):
    # MUJOCO_GL naming a backend whose library is absent makes `import mujoco` itself fail.
    env = dict(os.environ, MUJOCO_GL='no-such-backend')
    proc = subprocess.run([sys.executable, '-m', 'vrat_ros.cli', 'clips'], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "cannot load MuJoCo with MUJOCO_GL='no-such-backend'" in proc.stderr
    assert 'Traceback' not in proc.stderr


def _refuse_new_files_in(monkeypatch, folder):
    """Makes `folder` refuse new files, as a read-only folder does for a non-root user."""
    import tempfile
    real_mkstemp = tempfile.mkstemp

    def mkstemp(*args, **kwargs):
        if os.path.realpath(kwargs.get('dir') or '') == os.path.realpath(folder):
            raise PermissionError(13, 'Permission denied')
        return real_mkstemp(*args, **kwargs)
    monkeypatch.setattr(tempfile, 'mkstemp', mkstemp)


def _no_work(*args, **kwargs):
    raise AssertionError('the work ran although the output cannot be written')


@pytest.mark.parametrize('command', ['eval', 'bench-workers', 'render'])
def test_an_output_folder_that_refuses_new_files_is_found_before_any_work(
        command, tmp_path, monkeypatch, capsys):
    from vrat_ros import clip
    from vrat_ros import evaluate
    from vrat_ros import scaling
    monkeypatch.setattr(evaluate, 'run_eval', _no_work)
    monkeypatch.setattr(scaling, 'measure_scaling', _no_work)
    monkeypatch.setattr(clip.Clip, 'load', _no_work)
    locked = tmp_path / 'locked'
    locked.mkdir()
    _refuse_new_files_in(monkeypatch, locked)
    out = str(locked / ('run.mp4' if command == 'render' else 'r.json'))
    argv = {'eval': ['eval', '--controller', 'zero', '--report', out],
            'bench-workers': ['bench-workers', '--report', out],
            'render': ['render', '--out', out]}[command]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert f"cannot write output '{out}'" in err and 'Permission denied' in err
    assert len(err.splitlines()) == 1 and '.vrat-probe' not in err
    assert list(locked.iterdir()) == []


@pytest.mark.skipif(hasattr(os, 'geteuid') and os.geteuid() == 0,
                    reason='root writes into a chmod 0o500 folder anyway')
def test_a_read_only_output_folder_is_found_before_any_work(tmp_path, monkeypatch, capsys):
    from vrat_ros import evaluate
    monkeypatch.setattr(evaluate, 'run_eval', _no_work)
    locked = tmp_path / 'locked'
    locked.mkdir()
    locked.chmod(0o500)
    try:
        out = str(locked / 'r.json')
        assert main(['eval', '--controller', 'zero', '--report', out]) == 1
        err = capsys.readouterr().err.strip()
        assert f"cannot write output '{out}'" in err and len(err.splitlines()) == 1
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)


def test_output_check_leaves_no_file_and_lets_render_make_folders(tmp_path):
    from vrat_ros.cli import _check_output_path
    _check_output_path(str(tmp_path / 'r.json'))
    _check_output_path(str(tmp_path / 'new' / 'deeper' / 'run.mp4'), make_folders=True)
    _check_output_path(str(tmp_path), make_folders=True)  # a folder of PNG frames
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match='is a folder'):
        _check_output_path(str(tmp_path))


# -- vrat train: settings, clip names and a missing torch, checked before any work ------------

def _capture_train(monkeypatch):
    """Replaces vrat_ros.train.train with a recorder; returns the list of its configs."""
    from vrat_ros import train as train_module
    seen = []

    def fake_train(config, out_dir, **kwargs):
        seen.append(config)
        return {'out_dir': out_dir, 'step': 0}
    monkeypatch.setattr(train_module, 'train', fake_train)
    return seen


@pytest.mark.parametrize('text, message', [
    ('[1, 2]', "config '{path}' should hold a JSON object of settings: got list"),
    ('not json', "config '{path}' is not valid JSON: Expecting value: line 1 column 1"),
    ('{"seed": "abc"}', "config '{path}': setting 'seed' should be an integer: got 'abc'"),
    ('{"model": {"hidden": [64, "x"]}}',
     "config '{path}': setting 'model.hidden[1]' should be an integer"),
    ('{"data": {"episode_steps": 100000000}}',
     "config '{path}': setting 'data.episode_steps' should be an integer from 1 to 100000"),
    ('{"train": []}', "config '{path}': setting 'train' should be a mapping of settings"),
    # Was Python's own 'Exceeds the limit (4300 digits) ... set_int_max_str_digits()'.
    ('{"seed": ' + '9' * 5000 + '}',
     "config '{path}' is not valid JSON: an integer of 5000 digits (at most 30)"),
    ('{"mirror": "yes"}', "config '{path}': setting 'mirror' should be true or false"),
])
def test_train_config_errors_name_the_file_and_the_setting(tmp_path, monkeypatch, capsys,
                                                           text, message):
    pytest.importorskip('torch')
    seen = _capture_train(monkeypatch)
    path = tmp_path / 'config.json'
    path.write_text(text)
    out = tmp_path / 'run'
    assert main(['train', '--config', str(path), '--out', str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith('vrat train: ' + message.format(path=path))
    assert len(err.splitlines()) == 1 and seen == [] and not out.exists()


def test_train_takes_clip_names_from_vrat_clips(tmp_path, monkeypatch, capsys):
    pytest.importorskip('torch')
    seen = _capture_train(monkeypatch)
    shipped = resources.data_path('clips', 'rat7m_train_2340_2430.npz')
    assert main(['train', '--small', '--clips', 'rat7m_train_2340_2430',
                 '--out', str(tmp_path / 'a')]) == 0
    path = tmp_path / 'config.json'
    path.write_text(json.dumps({'clips': ['rat7m_train_2340_2430'],
                                'rounds': {'data': {'pd_zeta': 0.3}}}))
    assert main(['train', '--config', str(path), '--out', str(tmp_path / 'b')]) == 0
    assert [c['clips'] for c in seen] == [[os.path.abspath(shipped)]] * 2
    assert seen[1]['rounds']['data']['pd_zeta'] == 0.3


@pytest.mark.parametrize('argv, config, message', [
    (['--robot', 'nosuch'], None, "robot 'nosuch' is neither a robot file nor a known robot"),
    (['--robot', 'quadruped'], {'robot': 'rat'},
     "trains robot 'rat' but --robot says 'quadruped'"),
    (['--clips', 'rat7m_walk_2010_2310'], None,
     "training clips ['rat7m_walk_2010_2310'] are held out for evaluation"),
    (['--robot', 'quadruped', '--clips', 'quadruped_eval_2010_2310'], None,
     "training clips ['quadruped_eval_2010_2310'] are held out"),
])
def test_train_refuses_a_wrong_body_or_held_out_clips_before_any_work(
        tmp_path, monkeypatch, capsys, argv, config, message):
    pytest.importorskip('torch')
    seen = _capture_train(monkeypatch)
    if config is not None:
        path = tmp_path / 'config.json'
        path.write_text(json.dumps(config))
        argv = argv + ['--config', str(path)]
    out = tmp_path / 'run'
    assert main(['train', '--small', '--out', str(out)] + argv) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert seen == [] and not out.exists()


def test_train_robot_comes_from_the_config_with_its_own_defaults(tmp_path, monkeypatch):
    pytest.importorskip('torch')
    from vrat_ros.train import default_config
    seen = _capture_train(monkeypatch)
    path = tmp_path / 'config.json'
    path.write_text(json.dumps({'robot': 'quadruped'}))
    assert main(['train', '--small', '--config', str(path), '--out', str(tmp_path / 'a')]) == 0
    quadruped = default_config(small=True, robot='quadruped')
    assert seen[0]['robot'] == 'quadruped'
    assert seen[0]['relabel'] == quadruped['relabel']  # not the rat's root offsets
    # The rat's own robot file is the rat.
    rat_yaml = os.path.join(os.path.dirname(resources.__file__), '..', 'config', 'robots',
                            'rat.yaml')
    if os.path.isfile(rat_yaml):
        assert main(['train', '--small', '--robot', rat_yaml,
                     '--out', str(tmp_path / 'b')]) == 0
        assert seen[1]['robot'] == 'rat'


def test_train_refuses_to_overwrite_a_run_without_resume(tmp_path, monkeypatch, capsys):
    pytest.importorskip('torch')
    seen = _capture_train(monkeypatch)
    out = tmp_path / 'run'
    out.mkdir()
    (out / 'checkpoint.pt').write_bytes(b'earlier run')
    assert main(['train', '--small', '--out', str(out)]) == 1
    assert 'already holds a training run; give --resume' in capsys.readouterr().err
    assert (out / 'checkpoint.pt').read_bytes() == b'earlier run' and seen == []
    assert main(['train', '--small', '--resume', '--out', str(out)]) == 0
    assert 'starting a new run' not in capsys.readouterr().err
    assert main(['train', '--small', '--resume', '--out', str(tmp_path / 'fresh')]) == 0
    assert "no checkpoint in '" in capsys.readouterr().err


def test_train_refuses_eval_starts_beyond_every_clip(tmp_path):
    pytest.importorskip('torch')
    from vrat_ros.train import default_config
    from vrat_ros.train import train
    config = default_config(small=True)
    config['eval']['starts_s'] = [100.0]
    with pytest.raises(ValueError, match="'eval.starts_s' \\[100.0\\] has no start"):
        train(config, str(tmp_path / 'run'), progress=False)
    assert not (tmp_path / 'run').exists()


def test_train_without_torch_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, 'torch', None)  # `import torch` now raises ImportError
    out = tmp_path / 'run'
    assert main(['train', '--small', '--out', str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install -e '.[train]'" in err
    assert err.startswith('vrat train: training needs PyTorch')
    assert not out.exists()


def test_shipped_robot_clips_are_listed_and_resolve_by_name():
    from vrat_ros.importers import list_clips
    names = {entry['name']: entry for entry in list_clips(include_imported=False)}
    assert 'quadruped_eval_2010_2310' in names and 'rat7m_walk_2010_2310' in names
    path = resources.resolve_clip_path('quadruped_eval_2010_2310')
    assert path.endswith('clips/quadruped/quadruped_eval_2010_2310.npz')
    assert names['quadruped_eval_2010_2310']['frames'] == 704


def test_export_and_train_name_a_missing_checkpoint_or_a_file_as_out(tmp_path, capsys):
    assert main(['export', str(tmp_path / 'none.pt'), '--out', str(tmp_path / 'p.onnx')]) == 1
    assert "checkpoint '" in capsys.readouterr().err
    pytest.importorskip('torch')
    not_a_folder = tmp_path / 'checkpoint.pt'
    not_a_folder.write_text('x')
    assert main(['train', '--small', '--out', str(not_a_folder)]) == 1
    assert 'is a file; give a folder for the run' in capsys.readouterr().err
