"""Run one stage's tasks side by side, each in a worker process of its own.

A stage that handles its tasks one after another (refine, train) spends most of its time in
single-threaded Python and solvers that hold the GIL, so threads would not help; processes do.
:func:`map_tasks` runs ``job(bp, task, run_dir, log=..., **kwargs)`` for every task of a
blueprint in ``workers`` processes and gives back the results in task order, with each task's
log lines replayed in task order too (so a notebook reads as if the tasks had run one after
another).

Every job runs with native thread pools (OpenMP, BLAS) limited to one thread, in the worker
as in-process, so floating-point reductions keep one order and the outputs are the same for
any ``workers``: the same rows, vocabularies, weights and tables, so the same exported
artifacts (a pickled model's bytes may differ in which equal objects it stores once: pickle's
memo follows object identity). The workers are joblib's loky processes: started fresh (never
forked from a Jupyter kernel, whose I/O threads' locks a fork would copy in any state), and
unlike ``multiprocessing``'s spawn they do not re-run the calling script.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from joblib import Parallel, delayed
from threadpoolctl import threadpool_limits

T = TypeVar("T")
Log = Callable[[str], None]


def worker_count(requested: int, n_tasks: int) -> int:
    """``requested`` capped at the number of tasks and of cores (at least 1)."""
    return max(1, min(requested, n_tasks, os.cpu_count() or 1))


def _logged(job: Callable[..., T], bp: Any, task_name: str, run_dir: Path,
            kwargs: dict[str, Any]) -> tuple[T, list[str]]:
    """A worker's share: run ``job`` for one task, keeping its log lines to send back."""
    lines: list[str] = []
    with threadpool_limits(limits=1):
        result = job(bp, bp.task(task_name), run_dir, log=lines.append, **kwargs)
    return result, lines


def map_tasks(job: Callable[..., T], bp: Any, run_dir: Path, workers: int, *,
              log: Log = print, **kwargs: Any) -> dict[str, T]:
    """``{task name: job(bp, task, run_dir, log=log, **kwargs)}`` for every task of ``bp``.

    With one worker (after :func:`worker_count`) the jobs run here, one after another; else in
    worker processes. ``job`` must be a module-level function (it is pickled by reference) and
    its result picklable. A job's exception is raised here, as itself.
    """
    run_dir = Path(run_dir)
    n_jobs = worker_count(workers, len(bp.tasks))
    if n_jobs == 1:
        with threadpool_limits(limits=1):
            return {t.name: job(bp, t, run_dir, log=log, **kwargs) for t in bp.tasks}
    calls = (delayed(_logged)(job, bp, t.name, run_dir, kwargs) for t in bp.tasks)
    done = Parallel(n_jobs=n_jobs, backend="loky")(calls)
    results: dict[str, T] = {}
    for task, (result, lines) in zip(bp.tasks, done, strict=True):
        for line in lines:
            log(line)
        results[task.name] = result
    return results
