"""One-text prediction fused into one function per model kind (the numpy backend's
fast path): :func:`_binary_predictor` for the default export, with a
:class:`_GramAutomaton` for texts without repeated characters, and
:func:`_multiclass_predictor` for a softmax over many labels."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from foundry.runtime.graph import SigmoidCalibration
from foundry.runtime.heads import _logistic, _NumpyHead
from foundry.runtime.normalize import _CHAR_TABLES, _UNSAFE, NgramSlicer, _collapse
from foundry.runtime.prediction import Prediction, _new_object, _probabilities, _set_attribute
from foundry.textspec import TextSpec, head_ngrams, is_head_gram, is_word_gram, normalize, word_runs


class _GramAutomaton:
    """The occurrence sums of the in-vocabulary n-grams of a text in one pass over its characters.

    An Aho-Corasick automaton over the vocabulary (with ``n <= max_n``, a state is the
    longest suffix of the text read so far, at most ``max_n - 1`` characters, that is a
    proper prefix of a vocabulary n-gram). Each state is a dict ``char -> (next state,
    sum of the values of the vocabulary n-grams ending at that character)``; a character
    missing from a state's dict behaves as from the empty state (:attr:`root`), which is
    exact because a state's dict holds every transition whose result differs from the root's.
    So no n-gram string is built: one dict look-up and one addition per character. The values
    are anything ``+`` adds, with ``zero`` its identity: complex numbers (the binary path), or
    tuples of column indices, whose "sum" lists the columns of the n-grams ending there.
    """

    def __init__(self, values: dict[str, Any], spec: TextSpec, zero: Any = 0j) -> None:
        grams = {g: v for g, v in values.items()
                 if spec.min_n <= len(g) <= spec.max_n and g != " " and not is_word_gram(g)
                 and not is_head_gram(g)}
        prefixes = {g[:k] for g in grams for k in range(1, len(g))}
        nodes: dict[str, dict] = {s: {} for s in prefixes}
        root: dict = {}
        self.root = root
        self.miss = (root, zero)
        follow: dict[str, set[str]] = {}
        for q in (*grams, *prefixes):
            if len(q) > 1:
                follow.setdefault(q[:-1], set()).add(q[-1])
        for c in {q for q in (*grams, *prefixes) if len(q) == 1}:
            root[c] = (nodes.get(c, root), grams.get(c, zero))
        for s in sorted(prefixes, key=len):
            node = nodes[s]
            # The longest proper suffix of s that is a state: the rest of s cannot matter.
            parent = next(filter(None, map(nodes.get, (s[k:] for k in range(1, len(s))))), None)
            if parent:
                node.update(parent)
            for c in follow.get(s, ()):
                t = s + c
                base = (parent.get(c) if parent else None) or root.get(c, self.miss)
                node[c] = (nodes.get(t, base[0]), base[1] + grams.get(t, zero))
        self.start = root.get(" ", self.miss) if spec.word_boundary_padding else None


#: Texts up to this many characters (normalised) are checked for the automaton's fast path.
_AUTOMATON_MAX_CHARS = 24


def _binary_predictor(head: _NumpyHead, labels: list[str], threshold: float,
                      slicer: NgramSlicer, familiar: Callable[[str], bool],
                      ruled: Callable[[str], Prediction | None] | None = None,
                      ) -> Callable[[str], Prediction] | None:
    """One-text prediction for the default export, fused into one function.

    The same computation as ``_answer(finish_one(scores(slicer(fast_normalize(text)))))``
    (``familiar`` is the unfamiliarity gate, asked only of answers above the threshold;
    ``ruled``, if given, the reflex rules' answer to the normalised text or None, tried first)
    for a binary model with rows ``(-w, w)`` under LOGISTIC or a sigmoid calibration, with
    every table bound to a local. When no character of the normalised text occurs twice, no
    n-gram does (every tf is 1, head n-grams of step 6c too: looked up after the walk) and the
    sums come from a :class:`_GramAutomaton`, one dict look-up per character (about half the
    time of a short text). Otherwise the n-grams are sliced, looked up and their repeats
    corrected as in :meth:`_NumpyHead.scores`. None for other models and with word n-grams.
    """
    graph, spec = head.graph, head.spec
    logistic = graph.post_transform == "LOGISTIC" and graph.calibration is None
    if spec.word_max_n or not (head.antisymmetric and head.l2 and not graph.l1_normalize
            and (logistic or graph.calibration is not None)):
        return None
    table, max_chars = _CHAR_TABLES[spec.lowercase], spec.max_chars
    automaton = _GramAutomaton(head.packed, spec)
    root, miss, start = automaton.root, automaton.miss, automaton.start
    root_get, padded, heads = root.get, spec.word_boundary_padding, spec.head_chars
    in_vocabulary, packed = head._in_vocabulary, head._packed_item
    correct_repeats, sqrt = head._correct_repeats, math.sqrt
    bias = head.intercepts[1]
    calibration = graph.calibration or SigmoidCalibration(1, -1.0, 0.0)  # unused if logistic
    sign, a, b = (1.0 if calibration.column == 1 else -1.0), calibration.a, calibration.b
    label0, label1 = names = tuple(labels)

    def predict(text: str) -> Prediction:
        """Classify one text."""
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}")
        out = text.translate(table)
        out = normalize(text, spec) if _UNSAFE in out else _collapse(out)[:max_chars]
        if ruled is not None and (answer := ruled(out)) is not None:
            return answer  # a reflex rule answers before the model
        # A long text nearly always repeats a character: skip the check there.
        if len(out) <= _AUTOMATON_MAX_CHARS and len(set(chars := tuple(out))) == len(chars):
            # No character occurs twice, so no n-gram does: tf = count = 1, and the
            # occurrence sums of the automaton are the answer.
            total = 0j
            for unit in (out.split(" ") if padded and " " in out else (chars,) if out else ()):
                if start is not None:
                    node, total = start[0], total + start[1]
                else:
                    node = root
                for c in unit:
                    node, v = node.get(c) or root_get(c, miss)
                    total += v
                if padded:
                    total += (node.get(" ") or root_get(" ", miss))[1]
            total += heads and sum(map(packed, filter(in_vocabulary, head_ngrams(out, spec))), 0j)
            z, norm2 = total.real, total.imag
        else:  # as _NumpyHead.scores: occurrence sums, then the repeats corrected
            hits = list(filter(in_vocabulary, slicer(out)))
            both = sum(map(packed, hits), 0j)
            sums, norm2 = [both.real], both.imag
            if len(set(hits)) != len(hits):
                norm2 = correct_repeats(hits, norm2, sums)
            z = sums[0]
        if norm2 > 0.0:
            z /= sqrt(norm2)
        z += bias
        if logistic:
            p0, p1 = _logistic(-z), _logistic(z)
        else:
            p1 = _logistic(-(a * sign * z + b))
            p0 = 1.0 - p1
        label, top = (label1, p1) if p1 > p0 else (label0, p0)
        prediction = _new_object(Prediction)
        _set_attribute(prediction, "__dict__", {
            "label": label, "probabilities": _probabilities(names, [p0, p1]),
            "confident": top >= threshold and familiar(out), "score": top})
        return prediction

    return predict


def _multiclass_predictor(head: _NumpyHead, labels: list[str], threshold: float,
                          slicer: NgramSlicer, familiar: Callable[[str], bool],
                          ruled: Callable[[str], Prediction | None] | None = None,
                          ) -> Callable[[str], Prediction] | None:
    """One-text prediction for a model of three or more labels, fused into one function.

    The same computation as ``_answer(finish_one(scores(slicer(fast_normalize(text)))))``
    (after ``ruled``, as in :func:`_binary_predictor`) for a graph with one score row per
    class: a :class:`_GramAutomaton` whose values are 1-tuples of columns lists the columns
    of the text's in-vocabulary n-grams (repeats included) in one pass over its characters,
    without building an n-gram string (a third of the time of an English text's slicing and
    look-ups); with padding, a word the model knows (a word unigram of its vocabulary) is
    looked up whole, its columns (its word unigram's too) listed at load. Longer word
    n-grams (step 6b) are looked up by their words joined. :meth:`_NumpyHead.class_scores`
    gives every class score at once; the softmax (the int8 and multinomial exports) runs on
    the score vector, without the max subtraction when a load-time bound proves that exp
    cannot overflow. None for a calibrated or binary model.
    """
    graph, spec = head.graph, head.spec
    if head.columns is None or graph.calibration is not None or spec.head_chars:
        return None  # head n-grams (step 6c): the general path
    table, max_chars = _CHAR_TABLES[spec.lowercase], spec.max_chars
    automaton = _GramAutomaton({g: (c,) for g, c in head.columns.items()}, spec, ())
    padded = spec.word_boundary_padding
    # Word n-grams (step 6b), keyed by their words joined by U+0020 (without the mark).
    word_columns = {g[1:]: (c,) for g, c in head.columns.items() if is_word_gram(g)}
    walk = _column_walker(automaton, padded)
    # With padding a word's n-grams depend on the word alone: walk each word the model knows
    # (its word unigrams) once, at load, and list its columns with its unigram's column; a
    # word the vocabulary lacks has no unigram column either.
    known_get = {w: (*walk(w), c) for w, (c,) in word_columns.items()
                 if padded and " " not in w}.get
    word_get, low, high = word_columns.get, 2 if padded else 1, spec.word_max_n  # not known
    class_scores = head.class_scores
    softmax = graph.post_transform == "SOFTMAX" and not graph.l1_normalize
    plain_exp = softmax and _score_bound(head) < 600.0
    finish, exp = head.finish, np.exp
    names = tuple(labels)

    def predict(text: str) -> Prediction:
        """Classify one text."""
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}")
        out = text.translate(table)
        out = normalize(text, spec) if _UNSAFE in out else _collapse(out)[:max_chars]
        if ruled is not None and (answer := ruled(out)) is not None:
            return answer  # a reflex rule answers before the model
        cols: list[int] = []
        if padded:
            for unit in out.split(" ") if out else ():
                cols += known_get(unit) or walk(unit)
        elif out:
            cols = walk(out)
        for run in word_runs(out, low, high):  # step 6b: those not listed with known words
            if found := word_get(run):
                cols += found
        scores = class_scores(cols)
        if plain_exp:
            scores = exp(scores)
            scores /= scores.sum()
        elif softmax:
            scores = exp(scores - scores.max())
            scores /= scores.sum()
        else:
            scores = finish(scores[None, :])[0]
        best = int(scores.argmax())
        top = scores.item(best)
        prediction = _new_object(Prediction)
        _set_attribute(prediction, "__dict__", {
            "label": labels[best], "probabilities": _probabilities(names, scores),
            "confident": top >= threshold and familiar(out), "score": top})
        return prediction

    return predict


def _column_walker(automaton: _GramAutomaton, padded: bool) -> Callable[[str], list[int]]:
    """``walk(unit)``: the columns of a unit's in-vocabulary character n-grams (step 6), for
    an automaton whose values are 1-tuples of columns; a unit is a word (padded with
    spaces when ``padded``) or, without padding, the whole text."""
    root_get, miss, start = automaton.root.get, automaton.miss, automaton.start

    def walk(unit: str) -> list[int]:
        node, found = start or miss
        cols = list(found)
        for c in unit:
            node, found = node.get(c) or root_get(c, miss)
            cols += found
        if padded:
            cols += (node.get(" ") or root_get(" ", miss))[1]
        return cols

    return walk


def _score_bound(head: _NumpyHead) -> float:
    """An upper bound of any class score's magnitude, or inf: with L2-normalised non-negative
    features a class score is at most ``||W_k|| + |b_k|``. When it is far from exp's range,
    the softmax needs no max subtraction."""
    if not head.l2:
        return math.inf
    norms = np.linalg.norm(head.graph.coefficients.astype(np.float64), axis=1)
    return float(np.max(norms + np.abs(head._bias)))
