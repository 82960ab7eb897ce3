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
