"""Running independent tasks on worker processes, in order, surviving a dead worker.

Training data collection and evaluation are lists of independent tasks, each carrying
everything that decides its result (its own seed included). `map_ordered` runs such a list
and returns the results in task order, so the numbers never depend on how many workers ran
them or which worker ran which task.

Backends:
  * workers == 1: in this process, no pool (easy to debug and profile).
  * workers > 1: a pool of local processes (fork where available). If a worker process dies
    (killed, out of memory), the pool is rebuilt and every task that had not returned is run
    again; a finished task's result is kept once, so nothing is lost or counted twice.
  * ray_address given: Ray actors, on this machine ('local') or on a cluster (host:port).
    Each actor runs the initializer once and keeps what it built (a MuJoCo model) for all
    its tasks; an actor holds one task at a time. When an actor dies, the task it held is
    queued again and a new actor takes its place. Ray is an optional extra
    (pip install -e '.[scale]' in a vrat_ros checkout); it is imported only when an address
    is given, so nothing else in vrat_ros (the ROS nodes above all) depends on it.

Known shortcoming: a task that itself kills its worker every time is retried
`max_pool_restarts` times and then reported as an error.
"""

from __future__ import annotations

import atexit
from collections import deque
import concurrent.futures
import ipaddress
import logging
import multiprocessing
import os
import secrets
import shutil
import socket
import sys
import tempfile
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Sequence

from vrat_ros.errors import VratError

_LOG = logging.getLogger(__name__)

RAY_INSTALL = "pip install -e '.[scale]' in a vrat_ros checkout"
# Seconds allowed to open a TCP connection to a cluster's address before giving up.
_CONNECT_TIMEOUT_S = 5.0


class WorkerError(VratError):
    """Raised when tasks could not be completed even after rebuilding the worker pool."""


class ClusterError(VratError):
    """Ray is not installed, or the Ray cluster at the given address cannot be used."""


def default_workers() -> int:
    """Returns the number of worker processes to use by default: the usable cores."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def workers_used(workers: int | None, n_tasks: int, ray_address: str | None = None) -> int:
    """Returns how many workers `map_ordered` runs for these arguments (1: this process).

    Local processes: min(workers, n_tasks), or 1 (this process) for one worker or one task.
    Ray: min(workers, the cluster's CPUs, n_tasks) actors (this connects to the cluster).

    Args:
        workers: as for `map_ordered` (None: the usable cores, or the cluster's CPUs).
        n_tasks: the number of tasks.
        ray_address: as for `map_ordered`.
    """
    if ray_address is not None:
        cluster_cpus = ray_cluster_cpus(ray_address)
        n = cluster_cpus if workers is None else min(int(workers), cluster_cpus)
        return max(1, min(n, n_tasks))
    if workers is None:
        workers = default_workers()
    if workers <= 1 or n_tasks <= 1:
        return 1
    return int(min(workers, n_tasks))


def _pool_context():
    # fork starts fast and needs no importable __main__; the tasks here never use torch.
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context('fork' if 'fork' in methods else 'spawn')


def map_ordered(fn: Callable[[Any], Any], tasks: Sequence[Any], workers: int | None = 1,
                initializer: Callable | None = None, initargs: tuple = (),
                on_result: Callable[[int, Any], None] | None = None,
                max_pool_restarts: int = 3, ray_address: str | None = None) -> list:
    """Runs fn(task) for every task and returns the results in task order.

    Args:
        fn: a module-level function (it is pickled by reference for the workers; with Ray,
            every node needs the same vrat_ros installed).
        tasks: picklable task descriptions; each must hold all that decides its result.
        workers: number of worker processes (Ray actors with ray_address); 1 runs
            everything in this process unless ray_address is given. None: the usable cores
            here, or every CPU of the Ray cluster.
        initializer, initargs: run once in each worker (and once here when workers == 1),
            e.g. to build a MuJoCo model a worker keeps for all its tasks.
        on_result: called as on_result(index, result) in this process as each task
            finishes (in completion order), e.g. for a progress bar.
        max_pool_restarts: how many times a pool whose worker died is rebuilt; with Ray,
            how many times one task is run again after its actor died.
        ray_address: None for local processes; 'local' for a private Ray instance on this
            machine (loopback only, stopped when this process exits; its CPUs, and so its
            actors, are capped at the usable cores); 'host:port' of a
            running Ray cluster (see `ray start`); 'auto' for the cluster started on this
            machine.

    Returns:
        [fn(tasks[0]), fn(tasks[1]), ...]. `workers_used` says how many workers ran them.

    Raises:
        WorkerError: tasks were still unfinished after max_pool_restarts rebuilds.
        ClusterError: ray_address is given but Ray is missing or the cluster unreachable.
    """
    tasks = list(tasks)
    if ray_address is not None:
        return _map_ray(fn, tasks, workers, initializer, initargs, on_result,
                        max_pool_restarts, ray_address)
    if workers is None:
        workers = default_workers()
    results: list = [None] * len(tasks)
    if workers <= 1 or len(tasks) <= 1:
        if initializer is not None:
            initializer(*initargs)
        for i, task in enumerate(tasks):
            results[i] = fn(task)
            if on_result is not None:
                on_result(i, results[i])
        return results

    pending = list(range(len(tasks)))
    restarts = 0
    while pending:
        n = max(1, min(workers, len(pending)))
        with concurrent.futures.ProcessPoolExecutor(
                n, mp_context=_pool_context(), initializer=initializer,
                initargs=initargs) as pool:
            futures = {pool.submit(fn, tasks[i]): i for i in pending}
            done_now = []
            broken = None
            for future in concurrent.futures.as_completed(futures):
                i = futures[future]
                try:
                    value = future.result()
                except BrokenProcessPool as exc:
                    broken = exc
                    continue
                results[i] = value
                done_now.append(i)
                if on_result is not None:
                    on_result(i, value)
        finished = set(done_now)
        pending = [i for i in pending if i not in finished]
        if pending:
            restarts += 1
            if restarts > max_pool_restarts:
                raise WorkerError(
                    f'{len(pending)} of {len(tasks)} tasks did not finish after '
                    f'{max_pool_restarts} worker-pool rebuilds (last error: {broken})')
            _LOG.warning('a worker process died (%s); rebuilding the pool and re-running '
                         '%d unfinished task(s)', broken, len(pending))
    return results


# ---------------------------------------------------------------------------------------------
# Ray backend.

# The address this process is connected to through ray.init, when vrat_ros connected it.
_RAY_STATE: dict = {'address': None, 'temp_dir': None, 'atexit': False}


def _is_loopback(address: str) -> bool:
    """Whether `address` is 'local' or a host:port on this machine's loopback."""
    if address == 'local':
        return True
    host = address.rsplit(':', 1)[0].strip('[]')
    if host == 'localhost':
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_reachable(address: str) -> None:
    """Raises ClusterError unless a TCP connection to host:port opens."""
    host, sep, port = address.rpartition(':')
    if not sep or not host or not port.isdigit():
        raise ClusterError(f"Ray address '{address}' should be host:port (as printed by "
                           "ray start --head), 'local' or 'auto'")
    try:
        socket.create_connection((host.strip('[]'), int(port)),
                                 timeout=_CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise ClusterError(
            f'no Ray cluster answers at {address} ({exc.strerror or exc}); start one '
            'with ray start --head, or use --ray-address local') from None


def _shutdown_local_ray() -> None:
    import ray
    ray.shutdown()
    if _RAY_STATE['temp_dir']:
        shutil.rmtree(_RAY_STATE['temp_dir'], ignore_errors=True)
    _RAY_STATE.update(address=None, temp_dir=None)


def ray_connect(address: str, num_cpus: int | None = None):
    """Imports Ray and connects this process to `address`; returns the ray module.

    A connection made here is kept for later calls with the same address. On loopback
    ('local', 127.0.0.1:port, localhost:port) Ray is kept on 127.0.0.1: by default it would
    swap a loopback address for this machine's network address. Usage statistics are off.

    Args:
        address: 'local' (start a private instance on this machine, its files in a
            temporary folder, stopped at exit), 'auto' or 'host:port' of a running cluster.
        num_cpus: CPUs of a 'local' instance, capped at the usable cores
            (`default_workers()`; default: those cores): a private Ray never claims CPUs
            this machine does not have, so at most that many actors run on it.

    Raises:
        ClusterError: Ray is not installed, or nothing answers at the address.
    """
    if _is_loopback(address):
        os.environ.setdefault('RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER', '0')
    os.environ.setdefault('RAY_USAGE_STATS_ENABLED', '0')
    if address == 'local' and 'RAY_AUTH_MODE' not in os.environ and 'ray' not in sys.modules:
        # Token authentication with a token of this run only (read when Ray is imported):
        # Ray's own default writes a token into ~/.ray, which then turns token
        # authentication on for every later `ray start` on this machine.
        os.environ['RAY_AUTH_MODE'] = 'token'
        os.environ['RAY_AUTH_TOKEN'] = secrets.token_hex(32)
    try:
        import ray
    except ImportError as exc:
        raise ClusterError(f'--ray-address {address} needs Ray ({exc}); install it with '
                           f'{RAY_INSTALL}, or leave --ray-address out') from None
    if _is_loopback(address):
        # The environment variable above only acts if Ray was not imported before.
        from ray._private import ray_constants
        ray_constants.ENABLE_RAY_CLUSTER = False
    if address not in ('local', 'auto') and not address.startswith('ray://'):
        _check_reachable(address)
    if ray.is_initialized():
        if _RAY_STATE['address'] in (None, address):
            return ray  # connected by the caller, or by an earlier call
        _shutdown_local_ray()
    kwargs: dict = {'include_dashboard': False, 'log_to_driver': True}
    if _is_loopback(address):
        kwargs['_node_ip_address'] = '127.0.0.1'
    if address == 'local':
        temp_dir = tempfile.mkdtemp(prefix='vrat_ray_')
        kwargs.update(num_cpus=min(int(num_cpus or default_workers()), default_workers()),
                      _temp_dir=temp_dir)
        _RAY_STATE['temp_dir'] = temp_dir
    try:
        ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError) as exc:
        if _RAY_STATE['temp_dir']:
            shutil.rmtree(_RAY_STATE['temp_dir'], ignore_errors=True)
            _RAY_STATE['temp_dir'] = None
        hint = '' if os.environ.get('RAY_AUTH_MODE') else (
            ' (a cluster started while ~/.ray/auth_token exists uses token authentication: '
            'set RAY_AUTH_MODE=token, and RAY_AUTH_TOKEN if its token is elsewhere)')
        raise ClusterError(f'could not connect to the Ray cluster at {address}: '
                           f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                           f'{hint}') from None
    _RAY_STATE['address'] = address
    if address == 'local' and not _RAY_STATE.get('atexit'):
        atexit.register(_shutdown_local_ray)
        _RAY_STATE['atexit'] = True
    return ray


def ray_cluster_cpus(address: str) -> int:
    """Connects to the Ray cluster at `address` (see `ray_connect`); returns its CPU count."""
    ray = ray_connect(address)
    return max(1, int(ray.cluster_resources().get('CPU', 1)))


class _TaskRunner:
    """The body of one Ray actor: runs the initializer once, then one task per call."""

    def __init__(self, job: tuple):
        self._fn, initializer, initargs = job
        if initializer is not None:
            initializer(*initargs)

    def run(self, task: Any) -> Any:
        """Returns fn(task)."""
        return self._fn(task)


def _map_ray(fn, tasks, workers, initializer, initargs, on_result, max_retries,
             address) -> list:
    ray = ray_connect(address, num_cpus=workers)
    from ray.exceptions import RayActorError

    cluster_cpus = ray_cluster_cpus(address)
    n = cluster_cpus if workers is None else int(workers)
    if n > cluster_cpus:
        _LOG.warning('%d workers asked for, but the Ray cluster has %d CPUs; using %d',
                     n, cluster_cpus, cluster_cpus)
        n = cluster_cpus
    n = max(1, min(n, len(tasks)))
    results: list = [None] * len(tasks)
    if not tasks:
        return results
    runner = ray.remote(num_cpus=1, max_restarts=0, max_task_retries=0)(_TaskRunner)
    job = ray.put((fn, initializer, tuple(initargs)))
    actors = [runner.remote(job) for _ in range(n)]
    idle = list(actors)
    queue = deque(range(len(tasks)))
    retries = [0] * len(tasks)
    in_flight: dict = {}  # ObjectRef -> (task index, actor)
    try:
        while queue or in_flight:
            while idle and queue:
                actor, i = idle.pop(), queue.popleft()
                in_flight[actor.run.remote(tasks[i])] = (i, actor)
            (ref,), _ = ray.wait(list(in_flight), num_returns=1)
            i, actor = in_flight.pop(ref)
            try:
                value = ray.get(ref)
            except RayActorError as exc:
                retries[i] += 1
                if retries[i] > max_retries:
                    raise WorkerError(
                        f'task {i} of {len(tasks)} lost its Ray actor {retries[i]} times; '
                        f'giving up (last error: {exc})') from None
                _LOG.warning('a Ray worker died (%s); a new one re-runs task %d',
                             str(exc).splitlines()[0], i)
                actors.remove(actor)
                ray.kill(actor)
                actor = runner.remote(job)
                actors.append(actor)
                idle.append(actor)
                queue.appendleft(i)
                continue
            results[i] = value
            idle.append(actor)
            if on_result is not None:
                on_result(i, value)
    finally:
        for actor in actors:
            ray.kill(actor)
    return results
