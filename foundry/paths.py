"""Where things live: the repository root and its conventional folders.

``FOUNDRY_RUNS_DIR``, ``FOUNDRY_MODELS_DIR`` and ``FOUNDRY_BLUEPRINTS_DIR`` relocate the run
folders, the default models dir and the blueprints (tests and benchmarks use them to keep the
repository's own folders untouched); ``FOUNDRY_DATA_DIR`` relocates the data that outlives run
folders (default: ``data/`` beside the runs folder).
"""

from __future__ import annotations

import os
from pathlib import Path

#: Repository root (the folder holding ``blueprints/``, ``notebooks/``, ``models/``).
ROOT = Path(os.environ.get("FOUNDRY_HOME", Path(__file__).resolve().parent.parent))
BLUEPRINTS_DIR = Path(os.environ.get("FOUNDRY_BLUEPRINTS_DIR", ROOT / "blueprints"))
NOTEBOOKS_DIR = ROOT / "notebooks"
MODELS_DIR = Path(os.environ.get("FOUNDRY_MODELS_DIR", ROOT / "models"))
RUNS_DIR = Path(os.environ.get("FOUNDRY_RUNS_DIR", ROOT / "runs"))
#: Data that outlives the run folders (``make clean-runs`` never deletes it): the raw generated
#: rows, ``data/raw/<blueprint>/<stream>/``, paid for when an LLM wrote them.
DATA_DIR = Path(os.environ.get("FOUNDRY_DATA_DIR", RUNS_DIR.parent / "data"))


def project_path(value: str | Path) -> Path:
    """An absolute path for ``value``: as is if absolute, else relative to the project root.

    Notebooks resolve every path they are given this way, so a notebook opened by hand
    (whose kernel runs in ``notebooks/``) reads and writes the same files as ``foundry forge``.
    """
    path = Path(value).expanduser()
    return path if path.is_absolute() else ROOT / path
