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

from foundry.blueprint import BLUEPRINTS_DIR, check_unique_task_names, load_blueprint
from foundry.paths import MODELS_DIR, NOTEBOOKS_DIR, ROOT, RUNS_DIR
from foundry.runs import (
    STAGES,
    inherit_stage_outputs,
    latest_run_dir,
    mark_latest,
    new_run_id,
)

STAGE_NOTEBOOKS = {
    "generate": "01_generate.ipynb",
    "refine": "02_refine.ipynb",
    "train": "03_train.ipynb",
    "evaluate": "04_evaluate.ipynb",
    "export": "05_export.ipynb",
}


class ForgeError(RuntimeError):
    """A stage notebook failed; the message names the stage, the cell and the executed notebook."""


@dataclass
class ForgeResult:
    blueprint: str
    run_dir: Path
    models_dir: Path
    steps: list[str]
    seconds: dict[str, float] = field(default_factory=dict)
    notebooks: dict[str, Path] = field(default_factory=dict)


def parse_steps(steps: str | Sequence[str] | None) -> list[str]:
    """Validate ``--steps`` and return them in pipeline order."""
    if steps is None or steps == "" or steps == []:
        return list(STAGES)
    items = [s.strip() for s in (steps.split(",") if isinstance(steps, str) else steps)]
    unknown = [s for s in items if s not in STAGES]
    if unknown or not items:
        raise ValueError(
            f"unknown step(s) {', '.join(unknown) or '(none)'}; steps are {','.join(STAGES)}"
        )
    return [s for s in STAGES if s in items]


def _failed_cell(exc: Exception) -> str:
    count = getattr(exc, "exec_count", None)
    ename = getattr(exc, "ename", type(exc).__name__)
    evalue = getattr(exc, "evalue", str(exc))
    where = f"cell [{count}]" if count is not None else "a cell"
    return f"{where} raised {ename}: {evalue}"


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


def _run_stage(pm, step: str, nb_dir: Path, parameters: dict, result: ForgeResult, html: bool,
               log: Callable[[str], None]) -> None:
    """Execute one stage notebook into the run folder; raise ForgeError naming the failed cell."""
    source = NOTEBOOKS_DIR / STAGE_NOTEBOOKS[step]
    executed = nb_dir / STAGE_NOTEBOOKS[step]
    started = time.perf_counter()
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
        if html:
            render_html(executed)
        raise ForgeError(
            f"stage {step!r} failed: {_failed_cell(exc)}\n"
            f"executed notebook (with the traceback): {executed}"
        ) from None
    finally:
        result.seconds[step] = time.perf_counter() - started
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
    steps : subset of ``generate,refine,train,evaluate,export``; later steps reuse the outputs
        of earlier ones from this run folder or, for a new run, from the latest run.
    provider : override of ``generation.provider`` (``offline``, ``gemini``, ``openai``).
    run_id : run folder name; default a new UTC timestamp.
    models_dir : where to export; default ``models/``.
    target_per_task : override of ``generation.target_per_task``.
    """
    import papermill as pm

    bp = load_blueprint(blueprint)
    if bp.root.parent == BLUEPRINTS_DIR.resolve():
        check_unique_task_names()
    chosen = parse_steps(steps)
    runs_root = Path(runs_root or RUNS_DIR)
    run_dir = runs_root / bp.name / (run_id or new_run_id())
    previous = latest_run_dir(bp.name, runs_root)
    run_dir.mkdir(parents=True, exist_ok=True)
    earlier = [s for s in STAGES[: STAGES.index(chosen[0])] if s != "export"]
    if previous and previous.resolve() != run_dir.resolve() and earlier:
        inherit_stage_outputs(run_dir, previous, earlier)
    models = Path(models_dir or MODELS_DIR).resolve()
    parameters = {
        "blueprint": str(bp.root),
        "run_dir": str(run_dir.resolve()),
        "models_dir": str(models),
        "provider": provider or "",
        "target_per_task": int(target_per_task or 0),
        "allow_exam_failures": bool(allow_exam_failures),
    }
    result = ForgeResult(bp.name, run_dir, models, chosen)
    nb_dir = run_dir / "notebooks"
    nb_dir.mkdir(exist_ok=True)
    log(f"forging {bp.name!r} -> {run_dir} (steps: {','.join(chosen)})")
    with _kernel_environment():
        for step in chosen:
            _run_stage(pm, step, nb_dir, parameters, result, html, log)
    mark_latest(run_dir)
    return result
