"""The refine stage's data-quality report: shortcut audit, diversity, exam probe, plots.

Everything here reads refined rows and writes nothing but ``report.md`` and PNG plots
(:func:`write_report`). The markdown starts with the funnel table, then the shortcut audit,
the split, the largest near-duplicate clusters, per-label diversity and top n-grams, and
samples of every removal reason.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from foundry.runs import atomic_write_bytes, atomic_write_text
from foundry.summaries import RefineSummary
from foundry.textspec import Analyzer, TextSpec, normalize

#: A surface feature is a shortcut when at least this share of its rows has one label ...
SHORTCUT_PURITY = 0.95
#: ... and it covers at least this share of that label's rows ...
SHORTCUT_COVERAGE = 0.10
#: ... and it occurs in at least this many rows (or 1% of them, whichever is larger).
SHORTCUT_MIN_SUPPORT = 5
#: Sentence-final modal particles checked by the audit (not 么: it ends 什么/怎么).
PARTICLES = "吗呢吧啊嘛呀"
#: Characters whose mere presence anywhere is audited.
MARKERS = "吗"
#: Length bands (normalised characters) checked by the audit: [lo, hi] inclusive.
LENGTH_BANDS = ((1, 3), (4, 6), (7, 10), (11, 15), (16, 25), (26, 10**9))
_ENGLISH_WORD = re.compile(r"[a-z]{2,}")
_SPEC = TextSpec(max_chars=1_000_000)
SAMPLES_PER_REASON = 5
PLOT_FILES = ("labels.png", "lengths.png", "diversity.png")


# ----------------------------------------------------------------------------------------
# Shortcut audit


def _is_punct(ch: str) -> bool:
    return unicodedata.category(ch).startswith("P")


def surface_features(text: str, norm: str | None = None) -> set[str]:
    """The surface features of one text that the shortcut audit measures.

    Computed on the normalised text (so ``？`` and ``?`` are the same feature): the trailing
    punctuation mark or its absence, a question mark anywhere, the sentence-final particle
    (the last non-punctuation character, if it is one of :data:`PARTICLES`), each marker
    (:data:`MARKERS`) anywhere, the length band, each English word, and any digit.
    ``norm`` may pass the already normalised text.
    """
    if norm is None:
        norm = normalize(text, _SPEC)
    feats: set[str] = set()
    if not norm:
        return feats
    if _is_punct(norm[-1]):
        feats.add(f'ends with "{norm[-1]}"')
    else:
        feats.add("no trailing punctuation")
    if "?" in norm:
        feats.add('contains "?"')
    end = len(norm)
    while end and (norm[end - 1] == " " or _is_punct(norm[end - 1])):
        end -= 1
    core = norm[:end]
    if core and core[-1] in PARTICLES:
        feats.add(f'final particle "{core[-1]}"')
    for ch in set(norm) & set(MARKERS):
        feats.add(f'contains "{ch}"')
    n = len(norm)
    for lo, hi in LENGTH_BANDS:
        if lo <= n <= hi:
            feats.add(f"length {lo}-{hi}" if hi < 10**9 else f"length {lo}+")
    for word in set(_ENGLISH_WORD.findall(norm)):
        feats.add(f'English word "{word}"')
    if any(ch.isdigit() for ch in norm):
        feats.add("contains a digit")
    return feats


def shortcut_audit(rows: Sequence[dict], labels: Sequence[str],
                   norms: Sequence[str] | None = None) -> list[dict]:
    """Measure every surface feature's support, coverage and purity in ``rows``.

    For a feature ``f`` with majority label ``L``: ``purity = P(L | f)``, ``coverage =
    P(f | L)`` (the share of ``L``'s rows that carry it). A feature is flagged a
    ``shortcut`` when purity >= :data:`SHORTCUT_PURITY`, coverage >=
    :data:`SHORTCUT_COVERAGE` and support >= max(:data:`SHORTCUT_MIN_SUPPORT`, 1% of rows):
    a model can then score well on this data by looking at that feature alone.

    ``norms`` may pass the rows' normalised texts. Returns the features with enough
    support, most suspicious first.
    """
    label_totals = Counter(r["label"] for r in rows)
    counts: dict[str, Counter] = defaultdict(Counter)
    for i, r in enumerate(rows):
        for f in surface_features(r["text"], None if norms is None else norms[i]):
            counts[f][r["label"]] += 1
    min_support = max(SHORTCUT_MIN_SUPPORT, int(0.01 * len(rows)))
    out = []
    for feat, by_label in counts.items():
        support = sum(by_label.values())
        if support < min_support:
            continue
        label, hits = min(by_label.items(), key=lambda kv: (-kv[1], labels.index(kv[0])
                                                            if kv[0] in labels else 0))
        purity = hits / support
        coverage = hits / label_totals[label]
        out.append({
            "feature": feat,
            "label": label,
            "support": support,
            "coverage": round(coverage, 4),
            "purity": round(purity, 4),
            "shortcut": bool(purity >= SHORTCUT_PURITY and coverage >= SHORTCUT_COVERAGE),
        })
    out.sort(key=lambda f: (not f["shortcut"], -f["purity"] * f["coverage"], f["feature"]))
    return out


# ----------------------------------------------------------------------------------------
# Quick exam probe


def strip_trailing_punctuation(text: str) -> str:
    """``text`` without its trailing punctuation and spaces (how hurried users type)."""
    end = len(text)
    while end and (_is_punct(text[end - 1]) or text[end - 1].isspace()):
        end -= 1
    return text[:end]


#: From this many labels the exam probe fits a linear SVM instead of a logistic regression,
#: and the refine notebook skips its per-setting study (each setting is one more fit).
MANY_LABELS = 20


def exam_probe(train: Sequence[dict], exam: Sequence[dict], labels: Sequence[str]) -> dict:
    """Exam accuracy of a quick char-n-gram TF-IDF + logistic regression fit on ``train``.

    Not the trained model: a fixed, fast yardstick to compare refine settings with. Also
    scored on the exam with trailing punctuation stripped, which exposes a model that
    leans on ``？``. Rows with a ``weight`` are fitted with it.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    exam = [r for r in exam if r.get("label") in labels]
    if not exam or len({r["label"] for r in train}) < 2:
        return {"accuracy": None, "accuracy_no_trailing_punctuation": None, "exam_rows": 0}
    vec = TfidfVectorizer(analyzer=Analyzer(TextSpec()), sublinear_tf=True)
    x = vec.fit_transform([r["text"] for r in train])
    weights = [r.get("weight", 1.0) for r in train]
    clf = LogisticRegression(C=4.0, max_iter=2000)
    if len(labels) > MANY_LABELS:  # lbfgs over dozens of classes takes minutes; same yardstick role
        from sklearn.svm import LinearSVC

        clf = LinearSVC(C=0.5)
    clf.fit(x, [r["label"] for r in train], sample_weight=np.asarray(weights, dtype=float))
    y = np.asarray([r["label"] for r in exam])
    plain = clf.predict(vec.transform([r["text"] for r in exam]))
    bare = clf.predict(vec.transform([strip_trailing_punctuation(r["text"]) for r in exam]))
    return {
        "accuracy": round(float(np.mean(plain == y)), 4),
        "accuracy_no_trailing_punctuation": round(float(np.mean(bare == y)), 4),
        "exam_rows": len(exam),
    }


# ----------------------------------------------------------------------------------------
# Diversity and n-grams


def distinct_ratios(texts: Sequence[str], orders: Sequence[int] = (1, 2, 3)) -> dict[int, float]:
    """distinct-n: unique character n-grams / all character n-grams, over normalised texts."""
    out = {}
    for n in orders:
        total, uniq = 0, set()
        for t in texts:
            norm = normalize(t, _SPEC)
            grams = [norm[i : i + n] for i in range(len(norm) - n + 1)]
            total += len(grams)
            uniq.update(grams)
        out[n] = round(len(uniq) / total, 4) if total else 0.0
    return out


def top_ngrams(texts: Sequence[str], n: int, k: int = 10) -> list[tuple[str, int]]:
    """The ``k`` most frequent character n-grams (no spaces), ties by the n-gram itself."""
    counts = Counter()
    for t in texts:
        norm = normalize(t, _SPEC)
        counts.update(g for g in (norm[i : i + n] for i in range(len(norm) - n + 1))
                      if " " not in g)
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k]


# ----------------------------------------------------------------------------------------
# Markdown


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def funnel_table(summary: RefineSummary) -> list[str]:
    labels = summary.labels
    lines = ["| step | rows in | rows out | removed | added | " + " | ".join(labels) + " |",
             "|---|---:|---:|---:|---:|" + "---:|" * len(labels)]
    for s in summary.funnel:
        per = " | ".join(str(s["by_label"].get(lab, 0)) for lab in labels)
        lines.append(f"| {s['step']} | {s['rows_in']} | {s['rows_out']} | {s['removed']} "
                     f"| {s.get('added', 0)} | {per} |")
    return lines


def render_markdown(result, *, plots: bool = True) -> str:
    """The report of one :class:`foundry.refine.RefineResult` as markdown; ``plots=False``
    leaves out the section linking the PNG files (the notebook shows the images itself)."""
    sections = (_overview_section, _probe_section, _shortcut_section, _split_section,
                _clusters_section, _diversity_section, _removed_section)
    lines = [line for section in sections for line in section(result)]
    if plots:
        lines += ["## Plots", "", *(f"![{p}]({p})" for p in PLOT_FILES), ""]
    return "\n".join(lines)


def _overview_section(result) -> list[str]:
    s = result.summary
    return [f"# Refine report: `{s.task}`", "",
            f"{s.input_rows} input rows ({s.corrections} corrections, "
            f"{s.real_rows} real utterances of which {s.real_kept} train; "
            f"{s.dev_texts} dev texts held out) -> "
            f"**{s.train_rows} train**, **{s.test_rows} test**. "
            f"Balance: `{s.balance}`; punctuation-drop augmentation: "
            f"{s.config.drop_punctuation_augment:g} ({s.augmented_rows} rows added). "
            f"Train data sha256 `{s.data_sha256[:16]}…`.", "",
            "## Funnel", "", *funnel_table(s), ""]


def _probe_section(result) -> list[str]:
    probe = result.summary.exam_probe
    if not (probe and probe.get("accuracy") is not None):
        return []
    return ["## Exam probe", "",
            "A quick char-n-gram TF-IDF + logistic regression fitted on the train split "
            "(a yardstick, not the trained model):", "",
            f"- exam accuracy: **{_pct(probe['accuracy'])}** ({probe['exam_rows']} rows)",
            f"- exam accuracy with trailing punctuation stripped: "
            f"**{_pct(probe['accuracy_no_trailing_punctuation'])}**", ""]


def _shortcut_section(result) -> list[str]:
    lines = ["## Shortcut audit", "",
             f"Surface features of the train split. A feature is a **shortcut** when purity "
             f">= {SHORTCUT_PURITY:.0%} and coverage >= {SHORTCUT_COVERAGE:.0%}: a model can "
             "lean on it and then fail on users who write differently (e.g. omit `？`). "
             "Counter-measure: `refine.drop_punctuation_augment`.", ""]
    audit = result.summary.surface_features
    if not audit:
        return [*lines, "No surface feature has enough support."]
    lines += ["| feature | label | rows | coverage | purity | shortcut |",
              "|---|---|---:|---:|---:|---|"]
    for f in audit[:20]:
        lines.append(f"| {_md(f['feature'])} | {f['label']} | {f['support']} "
                     f"| {_pct(f['coverage'])} | {_pct(f['purity'])} "
                     f"| {'**yes**' if f['shortcut'] else ''} |")
    return lines


def _split_section(result) -> list[str]:
    s = result.summary
    labels = s.labels
    pair = s.max_train_test_pair
    lines = ["", "## Split", "",
             f"Stratified by label, grouped by similarity clusters at shingle Jaccard >= "
             f"{s.config.split_threshold} ({s.split_groups} groups, largest "
             f"{s.largest_split_group} rows); no group is on both sides.", "",
             "| split | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
    for split in ("train", "test"):
        lines.append(f"| {split} | " + " | ".join(
            str(s.label_counts[split].get(lab, 0)) for lab in labels) + " |")
    if pair.get("similarity") is not None:
        lines += ["", f"Highest remaining train/test similarity: **{pair['similarity']:.3f}** "
                  f"(exact shingle Jaccard, {pair['test_rows_checked']} test rows checked): "
                  f"test `{_md(pair['test'])}` vs train `{_md(pair['train'])}`."]
    return lines


def _clusters_section(result) -> list[str]:
    lines = ["", "## Largest near-duplicate clusters", ""]
    if not result.clusters:
        return [*lines, "No near-duplicate clusters."]
    lines += ["| rows | texts | label | kept (source) | other members |", "|---:|---:|---|---|---|"]
    for c in result.clusters[:10]:
        others = "; ".join(_md(t) for t in c["members"][1:6])
        more = " …" if len(c["members"]) > 6 else ""
        lines.append(f"| {c['size']} | {c['texts']} | {c['label']} | {_md(c['kept'])} "
                     f"({c['kept_source']}) | {others}{more} |")
    return lines


def _diversity_section(result) -> list[str]:
    lines = ["", "## Diversity per label (train)", "",
             "distinct-n = unique character n-grams / all character n-grams.", "",
             "| label | rows | distinct-1 | distinct-2 | distinct-3 | top bigrams |",
             "|---|---:|---:|---:|---:|---|"]
    for lab in result.summary.labels:
        texts = [r["text"] for r in result.train if r["label"] == lab]
        d = distinct_ratios(texts)
        top = ", ".join(f"{g} ({c})" for g, c in top_ngrams(texts, 2, 8))
        lines.append(f"| {lab} | {len(texts)} | {d[1]:.3f} | {d[2]:.3f} | {d[3]:.3f} "
                     f"| {_md(top)} |")
    return lines


def _removed_section(result) -> list[str]:
    lines = ["", "## Removed rows: samples per reason", ""]
    by_reason: dict[str, list[dict]] = defaultdict(list)
    for r in result.removed:
        by_reason[r["reason"]].append(r)
    if not by_reason:
        lines.append("Nothing was removed.")
    steps = [f["step"] for f in result.summary.funnel]
    for reason in sorted(by_reason, key=lambda x: steps.index(x) if x in steps else len(steps)):
        rows = by_reason[reason]
        lines += [f"### {reason} ({len(rows)})", "", "| text | label | source | detail |",
                  "|---|---|---|---|"]
        for r in rows[:SAMPLES_PER_REASON]:
            lines.append(f"| {_md(r['text'])} | {_md(r['label'])} | {r['source']} "
                         f"| {_md(r['detail'])} |")
        lines.append("")
    return lines


# ----------------------------------------------------------------------------------------
# Plots


def _savefig(fig, path: Path) -> None:
    import io

    buf = io.BytesIO()
    # No software/date metadata, so the same data gives byte-identical PNGs.
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    atomic_write_bytes(path, buf.getvalue())


def plot_figures(result) -> dict:
    """matplotlib figures keyed by file name: label distribution, lengths, diversity."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    _cjk_font()
    s = result.summary
    labels = s.labels
    figs = {}

    fig, ax = plt.subplots(figsize=(6, 3.2))
    x = np.arange(len(labels))
    for k, split in enumerate(("train", "test")):
        ax.bar(x + (k - 0.5) * 0.4, [s.label_counts[split][lab] for lab in labels], 0.4,
               label=split)
    ax.set_xticks(x, labels)
    ax.set_ylabel("rows")
    ax.set_title(f"{s.task}: label distribution")
    ax.legend()
    fig.tight_layout()
    figs["labels.png"] = fig

    fig, ax = plt.subplots(figsize=(6, 3.2))
    lengths = {lab: [len(normalize(r["text"], _SPEC)) for r in result.train if r["label"] == lab]
               for lab in labels}
    top = max((max(v) for v in lengths.values() if v), default=1)
    bins = np.arange(0, top + 2) if top <= 60 else 40
    for lab in labels:
        if lengths[lab]:
            ax.hist(lengths[lab], bins=bins, alpha=0.55, label=lab)
    ax.set_xlabel("normalised length (characters)")
    ax.set_ylabel("train rows")
    ax.set_title(f"{s.task}: length per label")
    ax.legend()
    fig.tight_layout()
    figs["lengths.png"] = fig

    fig, ax = plt.subplots(figsize=(6, 3.2))
    for k, lab in enumerate(labels):
        d = distinct_ratios([r["text"] for r in result.train if r["label"] == lab])
        ax.bar(np.arange(3) + k * 0.8 / len(labels), [d[1], d[2], d[3]], 0.8 / len(labels),
               label=lab)
    ax.set_xticks(np.arange(3) + 0.4 - 0.4 / len(labels), ["distinct-1", "distinct-2",
                                                           "distinct-3"])
    ax.set_ylim(0, 1)
    ax.set_title(f"{s.task}: diversity per label")
    ax.legend()
    fig.tight_layout()
    figs["diversity.png"] = fig
    return figs


def _cjk_font() -> None:
    """Use an installed CJK font for tick labels if there is one (plots stay readable)."""
    from matplotlib import font_manager, rcParams

    names = {f.name for f in font_manager.fontManager.ttflist}
    for name in ("Noto Sans CJK SC", "Noto Sans CJK JP", "WenQuanYi Zen Hei", "SimHei",
                 "Source Han Sans SC", "AR PL UMing CN"):
        if name in names:
            rcParams["font.sans-serif"] = [name, *rcParams["font.sans-serif"]]
            # Some CJK fonts ship one weight (WenQuanYi Zen Hei is 500): matplotlib then warns
            # on every plot that it uses it for "normal", which is what we want.
            logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)
            return


def write_report(result, out_dir: Path) -> None:
    """Write ``report.md`` and the PNG plots of ``result`` into ``out_dir``."""
    import matplotlib.pyplot as plt

    for name, fig in plot_figures(result).items():
        _savefig(fig, Path(out_dir) / name)
        plt.close(fig)
    atomic_write_text(Path(out_dir) / "report.md", render_markdown(result))
