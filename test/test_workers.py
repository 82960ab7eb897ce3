"""Tests of vrat_ros.workers: ordered results, worker deaths, and the Ray backend.

The Ray tests start a one-machine cluster on loopback (`ray start --head --block`, dashboard
off, a temporary folder of its own) and stop it afterwards by signalling that one process;
they are skipped where Ray is not installed.
"""

import importlib.util
import json
import logging
import os
import pathlib
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

from vrat_ros import cli
from vrat_ros.train import _init_worker
from vrat_ros.train import _run_task
from vrat_ros.train import collection_job
from vrat_ros.train import default_config
from vrat_ros.train import generate_episodes
from vrat_ros.workers import ClusterError
from vrat_ros.workers import map_ordered

HAVE_RAY = importlib.util.find_spec('ray') is not None
needs_ray = pytest.mark.skipif(
    not HAVE_RAY, reason="Ray is not installed (pip install -e '.[scale]' in a vrat_ros checkout)")
DEFAULT_CLIP = (pathlib.Path(__file__).resolve().parents[1]
                / 'vrat_ros' / 'data' / 'clips' / 'rat23_dannce_1000f.npz')


def _tiny_config(n_episodes=10, steps=30):
    config = default_config(small=True)
    config['clips'] = [str(DEFAULT_CLIP)]
    config['data'].update({'n_episodes': n_episodes, 'episode_steps': steps})
    return config


def _assert_same_episodes(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        for key in ('qpos', 'qvel', 'ctrl'):
            np.testing.assert_array_equal(x[key], y[key])


@pytest.fixture(scope='module')
def episodes_two_processes():
    """Round 0 of the tiny config on 2 local processes: the reference for the other runs."""
    return generate_episodes(_tiny_config(), 0, workers=2)


# Module-level so that the pool's processes find them (fork) ------------------------------

def _square_late(x):
    time.sleep(0.02 * (5 - x % 5))  # early tasks finish last
    return x * x


def _square_kill_once(task):
    x, marker = task
    if x == 3 and not os.path.exists(marker):
        with open(marker, 'w') as f:
            f.write(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    return x * x


# Local processes -----------------------------------------------------------------------------

def test_results_come_back_in_task_order():
    seen = []
    results = map_ordered(_square_late, range(10), workers=2,
                          on_result=lambda i, v: seen.append((i, v)))
    assert results == [x * x for x in range(10)]
    assert sorted(seen) == [(x, x * x) for x in range(10)]


def test_episodes_do_not_depend_on_the_worker_count(episodes_two_processes):
    config = _tiny_config()
    one = generate_episodes(config, 0, workers=1)
    _assert_same_episodes(one, episodes_two_processes)
    assert len(one) == 10 and all(len(e['ctrl']) > 0 for e in one)
    # Episode 9 alone, in a task of its own, is the same episode: it depends on its index only.
    init_args, _ = collection_job(config, 0)
    _init_worker(*init_args)
    alone = _run_task((dict(config['data']), config['seed'], 0, [9]))
    _assert_same_episodes(alone, one[9:])


def test_a_dead_worker_process_is_replaced_and_every_task_counted_once(tmp_path, caplog):
    marker = str(tmp_path / 'killed')
    seen = []
    with caplog.at_level(logging.WARNING, logger='vrat_ros.workers'):
        results = map_ordered(_square_kill_once, [(x, marker) for x in range(8)], workers=2,
                              on_result=lambda i, v: seen.append(i))
    assert os.path.exists(marker)  # task 3 did kill its worker once
    assert results == [x * x for x in range(8)]
    assert sum(results) == 140
    assert sorted(seen) == list(range(8))  # each task reported exactly once
    assert 'a worker process died' in caplog.text


def test_ray_address_without_ray_is_a_clear_error(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, 'ray', None)  # what `import ray` does where it is absent
    with pytest.raises(ClusterError,
                       match=r"needs Ray .*pip install -e '\.\[scale\]' in a vrat_ros checkout"):
        map_ordered(_square_late, range(3), workers=2, ray_address='local')
    rc = cli.main(['train', '--small', '--no-progress', '--out', str(tmp_path),
                   '--ray-address', '127.0.0.1:6379'])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and '\n' not in err and 'needs Ray' in err


def test_nothing_imports_ray_unless_asked():
    code = ('import sys; import vrat_ros.workers, vrat_ros.train, vrat_ros.cli, '
            'vrat_ros.scaling; vrat_ros.cli.build_parser(); '
            "print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert out.strip() == 'False'


# Ray -----------------------------------------------------------------------------------------

def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _descendants(root):
    """Process ids below `root` (from /proc)."""
    children = {}
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            try:
                with open(f'/proc/{entry}/stat') as f:
                    ppid = int(f.read().rsplit(')', 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _cmdline(pid):
    try:
        with open(f'/proc/{pid}/cmdline', 'rb') as f:
            return f.read().replace(b'\0', b' ').decode(errors='replace')
    except OSError:
        return ''


@pytest.fixture(scope='module')
def ray_cluster():
    """A Ray head on 127.0.0.1 with 2 CPUs, started here and stopped afterwards."""
    if not HAVE_RAY:
        pytest.skip("Ray is not installed (pip install -e '.[scale]' in a vrat_ros checkout)")
    port = _free_port()
    temp_dir = tempfile.mkdtemp(prefix='vr', dir='/tmp')  # short: Ray puts sockets in it
    # Token authentication with a token of this test only, for the cluster and for this
    # process (read when Ray is imported); nothing is written to ~/.ray.
    auth = {'RAY_AUTH_MODE': 'token', 'RAY_AUTH_TOKEN': secrets.token_hex(32)}
    saved = {k: os.environ.get(k) for k in auth}
    os.environ.update(auth)
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER='0', RAY_USAGE_STATS_ENABLED='0',
               RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S='0')
    ray_bin = os.path.join(os.path.dirname(sys.executable), 'ray')
    log = open(os.path.join(temp_dir, 'start.log'), 'w+')
    proc = subprocess.Popen(
        [ray_bin, 'start', '--head', '--block', '--node-ip-address=127.0.0.1',
         f'--port={port}', '--num-cpus=2', '--include-dashboard=false',
         f'--temp-dir={temp_dir}', '--disable-usage-stats'],
        stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 90
        while 'Ray runtime started' not in open(log.name).read():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail('ray start failed:\n' + open(log.name).read()[-2000:])
            time.sleep(0.5)
        yield {'address': f'127.0.0.1:{port}', 'pid': proc.pid}
    finally:
        import ray
        ray.shutdown()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@needs_ray
def test_ray_binds_to_loopback_only(ray_cluster):
    map_ordered(_run_task, [], 2, ray_address=ray_cluster['address'])  # connects
    import ray
    assert ray.nodes()[0]['NodeManagerAddress'] == '127.0.0.1'
    if shutil.which('ss') is None:
        return  # no way to list the listening sockets here
    pids = set(_descendants(ray_cluster['pid']))
    out = subprocess.run(['ss', '-Hltnp'], capture_output=True, text=True).stdout
    listening = [line for line in out.splitlines()
                 if any(f'pid={pid},' in line for pid in pids)]
    assert listening, 'no listening socket of the cluster was found'
    for line in listening:
        assert line.split()[3].startswith(('127.0.0.1:', '[::ffff:127.0.0.1]:')), line


@needs_ray
def test_episodes_on_ray_equal_those_on_processes(ray_cluster, episodes_two_processes):
    on_ray = generate_episodes(_tiny_config(), 0, workers=2,
                               ray_address=ray_cluster['address'])
    _assert_same_episodes(on_ray, episodes_two_processes)


@needs_ray
def test_a_killed_ray_worker_is_replaced_and_nothing_is_lost(ray_cluster, caplog):
    # Enough tasks (6) that work is still queued when the first result arrives, and only an
    # actor of this run is killed: actors of earlier tests may still be shutting down.
    config = _tiny_config(n_episodes=24)
    init_args, tasks = collection_job(config, 0)
    assert len(tasks) == 6
    earlier = {pid for pid in _descendants(ray_cluster['pid'])
               if 'ray::_TaskRunner' in _cmdline(pid)}
    killed = []

    def kill_one_actor(i, chunk):
        if killed:
            return
        for pid in _descendants(ray_cluster['pid']):
            if pid not in earlier and 'ray::_TaskRunner' in _cmdline(pid):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return

    with caplog.at_level(logging.WARNING, logger='vrat_ros.workers'):
        chunks = map_ordered(_run_task, tasks, 2, initializer=_init_worker,
                             initargs=init_args, on_result=kill_one_actor,
                             ray_address=ray_cluster['address'])
    assert killed, 'no Ray worker of this run was found to kill'
    assert 'a Ray worker died' in caplog.text
    _assert_same_episodes([e for chunk in chunks for e in chunk],
                          generate_episodes(config, 0, workers=1))


@needs_ray
def test_unreachable_ray_address_is_a_clear_error(capsys, tmp_path):
    port = _free_port()  # nothing listens there
    rc = cli.main(['train', '--small', '--no-progress', '--out', str(tmp_path),
                   '--ray-address', f'127.0.0.1:{port}'])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and '\n' not in err and f'no Ray cluster answers at 127.0.0.1:{port}' in err


@needs_ray
def test_vrat_train_gives_the_same_result_with_and_without_ray(ray_cluster, tmp_path):
    pytest.importorskip('torch')
    settings = {
        'clips': [str(DEFAULT_CLIP)],
        'data': {'n_episodes': 6, 'episode_steps': 30},
        'rounds': {'count': 1, 'n_episodes': 4, 'steps': 20},
        'relabel': {'val_fraction': 0.2},
        'model': {'hidden': [32, 32]},
        'train': {'steps': 30, 'batch_size': 64, 'checkpoint_every': 25, 'log_every': 10},
        'eval': {'every': 25, 'starts_s': [0.0], 'seconds': 0.3},
    }
    config_path = tmp_path / 'tiny.json'
    config_path.write_text(json.dumps(settings))
    runs = {'processes': ['--workers', '2'],
            'ray': ['--workers', '2', '--ray-address', ray_cluster['address']]}
    summaries = {}
    for name, extra in runs.items():
        out = tmp_path / name
        assert cli.main(['train', '--small', '--config', str(config_path), '--out', str(out),
                         '--no-progress', '--no-export'] + extra) == 0
        summaries[name] = json.loads((out / 'summary.json').read_text())
        for r in (0, 1):
            with np.load(out / f'episodes_r{r}.npz') as z:
                summaries[name][f'ctrl_r{r}'] = z['ctrl']
    a, b = summaries['processes'], summaries['ray']
    assert a['n_transitions'] == b['n_transitions'] > 0
    for r in (0, 1):  # round 1 is collected by the trained policy on the workers
        np.testing.assert_array_equal(a[f'ctrl_r{r}'], b[f'ctrl_r{r}'])
    assert a['final_loss'] == b['final_loss']
    assert a['initial_loss'] == b['initial_loss']


@needs_ray
def test_vrat_eval_gives_the_same_numbers_with_and_without_ray(ray_cluster, tmp_path,
                                                               synthetic_clip_path,
                                                               tiny_policy_path):
    reports = {}
    for name, extra in (('processes', ['--workers', '2']),
                        ('ray', ['--ray-address', ray_cluster['address']])):
        path = tmp_path / f'{name}.json'
        assert cli.main(['eval', '--clips', synthetic_clip_path, '--policy', tiny_policy_path,
                         '--starts', '2', '--report', str(path), '--no-progress']
                        + extra) == 0
        reports[name] = json.loads(path.read_text())
    a, b = reports['processes'], reports['ray']
    assert b['run']['workers'] == 2  # every CPU of the test cluster
    assert len(a['episodes']) == 6 and a['overall']['pd']['tracked_fraction'] > 0.0
    for key in ('overall', 'per_clip', 'episodes'):
        assert a[key] == b[key]


def test_workers_used_counts_the_workers_that_run(monkeypatch):
    from vrat_ros import workers
    assert workers.workers_used(100000, 6) == 6
    assert workers.workers_used(4, 1) == 1 and workers.workers_used(1, 50) == 1
    assert workers.workers_used(3, 50) == 3
    monkeypatch.setattr(workers, 'ray_cluster_cpus', lambda address: 2)
    assert workers.workers_used(5, 10, 'local') == 2
    assert workers.workers_used(None, 10, 'local') == 2
    assert workers.workers_used(5, 1, 'local') == 1


def test_bench_workers_reports_the_workers_that_ran(tmp_path, capsys):
    path = tmp_path / 'scaling.json'
    assert cli.main(['bench-workers', '--workers', '1', '100000', '--episodes', '2',
                     '--steps', '3', '--report', str(path)]) == 0
    runs = json.loads(path.read_text())['runs']
    assert [r['workers_asked'] for r in runs] == [1, 100000]
    assert runs[0]['workers'] == 1 and 1 <= runs[1]['workers'] <= 2  # at most one per task
    out = capsys.readouterr().out
    assert '(100000 asked)' in out


def test_bench_workers_negative_seed_names_the_option(tmp_path, capsys):
    assert cli.main(['bench-workers', '--seed', '-1', '--episodes', '2', '--steps', '3',
                     '--report', str(tmp_path / 's.json')]) == 1
    err = capsys.readouterr().err.strip()
    assert '--seed should be a non-negative integer: got -1' in err
    assert len(err.splitlines()) == 1 and list(tmp_path.iterdir()) == []


@needs_ray
def test_a_local_ray_claims_no_more_cpus_than_the_usable_cores():
    code = ('from vrat_ros.workers import default_workers, ray_connect; '
            'ray = ray_connect("local", num_cpus=default_workers() + 3); '
            'print(int(ray.cluster_resources()["CPU"]), default_workers())')
    env = dict(os.environ, RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S='0')
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    cpus, cores = map(int, proc.stdout.split()[-2:])
    assert cpus == cores
