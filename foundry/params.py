"""The parameters of the stage notebooks, defined once.

Every stage notebook (``notebooks/01_generate`` … ``05_export``) starts with papermill's
``parameters`` cell. Its text is :meth:`NotebookParams.parameters_cell`, exactly
(``tests/test_params.py`` holds every notebook to it); ``foundry forge`` passes
:meth:`NotebookParams.papermill` values, and the notebook's next cell checks what it was given
with :meth:`NotebookParams.from_namespace`, so a wrong value stops the notebook at once with the
parameter's name, whether it came from the forge, papermill or a hand edit.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from foundry.errors import ConfigError

__all__ = ["NotebookParams"]


class NotebookParams(BaseModel):
    """The six parameters every stage notebook takes (each reads the ones it needs)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    blueprint: str = Field("text_classification", min_length=1, description=(
        "a name under blueprints/, or a path relative to the project root"))
    run_dir: str = Field("", description=(
        "empty: 01_generate starts a new run and the later stages continue it; or a run id "
        "or folder"))
    models_dir: str = Field("", description=(
        "empty: the project's models/ folder (or $FOUNDRY_MODELS_DIR)"))
    provider: str = Field("", description=(
        "overrides generation.provider (empty means the blueprint setting)"))
    target_per_task: int = Field(0, ge=0, description=(
        "overrides generation.target_per_task (0 means the blueprint setting)"))
    allow_exam_failures: bool = Field(False, description=(
        "export even if an exam failed (the card and the .bin record the override)"))

    @classmethod
    def parameters_cell(cls) -> str:
        """The source of the ``parameters`` cell: one ``name = default  # description`` line
        per parameter, in order."""
        lines = []
        for name, info in cls.model_fields.items():
            value = info.default
            shown = json.dumps(value, ensure_ascii=False) if isinstance(value, str) else repr(value)
            lines.append(f"{name} = {shown}  # {info.description}")
        return "\n".join(lines)

    @classmethod
    def from_namespace(cls, namespace: Mapping[str, Any]) -> NotebookParams:
        """The parameters as a notebook holds them (its ``globals()``), checked.

        Raises
        ------
        ConfigError
            Naming the parameter, the value and what it must be.
        """
        try:
            return cls.model_validate({name: namespace[name] for name in cls.model_fields
                                       if name in namespace})
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])} = {e.get('input')!r}: {e['msg']}"
                for e in exc.errors())
            raise ConfigError(f"notebook parameter {problems} (see the parameters cell)"
                              ) from None

    def papermill(self) -> dict[str, Any]:
        """The values ``foundry forge`` hands papermill."""
        return self.model_dump()
