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

Known shortcoming: a task that itself kills its worker every time is retried
`max_pool_restarts` times and then reported as an error.
"""

from __future__ import annotations

import concurrent.futures
import logging
import multiprocessing
import os
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Sequence

_LOG = logging.getLogger(__name__)


class WorkerError(RuntimeError):
    """Raised when tasks could not be completed even after rebuilding the worker pool."""


def default_workers() -> int:
    """Returns the number of worker processes to use by default: the usable cores."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _pool_context():
    # fork starts fast and needs no importable __main__; the tasks here never use torch.
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context('fork' if 'fork' in methods else 'spawn')


def map_ordered(fn: Callable[[Any], Any], tasks: Sequence[Any], workers: int = 1,
                initializer: Callable | None = None, initargs: tuple = (),
                on_result: Callable[[int, Any], None] | None = None,
                max_pool_restarts: int = 3) -> list:
    """Runs fn(task) for every task and returns the results in task order.

    Args:
        fn: a module-level function (it is pickled by reference for the workers).
        tasks: picklable task descriptions; each must hold all that decides its result.
        workers: number of worker processes; 1 runs everything in this process.
        initializer, initargs: run once in each worker (and once here when workers == 1),
            e.g. to build a MuJoCo model a worker keeps for all its tasks.
        on_result: called as on_result(index, result) in this process as each task
            finishes (in completion order), e.g. for a progress bar.
        max_pool_restarts: how many times a pool whose worker died is rebuilt.

    Returns:
        [fn(tasks[0]), fn(tasks[1]), ...].

    Raises:
        WorkerError: tasks were still unfinished after max_pool_restarts rebuilds.
    """
    tasks = list(tasks)
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
