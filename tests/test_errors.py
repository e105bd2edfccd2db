"""foundry.errors: one exception tree, and a command line that maps only it to one line."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import foundry
from foundry import cli, errors
from foundry.errors import ConfigError, FoundryError


def _foundry_modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(foundry.__path__, prefix="foundry."):
        if info.name.endswith(("_pb2", ".__main__")) or info.name == "foundry._native":
            continue
        names.append(info.name)
    return names


def _exception_classes() -> list[type[BaseException]]:
    found = []
    for name in _foundry_modules():
        module = importlib.import_module(name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__ == name:
                found.append(obj)
    return found


def test_the_package_defines_its_exceptions_somewhere_to_check():
    names = {cls.__name__ for cls in _exception_classes()}
    # A guard on the walk itself: these live in different sub-packages.
    assert {"FoundryError", "ArtifactError", "ProviderError", "GrammarError",
            "GridError", "TrainDataError", "GenerationInterrupted"} <= names


def test_every_exception_class_derives_from_foundry_error():
    outside = [f"{cls.__module__}.{cls.__qualname__}" for cls in _exception_classes()
               if not issubclass(cls, FoundryError)]
    assert outside == [], f"exception classes outside the FoundryError tree: {outside}"


def test_every_exception_class_is_drawn_in_the_tree():
    drawn = errors.__doc__ or ""
    missing = [cls.__name__ for cls in _exception_classes() if cls.__name__ not in drawn]
    assert missing == [], f"add these to the tree in foundry/errors.py's docstring: {missing}"


def test_an_interrupted_generation_is_still_a_keyboard_interrupt():
    from foundry.generate.engine import GenerationInterrupted, GenerationReport

    err = GenerationInterrupted(GenerationReport(task="t", provider="openai", model="m", target=1))
    assert isinstance(err, KeyboardInterrupt) and isinstance(err, FoundryError)
    assert err.exit_code == 130


def _run_failing(monkeypatch, exc: BaseException) -> int:
    def command(args):
        raise exc

    monkeypatch.setattr(cli, "_cmd_verify", command)
    return cli.main(["verify"])


def test_cli_prints_a_foundry_error_as_one_line_with_its_exit_code(monkeypatch, capsys):
    code = _run_failing(monkeypatch, ConfigError("blueprint.yaml:3: train.trainer: unknown"))
    err = capsys.readouterr().err
    assert code == 2
    assert err == "foundry verify: blueprint.yaml:3: train.trainer: unknown\n"


@pytest.mark.parametrize("bug", [ValueError("bad"), KeyError("x"), TypeError("t"),
                                 RuntimeError("r")])
def test_cli_lets_any_other_exception_raise_with_its_traceback(monkeypatch, bug):
    with pytest.raises(type(bug)):
        _run_failing(monkeypatch, bug)
