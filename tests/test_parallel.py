"""foundry.parallel: a stage's tasks side by side in worker processes."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from foundry.errors import InputDataError
from foundry.parallel import map_tasks, worker_count


def blueprint(*names: str) -> SimpleNamespace:
    """The two things map_tasks reads of a blueprint: its tasks, and a task by name."""
    tasks = [SimpleNamespace(name=n) for n in names]
    return SimpleNamespace(tasks=tasks, task=lambda n: next(t for t in tasks if t.name == n))


def report_pid(bp, task, run_dir: Path, *, log, suffix: str = "") -> tuple[str, int]:
    """A job: log two lines, return the task's name and the process that ran it."""
    log(f"{task.name}: start")
    log(f"{task.name}: done{suffix}")
    return task.name + suffix, os.getpid()


def fail_on_b(bp, task, run_dir: Path, *, log) -> str:
    if task.name == "b":
        raise InputDataError(f"{run_dir}: task {task.name!r} has no input")
    return task.name


def test_worker_count_is_capped_by_tasks_and_cores():
    assert worker_count(8, 2) == min(2, os.cpu_count() or 1)
    assert worker_count(1, 5) == 1
    assert worker_count(4, 0) == 1


def test_one_worker_runs_the_jobs_here_in_task_order(tmp_path):
    lines: list[str] = []
    out = map_tasks(report_pid, blueprint("a", "b"), tmp_path, 1, log=lines.append, suffix="!")
    assert out == {"a": ("a!", os.getpid()), "b": ("b!", os.getpid())}
    assert lines == ["a: start", "a: done!", "b: start", "b: done!"]


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two cores")
def test_workers_run_the_jobs_elsewhere_and_replay_their_logs_in_task_order(tmp_path):
    lines: list[str] = []
    out = map_tasks(report_pid, blueprint("a", "b", "c"), tmp_path, 2, log=lines.append)
    assert list(out) == ["a", "b", "c"]
    assert [name for name, _ in out.values()] == ["a", "b", "c"]
    assert all(pid != os.getpid() for _, pid in out.values())
    assert lines == [f"{n}: {w}" for n in "abc" for w in ("start", "done")]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_failed_job_raises_its_own_error(tmp_path, workers):
    with pytest.raises(InputDataError, match="task 'b' has no input"):
        map_tasks(fail_on_b, blueprint("a", "b"), tmp_path, workers, log=lambda _: None)
