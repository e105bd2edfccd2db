"""Reflex rules: ordered, deterministic word rules that answer before the model runs.

A task's ``rules:`` (``blueprint.yaml``) is a list of rules on the *normalised* text (text-spec
steps 1-5, the text the n-grams are cut from). A rule matches when every word list it has is
satisfied:

``contains``
    any of its words occurs in the text;
``starts_with`` / ``ends_with``
    the text starts / ends with any of its words;
``equals``
    the text is one of its words;
``also_contains``
    every one of its words occurs;
``unless_contains``
    none of its words occurs.

At least one of the first four lists is given. The first matching rule answers its label with
``confident = True``; the model is not asked. There are no regular expressions: plain
substring, prefix, suffix and equality tests on code points behave the same in Python,
JavaScript and Rust (``docs/preprocessor-spec.md`` section 5, rule B14; ``docs/rules.md``).

:func:`compile_rules` turns a blueprint's rules into :class:`Reflex` (words normalised with
the task's text spec, labels as indices); the exporter writes them into the ``.bin``
(``Preprocessor.rules``, field 15), :func:`reflex_of` reads them back, and the evaluate stage
counts each rule's hits (:func:`rule_hits`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from foundry.errors import ConfigError, GateError
from foundry.textspec import TextSpec, normalize

#: The word lists of a rule, in ``.bin`` field order.
WORD_LISTS = ("contains", "starts_with", "ends_with", "equals", "also_contains",
              "unless_contains")
#: The lists of which a rule needs at least one.
POSITIVE_LISTS = WORD_LISTS[:4]
#: Limits of rule B14: rules per file, words per file (all lists of all rules), code points
#: per word and per rule name.
MAX_RULES = 256
MAX_RULE_WORDS = 4096
MAX_WORD_CHARS = 64
MAX_RULE_NAME_CHARS = 64


class RuleContradictionError(GateError):
    """A reflex rule answers a text of the task's own labelled data with another label."""


@dataclass(frozen=True)
class Rule:
    """One compiled rule: its name, the index of its label and its normalised word lists."""

    name: str
    label: int
    contains: tuple[str, ...] = ()
    starts_with: tuple[str, ...] = ()
    ends_with: tuple[str, ...] = ()
    equals: tuple[str, ...] = ()
    also_contains: tuple[str, ...] = ()
    unless_contains: tuple[str, ...] = ()

    def matches(self, normalized: str) -> bool:
        """Whether the rule answers a normalised text."""
        if self.equals and normalized not in self.equals:
            return False
        if self.starts_with and not normalized.startswith(self.starts_with):
            return False
        if self.ends_with and not normalized.endswith(self.ends_with):
            return False
        # map() over the bound __contains__ keeps the word loops in C (a rule is tried on
        # every text before the model answers).
        has = normalized.__contains__
        if self.contains and not any(map(has, self.contains)):
            return False
        if not all(map(has, self.also_contains)):
            return False
        return not any(map(has, self.unless_contains))


@dataclass(frozen=True)
class Reflex:
    """The ordered rules of a model and its labels."""

    rules: tuple[Rule, ...]
    labels: tuple[str, ...]

    def __bool__(self) -> bool:
        return bool(self.rules)

    def first(self, normalized: str) -> int | None:
        """Index of the first rule matching a normalised text, or None."""
        for i, rule in enumerate(self.rules):
            if rule.matches(normalized):
                return i
        return None

    def label_of(self, index: int) -> str:
        return self.labels[self.rules[index].label]


def _words(where: str, words: Iterable[str], spec: TextSpec) -> tuple[str, ...]:
    out = []
    for word in words:
        normal = normalize(word, spec)
        if not normal:
            raise ConfigError(f"{where}: the word {word!r} is empty after normalisation")
        if len(normal) > MAX_WORD_CHARS:
            raise ConfigError(f"{where}: the word {word[:40]!r} has {len(normal)} code points "
                              f"after normalisation; at most {MAX_WORD_CHARS}")
        if normal not in out:
            out.append(normal)
    return tuple(out)


def compile_rules(rules: Sequence[Any], labels: Sequence[str], spec: TextSpec,
                  where: str = "rules") -> Reflex:
    """Compile a task's blueprint rules (:class:`foundry.blueprint.Rule`) for ``spec``.

    Words are normalised with the same normaliser the runtimes apply to texts (so ``"删除"``
    and ``"ＤＥＬＥＴＥ"`` match what they mean); a rule without a name is called
    ``rule<i>`` (1-based).

    Raises
    ------
    ConfigError
        If a word is empty or too long after normalisation, or a label is unknown.
    """
    compiled = []
    for i, rule in enumerate(rules):
        at = f"{where}[{i}]"
        if rule.label not in labels:
            raise ConfigError(f"{at}.label: {rule.label!r} is not one of the task's labels")
        lists = {name: _words(f"{at}.{name}", getattr(rule, name) or (), spec)
                 for name in WORD_LISTS}
        compiled.append(Rule(name=rule.name or f"rule{i + 1}", label=list(labels).index(rule.label),
                             **lists))
    names = [r.name for r in compiled]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: repeated rule names "
                          f"{sorted({n for n in names if names.count(n) > 1})}")
    total = sum(len(getattr(r, name)) for r in compiled for name in WORD_LISTS)
    if total > MAX_RULE_WORDS:
        raise ConfigError(f"{where}: {total} words in all; at most {MAX_RULE_WORDS}")
    return Reflex(tuple(compiled), tuple(labels))


def task_reflex(bp: Any, task: Any, trained: Any) -> Reflex:
    """A blueprint task's rules compiled for its trained model's labels and text spec."""
    index = [t.name for t in bp.tasks].index(task.name)
    return compile_rules(task.rules, list(trained.labels), trained.spec,
                         where=f"{bp.root / 'blueprint.yaml'}: tasks[{index}].rules")


def rule_messages(reflex: Reflex, pb: Any) -> list[Any]:
    """The ``foundry.v1.Rule`` messages of ``reflex`` (``pb``: the generated module)."""
    return [pb.Rule(name=r.name, label=r.label,
                    **{name: list(getattr(r, name)) for name in WORD_LISTS})
            for r in reflex.rules]


def reflex_of(preprocessor: Any) -> Reflex:
    """The rules a validated ``.bin`` message carries (none for a format-3 file)."""
    return Reflex(
        tuple(Rule(name=r.name, label=int(r.label),
                   **{name: tuple(getattr(r, name)) for name in WORD_LISTS})
              for r in preprocessor.rules),
        tuple(preprocessor.labels))


@dataclass(frozen=True)
class RuleHits:
    """What the rules do on one labelled split: per rule, its hits and wrong answers."""

    split: str
    rows: int
    hits: tuple[int, ...]
    #: Per rule: ``(text, gold label)`` of the hits whose gold label is not the rule's.
    contradictions: tuple[tuple[tuple[str, str], ...], ...]


def rule_hits(reflex: Reflex, split: str, texts: Sequence[str], gold: Sequence[str],
              spec: TextSpec) -> RuleHits:
    """Count, on a labelled split, the texts each rule answers first and those it gets wrong."""
    hits = [0] * len(reflex.rules)
    wrong: list[list[tuple[str, str]]] = [[] for _ in reflex.rules]
    for text, label in zip(texts, gold, strict=True):
        i = reflex.first(normalize(text, spec))
        if i is None:
            continue
        hits[i] += 1
        if reflex.label_of(i) != label:
            wrong[i].append((text, label))
    return RuleHits(split, len(texts), tuple(hits), tuple(tuple(w) for w in wrong))


def check_no_contradiction(reflex: Reflex, results: Sequence[RuleHits], task: str) -> None:
    """Raise :class:`RuleContradictionError` naming every rule that contradicts a gold label.

    A reflex rule answers without the model, so it must never be wrong on the task's own
    labelled data (train, dev, exam, test): a rule that is, is too broad.
    """
    problems = []
    total = 0
    for res in results:
        for rule, wrong in zip(reflex.rules, res.contradictions, strict=True):
            total += len(wrong)
            for text, gold in wrong[:3]:
                problems.append(f"rule {rule.name!r} answers {reflex.labels[rule.label]} for "
                                f"the {res.split} text {text[:60]!r} labelled {gold}")
            if len(wrong) > 3:
                problems.append(f"rule {rule.name!r}: {len(wrong) - 3} more {res.split} texts")
    if problems:
        # The first line says it all (the command line shows one line).
        raise RuleContradictionError(
            f"task {task}: reflex {problems[0]} ({total} contradiction(s) in all); narrow the "
            "rule (unless_contains, also_contains, starts_with), drop it, or fix the data"
            + "".join(f"\n  {p}" for p in problems[1:]))
