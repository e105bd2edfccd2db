"""The answers: :class:`Prediction` (one text's label, probabilities, confidence)
and :class:`Probabilities` (a read-only ``label -> float`` mapping over the scores),
with the fast constructors the answering paths use."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

_new_object = object.__new__
_set_attribute = object.__setattr__


def _float_list(scores: Any) -> list[float]:
    """A score vector as a list of Python floats: a list as it is, the float64 bytes of the
    native path, or anything NumPy reads as a vector."""
    if type(scores) is list:
        return scores
    if type(scores) is bytes:
        return memoryview(scores).cast("d").tolist()
    return np.asarray(scores, dtype=np.float64).tolist()


class Probabilities(Mapping[str, float]):
    """Every label's probability: a read-only mapping ``label -> float`` in label order.

    It holds the score vector an answer was computed from (a list of floats, a float64 NumPy
    vector, or the native path's float64 bytes) and the model's label tuple; the
    ``label -> float`` dict is built on first use only. Building a dict of 151 Python floats
    cost more than scoring the text on the native path, and most callers read the label and
    ``confident`` only.

    It behaves like the dict it replaces when read: equal to a dict (or any mapping) with the
    same items, iterates in label order, ``repr`` is the dict's, ``keys()``, ``values()``,
    ``items()`` are the dict's views, ``len``, ``in``, ``get``; it pickles and copies. It is
    not a ``dict``: ``json.dumps`` needs ``dict(probabilities)`` (or
    :meth:`Prediction.to_json`), and it cannot be changed.
    """

    __slots__ = ("_labels", "_scores", "_items")

    def __init__(self, labels: Sequence[str], scores: Any) -> None:
        """``labels`` in the scores' order; ``scores`` one float per label (a list, a NumPy
        vector, or float64 bytes)."""
        labels = tuple(labels)
        values = list(_float_list(scores))  # a copy: the caller's list may change
        if len(values) != len(labels):
            raise ValueError(f"{len(labels)} labels but {len(values)} scores")
        _set_attribute(self, "_labels", labels)
        _set_attribute(self, "_scores", values)
        _set_attribute(self, "_items", None)

    def _dict(self) -> dict[str, float]:
        """The ``label -> float`` dict, built once."""
        items = self._items
        if items is None:
            items = dict(zip(self._labels, _float_list(self._scores), strict=True))
            _set_attribute(self, "_items", items)
        return items

    def __getitem__(self, label: str) -> float:
        return self._dict()[label]

    def __iter__(self) -> Iterator[str]:
        return iter(self._labels)

    def __len__(self) -> int:
        return len(self._labels)

    def __contains__(self, label: object) -> bool:
        return label in self._dict()

    def get(self, label: str, default: Any = None) -> Any:
        return self._dict().get(label, default)

    def keys(self):  # noqa: ANN201 - the dict's view
        return self._dict().keys()

    def values(self):  # noqa: ANN201
        return self._dict().values()

    def items(self):  # noqa: ANN201
        return self._dict().items()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Probabilities):
            return self._dict() == other._dict()
        if isinstance(other, dict):
            return self._dict() == other
        if isinstance(other, Mapping):
            return self._dict() == dict(other.items())
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # equal to a dict, so unhashable like one

    def __repr__(self) -> str:
        return repr(self._dict())

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Probabilities is read-only; dict(probabilities) is a copy to change")

    def __reduce__(self) -> tuple:
        return Probabilities, (self._labels, _float_list(self._scores))


def _probabilities(labels: tuple[str, ...], scores: Any) -> Probabilities:
    """``Probabilities(labels, scores)`` without the checks of ``__init__``: for the answering
    paths, whose ``labels`` are the model's tuple and ``scores`` one float per label."""
    probabilities = _new_object(Probabilities)
    _set_attribute(probabilities, "_labels", labels)
    _set_attribute(probabilities, "_scores", scores)
    _set_attribute(probabilities, "_items", None)
    return probabilities


@dataclass(frozen=True)
class Prediction:
    """One answer: the label, every label's probability, and whether to trust it.

    ``confident`` is true when the top probability reaches the model's threshold *and* the
    text is familiar enough (its unfamiliarity is within the ``.bin``'s gate, see
    :mod:`foundry.familiarity`); otherwise the caller should fall back (e.g. to its LLM).
    """

    label: str
    #: Every label's probability, in label order (:class:`Probabilities`, read-only).
    probabilities: Mapping[str, float]
    confident: bool
    #: Probability of ``label`` (the top probability).
    score: float = field(default=0.0)
    #: The name of the reflex rule that answered (:mod:`foundry.reflex`), or None when the
    #: model did. A rule's answer has probability 1 for its label, 0 for the others.
    rule: str | None = field(default=None)

    def to_json(self, text: str, rules: bool = False) -> dict:
        """The JSON-line answer; ``rules``: the model carries reflex rules, so the line says
        which one answered (``"rule"``: its name, or null for the model)."""
        out = {
            "text": text,
            "label": self.label,
            "probabilities": dict(self.probabilities.items()),
            "confident": self.confident,
        }
        if rules:
            out["rule"] = self.rule
        return out


def _prediction(label: str, probabilities: Mapping[str, float], confident: bool,
                score: float, rule: str | None = None) -> Prediction:
    """``Prediction(label, probabilities, confident, score)``, without the frozen ``__init__``.

    A frozen dataclass sets each field through ``object.__setattr__``; filling the instance
    dict directly gives the same object at a third of the cost, which matters at
    hundreds of thousands of answers per second.
    """
    prediction = _new_object(Prediction)
    fields = {"label": label, "probabilities": probabilities, "confident": confident,
              "score": score}
    if rule is not None:
        fields["rule"] = rule
    _set_attribute(prediction, "__dict__", fields)
    return prediction
