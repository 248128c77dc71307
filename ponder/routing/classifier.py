"""The classifier router: logistic regression on hashed words + the cheap features.

Trained by ponder from labeled prompts (label 1: "reasoning helped" - the
reasoning configuration was right where the fast one was wrong), taken from
lab runs (``ponder tune --train-router``).  The features are stateless
(a hashing vectorizer), so a trained model is just a weight vector, stored
as JSON: nothing is unpickled at load time.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

from ponder.errors import ConfigError
from ponder.routing.base import RouteScore, last_user_text
from ponder.routing.features import Features, extract
from ponder.types import Message

N_HASHED = 2 ** 12
DEFAULT_MODEL = Path(__file__).with_name("data") / "classifier.json"
SCHEMA = "ponder.router.classifier/1"


def _vectorizer():
    from sklearn.feature_extraction.text import HashingVectorizer

    return HashingVectorizer(n_features=N_HASHED, ngram_range=(1, 2), alternate_sign=False, norm="l2",
                             token_pattern=r"(?u)\b\w+\b|[=+\-*/^%?]")


def featurize(texts: Sequence[str]):
    import numpy as np
    from scipy import sparse

    hashed = _vectorizer().transform(list(texts))
    dense = np.array([extract(t).vector() for t in texts], dtype=float)
    return sparse.hstack([hashed, sparse.csr_matrix(dense)]).tocsr()


def train(texts: Sequence[str], labels: Sequence[int], *, c: float = 1.0) -> dict:
    """Fit and return the JSON-able model (with its training figures)."""
    from sklearn.linear_model import LogisticRegression

    if len(set(labels)) < 2:
        raise ConfigError("the labeled set has only one class; the classifier needs examples where reasoning "
                          "helped and where it did not", param="--train-router")
    x = featurize(texts)
    model = LogisticRegression(C=c, class_weight="balanced", max_iter=2000)
    model.fit(x, list(labels))
    coef = model.coef_[0]
    nonzero = {str(i): round(float(w), 6) for i, w in enumerate(coef) if abs(w) > 1e-6}
    train_acc = float(model.score(x, list(labels)))
    return {"schema": SCHEMA, "n_hashed": N_HASHED, "dense_features": list(Features.NAMES),
            "intercept": float(model.intercept_[0]), "weights": nonzero,
            "training": {"examples": len(labels), "positives": int(sum(labels)), "train_accuracy": train_acc}}


def save(model: dict, path: str | Path) -> None:
    Path(path).write_text(json.dumps(model, indent=1))


def load(path: str | Path | None) -> dict:
    p = Path(path) if path else DEFAULT_MODEL
    if not p.is_file():
        raise ConfigError(f"classifier model not found: {p}", param="router_options.model")
    data = json.loads(p.read_text())
    if data.get("schema") != SCHEMA:
        raise ConfigError(f"{p}: not a ponder classifier model ({data.get('schema')!r})", param="router_options.model")
    return data


class ClassifierRouter:
    name = "classifier"

    def __init__(self, model: dict) -> None:
        self.model = model
        self.intercept = float(model["intercept"])
        self.weights = {int(k): float(v) for k, v in model["weights"].items()}

    def probability(self, text: str) -> float:
        x = featurize([text])
        row = x.getrow(0)
        z = self.intercept + sum(self.weights.get(int(j), 0.0) * v for j, v in zip(row.indices, row.data))
        return 1.0 / (1.0 + math.exp(-z))

    def score(self, messages: Sequence[Message]) -> RouteScore:
        p = self.probability(last_user_text(messages))
        return RouteScore(p, f"classifier: P(reasoning helps) = {p:.2f}", self.name)
