"""River's streaming models on the same rows, in the same order, with the same progressive
validation as `strongroom risk eval` (score each row, then learn it): StandardScaler +
LogisticRegression, ARFClassifier, and MinMaxScaler + HalfSpaceTrees (unsupervised). Prints one
line per data set and model in the same columns as `strongroom risk eval`.

Usage: compare.py DIR   (a folder written by datasets.py)
"""

import csv
import sys
import time
import tomllib
from pathlib import Path

from river import compose, forest, linear_model, anomaly, preprocessing
from sklearn.metrics import average_precision_score, roc_auc_score

folder = Path(sys.argv[1])
suite = tomllib.loads((folder / "datasets.toml").read_text())["dataset"]


def rows(spec):
    with open(folder / spec["file"]) as f:
        r = csv.DictReader(f)
        skip = set(spec.get("skip", []))
        for i, row in enumerate(r):
            if spec.get("limit") is not None and i >= spec["limit"]:
                break
            y = row.pop(spec["label"]) in ("1", "true", "True", "1.0")
            x = {k: float(v) for k, v in row.items() if k not in skip}
            yield x, y


def models():
    return [
        ("river StandardScaler + LogisticRegression", lambda: compose.Pipeline(preprocessing.StandardScaler(), linear_model.LogisticRegression()), "proba"),
        ("river ARFClassifier", lambda: forest.ARFClassifier(seed=42), "proba"),
        ("river MinMaxScaler + HalfSpaceTrees", lambda: compose.Pipeline(preprocessing.MinMaxScaler(), anomaly.HalfSpaceTrees(seed=42)), "anomaly"),
    ]


print(f"{'data set':<16} {'model':<44} {'ROC AUC':>8} {'PR AUC':>8} {'rows/s':>10}")
for spec in suite:
    data = list(rows(spec))
    labels = [y for _, y in data]
    for name, make, kind in models():
        m = make()
        scores = []
        started = time.perf_counter()
        for x, y in data:
            if kind == "proba":
                scores.append(m.predict_proba_one(x).get(True, 0.0))
                m.learn_one(x, y)
            else:
                scores.append(m.score_one(x))
                m.learn_one(x)
        secs = time.perf_counter() - started
        print(
            f"{spec['name']:<16} {name:<44} {roc_auc_score(labels, scores):>8.4f} "
            f"{average_precision_score(labels, scores):>8.4f} {len(data) / secs:>10.0f}",
            flush=True,
        )
