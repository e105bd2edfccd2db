"""The root of Model Foundry's own exceptions, as one tree.

Every error that is the user's to fix (a blueprint, a run folder, an input file, a damaged
model file, a refused gate) derives from :class:`FoundryError`, so the command line can print
it as one clear line and let anything else (a bug) raise with its traceback::

    FoundryError
     ├── ConfigError            a blueprint, grammar or command-line value is wrong (exit 2)
     ├── InputDataError         data a stage reads is missing, malformed or out of date
     │    └── StaleInputError   an earlier stage's outputs no longer match their inputs
     ├── ArtifactError          a model file is missing, corrupt, or does not match its pair
     ├── GenerationError        data generation cannot go on
     ├── GateError              a quality gate (the exam) refused to let a model through
     ├── BusyError              another process holds a lock that could not be waited for
     ├── RunStateError          foundry.runs: a run folder lacks what a stage needs
     ├── BlueprintCheckError    foundry.check: `foundry blueprint check` found problems
     └── InsufficientDataError  foundry.generate.sufficiency: a label ended far below target

Unless noted, the command line exits with status 1. Classes that existed before this tree
keep their old built-in base as a second base (``ValueError``, ``RuntimeError``), so
``except ValueError`` in callers keeps working.
"""

from __future__ import annotations


class FoundryError(Exception):
    """An error the user can fix; the message says what is wrong, where, and what to do."""

    #: Exit status of the command line for this kind of failure.
    exit_code = 1


class ConfigError(FoundryError, ValueError):
    """A blueprint, grammar or command-line value is invalid."""

    exit_code = 2


class InputDataError(FoundryError, ValueError):
    """Data a stage reads is missing, malformed or out of date."""


class StaleInputError(InputDataError):
    """An earlier stage's outputs were made from other inputs than the ones now on disk."""


class ArtifactError(FoundryError, ValueError):
    """An artifact file is missing, corrupt, or does not match its pair."""


class GenerationError(FoundryError, RuntimeError):
    """The generation run cannot continue.

    ``report`` holds what was done before the stop (rows written stay in the store).
    """

    report = None


class GateError(FoundryError, RuntimeError):
    """A quality gate (the exam) refused to let a model through."""


class BusyError(FoundryError, RuntimeError):
    """Another process holds a lock this one could not wait for."""
