"""The providers stage 1 can generate with: one :class:`ProviderEntry` per provider.

An entry says everything the rest of the package needs to know about a provider: its name
(the blueprint's ``generation.provider`` and ``--provider``), the environment variables that
configure it, the ``generation`` field that names its model, how to read its keys, and the
factory that builds its client. The engine, the stage, the blueprint check and the command
line read these entries and nothing else, so a new LLM provider is one module (a
:class:`~foundry.generate.providers.Provider` subclass), one entry in :data:`ENTRIES` and its
test; the blueprint schema (``foundry/blueprint.py``) lists the name in ``generation.provider``
and holds the model field, so that a typo fails when the blueprint loads
(``tests/test_registry.py`` keeps the two in step).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from foundry.errors import ConfigError
from foundry.generate.providers import GeminiProvider, OpenAIProvider, Provider
from foundry.secrets import ApiKey, gemini_keys, load_env, openai_keys

#: ``factory(env, model=..., temperature=..., timeout_s=..., on_notice=...)`` -> client.
Factory = Callable[..., Provider]


@dataclass(frozen=True)
class ProviderEntry:
    """One provider of raw data.

    Attributes
    ----------
    name : str
        What ``generation.provider`` and ``--provider`` call it.
    key_variables : tuple of str
        Environment variables that configure it; any one of them set is enough. Empty for
        a provider that needs no configuration (``offline``).
    url_variable : str or None
        The variable that overrides its endpoint (shown in the log, may carry credentials).
    model_field : str or None
        The field of the blueprint's ``generation`` section that names its model.
    missing_key : str
        What to tell a user who chose it without configuring it.
    keys : callable or None
        ``keys(env)``: its API keys (at least one, possibly a placeholder).
    factory : callable or None
        Builds its client; None for ``offline``, which the stage runs itself.
    """

    name: str
    key_variables: tuple[str, ...] = ()
    url_variable: str | None = None
    model_field: str | None = None
    missing_key: str = ""
    keys: Callable[[Mapping[str, str]], list[ApiKey]] | None = None
    factory: Factory | None = None

    @property
    def is_llm(self) -> bool:
        return self.factory is not None


def _gemini(env: Mapping[str, str], *, model: str, temperature: float, timeout_s: float,
            on_notice: Callable[[str], None] | None = None) -> Provider:
    return GeminiProvider(model, base_url=env.get("GEMINI_BASE_URL") or None,
                          temperature=temperature, timeout_s=timeout_s)


def _openai(env: Mapping[str, str], *, model: str, temperature: float, timeout_s: float,
            on_notice: Callable[[str], None] | None = None) -> Provider:
    return OpenAIProvider(model, base_url=env.get("OPENAI_BASE_URL") or None,
                          temperature=temperature, timeout_s=timeout_s, on_notice=on_notice)


ENTRIES: tuple[ProviderEntry, ...] = (
    ProviderEntry("offline"),
    ProviderEntry(
        "gemini", key_variables=("GEMINI_API_KEYS", "GEMINI_API_KEY"), url_variable="GEMINI_BASE_URL",
        model_field="model", keys=gemini_keys, factory=_gemini,
        missing_key="no Gemini API key: set GEMINI_API_KEYS=key1,key2 in the environment or "
                    "in the .env file at the repository root"),
    ProviderEntry(
        "openai", key_variables=("OPENAI_BASE_URL", "OPENAI_API_KEY"),
        url_variable="OPENAI_BASE_URL", model_field="openai_model", keys=openai_keys,
        factory=_openai,
        missing_key="the openai provider needs OPENAI_BASE_URL (a local server such as Ollama: "
                    "http://127.0.0.1:11434/v1) or OPENAI_API_KEY (api.openai.com), in the "
                    "environment or .env"),
    ProviderEntry("dataset"),  # the task's labelled files (foundry/datasets.py), no key
)
PROVIDERS: dict[str, ProviderEntry] = {entry.name: entry for entry in ENTRIES}
#: Every provider name, and those that call an LLM.
NAMES: tuple[str, ...] = tuple(PROVIDERS)
LLM_NAMES: tuple[str, ...] = tuple(e.name for e in ENTRIES if e.is_llm)


def provider_entry(name: str, *, llm: bool = False) -> ProviderEntry:
    """The entry called ``name`` (an LLM provider when ``llm``), or a :class:`ConfigError`."""
    choices = LLM_NAMES if llm else NAMES
    if name not in choices:
        kind = "LLM provider" if llm else "provider"
        raise ConfigError(f"unknown {kind} {name!r}; choose one of {', '.join(choices)}")
    return PROVIDERS[name]


def provider_configured(provider: str, env: Mapping[str, str] | None = None) -> bool:
    """Whether the environment (or ``.env``) configures ``provider``; never reads key values out."""
    entry = provider_entry(provider)
    if not entry.key_variables:
        return True
    variables = load_env(env)
    return any(variables.get(var, "").strip() for var in entry.key_variables)


def make_provider(name: str, env: Mapping[str, str], *, model: str, temperature: float,
                  timeout_s: float, on_notice: Callable[[str], None] | None = None
                  ) -> Provider:
    """Build the client of the LLM provider ``name`` from environment variables."""
    factory = provider_entry(name, llm=True).factory
    assert factory is not None  # provider_entry(llm=True) only returns LLM entries
    return factory(env, model=model, temperature=temperature, timeout_s=timeout_s,
                   on_notice=on_notice)
