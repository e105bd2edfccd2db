"""Run folders: ``runs/<blueprint>/<run_id>/`` with one sub-folder per stage.

Layout of a run (each stage reads the folders of the stages before it)::

    data/raw/<blueprint>/<stream>/<task>.jsonl   append-only raw data, shared by runs; outside
                                                 runs/, so `make clean-runs` never deletes it
                                                 (:func:`raw_dir`, :func:`migrate_raw_store`)
    runs/<blueprint>/CURRENT                     the run most recently started
    runs/<blueprint>/LATEST                      the latest run in which every stage completed
    runs/<blueprint>/<run_id>/
        run.json                                 who started it; status of every stage
        notebooks/NN_<stage>.ipynb (+ .html)    executed notebooks: the audit record
        generate/<task>/manifest.json            which raw files feed this run
        refine/<task>/                           train.jsonl, test.jsonl, summary.json, report.md
        train/<task>/                            model.joblib, train.json, cv_results.csv
        evaluate/<task>/                         summary.json, errors.csv, plots
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import os
import re
import secrets
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from foundry.errors import ConfigError, FoundryError
from foundry.paths import DATA_DIR, MODELS_DIR, ROOT, RUNS_DIR, project_path

STAGES = ("generate", "refine", "train", "evaluate", "export")
#: ``runs/<blueprint>/LATEST`` names the latest *complete* run (every stage complete).
LATEST_FILE = "LATEST"
#: ``runs/<blueprint>/CURRENT`` names the run most recently started, complete or not: the run
#: that stage notebooks opened by hand continue.
CURRENT_FILE = "CURRENT"
#: ``<run_dir>/run.json``: who started the run and the status of every stage.
RUN_FILE = "run.json"
#: Folder of the raw data: ``data/raw/<blueprint>/``; before, ``runs/<blueprint>/raw/`` (the
#: name stays reserved there: :func:`migrate_raw_store` leaves a link to the new place).
RAW_DIR = "raw"
#: A run id is one plain folder name: no separators, no leading dot, so a run folder always
#: stays inside ``runs/<blueprint>/``.
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
#: Names beside the run folders that a run id must not take over.
_RESERVED_RUN_IDS = {RAW_DIR.lower(), LATEST_FILE.lower(), CURRENT_FILE.lower()}
#: Stage statuses. ``outdated``: an earlier stage ran again after this one completed.
STATUSES = ("pending", "running", "complete", "failed", "outdated")

#: The notebook of each stage (under ``notebooks/``).
STAGE_NOTEBOOKS = {
    "generate": "01_generate.ipynb",
    "refine": "02_refine.ipynb",
    "train": "03_train.ipynb",
    "evaluate": "04_evaluate.ipynb",
    "export": "05_export.ipynb",
}


class RunStateError(FoundryError):
    """A run folder is missing, or lacks a complete stage that the next stage needs."""


def blueprint_runs_dir(blueprint_name: str, runs_root: Path | None = None) -> Path:
    return Path(runs_root or RUNS_DIR) / blueprint_name


def raw_dir(blueprint_name: str, run_dir: Path, *, runs_root: Path | None = None,
            data_dir: Path | None = None) -> Path:
    """The folder of a blueprint's raw streams, shared by all its runs.

    For a run in the runs folder (``runs/<blueprint>/<run_id>``) it is
    ``data/raw/<blueprint>/`` (:data:`foundry.paths.DATA_DIR`), which ``make clean-runs``
    never deletes; a run folder made anywhere else keeps its raw data beside it
    (``<run folder>/../raw/``), as every run did before.
    """
    run_dir = Path(run_dir).resolve()
    if run_dir.parent == blueprint_runs_dir(blueprint_name, runs_root).resolve():
        return Path(data_dir or DATA_DIR).resolve() / RAW_DIR / blueprint_name
    return run_dir.parent / RAW_DIR


def migrate_raw_store(blueprint_name: str, *, runs_root: Path | None = None,
                      data_dir: Path | None = None, log: Callable[[str], None] = print
                      ) -> list[Path]:
    """Move a blueprint's raw streams from ``runs/<blueprint>/raw/`` (where they lived before)
    to ``data/raw/<blueprint>/`` and leave ``runs/<blueprint>/raw`` as a link to it, so the
    manifests of older runs, which name raw files by absolute path, still read them. Returns
    the new stream folders. Idempotent; nothing is ever deleted before it is in its new place.

    Each stream folder moves in one rename (on another file system: copied beside its
    destination, renamed into place, then the old one removed).

    Raises
    ------
    RunStateError
        If a stream exists in both places (nothing is moved then): the message names both
        folders; keep the rows you want in the new one and remove the other.
    """
    old = blueprint_runs_dir(blueprint_name, runs_root) / RAW_DIR
    new = Path(data_dir or DATA_DIR) / RAW_DIR / blueprint_name
    if old.is_symlink() or not old.is_dir():
        return []
    streams = sorted(p for p in old.iterdir() if p.is_dir())
    both = [s.name for s in streams if (new / s.name).exists()]
    if both:
        raise RunStateError(
            f"raw stream(s) {', '.join(both)} of {blueprint_name!r} exist both in {old} (the "
            f"old place) and in {new}: keep the rows you want in {new} and remove the other "
            "folder (nothing was moved)")
    moved = [_move_folder(s, new / s.name) for s in streams]
    if not any(old.iterdir()):
        old.rmdir()
        old.symlink_to(new.resolve(), target_is_directory=True)
    if moved:
        log(f"moved {len(moved)} raw stream(s) of {blueprint_name!r} from {old} to {new} "
            f"(outside runs/, so `make clean-runs` keeps them; {old} now links there)")
    return moved


def _move_folder(src: Path, dest: Path) -> Path:
    """Move ``src`` to ``dest`` so that it is whole in one place or the other at any moment."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        src.rename(dest)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        tmp = dest.with_name(f".{dest.name}.moving-{os.getpid()}")
        shutil.copytree(src, tmp)
        tmp.rename(dest)
        shutil.rmtree(src)
    return dest


def new_run_id() -> str:
    """A sortable run id unique per process: UTC time to the millisecond + a random suffix.

    Two forges started in the same millisecond still get different ids (32 random bits), and
    :func:`create_run` makes a new run's folder exclusively, so a collision cannot go unnoticed.
    """
    now = _dt.datetime.now(_dt.timezone.utc)
    return f"{now:%Y%m%d-%H%M%S}-{now.microsecond // 1000:03d}-{secrets.token_hex(4)}"


def check_run_id(run_id: str) -> str:
    """Return ``run_id`` if it is a plain folder name, else raise :class:`ConfigError`.

    Run ids name folders under ``runs/<blueprint>/``: ``../x``, ``/tmp/x`` or ``raw`` would
    put a run (and the run markers) outside that folder or onto the shared raw data.
    """
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
        raise ConfigError(
            f"run id {run_id!r} is not a plain folder name: use letters, digits, '.', '_' "
            "and '-' (at most 128, starting with a letter or digit)"
        )
    if run_id.lower() in _RESERVED_RUN_IDS:
        raise ConfigError(f"run id {run_id!r} is reserved (it names the raw data or a run "
                          "marker); choose another")
    return run_id


def _new_run_dir(blueprint_runs: Path) -> Path:
    """A new run folder under ``blueprint_runs``, created exclusively (never shared)."""
    blueprint_runs.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        run_dir = blueprint_runs / new_run_id()
        try:
            run_dir.mkdir()
        except FileExistsError:
            continue
        return run_dir
    raise RuntimeError(f"could not create a new run folder under {blueprint_runs}")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _read_marker(blueprint_name: str, marker: str, runs_root: Path | None) -> Path | None:
    file = blueprint_runs_dir(blueprint_name, runs_root) / marker
    if not file.is_file():
        return None
    name = file.read_text(encoding="utf-8", errors="replace").strip()
    if not _RUN_ID.fullmatch(name) or name.lower() in _RESERVED_RUN_IDS:
        return None  # a marker edited to point elsewhere is not followed
    run = file.parent / name
    return run if run.is_dir() else None


# --------------------------------------------------------------------------- run state


@dataclass
class RunState:
    """The recorded state of one run folder (``run.json``).

    Attributes
    ----------
    run_dir : Path
    data : dict
        ``{"blueprint", "run_id", "created", "started_by", "stages": {stage: {"status",
        "started", "finished", "by", "detail", "inherited_from"}}}``; a stage not listed is
        ``pending``.
    """

    run_dir: Path
    data: dict[str, Any]

    @classmethod
    def load(cls, run_dir: Path) -> RunState:
        """The state of ``run_dir``.

        A run folder without ``run.json`` (made before states were recorded, or filled by
        calling the stage functions directly) is judged by what it holds: complete if the
        ``LATEST`` marker names it (only complete forges were marked), else each stage whose
        output folder holds files counts as complete, and says so.
        """
        run_dir = Path(run_dir)
        file = run_dir / RUN_FILE
        if file.is_file():
            return cls(run_dir, read_json(file))
        latest = run_dir.parent / LATEST_FILE
        if latest.is_file() and latest.read_text().strip() == run_dir.name:
            stages = {s: {"status": "complete", "detail": "the LATEST marker names this run"}
                      for s in STAGES}
        else:
            stages = {s: {"status": "complete", "detail": "judged by its outputs (no run.json)"}
                      for s in STAGES if (run_dir / s).is_dir() and any((run_dir / s).rglob("*.*"))}
        return cls(run_dir, {"blueprint": run_dir.parent.name, "run_id": run_dir.name,
                             "created": "", "started_by": "unknown", "stages": stages})

    @property
    def run_id(self) -> str:
        return self.run_dir.name

    def status(self, stage: str) -> str:
        return self.data.get("stages", {}).get(stage, {}).get("status", "pending")

    def is_complete(self) -> bool:
        """Every stage complete: the run produced the models it describes."""
        return all(self.status(s) == "complete" for s in STAGES)

    def describe(self) -> str:
        """One line: the run and the status of each stage, e.g. ``generate complete, ...``."""
        parts = []
        for stage in STAGES:
            info = self.data.get("stages", {}).get(stage, {})
            part = f"{stage} {self.status(stage)}"
            if info.get("inherited_from"):
                part += f" (from run {info['inherited_from']})"
            parts.append(part)
        verdict = "complete" if self.is_complete() else "not complete"
        return f"run {self.run_id} ({verdict}): " + ", ".join(parts)

    def save(self) -> None:
        write_json(self.run_dir / RUN_FILE, self.data)

    def set_stage(self, stage: str, status: str, *, by: str | None = None,
                  detail: str | None = None, inherited_from: str | None = None) -> None:
        """Record ``status`` for ``stage`` and save.

        Starting a stage (``running``) makes every later stage that had completed
        ``outdated``: its outputs were made from inputs that are being replaced. When the last
        stage completes and every stage is complete, the run becomes the blueprint's latest.
        """
        if stage not in STAGES or status not in STATUSES:
            raise ValueError(f"unknown stage {stage!r} or status {status!r}")
        if (self.run_dir / RUN_FILE).is_file():  # the forge and the stage's kernel both write
            self.data = read_json(self.run_dir / RUN_FILE)
        stages = self.data.setdefault("stages", {})
        info = dict(stages.get(stage, {}))
        info["status"] = status
        if status == "running":
            info = {"status": status, "started": _now()}
            for later in STAGES[STAGES.index(stage) + 1:]:
                if self.status(later) == "complete":
                    stages[later] = {**stages[later], "status": "outdated",
                                     "detail": f"{stage} ran again at {info['started']}"}
        else:
            info["finished"] = _now()
        for key, value in (("by", by), ("detail", detail), ("inherited_from", inherited_from)):
            if value is not None:
                info[key] = value
        stages[stage] = info
        self.save()
        if self.is_complete():
            mark_latest(self.run_dir)


def create_run(blueprint_name: str, run_id: str | None = None, *, runs_root: Path | None = None,
               started_by: str = "foundry forge") -> RunState:
    """Create (or reopen) ``runs/<blueprint>/<run_id>/`` and make it the current run.

    A given ``run_id`` must be a plain folder name (:func:`check_run_id`) and may name an
    existing run; without one, a new id is drawn and its folder created exclusively.
    """
    blueprint_runs = blueprint_runs_dir(blueprint_name, runs_root)
    if run_id is None:
        run_dir = _new_run_dir(blueprint_runs)
    else:
        run_dir = blueprint_runs / check_run_id(run_id)
        run_dir.mkdir(parents=True, exist_ok=True)
    if (run_dir / RUN_FILE).is_file():
        state = RunState.load(run_dir)
    else:
        state = RunState(run_dir, {"blueprint": blueprint_name, "run_id": run_dir.name,
                                   "created": _now(), "started_by": started_by, "stages": {}})
        state.save()
    atomic_write_text(run_dir.parent / CURRENT_FILE, run_dir.name + "\n")
    return state


def latest_run_dir(blueprint_name: str, runs_root: Path | None = None) -> Path | None:
    """The latest complete run of this blueprint (every stage complete), if any."""
    return _read_marker(blueprint_name, LATEST_FILE, runs_root)


def current_run_dir(blueprint_name: str, runs_root: Path | None = None) -> Path | None:
    """The run most recently started (by ``foundry forge`` or ``01_generate``), if any."""
    return _read_marker(blueprint_name, CURRENT_FILE, runs_root) or latest_run_dir(
        blueprint_name, runs_root)


def mark_latest(run_dir: Path) -> None:
    atomic_write_text(Path(run_dir).parent / LATEST_FILE, Path(run_dir).name + "\n")


def runs_of(blueprint_name: str, runs_root: Path | None = None) -> list[RunState]:
    """Every run folder of the blueprint, oldest first (by creation time, then name)."""
    root = blueprint_runs_dir(blueprint_name, runs_root)
    if not root.is_dir():
        return []
    states = [RunState.load(d) for d in root.iterdir()
              if d.is_dir() and ((d / RUN_FILE).is_file() or (d / "notebooks").is_dir())]
    return sorted(states, key=lambda s: (s.data.get("created") or "", s.run_id))


def last_run_with(blueprint_name: str, stages: Sequence[str], runs_root: Path | None = None,
                  exclude: Path | None = None) -> RunState | None:
    """The most recent run in which every stage of ``stages`` is complete."""
    for state in reversed(runs_of(blueprint_name, runs_root)):
        if exclude is not None and state.run_dir.resolve() == Path(exclude).resolve():
            continue
        if all(state.status(s) == "complete" for s in stages):
            return state
    return None


def resolve_run_dir(blueprint_name: str, run_dir: str | Path | None) -> Path:
    """The run folder a notebook works in: the given one, else the current run of the blueprint.

    A bare run id (``20260101-120000``) names a folder under ``runs/<blueprint>/``; another
    relative path is relative to the project root, never to the kernel's working folder.
    """
    if run_dir:
        return _run_path(blueprint_name, run_dir)
    current = current_run_dir(blueprint_name)
    if current is None:
        raise RunStateError(
            f"no run of {blueprint_name!r} under {blueprint_runs_dir(blueprint_name)} yet: run "
            f"notebooks/01_generate.ipynb first (it starts one) or `foundry forge {blueprint_name}`"
        )
    return current


def _run_path(blueprint_name: str, run_dir: str | Path) -> Path:
    path = Path(run_dir).expanduser()
    if path.is_absolute():
        return path
    if len(path.parts) == 1:
        return blueprint_runs_dir(blueprint_name) / path
    return ROOT / path


@dataclass
class StageRun:
    """A stage notebook's working context, from :func:`open_stage`.

    Attributes
    ----------
    stage : str
    blueprint : Blueprint
    run_dir : Path
        Absolute.
    models_dir : Path
        Absolute; where the export stage installs the models.
    state : RunState
    """

    stage: str
    blueprint: Any
    run_dir: Path
    models_dir: Path
    state: RunState
    log: Callable[[str], None] = print

    def complete(self) -> None:
        """Record the stage as complete (the last cell of a stage notebook calls it)."""
        self.state = RunState.load(self.run_dir)
        self.state.set_stage(self.stage, "complete")
        self.log(f"{self.stage}: complete; {self.state.describe()}")
        if self.state.is_complete():
            self.log(f"run {self.state.run_id} is now the latest complete run of "
                     f"{self.blueprint.name!r} (runs/{self.blueprint.name}/{LATEST_FILE})")


def open_stage(stage: str, blueprint: str | Path, run_dir: str | Path = "",
               models_dir: str | Path = "", *, log: Callable[[str], None] = print) -> StageRun:
    """Where a stage notebook works, resolved the same way opened by hand or by ``foundry forge``.

    Every relative path is resolved against the project root, not the kernel's working
    folder (``notebooks/`` when opened in JupyterLab). With no ``run_dir``, ``generate``
    starts a new run (as ``foundry forge`` does) and the later stages continue the current run.
    The stage before this one must be complete in that run; the error says what to run if not.
    The run and the state of its stages are printed, and the stage is recorded as running.

    Parameters
    ----------
    stage : one of :data:`STAGES`.
    blueprint : a name under ``blueprints/`` or a path (relative to the project root).
    run_dir : a run folder, a run id, or empty (see above).
    models_dir : where models are installed; empty means ``models/`` (``$FOUNDRY_MODELS_DIR``).
    """
    from foundry.blueprint import load_blueprint
    from foundry.secrets import install_output_redaction

    install_output_redaction()  # in a notebook: nothing it shows may hold a key
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
    bp = load_blueprint(project_path(blueprint) if (ROOT / str(blueprint)).is_dir()
                        else blueprint)
    models = project_path(models_dir) if models_dir else Path(MODELS_DIR).resolve()
    if stage == "generate" and not run_dir:
        state = create_run(bp.name, started_by=f"notebooks/{STAGE_NOTEBOOKS[stage]}")
        log(f"started a new run of {bp.name!r}: {state.run_dir}")
    else:
        path = resolve_run_dir(bp.name, run_dir).resolve()
        if stage == "generate" and path.parent.name == bp.name:
            state = create_run(bp.name, path.name, runs_root=path.parent.parent,
                               started_by=f"notebooks/{STAGE_NOTEBOOKS[stage]}")
        elif stage == "generate":  # a folder outside runs/<blueprint>/: no run markers
            path.mkdir(parents=True, exist_ok=True)
            state = RunState.load(path)
        elif not path.is_dir():
            raise RunStateError(f"{path}: no such run folder")
        else:
            state = RunState.load(path)
        _require_previous(state, bp.name, stage)
    log(f"{STAGE_NOTEBOOKS[stage]} works in {state.run_dir}\n  {state.describe()}")
    state.set_stage(stage, "running")
    return StageRun(stage, bp, state.run_dir.resolve(), models, state, log)


def _require_previous(state: RunState, blueprint_name: str, stage: str) -> None:
    index = STAGES.index(stage)
    if index == 0:
        return
    before = STAGES[index - 1]
    if state.status(before) == "complete":
        return
    info = state.data.get("stages", {}).get(before, {})
    why = f"{before} is {state.status(before)}" + (f" ({info['detail']})" if info.get("detail")
                                                   else "")
    latest = latest_run_dir(blueprint_name, state.run_dir.parent.parent)
    hint = (f"; or set run_dir = \"{latest.name}\" to work in the latest complete run"
            if latest is not None and latest.resolve() != state.run_dir.resolve() else "")
    raise RunStateError(
        f"run {state.run_id} of {blueprint_name!r} cannot start {stage}: {why}.\n"
        f"  {state.describe()}\n"
        f"  Run notebooks/{STAGE_NOTEBOOKS[before]} first, or "
        f"`foundry forge {blueprint_name} --steps {','.join(STAGES[index - 1:index + 1])}`{hint}"
    )


def stage_dir(run_dir: Path, stage: str, task: str) -> Path:
    """``<run_dir>/<stage>/<task>/``, created if missing."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
    path = Path(run_dir) / stage / task
    path.mkdir(parents=True, exist_ok=True)
    return path


def require_stage_output(run_dir: Path, stage: str, task: str, filename: str) -> Path:
    """Path of an earlier stage's output, or a FileNotFoundError that says what to run."""
    path = Path(run_dir) / stage / task / filename
    if not path.is_file():
        blueprint = Path(run_dir).parent.name
        raise FileNotFoundError(
            f"{path} is missing: the {stage!r} stage has not run for task {task!r} in this run; "
            f"run notebooks/{STAGE_NOTEBOOKS[stage]} or "
            f"`foundry forge {blueprint} --steps {stage},...` first"
        )
    return path


def inherit_stage_outputs(run_dir: Path, source_run: Path, stages: Sequence[str]) -> None:
    """Copy earlier stages' outputs from ``source_run`` so a partial forge can reuse them.

    Each copied stage is recorded as complete, inherited from the source run.
    """
    state = RunState.load(run_dir)
    for stage in stages:
        src = Path(source_run) / stage
        if src.is_dir() and not (Path(run_dir) / stage).exists():
            shutil.copytree(src, Path(run_dir) / stage)
        state.set_stage(stage, "complete", by="foundry forge",
                        inherited_from=Path(source_run).name)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Unique per writer (process and call), so concurrent writers never share a temp file.
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: Any) -> None:
    """Atomically write pretty, stable JSON (sorted keys, UTF-8 kept readable)."""
    atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=True) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))
