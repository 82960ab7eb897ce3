"""vrat_ros keeps onnxruntime's import-time telemetry off."""

import os
import subprocess
import sys

import pytest


def _ort_queue(home):
    return os.path.join(home, '.cache', 'Microsoft', 'DeveloperTools', '.onnxruntime',
                        'onnxruntime.db')


def _run(code, home):
    env = {k: v for k, v in os.environ.items() if k != 'ORT_DISABLE_TELEMETRY'}
    env['HOME'] = home
    subprocess.run([sys.executable, '-c', code], env=env, check=True, timeout=120)
    return os.path.exists(_ort_queue(home))


def test_importing_the_policy_queues_no_onnxruntime_telemetry(tmp_path):
    if not _run('import onnxruntime', str(tmp_path / 'plain')):
        pytest.skip('this onnxruntime queues no telemetry on import')
    code = 'import vrat_ros.policy, onnxruntime; onnxruntime.get_available_providers()'
    assert not _run(code, str(tmp_path / 'with_vrat'))
