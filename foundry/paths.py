"""Where things live: the repository root and its conventional folders."""

from __future__ import annotations

import os
from pathlib import Path

#: Repository root (the folder holding ``blueprints/``, ``notebooks/``, ``models/``).
ROOT = Path(os.environ.get("FOUNDRY_HOME", Path(__file__).resolve().parent.parent))
BLUEPRINTS_DIR = ROOT / "blueprints"
NOTEBOOKS_DIR = ROOT / "notebooks"
MODELS_DIR = ROOT / "models"
RUNS_DIR = ROOT / "runs"
