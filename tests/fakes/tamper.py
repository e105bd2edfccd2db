"""Damage artifacts on purpose: rewrite a ``.bin`` (re-sealed, so that the rule under test is
the one that fails, not the integrity check) or flip bits in place."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from foundry.artifacts import seal_message
from foundry.v1 import preprocessor_pb2 as pb


def read_bin(path: Path) -> pb.Preprocessor:
    msg = pb.Preprocessor()
    msg.ParseFromString(Path(path).read_bytes())
    return msg


def rewrite_bin(path: Path, mutate: Callable[[pb.Preprocessor], object]) -> None:
    """Decode ``path``, let ``mutate`` change the message, write it back with a valid seal."""
    msg = read_bin(path)
    mutate(msg)
    Path(path).write_bytes(seal_message(msg))
