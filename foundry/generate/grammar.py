"""Template grammars: the offline provider's way to write many sentences by hand.

A grammar file (``grammar/<task>.yaml`` in a blueprint) has named ``slots`` and a list of
``templates``; each template belongs to one label and one of its categories and has one
or more ``patterns``. See ``docs/grammar.md`` for the full syntax; in short::

    {slot}          a slot reference (slot values are patterns themselves)
    [optional]      included with probability 0.5; ``[optional]@0.2`` sets the probability
    (a|b|c)         inline alternation, uniform; nesting is allowed everywhere
    \\{ \\[ \\( \\| \\\\ \\@   literal special characters

Every pattern is parsed once into a small tree (:class:`Lit`, :class:`Seq`, :class:`Alt`,
:class:`Opt`, :class:`SlotRef`). Sampling walks the tree with a ``random.Random`` so it is
deterministic across runs and machines. :meth:`Grammar.capacity` counts how many distinct
sentences each template, category and label can produce: exactly (by enumeration) when
the combinatorial bound is small, otherwise that bound, flagged as such.
"""

from __future__ import annotations

import bisect
import difflib
import itertools
import math
import random
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import yaml

from foundry.blueprint import Task
from foundry.errors import ConfigError

#: Above this many (upper-bound) sentences, a template is not enumerated; its capacity is
#: reported as the combinatorial upper bound instead.
EXACT_LIMIT = 50_000

_SLOT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SPECIAL = set("{}[]()|\\@")
_PROB = re.compile(r"@(\d*\.?\d+)")
#: Deepest nesting of patterns and slot references a grammar may have. Sampling and
#: counting walk the tree recursively; real grammars nest about ten levels.
MAX_DEPTH = 100
_TOO_DEEP = (f"nests too deeply (patterns inside patterns, or slots referring to slots, more "
             f"than {MAX_DEPTH} levels); flatten it")
#: ``(...)?`` written out of regex habit: in this grammar the ``?`` is literal text.
_REGEX_OPTIONAL = re.compile(r"(?<!\\)\)\?")


class GrammarError(ConfigError):
    """A grammar file is malformed or inconsistent with its task; the message says where."""


# --------------------------------------------------------------------------- tree


@dataclass(frozen=True)
class Lit:
    """Literal text."""

    text: str


@dataclass(frozen=True)
class Seq:
    """Concatenation of its items."""

    items: tuple[Node, ...]


@dataclass(frozen=True)
class Alt:
    """One of its options, chosen with probability proportional to ``weights``."""

    options: tuple[Node, ...]
    weights: tuple[float, ...]


@dataclass(frozen=True)
class Opt:
    """Its child with probability ``p``, else nothing."""

    child: Node
    p: float = 0.5


@dataclass(frozen=True)
class SlotRef:
    """A reference to a named slot, resolved through the grammar's slot table."""

    name: str
    column: int = 0


Node = Lit | Seq | Alt | Opt | SlotRef


# --------------------------------------------------------------------------- parser


class _Parser:
    """Recursive-descent parser of one pattern string; errors carry ``where`` and a column."""

    def __init__(self, text: str, where: str) -> None:
        self.text = text
        self.where = where
        self.pos = 0

    def fail(self, message: str, column: int, hint: str) -> GrammarError:
        # CJK characters take two terminal cells; pad the caret to match.
        width = sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in self.text[:column])
        caret = " " * width + "^"
        return GrammarError(
            f"{self.where}: {message} at column {column + 1}\n"
            f"    {self.text}\n    {caret}\n  {hint}"
        )

    def parse(self) -> Node:
        node = self.alternation(closer=None)
        if self.pos < len(self.text):  # only a stray closer stops the top level early
            ch = self.text[self.pos]
            raise self.fail(
                f"unbalanced '{ch}'", self.pos,
                f"remove it or escape a literal bracket as '\\{ch}'",
            )
        return node

    def alternation(self, closer: str | None = None) -> Node:
        options = [self.sequence()]
        while self.pos < len(self.text) and self.text[self.pos] == "|":
            self.pos += 1
            options.append(self.sequence())
        if len(options) == 1:
            return options[0]
        return Alt(tuple(options), tuple(1.0 for _ in options))

    def sequence(self) -> Node:
        items: list[Node] = []
        buf: list[str] = []

        def flush() -> None:
            if buf:
                items.append(Lit("".join(buf)))
                buf.clear()

        text = self.text
        while self.pos < len(text):
            ch = text[self.pos]
            if ch == "\\":
                if self.pos + 1 >= len(text):
                    raise self.fail(
                        "dangling backslash", self.pos, "write '\\\\' for a literal backslash"
                    )
                buf.append(text[self.pos + 1])
                self.pos += 2
            elif ch == "|" or ch in ")]":
                break  # the caller decides whether this closer is expected
            elif ch == "}":
                raise self.fail(
                    "unbalanced '}'", self.pos, "remove it or escape a literal brace as '\\}'"
                )
            elif ch == "{":
                flush()
                items.append(self.slot_ref())
            elif ch == "(":
                flush()
                start = self.pos
                self.pos += 1
                inner = self.alternation(closer=")")
                self.expect(")", start, "(")
                items.append(inner)
            elif ch == "[":
                flush()
                start = self.pos
                self.pos += 1
                inner = self.alternation(closer="]")
                self.expect("]", start, "[")
                items.append(Opt(inner, self.probability()))
            else:
                buf.append(ch)
                self.pos += 1
        flush()
        if len(items) == 1:
            return items[0]
        return Seq(tuple(items))

    def expect(self, closer: str, start: int, opener: str) -> None:
        if self.pos < len(self.text) and self.text[self.pos] == closer:
            self.pos += 1
            return
        if self.pos < len(self.text):
            raise self.fail(
                f"'{opener}' opened at column {start + 1} is closed by '{self.text[self.pos]}'",
                self.pos,
                f"close it with '{closer}' (escape literal brackets as '\\{self.text[self.pos]}')",
            )
        raise self.fail(
            f"unbalanced '{opener}'",
            start,
            f"close it with '{closer}' or escape a literal bracket as '\\{opener}'",
        )

    def probability(self) -> float:
        m = _PROB.match(self.text, self.pos)
        if not m:
            return 0.5
        p = float(m.group(1))
        if not 0.0 < p <= 1.0:
            raise self.fail(
                f"optional probability {m.group(1)} is not in (0, 1]",
                self.pos,
                "write e.g. '[text]@0.3', or '\\@' for a literal '@'",
            )
        self.pos = m.end()
        return p

    def slot_ref(self) -> SlotRef:
        start = self.pos
        end = self.text.find("}", start)
        if end < 0:
            raise self.fail(
                "unbalanced '{'", start, "close the slot name with '}' or escape it as '\\{'"
            )
        name = self.text[start + 1 : end]
        if not _SLOT_NAME.match(name):
            raise self.fail(
                f"bad slot name {name!r}",
                start,
                "slot names are letters, digits and '_' (not starting with a digit); "
                "escape a literal brace as '\\{'",
            )
        self.pos = end + 1
        return SlotRef(name, start)


def parse_pattern(text: str, where: str = "pattern") -> Node:
    """Parse one pattern string into a tree; ``where`` prefixes error messages."""
    if not isinstance(text, str):
        raise GrammarError(
            f"{where}: expected a string, got {type(text).__name__} {text!r}; "
            "quote it in YAML (e.g. 'yes', 'no', 'ok' and numbers must be quoted)"
        )
    return _Parser(text, where).parse()


def slot_refs(node: Node) -> Iterable[SlotRef]:
    """Every slot reference in a tree, in order."""
    if isinstance(node, SlotRef):
        yield node
    elif isinstance(node, Seq):
        for item in node.items:
            yield from slot_refs(item)
    elif isinstance(node, Alt):
        for option in node.options:
            yield from slot_refs(option)
    elif isinstance(node, Opt):
        yield from slot_refs(node.child)


# --------------------------------------------------------------------------- grammar


@dataclass(frozen=True)
class Template:
    """One template: a label, a category and weighted-uniform patterns."""

    label: str
    category: str
    index: int  # position within its category, used in the key
    file_index: int  # position in the file's ``templates`` list, for error messages
    weight: float
    patterns: tuple[str, ...]
    tree: Node  # an Alt over the patterns (uniform)

    @property
    def key(self) -> str:
        """The template id carried by generated rows: ``<category>#<index>``."""
        return f"{self.category}#{self.index}"


@dataclass
class Grammar:
    """A parsed and validated grammar.

    Attributes
    ----------
    source : str
        The file (or a description) it was read from, for messages.
    slots : dict[str, Alt]
        Slot name -> its alternatives.
    templates : list[Template]
        In file order.
    category_weights : dict[str, float]
        Optional relative weights of categories within their label (default 1).
    """

    source: str
    slots: dict[str, Alt]
    templates: list[Template]
    category_weights: dict[str, float] = field(default_factory=dict)
    #: Suspicious but legal constructs found while loading (see :func:`lint_pattern`).
    warnings: list[str] = field(default_factory=list)
    _bounds: dict[str, int] = field(default_factory=dict, repr=False, compare=False)

    # ---- sampling

    def sample(self, node: Node, rng: random.Random) -> str:
        """Draw one sentence from a tree (e.g. ``template.tree``)."""
        out: list[str] = []
        self._sample_into(node, rng, out)
        return "".join(out)

    def _sample_into(self, node: Node, rng: random.Random, out: list[str]) -> None:
        if isinstance(node, Lit):
            out.append(node.text)
        elif isinstance(node, Seq):
            for item in node.items:
                self._sample_into(item, rng, out)
        elif isinstance(node, Alt):
            self._sample_into(node.options[_pick(node.weights, rng)], rng, out)
        elif isinstance(node, Opt):
            if rng.random() < node.p:
                self._sample_into(node.child, rng, out)
        else:
            self._sample_into(self.slots[node.name], rng, out)

    def sample_template(self, template: Template, rng: random.Random) -> str:
        return self.sample(template.tree, rng)

    # ---- counting

    def upper_bound(self, node: Node) -> int:
        """Number of derivations of a tree: an upper bound on its distinct sentences."""
        if isinstance(node, Lit):
            return 1
        if isinstance(node, Seq):
            return math.prod(self.upper_bound(i) for i in node.items)
        if isinstance(node, Alt):
            return sum(self.upper_bound(o) for o in node.options)
        if isinstance(node, Opt):
            return self.upper_bound(node.child) + 1
        return self._slot_bound(node.name)

    def _slot_bound(self, name: str) -> int:
        if name not in self._bounds:
            self._bounds[name] = self.upper_bound(self.slots[name])
        return self._bounds[name]

    def expand(self, node: Node, limit: int = EXACT_LIMIT) -> set[str] | None:
        """All sentences of a tree, or None if its upper bound exceeds ``limit``."""
        if self.upper_bound(node) > limit:
            return None
        return set(self._expand(node, {}))

    def _expand(self, node: Node, cache: dict[str, frozenset[str]]) -> frozenset[str]:
        if isinstance(node, Lit):
            return frozenset((node.text,))
        if isinstance(node, Seq):
            acc: frozenset[str] = frozenset(("",))
            for item in node.items:
                part = self._expand(item, cache)
                acc = frozenset(a + b for a in acc for b in part)
            return acc
        if isinstance(node, Alt):
            return frozenset().union(*(self._expand(o, cache) for o in node.options))
        if isinstance(node, Opt):
            return self._expand(node.child, cache) | {""}
        # A slot is expanded once per call, however often it is referenced.
        if node.name not in cache:
            cache[node.name] = self._expand(self.slots[node.name], cache)
        return cache[node.name]

    def capacity(
        self, key: Callable[[str], str] | None = None, limit: int = EXACT_LIMIT
    ) -> list[dict[str, Any]]:
        """Distinct sentences per template, category and label.

        Parameters
        ----------
        key : callable, optional
            Sentences are counted as distinct on ``key(sentence)`` (the offline provider
            passes the text-spec normaliser, so ``？`` and ``?`` count once). Leading and
            trailing spaces are always ignored.
        limit : int
            Templates whose upper bound exceeds it are not enumerated.

        Returns
        -------
        list of dict
            Rows with ``level`` (``template``/``category``/``label``), ``label``,
            ``category`` (None for label rows), ``template`` (None unless a template row),
            ``distinct`` and ``exact`` (False: ``distinct`` is the combinatorial upper
            bound). A category or label is exact only if all its templates are; its
            sentences shared between templates are then counted once.
        """
        norm = key or (lambda s: s)
        rows: list[dict[str, Any]] = []
        per_template: dict[str, tuple[set[str] | None, int]] = {}
        for t in self.templates:
            sentences = self.expand(t.tree, limit)
            if sentences is None:
                per_template[t.key + "\0" + t.label] = (None, self.upper_bound(t.tree))
            else:
                keys = {norm(s.strip()) for s in sentences} - {""}
                per_template[t.key + "\0" + t.label] = (keys, len(keys))
            keys_or_none, n = per_template[t.key + "\0" + t.label]
            rows.append(
                {"level": "template", "label": t.label, "category": t.category,
                 "template": t.key, "distinct": n, "exact": keys_or_none is not None}
            )

        def merge(ts: list[Template]) -> tuple[int, bool]:
            parts = [per_template[t.key + "\0" + t.label] for t in ts]
            if all(s is not None for s, _ in parts):
                return len(set().union(*(s for s, _ in parts))), True
            return sum(n for _, n in parts), False

        for label in self.labels():
            for category in self.categories(label):
                n, exact = merge(self.templates_of(label, category))
                rows.append({"level": "category", "label": label, "category": category,
                             "template": None, "distinct": n, "exact": exact})
            n, exact = merge([t for t in self.templates if t.label == label])
            rows.append({"level": "label", "label": label, "category": None,
                         "template": None, "distinct": n, "exact": exact})
        return rows

    # ---- structure

    def labels(self) -> list[str]:
        """Labels in order of first appearance."""
        return list(dict.fromkeys(t.label for t in self.templates))

    def categories(self, label: str) -> list[str]:
        """Categories of a label in order of first appearance."""
        return list(dict.fromkeys(t.category for t in self.templates if t.label == label))

    def templates_of(self, label: str, category: str) -> list[Template]:
        return [t for t in self.templates if t.label == label and t.category == category]

    def validate_against(self, task: Task) -> None:
        """Check labels and categories against the task; every category needs a template.

        A label that declares no categories has the single implicit category named like
        the label.
        """
        problems: list[str] = []
        declared = {lab.name: (lab.categories or [lab.name]) for lab in task.labels}
        for t in self.templates:
            where = f"{self.source}: templates[{t.file_index}]"
            if t.label not in declared:
                problems.append(
                    f"{where}: unknown label {t.label!r} for task {task.name!r} "
                    f"(labels: {', '.join(declared)}); use one of them"
                )
            elif t.category not in declared[t.label]:
                problems.append(
                    f"{where}: unknown category {t.category!r} of label {t.label!r} "
                    f"(categories in blueprint.yaml: {', '.join(declared[t.label])}); use one "
                    "of them or add it to the label's categories in blueprint.yaml"
                )
        if not problems:
            for label, cats in declared.items():
                for cat in cats:
                    if not self.templates_of(label, cat):
                        problems.append(
                            f"{self.source}: no template for {label}/{cat}; every category "
                            "needs at least one (the offline provider balances across them)"
                        )
        for cat in self.category_weights:
            if not any(cat in cats for cats in declared.values()):
                problems.append(
                    f"{self.source}: category_weights: unknown category {cat!r} "
                    f"for task {task.name!r}"
                )
        if problems:
            raise GrammarError("\n".join(problems))


def _pick(weights: tuple[float, ...], rng: random.Random) -> int:
    """Index drawn proportionally to ``weights`` (one ``rng.random()`` call)."""
    if len(weights) == 1:
        return 0
    cumulative = list(itertools.accumulate(weights))
    return min(bisect.bisect_right(cumulative, rng.random() * cumulative[-1]), len(weights) - 1)


# --------------------------------------------------------------------------- loading


def _weight(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise GrammarError(f"{where}: weight must be a positive number, got {value!r}")
    return float(value)


def lint_pattern(pattern: str, where: str) -> list[str]:
    """Warnings about legal but probably unintended constructs in one pattern."""
    if _REGEX_OPTIONAL.search(pattern):
        return [
            f"{where}: '(...)?' in {pattern!r} is not an optional part here: the '?' is "
            "literal text; write '[...]' for an optional part, or '\\?' for a literal '?'"
        ]
    return []


def _alternatives(value: Any, where: str, warnings: list[str] | None = None) -> Alt:
    """A slot value (list, weighted mapping or single string) as an Alt."""
    if isinstance(value, str):
        items: list[tuple[Any, Any]] = [(value, 1)]
    elif isinstance(value, list):
        items = [(v, 1) for v in value]
    elif isinstance(value, dict):
        items = list(value.items())
    else:
        raise GrammarError(
            f"{where}: expected a list of patterns, a mapping pattern: weight, or a string; "
            f"got {type(value).__name__}"
        )
    if not items:
        raise GrammarError(f"{where}: has no alternatives; add at least one (\"\" for empty)")
    options, weights = [], []
    seen: dict[Any, int] = {}
    for i, (pattern, w) in enumerate(items):
        sub = f"{where}[{i}]" if isinstance(value, list) else f"{where}[{pattern!r}]"
        options.append(parse_pattern(pattern, sub))
        weights.append(_weight(w, sub))
        if warnings is not None:
            warnings.extend(lint_pattern(pattern, sub))
            if pattern in seen:
                warnings.append(
                    f"{sub}: {pattern!r} repeats item [{seen[pattern]}], which doubles its "
                    "weight; use the mapping form for weights"
                )
            seen.setdefault(pattern, i)
    return Alt(tuple(options), tuple(weights))


def _check_slots(slots: dict[str, Alt], source: str, where_refs: list[tuple[str, Node]]) -> None:
    """Unknown slot references and reference cycles are errors."""
    for where, tree in where_refs:
        for ref in slot_refs(tree):
            if ref.name not in slots:
                close = difflib.get_close_matches(ref.name, list(slots), n=3)
                hint = f" (did you mean {', '.join(close)}?)" if close else ""
                raise GrammarError(
                    f"{where}: unknown slot {{{ref.name}}} at column {ref.column + 1}{hint}; "
                    f"define it under `slots:` in {source} or fix the name"
                )
    state: dict[str, int] = {}  # 1 = visiting, 2 = done

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = " -> ".join([*path[path.index(name):], name])
            raise GrammarError(
                f"{source}: slots: recursive slot reference {cycle}; slots must not refer "
                "to themselves, even indirectly (the grammar would be infinite)"
            )
        state[name] = 1
        for ref in slot_refs(slots[name]):
            visit(ref.name, [*path, name])
        state[name] = 2

    for name in slots:
        visit(name, [])


def _check_depth(slots: dict[str, Alt], source: str, where_refs: list[tuple[str, Node]]) -> None:
    """Refuse trees deeper than :data:`MAX_DEPTH` (slot references count as levels)."""
    depth_of_slot: dict[str, int] = {}

    def depth(node: Node) -> int:
        if isinstance(node, SlotRef):
            if node.name not in depth_of_slot:
                depth_of_slot[node.name] = depth(slots[node.name])
            return 1 + depth_of_slot[node.name]
        if isinstance(node, Seq):
            return 1 + max(map(depth, node.items), default=0)
        if isinstance(node, Alt):
            return 1 + max(map(depth, node.options), default=0)
        if isinstance(node, Opt):
            return 1 + depth(node.child)
        return 1

    for where, tree in where_refs:
        if depth(tree) > MAX_DEPTH:
            raise GrammarError(f"{where}: {_TOO_DEEP}")


def grammar_from_dict(data: Any, source: str = "<grammar>", task: Task | None = None) -> Grammar:
    """Build a :class:`Grammar` from parsed YAML; validate against ``task`` when given.

    Raises
    ------
    GrammarError
        Naming ``source`` and the template or slot, also for a grammar nested so deeply
        that walking it would exhaust Python's recursion limit.
    """
    try:
        return _grammar_from_dict(data, source, task)
    except RecursionError:
        raise GrammarError(f"{source}: {_TOO_DEEP}") from None


def _grammar_from_dict(data: Any, source: str, task: Task | None) -> Grammar:
    if not isinstance(data, dict):
        raise GrammarError(f"{source}: expected a mapping with `slots` and `templates`")
    unknown = sorted(set(data) - {"slots", "templates", "category_weights"})
    if unknown:
        raise GrammarError(
            f"{source}: unknown top-level key(s) {', '.join(map(str, unknown))}; "
            "allowed: slots, templates, category_weights"
        )
    raw_slots = data.get("slots") or {}
    if not isinstance(raw_slots, dict):
        raise GrammarError(f"{source}: slots: expected a mapping name -> alternatives")
    slots: dict[str, Alt] = {}
    warnings: list[str] = []
    for name, value in raw_slots.items():
        if not isinstance(name, str) or not _SLOT_NAME.match(name):
            raise GrammarError(
                f"{source}: slots: bad slot name {name!r}; use letters, digits and '_'"
            )
        slots[name] = _alternatives(value, f"{source}: slots.{name}", warnings)

    raw_templates = data.get("templates")
    if not isinstance(raw_templates, list) or not raw_templates:
        raise GrammarError(f"{source}: templates: expected a non-empty list of templates")
    label_cats = (
        {lab.name: lab.categories for lab in task.labels} if task is not None else {}
    )
    templates: list[Template] = []
    counters: dict[tuple[str, str], int] = {}
    refs: list[tuple[str, Node]] = [(f"{source}: slots.{n}", a) for n, a in slots.items()]
    for i, raw in enumerate(raw_templates):
        where = f"{source}: templates[{i}]"
        if not isinstance(raw, dict):
            raise GrammarError(f"{where}: expected a mapping with label, category, patterns")
        extra = sorted(set(raw) - {"label", "category", "weight", "patterns"})
        if extra:
            raise GrammarError(
                f"{where}: unknown key(s) {', '.join(map(str, extra))}; "
                "allowed: label, category, weight, patterns"
            )
        label = raw.get("label")
        if not isinstance(label, str) or not label:
            raise GrammarError(f"{where}: `label` is required (a label name of the task)")
        category = raw.get("category")
        if category is None and task is not None and not label_cats.get(label, ["x"]):
            category = label  # a label without declared categories has one implicit category
        if not isinstance(category, str) or not category:
            raise GrammarError(f"{where}: `category` is required (a category of label {label})")
        weight = _weight(raw.get("weight", 1), f"{where}.weight")
        patterns = raw.get("patterns")
        if isinstance(patterns, str):
            patterns = [patterns]
        if not isinstance(patterns, list) or not patterns:
            raise GrammarError(f"{where}: `patterns` must be a non-empty list of strings")
        trees = [
            parse_pattern(p, f"{where} ({label}/{category}) patterns[{j}]")
            for j, p in enumerate(patterns)
        ]
        for j, tree in enumerate(trees):
            refs.append((f"{where} ({label}/{category}) patterns[{j}]", tree))
            warnings.extend(lint_pattern(patterns[j], f"{where} patterns[{j}]"))
        index = counters.get((label, category), 0)
        counters[(label, category)] = index + 1
        tree = trees[0] if len(trees) == 1 else Alt(tuple(trees), tuple(1.0 for _ in trees))
        templates.append(
            Template(label, category, index, i, weight, tuple(patterns), tree)
        )
    _check_slots(slots, source, refs)
    _check_depth(slots, source, refs)

    raw_cw = data.get("category_weights") or {}
    if not isinstance(raw_cw, dict):
        raise GrammarError(f"{source}: category_weights: expected a mapping category -> weight")
    category_weights = {
        str(k): _weight(v, f"{source}: category_weights.{k}") for k, v in raw_cw.items()
    }
    grammar = Grammar(source, slots, templates, category_weights, warnings)
    if task is not None:
        grammar.validate_against(task)
    return grammar


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that rejects duplicate mapping keys (PyYAML keeps the last silently)."""


def _construct_unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        line = key_node.start_mark.line + 1
        if not isinstance(key, str):
            # e.g. `yes: 3` is the boolean True to YAML, and `12306: 1` an int
            raise GrammarError(
                f"line {line}: key {key_node.value!r} is read by YAML as "
                f"{type(key).__name__} {key!r}; quote it: \"{key_node.value}\""
            )
        if key in seen:
            raise GrammarError(
                f"line {line}: duplicate key {key!r} (first defined on line {seen[key]}); "
                "rename one of them"
            )
        seen[key] = line
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping
)


def load_grammar(path: str | Path, task: Task | None = None) -> Grammar:
    """Read, parse and (with ``task``) validate a grammar file.

    Raises
    ------
    GrammarError
        Naming the file, the template or slot, the pattern and what to do.
    """
    path = Path(path)
    if not path.is_file():
        raise GrammarError(f"{path}: grammar file not found")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506
    except yaml.YAMLError as exc:
        raise GrammarError(f"{path}: not valid YAML: {exc}") from None
    except GrammarError as exc:
        raise GrammarError(f"{path}: {exc}") from None
    except RecursionError:
        raise GrammarError(f"{path}: {_TOO_DEEP}") from None
    return grammar_from_dict(data, str(path), task)


def allocate(total: int, weights: list[float] | list[Fraction]) -> list[int]:
    """Split ``total`` into integers proportional to ``weights`` (largest remainder).

    Exact and deterministic: weights are converted to fractions, ties go to the earlier
    index. Zero weights get zero unless every weight is zero (then equal split).
    """
    if total < 0:
        raise ValueError(f"total must be >= 0, got {total}")
    if not weights:
        return []
    fr = [Fraction(w) for w in weights]
    if any(w < 0 for w in fr):
        raise ValueError(f"weights must be >= 0, got {weights}")
    if sum(fr) == 0:
        fr = [Fraction(1)] * len(fr)
    whole = sum(fr)
    shares = [total * w / whole for w in fr]
    out = [math.floor(s) for s in shares]
    rest = total - sum(out)
    order = sorted(range(len(fr)), key=lambda i: (-(shares[i] - out[i]), i))
    for i in order[:rest]:
        out[i] += 1
    return out
