"""The root of Model Foundry's own exceptions.

Every error that is the user's to fix (a blueprint, a run folder, an input file) derives from
:class:`FoundryError`, so the command line can print it as one clear line and let anything
else (a bug) raise with its traceback. Older exception classes still derive from the built-in
bases they started with; new ones start here::

    FoundryError
     ├── RunStateError          foundry.runs: a run folder lacks what a stage needs
     ├── BlueprintCheckError    foundry.check: `foundry blueprint check` found problems
     └── InsufficientDataError  foundry.generate.sufficiency: a label ended far below target
"""

from __future__ import annotations


class FoundryError(Exception):
    """An error the user can fix; the message says what is wrong, where, and what to do."""
