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

    assert set(report) == {
        'config', 'steps_per_s', 'realtime_factor', 'ratio_lockstep_processes',
        'ratio_lockstep_one_process', 'latency_ms', 'jitter_p99_ms', 'memory_mb',
        'memory_mb_total', 'targets', 'targets_met', 'modes', 'policy_latency',
        'realtime_jitter', 'memory_detail'}
    loops = {'inline', 'ros_processes', 'ros_in_process'}
    assert set(report['modes']) == set(report['steps_per_s']) == loops
    assert set(report['realtime_factor']) == loops
    for name, entry in report['modes'].items():
        assert set(entry) == {'steps', 'wall_s', 'steps_per_s', 'realtime_factor'}
        assert entry['steps'] >= 1
        assert report['steps_per_s'][name] == entry['steps_per_s']
        # 50 Hz policy: the real-time factor is steps/s over 50.
        assert report['realtime_factor'][name] == pytest.approx(entry['steps_per_s'] / 50.0)

    # The ratios are ROS loop over inline loop (>= 0.8 is the target), not the other way.
    inline = report['steps_per_s']['inline']
    assert report['ratio_lockstep_processes'] == pytest.approx(
        report['steps_per_s']['ros_processes'] / inline)
    assert report['ratio_lockstep_one_process'] == pytest.approx(
        report['steps_per_s']['ros_in_process'] / inline)

    latency = report['policy_latency']
    assert latency['messages'] + latency['lost'] == 40 and latency['messages'] > 0
    assert {'p50_ms', 'p90_ms', 'p99_ms', 'max_ms'} <= set(latency)
    assert report['latency_ms'] == {'p50': latency['p50_ms'], 'p99': latency['p99_ms'],
                                    'max': latency['max_ms']}
    assert latency['min_ms'] <= latency['p50_ms'] <= latency['p99_ms'] <= latency['max_ms']

    assert set(report['realtime_jitter']) == set(report['jitter_p99_ms']) == {'50', '500'}
    for rate, entry in report['realtime_jitter'].items():
        for side in ('sender', 'receiver'):
            assert {'p50_error_ms', 'p99_error_ms', 'max_error_ms', 'late'} <= set(entry[side])
        assert report['jitter_p99_ms'][rate] == entry['sender']['p99_error_ms']

    # Memory of the three node processes, read from /proc while they ran: a Python process
    # with rclpy and NumPy takes tens of MiB; its peak is at least what it held at the end.
    nodes = {'rat_sim', 'reference', 'policy'}
    assert set(report['memory_mb']) == set(report['memory_detail']) == nodes
    for node, detail in report['memory_detail'].items():
        assert 20.0 < detail['rss_mb'] <= detail['peak_mb'] < 4096.0, node
        assert report['memory_mb'][node] == detail['peak_mb']
    assert report['memory_mb_total'] == pytest.approx(sum(report['memory_mb'].values()))

    # Each target is judged, and judged by the reported numbers.
    met = report['targets_met']
    assert set(met) == {'ratio_lockstep_processes', 'ratio_lockstep_one_process',
                        'latency_ms.p50', 'latency_ms.p99', 'jitter_p99_ms.50',
                        'jitter_p99_ms.500', 'memory_mb_total'}
    assert met['latency_ms.p50'] == (report['latency_ms']['p50'] < 0.5)
    assert met['memory_mb_total'] == (report['memory_mb_total'] < 400.0)
    assert met['ratio_lockstep_processes'] == (report['ratio_lockstep_processes'] >= 0.8)

    # Measured values are positive and finite; counts are whole numbers >= 0.
    counts = {'late', 'lost', 'steps', 'messages', 'samples', 'cpus'}
    for path, value in numbers(report):
        if path.rsplit('/', 1)[-1] in counts:
            assert isinstance(value, int) and value >= 0, path
        else:
            assert math.isfinite(value) and value > 0, (path, value)

    table = capsys.readouterr().out
    for row in ('inline (MuJoCo + ONNX, no ROS)', 'ROS lockstep, 3 processes',
                'ROS lockstep, 1 process', 'policy node latency', '500 Hz',
                'resident memory', 'targets met'):
        assert row in table


def test_bench_without_a_policy_says_what_to_pass(tmp_path, capsys):
    code = run_bench_command(['bench', '--policy', str(tmp_path / 'none.onnx')])
    assert code == 1
    assert '--policy FILE.onnx' in capsys.readouterr().err
