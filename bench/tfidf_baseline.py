"""TF-IDF + logistic regression baseline on a task's train/test split (the accuracy peer).

Usage: python -m bench.tfidf_baseline [SOURCE ...]   (default: data/ag_news data/imdb)
Reads sources the way sentcli does (sentcli.data.tasks.load_task), so both see the same rows.
"""

from __future__ import annotations

import sys
import time

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score

from sentcli.data.tasks import load_task


def baseline(source: str) -> dict[str, float]:
    td = load_task("task", source)
    if td.test is None:
        raise SystemExit(f"{source} has no test split")
    # sentcli trains on train minus its validation share; the baseline gets both (more data)
    texts = list(td.train["text"]) + list(td.validation["text"])
    labels = np.concatenate([np.asarray(td.train["label"]), np.asarray(td.validation["label"])])
    t0 = time.perf_counter()
    vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    clf = LogisticRegression(max_iter=2000, C=10.0)
    clf.fit(vec.fit_transform(texts), labels)
    pred = clf.predict(vec.transform(list(td.test["text"])))
    y = np.asarray(td.test["label"])
    return {
        "train_rows": len(texts),
        "test_rows": len(y),
        "accuracy": float(np.mean(pred == y)),
        "macro_f1": float(f1_score(y, pred, average="macro")),
        "seconds": time.perf_counter() - t0,
    }


def main() -> None:
    for source in sys.argv[1:] or ["data/ag_news", "data/imdb"]:
        r = baseline(source)
        print(
            f"{source}: TF-IDF(1-2 grams)+LR train {r['train_rows']:,} test {r['test_rows']:,} "
            f"accuracy {r['accuracy']:.4f} macro-F1 {r['macro_f1']:.4f} ({r['seconds']:.1f} s)"
        )


if __name__ == "__main__":
    main()
