"""One window against the reference, with Evidently: ``DataDriftPreset`` over the tabular
features and ``EmbeddingsDrift`` over the prompt embeddings, read back into plain results, and
the report saved as HTML and JSON for a person to open (the newest ``keep`` of them are kept)."""
from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

EMBEDDING_METHODS = ("mmd", "model", "distance", "ratio")
# Evidently's own defaults, except for two, both measured here on stationary windows of prompt
# embeddings (MiniLM, 384 dims):
# - ratio: a Wasserstein distance of 0.1 per component flags about half the components of a
#   stationary window of a few hundred rows; a K-S test per component at p < 0.05 flags about 5%,
#   well under ratio's 0.2.
# - model: the classifier's ROC AUC on 200 vs 200 stationary rows has mean 0.54, sd 0.04, p95 0.60
#   over 40 windows, so the default 0.55 flags a third of them (6 false retrain events per 10k
#   requests in `make bench`); 0.65 sits 2.7 sd above that mean, and a real shift scores 1.0.
DEFAULT_OPTIONS: dict[str, dict] = {
    "ratio": {"component_stattest": "ks", "component_stattest_threshold": 0.05},
    "model": {"threshold": 0.65},
}


@dataclass(frozen=True)
class FeatureDrift:
    feature: str
    method: str          # Evidently's name, e.g. "K-S p_value", "MMDDriftMethod"
    value: float         # a p-value (drift when below the threshold) or a distance/score (drift when above)
    threshold: float
    drifted: bool


@dataclass
class WindowDrift:
    features: list[FeatureDrift]
    drift_share: float                 # share of tabular features that drifted
    dataset_drift: bool                # drift_share reached the preset's drift_share
    embedding: FeatureDrift | None
    seconds: float
    report_html: Path | None = None
    report_json: Path | None = None
    drifted_features: list[str] = field(default_factory=list)
    save_seconds: float = 0.0          # rendering and writing the HTML and JSON reports


def embedding_method(name: str, **options):
    """Evidently's embedding drift method ``name`` with ``options`` over :data:`DEFAULT_OPTIONS`."""
    from evidently.legacy.metrics.data_drift import embedding_drift_methods as m

    if name not in EMBEDDING_METHODS:
        raise ValueError(f"unknown embedding drift method {name!r}; known: {', '.join(EMBEDDING_METHODS)}")
    return getattr(m, name)(**{**DEFAULT_OPTIONS.get(name, {}), **options})


def _frame(rows: pd.DataFrame, embeddings: np.ndarray | None) -> pd.DataFrame:
    out = rows.reset_index(drop=True).copy()
    if embeddings is not None:
        emb = pd.DataFrame(np.asarray(embeddings, dtype=float), columns=[f"emb_{i}" for i in range(embeddings.shape[1])])
        out = pd.concat([out, emb], axis=1)
    return out


def _non_ascii_share(column):
    """Share of a text's letters outside ASCII: a language or script shift moves it."""
    from evidently.core.datasets import DatasetColumn
    from evidently.legacy.core import ColumnType

    def share(text) -> float:
        letters = [c for c in str(text or "") if c.isalpha()]
        return sum(not c.isascii() for c in letters) / len(letters) if letters else 0.0

    return DatasetColumn(type=ColumnType.Numerical, data=column.data.apply(share))


def _non_letter_pct(column):
    """Evidently's NonLetterCharacterPercentage (characters neither letters nor spaces, in percent),
    defined for the empty text (0) where Evidently's own divides by zero: one empty answer made the
    whole window fail."""
    from evidently.core.datasets import DatasetColumn
    from evidently.legacy.core import ColumnType

    def pct(text) -> float:
        text = "" if text is None or (isinstance(text, float) and np.isnan(text)) else str(text)
        return 100.0 * sum(not c.isalpha() and c != " " for c in text) / len(text) if text else 0.0

    return DatasetColumn(type=ColumnType.Numerical, data=column.data.apply(pct))


def text_descriptors(text_columns: Sequence[str]) -> tuple[list, list[str]]:
    """Evidently text descriptors of each text column, and their column names: length in
    characters, words (ASCII letters only, as Evidently counts them), share of non-letters, and
    share of non-ASCII letters."""
    from evidently.descriptors import CustomColumnDescriptor, TextLength, WordCount

    descriptors, names = [], []
    for col in text_columns:
        for cls, suffix in ((TextLength, "length"), (WordCount, "words")):
            descriptors.append(cls(col, alias=f"{col}_{suffix}"))
            names.append(f"{col}_{suffix}")
        for fn, suffix in ((_non_letter_pct, "non_letter_pct"), (_non_ascii_share, "non_ascii")):
            descriptors.append(CustomColumnDescriptor(col, fn, alias=f"{col}_{suffix}"))
            names.append(f"{col}_{suffix}")
    return descriptors, names


# Evidently's EmbeddingsDrift draws a t-SNE map of both samples with its fixed perplexity of 30,
# which scikit-learn refuses for 30 rows or fewer: smaller windows get tabular drift only.
EMBEDDING_MIN_ROWS = 31


def window_drift(reference: pd.DataFrame, current: pd.DataFrame, *, numeric: Sequence[str],
                 categorical: Sequence[str] = (), text: Sequence[str] = (),
                 reference_embeddings: np.ndarray | None = None,
                 current_embeddings: np.ndarray | None = None, method: str = "mmd",
                 method_options: dict | None = None, drift_share: float = 0.5,
                 save_to: Path | None = None, embedding_plot: bool = False) -> WindowDrift:
    """Drift of ``current`` against ``reference``. With embeddings (one row per completion, the
    same width in both), the prompt-embedding drift is computed with ``method``; each ``text``
    column adds its :func:`text_descriptors` to the tabular features.

    ``embedding_plot``: the prompt-embedding drift goes into Evidently's report, with its t-SNE
    map of both samples (which needs more than 30 rows). Off, the same Evidently method is run on
    the embeddings directly, and the report holds the tabular drift: the t-SNE map took about half
    of a window's time (measured: 45% of the drift service's CPU under load), and carrying 384
    embedding columns through the report's datasets another fifth."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics.embeddings import EmbeddingsDrift
    from evidently.presets import DataDriftPreset

    t0 = time.perf_counter()
    descriptors, descriptor_columns = text_descriptors(text)
    columns = list(numeric) + list(categorical) + descriptor_columns
    emb_cols: list[str] = []
    if reference_embeddings is not None and current_embeddings is not None and embedding_plot:
        if len(reference) + len(current) < EMBEDDING_MIN_ROWS:
            log.warning("prompt-embedding drift needs at least %d rows in reference and window together (t-SNE "
                        "in Evidently's report), not %d: tabular drift only", EMBEDDING_MIN_ROWS,
                        len(reference) + len(current))
            reference_embeddings = current_embeddings = None
    embedding = None
    if reference_embeddings is not None and current_embeddings is not None and not embedding_plot:
        embedding = _embedding_drift(reference_embeddings, current_embeddings, method, method_options)
    elif reference_embeddings is not None and current_embeddings is not None:
        emb_cols = [f"emb_{i}" for i in range(np.asarray(reference_embeddings).shape[1])]
    definition = DataDefinition(numerical_columns=list(numeric) + emb_cols, categorical_columns=list(categorical),
                                text_columns=list(text), embeddings={"prompt": emb_cols} if emb_cols else None)
    ref = Dataset.from_pandas(_frame(reference, reference_embeddings if emb_cols else None), data_definition=definition,
                              descriptors=descriptors or None)
    cur = Dataset.from_pandas(_frame(current, current_embeddings if emb_cols else None), data_definition=definition,
                              descriptors=descriptors or None)
    metrics = [DataDriftPreset(columns=columns, drift_share=drift_share)]
    if emb_cols:
        metrics.append(EmbeddingsDrift(embeddings_name="prompt",
                                       drift_method=embedding_method(method, **(method_options or {}))))
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        # constant columns (e.g. one finish reason) make scipy and Evidently warn on every window
        warnings.simplefilter("ignore", RuntimeWarning)
        snapshot = Report(metrics).run(cur, ref)
    features, share = [], 0.0
    for m in snapshot.dict()["metrics"]:
        cfg, value = m["config"], m["value"]
        kind = cfg["type"].rsplit(":", 1)[-1]
        if kind == "DriftedColumnsCount":
            share = float(value["share"])
        elif kind == "ValueDrift":
            method_name, threshold = cfg["method"], float(cfg["threshold"])
            drifted = value < threshold if "p_value" in method_name else value >= threshold
            features.append(FeatureDrift(cfg["column"], method_name, float(value), threshold, bool(drifted)))
        elif kind == "EmbeddingsDrift":
            dm = cfg["drift_method"]
            threshold = float(dm.get("threshold", 0.0))
            embedding = FeatureDrift("prompt_embedding", dm["type"].rsplit(":", 1)[-1], float(value), threshold,
                                     float(value) > threshold)
    result = WindowDrift(features, share, share >= drift_share, embedding, time.perf_counter() - t0,
                         drifted_features=[f.feature for f in features if f.drifted])
    if save_to is not None:
        t1 = time.perf_counter()
        save_to.parent.mkdir(parents=True, exist_ok=True)
        result.report_html, result.report_json = save_to.with_suffix(".html"), save_to.with_suffix(".json")
        snapshot.save_html(str(result.report_html))
        snapshot.save_json(str(result.report_json))
        result.save_seconds = time.perf_counter() - t1
    return result


def _embedding_drift(reference: np.ndarray, current: np.ndarray, method: str,
                     options: dict | None) -> FeatureDrift:
    """The prompt-embedding drift of Evidently's method ``method``, run on the embeddings as its
    report's EmbeddingsDrift metric runs it (current first), without the report's t-SNE map."""
    drift_method = embedding_method(method, **(options or {}))
    cols = [f"emb_{i}" for i in range(np.asarray(reference).shape[1])]
    score, _detected, _name = drift_method(pd.DataFrame(np.asarray(current, dtype=float), columns=cols),
                                           pd.DataFrame(np.asarray(reference, dtype=float), columns=cols))
    threshold = float(getattr(drift_method, "threshold", 0.0) or 0.0)
    # drifted above the method's threshold, as read from the report's metric config when it ran there
    return FeatureDrift("prompt_embedding", type(drift_method).__name__, float(score), threshold,
                        float(score) > threshold)


def prune_reports(directory: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` saved reports in ``directory`` (each HTML with its JSON)."""
    if not directory.exists():
        return
    htmls = sorted(directory.glob("*.html"), key=lambda p: p.stat().st_mtime)
    for old in htmls[:max(0, len(htmls) - keep)]:
        old.unlink(missing_ok=True)
        old.with_suffix(".json").unlink(missing_ok=True)
