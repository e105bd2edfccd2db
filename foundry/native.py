"""The native fast path of the Python runtime: the Rust crate ``runtimes/rust`` built as the
extension module ``foundry._native`` (``make native``; optional).

:meth:`foundry.runtime.MicroModel.load` uses it when it is built (``backend="auto"``, the
default) and falls back to the pure-Python path when it is not, or when it refuses a graph that
ONNX Runtime can still run. The environment variable ``FOUNDRY_RUNTIME`` forces a side:
``python`` never uses it, ``native`` requires it (as does ``backend="native"``).

The native model validates the artifact pair again (the same rules, in Rust), answers with the
same :class:`foundry.runtime.Prediction` objects (probabilities in float64, like the numpy
backend: a :class:`foundry.runtime.Probabilities` over the scores' bytes), reads each ``str``'s
code points in place, and computes batches of 16 texts or more with the GIL released. The text spec it implements is docs/preprocessor-spec.md; its Unicode
data versions are in section 7 there.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType
from typing import Any

from foundry.artifacts import as_stored, seal_message
from foundry.errors import ArtifactError, ConfigError

#: Environment variable that forces the runtime's side: ``python`` or ``native``.
ENV_VAR = "FOUNDRY_RUNTIME"
RUNTIMES = ("python", "native")
BUILD_HINT = "build it with `make native` (needs cargo and the Debian crates of .ci/run)"

_extension: ModuleType | None = None
_import_error: str | None = None


def requested_runtime() -> str | None:
    """``"python"``, ``"native"`` or None (unset): the side ``FOUNDRY_RUNTIME`` asks for."""
    value = os.environ.get(ENV_VAR, "").strip().lower()
    if not value:
        return None
    if value not in RUNTIMES:
        raise ConfigError(f"{ENV_VAR}={value!r}: choose one of {', '.join(RUNTIMES)} (or unset it)")
    return value


def extension() -> ModuleType | None:
    """The ``foundry._native`` module, or None when it is not built (or does not import)."""
    global _extension, _import_error
    if _extension is None and _import_error is None:
        try:
            from foundry import _native
        except ImportError as exc:
            _import_error = str(exc)
        else:
            _extension = _native
    return _extension


def available() -> bool:
    """Whether the native fast path is built and importable."""
    return extension() is not None


def load(backend: str, task: str, preprocessor: Any, onnx_data: bytes, bin_path: Path,
         onnx_path: Path, prediction_type: type, probabilities_type: type) -> Any | None:
    """The native model of a pair the Python side has validated (``preprocessor``, the decoded
    ``.bin``, and the ``.onnx`` bytes) for ``MicroModel.load(backend=...)``, or None when the
    pure-Python path should answer. The native side checks every rule again and builds its
    answers as ``prediction_type`` (``foundry.runtime.Prediction``) holding a
    ``probabilities_type`` (``foundry.runtime.Probabilities`` over the float64 bytes of the
    scores), both passed in so that this module does not import the runtime that imports it.

    Raises
    ------
    foundry.errors.ArtifactError
        The native side refuses the pair and the native path was required.
    foundry.errors.ConfigError
        The native path was required (``backend="native"`` or ``FOUNDRY_RUNTIME=native``) but
        is not built.
    """

    required = backend == "native" or (backend == "auto" and requested_runtime() == "native")
    if not required and (backend != "auto" or requested_runtime() == "python"):
        return None
    module = extension()
    if module is None:
        if required:
            raise ConfigError(f"the native runtime is not available ({_import_error}); {BUILD_HINT}")
        return None
    sealed = as_stored(preprocessor)  # the very message validated, as file bytes (no re-read)
    try:
        return module.NativeModel(task, seal_message(sealed), onnx_data, str(bin_path),
                                  str(onnx_path), prediction_type, probabilities_type,
                                  ArtifactError)
    except ArtifactError:
        if required:
            raise
        return None  # e.g. a graph the exporter does not write: ONNX Runtime may still run it


def unicode_versions() -> str | None:
    """The Unicode versions of the native normaliser's data, or None when it is not built."""
    module = extension()
    return module.NativeModel.unicode_versions() if module is not None else None
