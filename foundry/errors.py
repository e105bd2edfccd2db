"""The root of Model Foundry's own exceptions, as one tree.

Every error that is the user's to fix (a blueprint, a run folder, an input file, a damaged
model file, a refused gate) derives from :class:`FoundryError`, so the command line can print
it as one clear line and let anything else (a bug) raise with its traceback. The classes
defined here are the branches; the leaves live next to the code that raises them::

    FoundryError
     ├── ConfigError                 a blueprint, grammar or command-line value is wrong (exit 2)
     │    ├── BlueprintError         foundry.blueprint: blueprint.yaml does not validate
     │    ├── GrammarError           foundry.generate.grammar: a grammar file is wrong
     │    ├── SeedError              foundry.generate.offline: a seed file is wrong
     │    ├── ExamDataError          foundry.evaluate: an exam file is wrong
     │    ├── RealDataError          foundry.realtext: a real-text (real/ or dev/) file is wrong
     │    ├── DatasetError           foundry.datasets: a dataset file or its mapping is wrong
     │    ├── GridError              foundry.trainers: unknown trainer, grid key or value
     │    └── ScaffoldError          foundry.scaffold: `blueprint new` cannot create it
     ├── InputDataError              data a stage reads is missing, malformed or out of date
     │    ├── StaleInputError        an earlier stage's outputs no longer match their inputs
     │    ├── StageOutputError       foundry.summaries: a stage summary lacks or renames a field
     │    ├── TrainDataError         foundry.train: a refined split file is unusable
     │    └── ParseError             foundry.generate.validate: an LLM answer holds no rows
     ├── ArtifactError               a model file is missing, corrupt, or does not match its pair
     ├── GenerationError             data generation cannot go on
     │    ├── MissingKeyError        foundry.generate.engine: no API key for the provider
     │    ├── AllKeysDisabledError   foundry.generate.keypool: the server rejected every key
     │    └── GenerationInterrupted  foundry.generate.engine: Ctrl-C (also KeyboardInterrupt, exit 130)
     ├── ProviderError               foundry.generate.providers: one LLM call failed (the engine
     │    ├── RateLimited              retries, disables a key or raises GenerationError)
     │    ├── KeyRejected
     │    ├── Transient
     │    └── FatalRequestError
     ├── GateError                   a quality gate refused to let a model through
     │    ├── ExamGateError          foundry.evaluate: the exam accuracy is below the minimum
     │    └── RuleContradictionError foundry.reflex: a reflex rule contradicts a gold label
     ├── BusyError                   another process holds a lock that could not be waited for
     ├── ForgeError                  foundry.forge: the forge cannot start, or a stage failed
     ├── LabError                    foundry.lab: a lab request cannot be served
     ├── RunStateError               foundry.runs: a run folder lacks what a stage needs
     ├── BlueprintCheckError         foundry.check: `foundry blueprint check` found problems
     └── InsufficientDataError       foundry.generate.sufficiency: a label ended far below target

Unless noted, the command line exits with status 1. Classes keep a built-in base as a second
base where callers relied on it (``ValueError``, ``RuntimeError``), so ``except ValueError``
keeps working. ``tests/test_errors.py`` checks that every exception class of the package is in
this tree.
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
