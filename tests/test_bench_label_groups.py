"""bench/label_groups.py: cross-validating the label-group weights on a dataset's train rows."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pytest

from foundry.blueprint import load_blueprint
from foundry.datasets import load_dataset
from foundry.train import text_spec
from foundry.trainers import Recipe, get_trainer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import label_groups as bench  # noqa: E402


def test_cross_validate_scores_every_pair_and_zero_is_the_plain_svm():
    from sklearn.model_selection import StratifiedKFold

    bp = load_blueprint("assistant_intents_zh")
    task = bp.tasks[0]
    keep = {"alarm_set", "alarm_query", "alarm_remove", "music_query", "play_music"}
    rows = [r for r in load_dataset(bp, task, "train") if r.label in keep]
    labels = task.label_names
    texts, y = [r.text for r in rows], np.asarray([labels.index(r.label) for r in rows])
    recipe = Recipe(get_trainer("tfidf_svm_int8"), text_spec(bp, task), True, 0, labels)
    pairs = [(0.0, 0.0), (1.0, 0.5)]
    scores = bench.cross_validate(recipe, texts, y, pairs, {"C": 0.5}, folds=2, seed=0)
    assert set(scores) == set(pairs)
    assert all(len(s) == 2 and all(0 < a <= 1 and 0 < f <= 1 for a, f in s)
               for s in scores.values())
    # (0, 0): the shipped classifier without groups, fold by fold
    fit_rows, held = next(StratifiedKFold(2, shuffle=True, random_state=0).split(texts, y))
    vec = recipe.vectorizer({"C": 0.5})
    x_fit = vec.fit_transform([texts[i] for i in fit_rows])
    plain = recipe.classifier({"C": 0.5}, "none").fit(x_fit, y[fit_rows])
    pred = plain.predict(vec.transform([texts[i] for i in held]))
    assert scores[(0.0, 0.0)][0][0] == pytest.approx(float((pred == y[held]).mean()))


def test_weight_lists_are_checked():
    assert bench.parse_floats("0, 0.5,2") == [0.0, 0.5, 2.0]
    with pytest.raises(argparse.ArgumentTypeError, match="comma-separated numbers"):
        bench.parse_floats("1;2")
