"""``foundry forge``: run the numbered stage notebooks of a blueprint headlessly with papermill.

Each stage notebook is executed into ``runs/<blueprint>/<run_id>/notebooks/`` and rendered to
HTML beside it; together they are the audit record of the run. The first failing notebook
stops the forge with the failing cell and the path of the executed notebook.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from foundry.blueprint import load_blueprint
from foundry.errors import ConfigError, FoundryError
from foundry.locks import exclusive_lock
from foundry.params import NotebookParams
from foundry.paths import MODELS_DIR, NOTEBOOKS_DIR, ROOT, RUNS_DIR
from foundry.runs import (
    STAGE_NOTEBOOKS,
    STAGES,
    RunState,
    create_run,
    inherit_stage_outputs,
    last_run_with,
)
from foundry.secrets import redact

__all__ = ["STAGE_NOTEBOOKS", "ForgeError", "ForgeResult", "close_steps", "forge", "parse_steps"]


class ForgeError(FoundryError, RuntimeError):
    """The forge cannot start, or a stage failed; the message says which, where and what to do."""


@dataclass
class ForgeResult:
    blueprint: str
    run_dir: Path
    models_dir: Path
    steps: list[str]
    added_steps: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    notebooks: dict[str, Path] = field(default_factory=dict)


def parse_steps(steps: str | Sequence[str] | None) -> list[str]:
    """Validate ``--steps`` and return them in pipeline order."""
    if steps is None or steps == "" or steps == []:
        return list(STAGES)
    items = [s.strip() for s in (steps.split(",") if isinstance(steps, str) else steps)]
    unknown = [s for s in items if s not in STAGES]
    if unknown or not items:
        raise ConfigError(
            f"unknown step(s) {', '.join(unknown) or '(none)'}; steps are {','.join(STAGES)}"
        )
    return [s for s in STAGES if s in items]


def close_steps(steps: Sequence[str]) -> tuple[list[str], list[str]]:
    """Fill the gaps of ``steps``: returns (the steps to run, the steps added).

    A stage reads the outputs of the stage before it, so ``train,export`` must also evaluate
    the model it trained (exporting a new model with an older run's evaluation would ship a
    threshold and exam verdict that belong to another model).
    """
    first, last = STAGES.index(steps[0]), STAGES.index(steps[-1])
    closed = list(STAGES[first : last + 1])
    return closed, [s for s in closed if s not in steps]


def check_target(target: int | None) -> int | None:
    """``--target`` as the blueprint field ``generation.target_per_task`` would accept it."""
    if target is None:
        return None
    from pydantic import ValidationError

    from foundry.blueprint import Generation

    try:
        Generation(target_per_task=target)
    except ValidationError as exc:
        reason = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise ConfigError(f"--target {target!r}: rows per task: {reason}") from None
    return int(target)


def _failed_cell(exc: Exception) -> str:
    count = getattr(exc, "exec_count", None)
    ename = getattr(exc, "ename", type(exc).__name__)
    evalue = getattr(exc, "evalue", str(exc))
    where = f"cell [{count}]" if count is not None else "a cell"
    return redact(f"{where} raised {ename}: {evalue}")


#: One BLAS/OpenMP thread per kernel: the stages fit many small models, and on a small machine
#: BLAS threads fight each other (measured by bench/forge.py: 71.7 s -> 31.6 s on 2 cores).
SINGLE_THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@contextlib.contextmanager
def _kernel_environment() -> Iterator[None]:
    """Environment the stage kernels inherit; the caller's own settings win and are restored."""
    saved = {k: os.environ.get(k) for k in SINGLE_THREAD_ENV}
    for key in SINGLE_THREAD_ENV:
        os.environ.setdefault(key, "1")
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def render_html(notebook: Path) -> Path:
    """Render an executed notebook to HTML next to it."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(notebook, as_version=4)
    body, _ = HTMLExporter().from_notebook_node(nb)
    out = notebook.with_suffix(".html")
    out.write_text(body, encoding="utf-8")
    return out


def _run_stage(pm, step: str, state: RunState, parameters: dict, result: ForgeResult,
               html: bool, log: Callable[[str], None]) -> None:
    """Execute one stage notebook into the run folder; raise ForgeError naming the failed cell.

    The stage's status in ``run.json`` is ``running`` meanwhile, then ``complete`` or ``failed``.
    """
    source = NOTEBOOKS_DIR / STAGE_NOTEBOOKS[step]
    executed = state.run_dir / "notebooks" / STAGE_NOTEBOOKS[step]
    started = time.perf_counter()
    state.set_stage(step, "running", by="foundry forge")
    try:
        pm.execute_notebook(
            str(source),
            str(executed),
            parameters=parameters,
            cwd=str(ROOT),
            progress_bar=False,
            log_output=False,
            kernel_name="python3",
            # The kernel only talks to this process on loopback; keep its start-up
            # chatter out of the forge's output.
            extra_arguments=["--IPKernelApp.log_level=CRITICAL"],
        )
    except pm.PapermillExecutionError as exc:
        state.set_stage(step, "failed", by="foundry forge", detail=_failed_cell(exc))
        if html:
            render_html(executed)
        raise ForgeError(
            f"stage {step!r} failed: {_failed_cell(exc)}\n"
            f"executed notebook (with the traceback): {executed}"
        ) from None
    except BaseException:
        state.set_stage(step, "failed", by="foundry forge", detail="interrupted")
        raise
    finally:
        result.seconds[step] = time.perf_counter() - started
    state.set_stage(step, "complete", by="foundry forge")
    if html:
        render_html(executed)
    result.notebooks[step] = executed
    log(f"  {step:<9} {result.seconds[step]:6.1f} s  {executed}")


def forge(
    blueprint: str | Path,
    *,
    steps: str | Sequence[str] | None = None,
    provider: str | None = None,
    run_id: str | None = None,
    models_dir: str | Path | None = None,
    target_per_task: int | None = None,
    allow_exam_failures: bool = False,
    runs_root: Path | None = None,
    html: bool = True,
    log: Callable[[str], None] = print,
) -> ForgeResult:
    """Forge a blueprint: execute the selected stage notebooks in order.

    Parameters
    ----------
    blueprint : name under ``blueprints/`` or a path to a blueprint folder.
    steps : subset of ``generate,refine,train,evaluate,export``; gaps are filled (see
        :func:`close_steps`). The stages before the first step are reused from the latest run
        in which they completed (copied into the new run); if there is none, the forge refuses
        before running anything and names the command that would work.
    provider : override of ``generation.provider`` (``offline``, ``gemini``, ``openai``).
    run_id : run folder name (a plain folder name, see :func:`foundry.runs.check_run_id`);
        default a new id unique to this process (UTC time to the millisecond + random).
    models_dir : where to export; default ``models/``.
    target_per_task : override of ``generation.target_per_task``.
    allow_exam_failures : let the export stage ship models whose exam failed; the card and
        the ``.bin`` provenance record the override.
    """
    import papermill as pm

    bp = load_blueprint(blueprint)
    chosen, added = close_steps(parse_steps(steps))
    target_per_task = check_target(target_per_task)
    if "generate" in chosen:
        _check_before_forging(bp, provider, target_per_task, log)
    if added:
        log(f"--steps: added {','.join(added)} (each stage reads the one before it): "
            f"running {','.join(chosen)}")
    runs_root = Path(runs_root or RUNS_DIR)
    needed = list(STAGES[: STAGES.index(chosen[0])])
    source = _reusable_run(bp.name, str(blueprint), needed, chosen, run_id, runs_root)
    state = create_run(bp.name, run_id, runs_root=runs_root)
    # One forge per run folder: a second forge given the same --run-id is refused at once.
    with exclusive_lock(state.run_dir, doing=f"forging run {state.run_dir}", wait=False):
        if source is not None:
            inherit_stage_outputs(state.run_dir, source.run_dir, needed)
            log(f"reusing {','.join(needed)} of run {source.run_id}")
        models = Path(models_dir or MODELS_DIR).resolve()
        parameters = NotebookParams.from_namespace({
            "blueprint": str(bp.root),
            "run_dir": str(state.run_dir.resolve()),
            "models_dir": str(models),
            "provider": provider or "",
            "target_per_task": int(target_per_task or 0),
            "allow_exam_failures": bool(allow_exam_failures),
        }).papermill()
        result = ForgeResult(bp.name, state.run_dir, models, chosen, added)
        (state.run_dir / "notebooks").mkdir(exist_ok=True)
        log(f"forging {bp.name!r} -> {state.run_dir} (steps: {','.join(chosen)})")
        with _kernel_environment():
            for step in chosen:
                _run_stage(pm, step, state, parameters, result, html, log)
    return result


def _check_before_forging(bp, provider: str | None, target: int | None,
                          log: Callable[[str], None]) -> None:
    """``foundry blueprint check`` before stage 1: every problem at once, before any work."""
    from foundry.check import check_blueprint

    report = check_blueprint(bp, provider=provider, target=target)
    if not report.ok:
        raise ForgeError(f"{bp.name}: `foundry blueprint check` found errors; nothing was run.\n"
                         + report.format())
    for warning in report.warnings:
        log(f"warning: {warning}")


def _reusable_run(name: str, given: str, needed: list[str], chosen: list[str],
                  run_id: str | None, runs_root: Path) -> RunState | None:
    """The run whose ``needed`` stages a partial forge reuses (None: nothing to reuse, or the
    target run already has them); a ForgeError naming the full command if no run has them."""
    if not needed:
        return None
    target = runs_root / name / run_id if run_id else None
    if target is not None and target.is_dir():
        state = RunState.load(target)
        if all(state.status(s) == "complete" for s in needed):
            return None
    source = last_run_with(name, needed, runs_root, exclude=target)
    if source is None:
        through = ",".join(STAGES[: STAGES.index(chosen[-1]) + 1])
        raise ForgeError(
            f"--steps {','.join(chosen)} starts from the outputs of {needed[-1]}, and no run of "
            f"{name!r} under {runs_root / name} has a complete {needed[-1]} stage; run "
            f"`foundry forge {given} --steps {through}` (or `foundry forge {given}` for every "
            "stage)"
        )
    return source
