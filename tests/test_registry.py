"""foundry.generate.registry: one entry per provider, read by every other part."""

from __future__ import annotations

import typing

import pytest

from foundry import cli
from foundry.blueprint import Generation
from foundry.errors import ConfigError
from foundry.generate.registry import (
    LLM_NAMES,
    NAMES,
    make_provider,
    provider_configured,
    provider_entry,
)


def test_the_blueprint_schema_and_the_command_line_name_the_registered_providers():
    assert typing.get_args(Generation.model_fields["provider"].annotation) == NAMES
    assert cli.PROVIDER_NAMES == NAMES
    assert LLM_NAMES == ("gemini", "openai")


def test_every_llm_entry_names_its_model_field_and_its_keys():
    for name in LLM_NAMES:
        entry = provider_entry(name, llm=True)
        assert entry.model_field in Generation.model_fields
        assert entry.key_variables and entry.missing_key and entry.keys is not None


@pytest.mark.parametrize(("env", "expected"), [
    # offline and dataset need no configuration: they are always available.
    ({}, {"offline", "dataset"}),
    ({"GEMINI_API_KEYS": "k1,k2"}, {"offline", "dataset", "gemini"}),
    ({"GEMINI_API_KEY": "k"}, {"offline", "dataset", "gemini"}),
    ({"OPENAI_BASE_URL": "http://127.0.0.1:1/v1"}, {"offline", "dataset", "openai"}),
])
def test_provider_configured_reads_the_entry_variables(env, expected, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert {name for name in NAMES if provider_configured(name, env)} == expected


def test_unknown_provider_is_a_config_error_naming_the_choices():
    with pytest.raises(ConfigError, match="unknown provider 'claude'; choose one of offline, "
                                          "gemini, openai, dataset"):
        provider_entry("claude")
    with pytest.raises(ConfigError, match="unknown LLM provider 'offline'"):
        make_provider("offline", {}, model="m", temperature=0.1, timeout_s=1)
