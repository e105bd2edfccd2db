"""API keys: read from the environment or a ``.env`` file, shown only as fingerprints.

Keys never travel as plain strings through the generation code: they are wrapped in
:class:`ApiKey`, whose ``repr``/``str`` is the fingerprint, so a key that ends up in a log line,
an exception message or a notebook output by accident shows as ``key:1a2b3c4d``. The raw value
is only read (:meth:`ApiKey.reveal`) at the moment an SDK client is built.

The ``.env`` file is parsed with :func:`dotenv.dotenv_values`, which returns a dict and does
*not* copy anything into ``os.environ`` (so child processes such as notebook kernels do not
inherit keys they do not need).

Environment variables (see ``docs/llm-generation.md``):

``GEMINI_API_KEYS``
    Comma-separated Gemini keys (``GEMINI_API_KEY`` is accepted for a single key).
``GEMINI_BASE_URL``
    Overrides the Gemini endpoint (tests point it at a local fake server).
``OPENAI_API_KEY``
    Key for an OpenAI-compatible server; may be empty for local servers.
``OPENAI_BASE_URL``
    Endpoint of the OpenAI-compatible server, e.g. ``http://127.0.0.1:11434/v1`` (Ollama).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from dotenv import dotenv_values

from foundry.paths import ROOT

#: Sent to OpenAI-compatible servers that need no key (Ollama, llama.cpp server); the SDK
#: refuses an empty key.
NO_KEY_PLACEHOLDER = "no-key"


class ApiKey:
    """An API key that prints as its fingerprint.

    Parameters
    ----------
    value : str
        The secret. Empty is allowed (local servers without authentication).
    """

    __slots__ = ("_value", "fingerprint")

    def __init__(self, value: str) -> None:
        self._value = value
        self.fingerprint = fingerprint(value)

    def reveal(self) -> str:
        """The raw key, for building an SDK client. Never log or store the result."""
        return self._value

    def __repr__(self) -> str:
        return f"ApiKey({self.fingerprint})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ApiKey) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self.fingerprint)

    def __reduce__(self):  # refuse pickling: a pickle would carry the raw key to disk
        raise TypeError("ApiKey cannot be pickled (it would write the key out)")


def fingerprint(value: str) -> str:
    """Short, stable, non-reversible name of a key: ``key:`` + first 8 hex of its SHA-256."""
    if not value:
        return "key:none"
    return "key:" + hashlib.sha256(value.encode("utf-8")).hexdigest()[:8]


def load_env(env: Mapping[str, str] | None = None, *, dotenv_path: Path | None = None
             ) -> dict[str, str]:
    """The variables generation reads: ``env`` as given, or ``.env`` overlaid by ``os.environ``.

    Parameters
    ----------
    env : mapping, optional
        Used as is when given (tests pass keys and base URLs this way without touching
        ``os.environ``).
    dotenv_path : Path, optional
        The ``.env`` file; defaults to ``ROOT / ".env"``. A missing file is not an error.
    """
    if env is not None:
        return dict(env)
    path = dotenv_path if dotenv_path is not None else ROOT / ".env"
    merged: dict[str, str] = {}
    if path.is_file():
        merged.update({k: v for k, v in dotenv_values(path).items() if v is not None})
    # A variable set in the shell wins over the file, as with most dotenv tools.
    merged.update(os.environ)
    return merged


def split_keys(raw: str | None) -> list[str]:
    """Keys of a comma-separated list: stripped, empty entries dropped, duplicates removed."""
    out: list[str] = []
    for part in (raw or "").split(","):
        key = part.strip()
        if key and key not in out:
            out.append(key)
    return out


def gemini_keys(env: Mapping[str, str]) -> list[ApiKey]:
    """Gemini keys from ``GEMINI_API_KEYS`` (or a single ``GEMINI_API_KEY``)."""
    raw = env.get("GEMINI_API_KEYS") or env.get("GEMINI_API_KEY")
    return [ApiKey(k) for k in split_keys(raw)]


def openai_keys(env: Mapping[str, str]) -> list[ApiKey]:
    """Keys for the OpenAI-compatible provider: ``OPENAI_API_KEY`` (comma-separated allowed).

    An unset or empty variable yields one placeholder key, because local servers (Ollama,
    llama.cpp) need none but the SDK insists on a non-empty string.
    """
    keys = split_keys(env.get("OPENAI_API_KEY"))
    return [ApiKey(k) for k in keys] or [ApiKey(NO_KEY_PLACEHOLDER)]


def redact(text: str, keys: Iterable[ApiKey]) -> str:
    """Replace every occurrence of a key in ``text`` by its fingerprint.

    Used on error messages that come from SDKs or servers before they are logged or raised,
    in case a server echoes the key back.
    """
    for key in keys:
        raw = key.reveal()
        if raw and raw != NO_KEY_PLACEHOLDER and raw in text:
            text = text.replace(raw, key.fingerprint)
    return text
