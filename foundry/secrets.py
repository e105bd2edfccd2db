"""API keys: read from the environment or a ``.env`` file, shown only as fingerprints.

Keys never travel as plain strings through the generation code: they are wrapped in
:class:`ApiKey`, whose ``repr``/``str`` is the fingerprint, so a key that ends up in a log line,
an exception message or a notebook output by accident shows as ``key:1a2b3c4d``. The raw value
is only read (:meth:`ApiKey.reveal`) at the moment an SDK client is built.

A server may still echo a key (or the credentials of its base URL) back in an error body. So
there is one redaction function, :func:`redact`, that every log line and every exception
message written to a notebook, a log file or the console passes through: the generation
engine's log and its requests/quarantine files, the stage notebooks' whole output
(:func:`install_output_redaction`, called by :func:`foundry.runs.open_stage`), the forge's
messages and the command line's error lines. It replaces

- every configured key (``GEMINI_API_KEYS``, ``GEMINI_API_KEY``, ``OPENAI_API_KEY``, and the
  keys given) by its fingerprint, and key-shaped strings (``AIza…``, ``sk-…``) too;
- the user and password of every URL (``http://user:pass@host`` → ``http://***@host``), and
  the credentials found in ``OPENAI_BASE_URL`` / ``GEMINI_BASE_URL`` wherever they appear;
- secret-looking query values (``?api_key=…``, ``key``, ``token``, ``secret``, ``password``,
  ``sig`` …) and ``Authorization`` values (``Bearer …``, ``Basic …``) by ``***``.

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
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

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


#: Variables holding keys, and those holding endpoints whose URL may carry credentials.
KEY_VARIABLES = ("GEMINI_API_KEYS", "GEMINI_API_KEY", "OPENAI_API_KEY")
URL_VARIABLES = ("OPENAI_BASE_URL", "GEMINI_BASE_URL")
MASK = "***"
_SECRET_PARAMS = (r"api[_-]?key|apikey|key|access[_-]?token|id[_-]?token|token|auth|"
                  r"authorization|secret|client[_-]?secret|password|passwd|pwd|sig|signature|"
                  r"x-goog-api-key")
_PATTERNS = (
    # userinfo of any URL: scheme://user:pass@host -> scheme://***@host
    (re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/\s@?#]+@"), rf"\1{MASK}@"),
    # secret-looking query (or form) values
    (re.compile(rf"(?i)([?&;]|\b)((?:{_SECRET_PARAMS})=)[^&#\s\"'<>]+"), rf"\1\2{MASK}"),
    # Authorization header values
    (re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=\-]{8,}"), rf"\1\2{MASK}"),
)
#: Strings shaped like real keys (Google API keys, OpenAI secret keys).
_KEY_SHAPED = re.compile(r"AIza[0-9A-Za-z_\-]{30,}|\bsk-[A-Za-z0-9_\-]{20,}")
_env_cache: dict[tuple, list[tuple[str, str]]] = {}


def _url_secrets(url: str) -> list[str]:
    """The user, password and secret-looking query values of a URL, raw and percent-decoded."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return []
    found = [v for v in (parts.username, parts.password) if v]
    pattern = re.compile(rf"(?i)^(?:{_SECRET_PARAMS})$")
    found += [v for k, v in parse_qsl(parts.query, keep_blank_values=False) if pattern.match(k)]
    return [s for v in found for s in {v, unquote(v)} if len(s) >= 3]


def configured_secrets() -> list[tuple[str, str]]:
    """``(secret, replacement)`` of everything the environment and ``.env`` configure: keys
    (replaced by their fingerprints) and the credentials inside endpoint URLs (by ``***``)."""
    dotenv = ROOT / ".env"
    try:
        stamp = dotenv.stat().st_mtime_ns
    except OSError:
        stamp = None
    names = (*KEY_VARIABLES, *URL_VARIABLES)
    cache_key = (stamp, *(os.environ.get(n) for n in names))
    if cache_key not in _env_cache:
        env = load_env()
        pairs = [(k, fingerprint(k)) for n in KEY_VARIABLES for k in split_keys(env.get(n))
                 if k != NO_KEY_PLACEHOLDER]
        pairs += [(s, MASK) for n in URL_VARIABLES for s in _url_secrets(env.get(n) or "")]
        # Longest first, so that a secret containing another is replaced whole.
        _env_cache.clear()
        _env_cache[cache_key] = sorted(set(pairs), key=lambda p: -len(p[0]))
    return _env_cache[cache_key]


def redact(text: str, keys: Iterable[ApiKey] = ()) -> str:
    """``text`` with every secret replaced (see the module docstring): THE redaction function.

    ``keys`` adds keys to the configured ones (the engine passes the keys it was given, which
    may come from an explicit ``env`` rather than the process environment).
    """
    if not isinstance(text, str):
        text = str(text)
    pairs = [(k.reveal(), k.fingerprint) for k in keys
             if k.reveal() and k.reveal() != NO_KEY_PLACEHOLDER]
    for secret, replacement in (*sorted(pairs, key=lambda p: -len(p[0])), *configured_secrets()):
        if secret in text:
            text = text.replace(secret, replacement)
    text = _KEY_SHAPED.sub(lambda m: fingerprint(m.group(0)), text)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redacting(log, keys: Iterable[ApiKey] = ()):
    """A log callable that passes every message through :func:`redact` first."""
    keys = list(keys)

    def log_redacted(message: str) -> None:
        log(redact(message, keys))

    return log_redacted


class _RedactingStream:
    """A text stream whose every ``write`` goes through :func:`redact` (the rest is delegated)."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(redact(text))
        return len(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def install_output_redaction() -> bool:
    """In an IPython kernel (a notebook), pass all its output through :func:`redact`.

    Wraps ``sys.stdout`` and ``sys.stderr`` and the shell's traceback display, so that what a
    cell prints and the error of a failing cell (its message and traceback, which papermill
    also copies into the forge's error) never hold a secret. Returns whether it was installed
    now (False outside a kernel, or when already installed).
    """
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython ships with the notebook stack
        return False
    shell = get_ipython()
    if shell is None or getattr(shell, "_foundry_redacting", False):
        return False
    if not isinstance(sys.stdout, _RedactingStream):
        sys.stdout = _RedactingStream(sys.stdout)
    if not isinstance(sys.stderr, _RedactingStream):
        sys.stderr = _RedactingStream(sys.stderr)
    show = shell._showtraceback

    def _showtraceback(etype, evalue, stb):
        return show(etype, redact(str(evalue)), [redact(line) for line in stb])

    shell._showtraceback = _showtraceback
    shell._foundry_redacting = True
    return True
