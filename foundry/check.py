"""``foundry blueprint check``: everything a forge will read, checked before any stage runs.

:func:`check_blueprint` reads a blueprint the way the five stages will and returns a
:class:`CheckReport` listing *every* problem at once, each with its file, line and field:

- ``blueprint.yaml`` parses and validates (:mod:`foundry.blueprint`: value ranges, trainer
  names, grid keys and values);
- each file a task names exists and parses: the constitution, the grammar (labels and
  categories of every template), the seeds, the exam and the lab's corrections, and every
  label in them belongs to the task;
- the provider can produce data: a configured key for an LLM provider, a grammar or seeds for
  the offline one, and enough distinct offline sentences to pass the data-sufficiency gate;
- task names are unique across ``blueprints/`` (they name the model files).

It runs no stage and trains nothing (a second or two). ``foundry forge`` runs the same check
before stage 1 and stops if it finds an error. The row rules of seeds, exams and corrections
live here (:func:`seed_row_problems`, :func:`exam_row_problems`,
:func:`correction_row_problems`) so that the loaders and the check cannot disagree.
"""

from __future__ import annotations

import difflib
import json
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from foundry.blueprint import (
    BLUEPRINT_FILE,
    Blueprint,
    BlueprintError,
    BlueprintSpec,
    Task,
    resolve_blueprint_dir,
    task_target,
)
from foundry.errors import FoundryError
from foundry.paths import ROOT
from foundry.textspec import normalize

#: Keys of a seed row (``category`` and ``note`` are optional).
SEED_KEYS = ("text", "label", "category")
#: Keys an exam row may have; ``text`` and ``label`` are required.
EXAM_KEYS = ("text", "label", "category", "hard", "note")

Loc = tuple[str | int, ...]


class BlueprintCheckError(FoundryError, ValueError):
    """``foundry blueprint check`` found errors; the message lists them all."""


@dataclass(frozen=True)
class Problem:
    """One finding: where it is (file, line, field) and what to do about it."""

    file: Path
    line: int | None
    field: str
    message: str
    severity: str = "error"  # error | warning

    def __str__(self) -> str:
        where = _show(self.file) + (f":{self.line}" if self.line else "")
        prefix = "warning: " if self.severity == "warning" else ""
        return f"{where}: {prefix}{self.field}: {self.message}"


@dataclass
class CheckReport:
    """What :func:`check_blueprint` found; ``facts`` say what was read (for the ok message)."""

    root: Path
    name: str
    problems: list[Problem] = field(default_factory=list)
    facts: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def format(self) -> str:
        """Errors, then warnings, then a verdict line."""
        lines = [str(p) for p in self.errors + self.warnings]
        if self.ok:
            lines += [f"  {fact}" for fact in self.facts]
            verdict = f"ok: {self.name} at {_show(self.root)}"
            if self.warnings:
                verdict += f" ({len(self.warnings)} warning(s))"
            return "\n".join([verdict, *lines])
        noun = "error" if len(self.errors) == 1 else "errors"
        return "\n".join([*lines, f"{len(self.errors)} {noun} in blueprint {self.name!r}"])

    def raise_for_errors(self) -> None:
        if not self.ok:
            raise BlueprintCheckError(self.format())


def _show(path: Path) -> str:
    """A path relative to the project root when inside it (shorter, and clickable there)."""
    try:
        return str(Path(path).resolve().relative_to(ROOT.resolve()))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------- YAML lines


def yaml_locator(text: str) -> Callable[[Sequence[str | int]], int | None]:
    """``line_of(loc)``: the 1-based line of the YAML node at ``loc`` (keys and indices).

    A loc that leaves the document (a missing field) gets the line of the deepest node found.
    """
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        root = None

    def line_of(loc: Sequence[str | int]) -> int | None:
        node = root
        line = node.start_mark.line + 1 if node is not None else None
        for part in loc:
            if isinstance(node, yaml.MappingNode):
                match = next(((k, v) for k, v in node.value if k.value == str(part)), None)
                if match is None:
                    return line
                line, node = match[0].start_mark.line + 1, match[1]
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) \
                    and 0 <= part < len(node.value):
                node = node.value[part]
                line = node.start_mark.line + 1
            else:
                return line
        return line

    return line_of


def _field(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


# --------------------------------------------------------------------------- row rules


def _did_you_mean(value: Any, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(str(value), list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _label_problems(row: Mapping[str, Any], task: Task, *, category_required: bool
                    ) -> list[tuple[str, str]]:
    labels = task.label_names
    label = row.get("label")
    if label not in labels:
        return [("label", f"{label!r} is not a label of task {task.name!r} "
                          f"(labels: {', '.join(labels)}){_did_you_mean(label, labels)}")]
    declared = next(lab.categories for lab in task.labels if lab.name == label) or [label]
    category = row.get("category")
    if category is None and not category_required:
        return []
    if category not in declared:
        return [("category", f"{category!r} is not a category of label {label!r} "
                             f"(categories: {', '.join(declared)}){_did_you_mean(category, declared)}")]
    return []


def _text_problems(row: Mapping[str, Any]) -> list[tuple[str, str]]:
    if "text" not in row:
        return [("text", "missing")]
    if not isinstance(row["text"], str) or not normalize(row["text"]):
        return [("text", f"must be a non-empty string, got {row['text']!r}")]
    return []


def seed_row_problems(row: Mapping[str, Any], task: Task) -> list[tuple[str, str]]:
    """``(field, message)`` for everything wrong with one seed row (empty if it is fine).

    A seed is ``{"text", "label"}`` with an optional ``category`` (of that label) and ``note``;
    a row without a category counts towards its label only.
    """
    missing = [k for k in ("text", "label") if k not in row]
    if missing:
        return [(missing[0], f"missing key(s) {', '.join(missing)}; a seed row is "
                             '{"text", "label", "category"} (category and "note" optional)')]
    extra = sorted(set(row) - {*SEED_KEYS, "note"})
    problems = [(extra[0], f"unknown key(s) {', '.join(extra)}; allowed: text, label, "
                           "category, note")] if extra else []
    return problems + _text_problems(row) + _label_problems(row, task, category_required=False)


#: Keys of a real-text row (``tasks[].real`` and ``tasks[].dev``): required, then optional.
REAL_KEYS = ("text", "label", "category", "corpus", "ref")
REAL_OPTIONAL = ("context", "note")


def real_row_problems(row: Mapping[str, Any], task: Task) -> list[tuple[str, str]]:
    """``(field, message)`` for everything wrong with one row of a real-text file
    (``{"text", "label", "category", "corpus", "ref"}`` + optional ``context``, ``note``)."""
    missing = [k for k in REAL_KEYS if k not in row]
    if missing:
        return [(missing[0], f"missing key(s) {', '.join(missing)}; a real-text row is "
                             '{"text", "label", "category", "corpus", "ref"} ("context" and '
                             '"note" optional), see docs/refine.md')]
    extra = sorted(set(row) - {*REAL_KEYS, *REAL_OPTIONAL})
    problems = [(extra[0], f"unknown key(s) {', '.join(extra)}; allowed: "
                           f"{', '.join(REAL_KEYS + REAL_OPTIONAL)}")] if extra else []
    problems += _text_problems(row) + _label_problems(row, task, category_required=True)
    problems += [(key, f"must be a string, got {row[key]!r}")
                 for key in ("corpus", "ref", *REAL_OPTIONAL)
                 if key in row and not isinstance(row[key], str)]
    return problems


def exam_row_problems(row: Mapping[str, Any], task: Task) -> list[tuple[str, str]]:
    """``(field, message)`` for everything wrong with one exam row (empty if it is fine)."""
    problems = _text_problems(row)
    if "label" not in row:
        problems.append(("label", "missing"))
    else:
        problems += _label_problems(row, task, category_required=False)
    if "hard" in row and not isinstance(row["hard"], bool):
        problems.append(("hard", f"must be true or false, got {row['hard']!r}"))
    if "note" in row and not isinstance(row["note"], str):
        problems.append(("note", f"must be a string, got {row['note']!r}"))
    return problems


def correction_row_problems(row: Mapping[str, Any], task: Task) -> list[tuple[str, str]]:
    """``(field, message)`` for a line of ``corrections/<task>.jsonl`` (written by the lab)."""
    problems = _text_problems(row)
    labels = task.label_names
    if row.get("label") not in labels:
        problems.append(("label", f"{row.get('label')!r} is not a label of task {task.name!r} "
                                  f"(labels: {', '.join(labels)}){_did_you_mean(row.get('label'), labels)}"))
    return problems


def jsonl_lines(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """``(line number, object)`` per non-blank line, or ``(line number, what is wrong)``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        yield 0, f"not UTF-8 text ({exc.reason} at byte {exc.start})"
        return
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            yield lineno, f"not valid JSON ({exc.msg}); one JSON object per line"
            continue
        yield lineno, obj if isinstance(obj, dict) else "expected a JSON object per line"


#: Up to this many labels without an exam case are warned about one by one.
MAX_LISTED_LABELS = 10


# --------------------------------------------------------------------------- the check


class _Checker:
    def __init__(self, root: Path, provider: str | None, env: Mapping[str, str] | None,
                 target: int | None) -> None:
        self.root = root
        self.file = root / BLUEPRINT_FILE
        self.provider = provider
        self.env = env
        self.target = target
        self.report = CheckReport(root, root.name)
        self.line_of: Callable[[Sequence[str | int]], int | None] = lambda loc: None

    def add(self, file: Path, line: int | None, where: str, message: str,
            severity: str = "error") -> None:
        self.report.problems.append(Problem(file, line, where, message, severity))

    def at(self, loc: Loc, message: str, severity: str = "error") -> None:
        """A problem in blueprint.yaml at ``loc``."""
        self.add(self.file, self.line_of(loc), _field(loc), message, severity)

    # -- blueprint.yaml --------------------------------------------------------------

    def spec(self) -> tuple[BlueprintSpec | None, dict[str, Any] | None]:
        if not self.file.is_file():
            self.add(self.file, None, "(file)", f"missing; a blueprint folder needs a {BLUEPRINT_FILE}")
            return None, None
        try:
            text = self.file.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            self.add(self.file, None, "(file)", f"not UTF-8 text ({exc.reason} at byte {exc.start})")
            return None, None
        self.line_of = yaml_locator(text)
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            self.add(self.file, mark.line + 1 if mark else None, "(yaml)",
                     f"not valid YAML: {getattr(exc, 'problem', exc)}")
            return None, None
        if not isinstance(raw, dict):
            self.at((), f"expected a mapping, got {type(raw).__name__}")
            return None, None
        self.report.name = str(raw.get("name") or self.root.name)
        try:
            return BlueprintSpec.model_validate(raw), raw
        except ValidationError as exc:
            for err in exc.errors():
                self._schema_error(tuple(err["loc"]), err["msg"].removeprefix("Value error, "))
            return None, raw

    def _schema_error(self, loc: Loc, message: str) -> None:
        if loc and loc[-1] == "grid":  # one "<key>: <reason>" line per grid problem
            for line in message.splitlines():
                key, _, reason = line.partition(": ")
                self.at((*loc, key), reason)
            return
        self.at(loc, message)

    def tasks_of(self, spec: BlueprintSpec | None, raw: dict[str, Any] | None
                 ) -> list[tuple[int, Task]]:
        """The tasks to check files of: every task, or those that validate on their own."""
        if spec is not None:
            return list(enumerate(spec.tasks))
        tasks = []
        for i, raw_task in enumerate((raw or {}).get("tasks") or []):
            try:
                tasks.append((i, Task.model_validate(raw_task)))
            except (ValidationError, TypeError):
                continue  # its schema errors are reported already
        return tasks

    # -- the files of a task ---------------------------------------------------------

    def task_files(self, i: int, task: Task) -> dict[str, Path]:
        found = {}
        for name in ("constitution", "grammar", "seeds", "exam", "real", "dev"):
            rel = getattr(task, name)
            if rel is None:
                continue
            path = self.root / rel
            if not path.is_file():
                self.at(("tasks", i, name), f"file not found: {_show(path)}")
            else:
                found[name] = path
        corrections = self.root / "corrections" / f"{task.name}.jsonl"
        if corrections.is_file():
            found["corrections"] = corrections
        return found

    def rows(self, path: Path, task: Task,
             rules: Callable[[Mapping[str, Any], Task], list[tuple[str, str]]],
             duplicates: str | None = None) -> list[tuple[int, dict[str, Any]]]:
        """Check every line of a JSONL file; return the good rows with their line numbers.

        ``duplicates``: the severity of a text repeated after normalisation (None: allowed,
        as in the lab's corrections log, where a later line overrides an earlier one).
        """
        good = []
        first_line: dict[str, int] = {}
        for lineno, obj in jsonl_lines(path):
            if isinstance(obj, str):
                self.add(path, lineno or None, "(line)", obj)
                continue
            problems = rules(obj, task)
            for where, message in problems:
                self.add(path, lineno, where, message)
            if problems:
                continue
            key = normalize(obj["text"])
            if duplicates and key in first_line:
                self.add(path, lineno, "text", f"duplicate of line {first_line[key]} after "
                         f"normalisation ({key!r}); remove one of them", duplicates)
                continue
            first_line.setdefault(key, lineno)
            good.append((lineno, obj))
        return good

    def constitution(self, path: Path) -> None:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            self.add(path, None, "(file)", f"not UTF-8 text ({exc.reason})")
            return
        if not text.strip():
            self.add(path, None, "(file)", "empty; the LLM providers send it as the prompt")

    def grammar(self, path: Path, task: Task):
        from foundry.generate.grammar import GrammarError, load_grammar

        try:
            grammar = load_grammar(path, task)
        except UnicodeDecodeError as exc:
            self.add(path, None, "(file)", f"not UTF-8 text ({exc.reason} at byte {exc.start})")
            return None
        except GrammarError as exc:
            text = path.read_text(encoding="utf-8", errors="replace")
            line_of = yaml_locator(text)
            # One message may hold several problems, each starting with the file's path.
            for part in re.split(rf"\n(?={re.escape(str(path))})", str(exc)):
                part = part.removeprefix(f"{path}: ").removeprefix(f"{path}:")
                self.add(path, _grammar_line(part, line_of), "grammar", part.strip())
            return None
        if grammar.warnings:
            line_of = yaml_locator(path.read_text(encoding="utf-8"))
            for warning in grammar.warnings:
                self.add(path, _grammar_line(warning, line_of), "grammar",
                         warning.removeprefix(f"{path}: "), "warning")
        return grammar

    def check_task(self, i: int, task: Task, spec: BlueprintSpec | None) -> None:
        files = self.task_files(i, task)
        if "constitution" in files:
            self.constitution(files["constitution"])
        exam = (self.rows(files["exam"], task, exam_row_problems, duplicates="warning")
                if "exam" in files else None)
        seeds = (self.rows(files["seeds"], task, seed_row_problems, duplicates="error")
                 if "seeds" in files else [])
        if "corrections" in files:
            self.rows(files["corrections"], task, correction_row_problems)
        real = {name: self.rows(files[name], task, real_row_problems, duplicates="error")
                for name in ("real", "dev") if name in files}
        if len(real) == 2:
            self.real_overlap(files["real"], real["real"], real["dev"])
        dataset_facts = self.dataset(i, task, [row for _, row in exam or []])
        grammar = self.grammar(files["grammar"], task) if "grammar" in files else None
        if exam is not None:
            self.exam_coverage(files["exam"], task, [row for _, row in exam])
        facts = [f"exam {len(exam or [])} cases", *dataset_facts]
        if task.seeds:
            facts.append(f"seeds {len(seeds)}")
        facts += [f"{name} {len(rows)} real utterances" for name, rows in real.items()]
        if grammar is not None:
            facts.append(f"grammar {len(grammar.templates)} templates")
        self.report.facts.append(f"{task.name}: labels {', '.join(task.label_names)}; "
                                 + ", ".join(facts))
        if spec is not None:
            self.data_source(i, task, spec, grammar, [row for _, row in seeds])

    def real_overlap(self, path: Path, pool: list[tuple[int, dict[str, Any]]],
                     dev: list[tuple[int, dict[str, Any]]]) -> None:
        """A training-pool text that is also a dev text is dropped by the refinery
        (``dev_overlap``): worth knowing, as the dev split is meant to be apart."""
        dev_texts = {normalize(row["text"]) for _, row in dev}
        for lineno, row in pool:
            if normalize(row["text"]) in dev_texts:
                self.add(path, lineno, "text", "the same text is in the dev split; the refinery "
                         "drops it from training (dev_overlap)", "warning")

    def exam_coverage(self, path: Path, task: Task, rows: list[dict[str, Any]]) -> None:
        if not rows:
            self.add(path, None, "(file)", "the exam has no case; the exam gate needs cases "
                     "of every label (one JSON object per line: text, label, category)")
            return
        have = Counter((r["label"], r.get("category")) for r in rows)
        absent = [label.name for label in task.labels
                  if not any(lab == label.name for lab, _ in have)]
        if len(absent) > MAX_LISTED_LABELS:  # a many-label task: one warning, not 100
            self.add(path, None, "label", f"no exam case of {len(absent)} of {len(task.labels)} "
                     f"labels ({', '.join(absent[:5])}, ...); the exam cannot tell whether the "
                     "model learnt them", "warning")
        for label in task.labels:
            if label.name in absent:
                if len(absent) <= MAX_LISTED_LABELS:
                    self.add(path, None, "label", f"no exam case of label {label.name!r}; the "
                             "exam cannot tell whether the model learnt it", "warning")
                continue
            missing = [c for c in label.categories if not have[(label.name, c)]]
            if missing:
                self.add(path, None, "category", f"no exam case of {label.name}/"
                         f"{', '.join(missing)}; the exam should cover every sub-category",
                         "warning")

    def dataset(self, i: int, task: Task, exam: list[dict[str, Any]]) -> list[str]:
        """Check every dataset file of the task (rows, columns, labels); facts per role."""
        from foundry.datasets import read_dataset_file

        if task.dataset is None:
            return []
        by_role: dict[str, list] = {"train": [], "dev": [], "test": []}
        for j, dfile in enumerate(task.dataset.files):
            path = self.root / dfile.path
            if not path.is_file():
                self.at(("tasks", i, "dataset", "files", j, "path"), f"file not found: {_show(path)}")
                continue
            result = read_dataset_file(self.root, task, dfile)
            for p in result.problems:
                self.add(p.path, p.line or None, p.field, p.message)
            if result.more_problems:
                self.add(path, None, "(file)", f"... and {result.more_problems} more problems")
            by_role[dfile.role] += result.rows
        if task.dataset.files_of("train") and not by_role["train"]:
            self.at(("tasks", i, "dataset"), "no usable row in the files of role train")
        held_out = {normalize(r.text) for r in by_role["test"]}
        held_out |= {normalize(str(r.get("text", ""))) for r in exam}
        leaking = sum(normalize(r.text) in held_out for r in by_role["train"] + by_role["dev"])
        if leaking:
            self.add(self.file, self.line_of(("tasks", i, "dataset")), _field(("tasks", i, "dataset")),
                     f"{leaking} train/dev rows equal a test or exam text after normalisation; "
                     "the refinery removes them from training (exam_overlap)", "warning")
        labels = {r.label for r in by_role["train"]}
        missing = [n for n in task.label_names if by_role["train"] and n not in labels
                   and n != task.out_of_scope]
        if missing:
            self.at(("tasks", i, "dataset"), f"no train row of label(s) {', '.join(missing)}; "
                    "the model could never answer them", "warning")
        return [f"dataset {role} {len(rows)} rows" for role, rows in by_role.items() if rows]

    # -- can the provider produce data? ----------------------------------------------

    def data_source(self, i: int, task: Task, spec: BlueprintSpec, grammar,
                    seeds: list[dict[str, Any]]) -> None:
        from foundry.generate.registry import provider_configured, provider_entry

        provider = self.provider or spec.generation.provider
        if provider == "dataset":
            if task.dataset is None or not task.dataset.files_of("train"):
                self.at(("tasks", i), "the dataset provider reads tasks[].dataset files of role "
                        "train; this task has none")
            return
        if provider != "offline":
            if provider_configured(provider, self.env):
                return
            variables = " or ".join(provider_entry(provider).key_variables)
            if self.provider:  # asked for explicitly: the forge will refuse
                self.at(("generation", "provider"), f"--provider {provider} needs {variables} "
                        "in the environment or .env")
                return
            if i == 0:
                self.at(("generation", "provider"), f"{provider}: {variables} is not set, so "
                        "the forge will use the offline provider", "warning")
        if not task.grammar and not task.seeds:
            self.at(("tasks", i), "neither `grammar` nor `seeds`: the offline provider has "
                    "nothing to generate from; add one (see `foundry blueprint new`) or "
                    "configure an LLM provider")
            return
        self.offline_capacity(i, task, spec, grammar, seeds)

    def offline_capacity(self, i: int, task: Task, spec: BlueprintSpec, grammar,
                         seeds: list[dict[str, Any]]) -> None:
        """Can the grammar and seeds reach the sufficiency gate of every label?

        The grammar's count of derivations is an upper bound on its distinct sentences
        (cheap: no sentence is expanded), so a label below the gate even by that bound will
        certainly stop the forge after stage 1.
        """
        from foundry.generate.sufficiency import label_targets

        gen = spec.generation
        if grammar is None and task.grammar:
            return  # the grammar's own errors are reported
        bound: Counter[str] = Counter()
        for template in grammar.templates if grammar is not None else []:
            bound[template.label] += grammar.upper_bound(template.tree)
        seeds_per_label = Counter(r["label"] for r in seeds)
        for label, target in label_targets(task, task_target(task, gen, self.target)).items():
            most = bound[label] + seeds_per_label[label]
            needed = gen.min_label_share * target
            if most < needed:
                self.at(("tasks", i, "grammar" if task.grammar else "seeds"),
                        f"label {label!r} can get at most {most} distinct rows offline "
                        f"({seeds_per_label[label]} seeds + at most {bound[label]} grammar "
                        f"sentences), below {needed:g} = generation.min_label_share "
                        f"{gen.min_label_share} x its target {target}: the forge would stop "
                        "after stage 1; add templates or seeds, or lower the task's "
                        "target_per_task (or generation.target_per_task)")

    # -- across blueprints -----------------------------------------------------------

    def unique_task_names(self, tasks: list[tuple[int, Task]]) -> None:
        """Against the other blueprints of the same folder (``blueprints/`` for a named one):
        their models share ``models/``."""
        others = {f.resolve() for f in self.root.parent.glob(f"*/{BLUEPRINT_FILE}")}
        for other in sorted(others - {self.file.resolve()}):
            try:
                names = {t["name"] for t in yaml.safe_load(other.read_text("utf-8"))["tasks"]}
            except Exception:  # noqa: BLE001 - a broken neighbour is reported by its own check
                continue
            for i, task in tasks:
                if task.name in names:
                    self.at(("tasks", i, "name"), f"task {task.name!r} is also defined in "
                            f"{_show(other)}; task names name the model files and must be "
                            "unique across blueprints")


def _grammar_line(message: str, line_of: Callable[[Sequence[str | int]], int | None]
                  ) -> int | None:
    """The line a grammar message is about: ``templates[i]``, ``slots.x`` or ``line N``."""
    if m := re.search(r"templates\[(\d+)\]", message):
        return line_of(("templates", int(m.group(1))))
    if m := re.search(r"slots\.([A-Za-z_][A-Za-z0-9_]*)", message):
        return line_of(("slots", m.group(1)))
    if m := re.search(r"category_weights\.?(\S*)", message):
        return line_of(("category_weights", m.group(1).rstrip(":")))
    if m := re.search(r"\bline (\d+)\b", message):
        return int(m.group(1))
    return None


def check_blueprint(name_or_path: str | Path | Blueprint, *, provider: str | None = None,
                    target: int | None = None, env: Mapping[str, str] | None = None
                    ) -> CheckReport:
    """Check everything a forge of this blueprint will read; never runs a stage.

    Parameters
    ----------
    name_or_path : a name under ``blueprints/``, a path, or a loaded :class:`Blueprint`.
    provider : the provider the forge will be given (``--provider``); default the blueprint's.
    target : rows per task the forge will be given (``--target``); default the blueprint's.
    env : environment variables to look for keys in (default ``os.environ`` + ``.env``).

    Returns
    -------
    CheckReport
        Every error and warning at once; ``report.raise_for_errors()`` raises
        :class:`BlueprintCheckError` with all of them.
    """
    if isinstance(name_or_path, Blueprint):
        root = name_or_path.root
    else:
        try:
            root = resolve_blueprint_dir(name_or_path)
        except BlueprintError as exc:
            report = CheckReport(Path(str(name_or_path)), str(name_or_path))
            report.problems.append(Problem(Path(str(name_or_path)), None, "(blueprint)", str(exc)))
            return report
    checker = _Checker(root, provider, env, target)
    spec, raw = checker.spec()
    tasks = checker.tasks_of(spec, raw)
    for i, task in tasks:
        checker.check_task(i, task, spec)
    checker.unique_task_names(tasks)
    return checker.report
