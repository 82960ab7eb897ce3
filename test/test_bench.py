"""`vrat bench` in a tiny configuration: the report's structure, never its speeds."""

import argparse
import json
import math

import pytest

pytest.importorskip('rclpy', reason='rclpy is not installed')

from vrat_ros import bench  # noqa: E402

pytestmark = pytest.mark.ros


def run_bench_command(argv):
    parser = argparse.ArgumentParser(prog='vrat')
    bench.add_subcommands(parser.add_subparsers(dest='command', required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def numbers(tree, path=''):
    """Every number in a JSON tree, with its path."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from numbers(value, f'{path}/{key}')
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            yield from numbers(value, f'{path}/{i}')
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        yield path, tree


def test_bench_reports_every_mode_with_positive_finite_numbers(
        tmp_path, tiny_policy_path, synthetic_clip_path, capsys):
    report_path = tmp_path / 'bench.json'
    code = run_bench_command([
        'bench', '--policy', tiny_policy_path, '--clip', synthetic_clip_path,
        '--seconds', '0.3', '--messages', '40', '--rates', '50', '500',
        '--report', str(report_path)])
    assert code == 0
    report = json.loads(report_path.read_text())

    assert set(report) == {'config', 'modes', 'ratios', 'policy_latency', 'realtime_jitter'}
    assert set(report['modes']) == {'inline', 'ros_processes', 'ros_in_process'}
    for entry in report['modes'].values():
        assert set(entry) == {'steps', 'wall_s', 'steps_per_s', 'realtime_factor'}
        assert entry['steps'] >= 1
    assert set(report['ratios']) == {'inline_over_ros_processes', 'inline_over_ros_in_process',
                                     'ros_in_process_over_ros_processes'}
    latency = report['policy_latency']
    assert latency['messages'] + latency['lost'] == 40 and latency['messages'] > 0
    assert {'p50_ms', 'p90_ms', 'p99_ms', 'max_ms'} <= set(latency)
    assert set(report['realtime_jitter']) == {'50', '500'}
    for entry in report['realtime_jitter'].values():
        for side in ('sender', 'receiver'):
            assert {'p50_error_ms', 'p99_error_ms', 'max_error_ms', 'late'} <= set(entry[side])

    # Measured values are positive and finite; counts are whole numbers >= 0.
    counts = {'late', 'lost', 'steps', 'messages', 'samples', 'cpus'}
    for path, value in numbers(report):
        if path.rsplit('/', 1)[-1] in counts:
            assert isinstance(value, int) and value >= 0, path
        else:
            assert math.isfinite(value) and value > 0, (path, value)

    table = capsys.readouterr().out
    for row in ('inline (MuJoCo + ONNX, no ROS)', 'ROS lockstep, 3 processes',
                'ROS lockstep, 1 process', 'policy node latency', '500 Hz'):
        assert row in table


def test_bench_without_a_policy_says_what_to_pass(tmp_path, capsys):
    code = run_bench_command(['bench', '--policy', str(tmp_path / 'none.onnx')])
    assert code == 1
    assert '--policy FILE.onnx' in capsys.readouterr().err
