"""`vrat bench-workers`: how training-data collection scales with the number of workers.

It times `train.generate_episodes` (round-0 PD episodes: MuJoCo physics and the PD
controller, no torch) for each worker count, on local processes or on Ray, and prints
environment steps per second (control steps at 50 Hz, each 10 physics steps) and the
speed-up over the first count. Every timing includes starting the workers and building
their models, as a training round pays it. The episodes of every run are hashed, which
shows that the data do not depend on the worker count.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time

DEFAULT_EPISODES = 96
DEFAULT_STEPS = 250


def episodes_digest(episodes: list[dict]) -> str:
    """Returns a short SHA-256 of a list of episodes (their qpos, qvel and ctrl, in order)."""
    digest = hashlib.sha256()
    for episode in episodes:
        for key in ('qpos', 'qvel', 'ctrl'):
            digest.update(episode[key].tobytes())
    return digest.hexdigest()[:16]


def measure_scaling(worker_counts: list[int], episodes: int = DEFAULT_EPISODES,
                    steps: int = DEFAULT_STEPS, ray_address: str | None = None,
                    seed: int = 0) -> dict:
    """Times one round of episode collection for each worker count.

    Args:
        worker_counts: worker processes (or Ray actors) of each run, e.g. [1, 2]; a run
            uses at most one per task (and, on Ray, per CPU of the cluster), and its entry
            reports the number used ('workers') beside the number asked ('workers_asked').
        episodes: episodes per run.
        steps: control steps per episode (fewer where the rat falls).
        ray_address: None for local processes, else a Ray address (see
            `vrat_ros.workers.map_ordered`); connecting is timed apart from the runs.
        seed: the training seed the episodes derive from.

    Returns:
        A JSON-friendly report: settings, the machine's load before the runs, one entry per
        run (wall time, control steps, steps/s, digest of the episodes), each run's
        speed-up over the first, and whether all runs produced identical episodes.
    """
    from vrat_ros.train import collection_job
    from vrat_ros.train import default_config
    from vrat_ros.train import generate_episodes
    from vrat_ros.workers import default_workers
    from vrat_ros.workers import ray_connect
    from vrat_ros.workers import workers_used

    if not worker_counts or min(worker_counts) < 1:
        raise ValueError(f'--workers should be at least 1: got {worker_counts}')
    if episodes < 1 or steps < 1:
        raise ValueError(f'--episodes and --steps should be at least 1: got {episodes}, '
                         f'{steps}')
    if int(seed) < 0:
        raise ValueError(f'--seed should be a non-negative integer: got {seed}')
    config = default_config()
    config['seed'] = int(seed)
    config['data'].update({'n_episodes': int(episodes), 'episode_steps': int(steps)})
    n_tasks = len(collection_job(config, 0)[1])
    report = {
        'what': 'round-0 episode collection (train.generate_episodes): MuJoCo + PD',
        'backend': 'processes' if ray_address is None else f'ray ({ray_address})',
        'episodes': int(episodes), 'episode_steps': int(steps), 'seed': int(seed),
        'cores': default_workers(),
        'load_avg_before': [round(x, 2) for x in os.getloadavg()],
        'runs': [],
    }
    if ray_address is not None:
        t0 = time.perf_counter()
        ray = ray_connect(ray_address, num_cpus=max(worker_counts))  # 'local': capped
        report['ray_connect_s'] = round(time.perf_counter() - t0, 2)
        report['ray_cluster_cpus'] = int(ray.cluster_resources().get('CPU', 0))
    for n in worker_counts:
        t0 = time.perf_counter()
        result = generate_episodes(config, 0, workers=int(n), ray_address=ray_address)
        wall = time.perf_counter() - t0
        control_steps = int(sum(len(e['ctrl']) for e in result))
        report['runs'].append({
            'workers': workers_used(int(n), n_tasks, ray_address), 'workers_asked': int(n),
            'wall_s': round(wall, 3), 'control_steps': control_steps,
            'steps_per_s': round(control_steps / wall, 1),
            'physics_steps_per_s': round(10 * control_steps / wall, 1),
            'digest': episodes_digest(result)})
    base = report['runs'][0]['steps_per_s']
    for run in report['runs']:
        run['speedup'] = round(run['steps_per_s'] / base, 3)
    report['identical_episodes'] = len({run['digest'] for run in report['runs']}) == 1
    report['load_avg_after'] = [round(x, 2) for x in os.getloadavg()]
    return report


def format_report(report: dict) -> str:
    """Returns the report as a few lines of text."""
    lines = [f"{report['what']}; {report['backend']}; {report['episodes']} episodes x "
             f"{report['episode_steps']} steps; {report['cores']} cores; load average "
             f"before {report['load_avg_before'][0]}"]
    for run in report['runs']:
        asked = run.get('workers_asked', run['workers'])
        note = f" ({asked} asked)" if asked != run['workers'] else ''
        lines.append(f"  {run['workers']:>3} worker(s): {run['steps_per_s']:>8.1f} env steps/s "
                     f"({run['wall_s']:.2f} s)  x{run['speedup']:.2f}  data {run['digest']}"
                     f'{note}')
    lines.append('  identical episodes for every worker count: '
                 + ('yes' if report['identical_episodes'] else 'NO'))
    return '\n'.join(lines)


def _cmd_bench_workers(args: argparse.Namespace) -> int:
    from vrat_ros.cli import _check_output_path
    from vrat_ros.cli import _write_json_atomic
    _check_output_path(args.report)
    report = measure_scaling(args.workers, episodes=args.episodes, steps=args.steps,
                             ray_address=args.ray_address, seed=args.seed)
    print(format_report(report))
    if args.report:
        _write_json_atomic(args.report, report)
    if not report['identical_episodes']:
        print('vrat bench-workers: the episodes differ between worker counts', file=sys.stderr)
        return 1
    return 0


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    """Registers `vrat bench-workers` on the `vrat` command's subparsers."""
    p = subparsers.add_parser(
        'bench-workers',
        help='Measure environment steps/s of training-data collection for several worker '
             'counts (local processes or Ray) and the speed-up.')
    p.add_argument('--workers', type=int, nargs='+', default=[1, 2], metavar='N',
                   help='Worker counts to time, in order (default 1 2).')
    p.add_argument('--episodes', type=int, default=DEFAULT_EPISODES,
                   help=f'Episodes per run (default {DEFAULT_EPISODES}).')
    p.add_argument('--steps', type=int, default=DEFAULT_STEPS,
                   help=f'Control steps per episode (default {DEFAULT_STEPS}).')
    p.add_argument('--ray-address', metavar='ADDRESS',
                   help="Run on Ray: 'local' or HOST:PORT of a running cluster.")
    p.add_argument('--seed', type=int, default=0, help='Training seed (default 0).')
    p.add_argument('--report', metavar='FILE', help='Also write the report as JSON.')
    p.set_defaults(func=_cmd_bench_workers)
