r"""Tabular baselines for ehrprompt: a linear model and gradient-boosted trees (scikit-learn).

Preprocessing (:func:`tabular_matrix`), fitted on the training frame only:

- **numeric** columns: median imputation **plus a missing-indicator column** for every column
  that had a missing cell in the training frame, then standardisation (train mean / std). The
  indicator keeps informative missingness (a lab not ordered) visible to both models; in the
  prompt model the same cell reads "not recorded".
- **categorical** and **binary** columns: values cast to strings, missing -> its own category
  ``"not recorded"``, one-hot encoded; a category unseen in training maps to all zeros
  (``handle_unknown="ignore"``).
- **text** columns (notes): dropped (``text="drop"``, the default: structured-only baselines) or
  TF-IDF of unigrams and bigrams (``text="tfidf"``).

Both baselines read the same dense matrix, so they differ only in the model:
``"linear"`` = ``LogisticRegression`` / ``Ridge``, ``"gbm"`` = ``HistGradientBoostingClassifier``
/ ``Regressor`` (one-hot input instead of native categorical splits, which keeps one code path;
its own NaN handling is unused because the matrix is imputed). Classifiers weight classes
``"balanced"`` by default, as the SUPPORT2 reference numbers of :mod:`.data` do, so that
balanced accuracy at :math:`p \ge 0.5` is meaningful. scikit-learn is imported lazily
(extra ``ehr``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, Protocol

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from clinfuse.core.errors import ConfigError, DataError, require

__all__ = [
    "BASELINES",
    "MISSING_CATEGORY",
    "BaselineKind",
    "ColumnKind",
    "Task",
    "feature_names",
    "fit_baseline",
    "predict",
    "tabular_matrix",
    "tune_baseline",
]

ColumnKind = Literal["numeric", "categorical", "binary", "text"]
BaselineKind = Literal["linear", "gbm"]
Task = Literal["classification", "regression"]
MISSING_CATEGORY = "not recorded"
"""Category given to a missing categorical or binary cell (the prompt templates' wording)."""


class _Spec(Protocol):
    """Anything with a column ``name`` and ``kind`` (e.g. ehrprompt's ``ColumnSpec``)."""

    name: str
    kind: ColumnKind


def _as_kinds(specs: Mapping[str, ColumnKind] | Iterable[_Spec]) -> dict[str, ColumnKind]:
    """``{column: kind}`` from a mapping or from objects with ``.name`` and ``.kind``."""
    if isinstance(specs, Mapping):
        kinds = dict(specs)
    else:
        kinds = {s.name: s.kind for s in specs}
    allowed = ("numeric", "categorical", "binary", "text")
    bad = {c: k for c, k in kinds.items() if k not in allowed}
    if bad:
        raise ConfigError(
            "tabular_matrix: unknown column kind",
            expected=" | ".join(allowed),
            found=bad,
            fix="give each column one of the listed kinds",
        )
    if not kinds:
        raise ConfigError(
            "tabular_matrix: no column given",
            expected="at least one column spec",
            found="none",
            fix="pass the feature columns' specs",
        )
    return kinds


def _category_strings(x: pd.DataFrame) -> pd.DataFrame:
    """Cells as strings; missing cells as :data:`MISSING_CATEGORY` (uniform input for one-hot)."""
    frame = pd.DataFrame(x).astype(object)
    return frame.where(frame.notna(), MISSING_CATEGORY).astype(str)


def _text_strings(x: pd.Series) -> np.ndarray:
    """A text column as a 1-D array of strings, missing -> empty."""
    series = pd.Series(np.asarray(x, dtype=object).reshape(-1))
    return series.where(series.notna(), "").astype(str).to_numpy()


def _check_columns(frame: pd.DataFrame, kinds: Mapping[str, str], what: str) -> None:
    """DataError naming absent columns, or a numeric column holding non-numbers."""
    absent = [c for c in kinds if c not in frame.columns]
    if absent:
        raise DataError(
            f"tabular_matrix: column(s) {absent} missing from the {what} frame",
            expected=f"every spec'd column: {list(kinds)[:20]}",
            found=f"columns {list(frame.columns)[:20]}",
            fix="use the same columns (and specs) for training and test frames",
        )
    for col, kind in kinds.items():
        if kind != "numeric":
            continue
        values = pd.to_numeric(frame[col], errors="coerce")
        bad = values.isna() & frame[col].notna()
        if bad.any():
            row = frame.index[bad.to_numpy()][0]
            raise DataError(
                f"tabular_matrix: numeric column {col!r} holds a non-number in the {what} frame",
                expected="numbers or missing",
                found=f"{frame[col][row]!r} at row {row}",
                fix=f"declare {col!r} as categorical, or clean the value",
            )


def tabular_matrix(
    frame: pd.DataFrame,
    specs: Mapping[str, ColumnKind] | Iterable[_Spec],
    fit_on: pd.DataFrame,
    text: Literal["drop", "tfidf"] = "drop",
    tfidf_features: int = 500,
) -> tuple[np.ndarray, Any]:
    """Design matrix of ``frame`` with the preprocessing fitted on ``fit_on`` (module docstring).

    Args:
        frame: Rows to transform (pass the training frame itself for ``X_train``).
        specs: Column kinds, as ``{column: kind}`` or as ``ColumnSpec``-like objects with
            ``.name`` and ``.kind``; only these columns are used (targets stay out).
        fit_on: Training rows whose statistics (medians, means, categories, vocabulary) are used.
        text: What to do with ``text`` columns.
        tfidf_features: Vocabulary size per text column when ``text="tfidf"``.

    Returns:
        ``X`` float64 and the fitted ``sklearn`` ``ColumnTransformer``: ``transformer.transform(
        test_frame)`` gives the test matrix for float-typed numeric columns;
        ``tabular_matrix(test_frame, specs, fit_on=train)`` gives the same matrix and also checks
        and casts object-typed numeric columns. :func:`feature_names` names the columns.

    Shape:
        frame: ``(n, p)``. Output ``X``: ``(n, q)``, ``q`` = numeric columns + their missing
        indicators + one-hot categories (+ TF-IDF terms).

    Example:
        >>> train = pd.DataFrame({"age": [30.0, None, 50.0], "sex": ["f", "m", None]})
        >>> X, tf = tabular_matrix(train, {"age": "numeric", "sex": "categorical"}, train)
        >>> feature_names(tf)
        ['age', 'missing_age', 'sex_f', 'sex_m', 'sex_not recorded']
        >>> tabular_matrix(pd.DataFrame({"age": [40.0], "sex": ["x"]}),
        ...                {"age": "numeric", "sex": "categorical"}, train)[0].tolist()
        [[0.0, -0.7071067811865475, 0.0, 0.0, 0.0]]
    """
    kinds = _as_kinds(specs)
    if text not in ("drop", "tfidf"):
        raise ConfigError(
            "tabular_matrix: unknown text handling",
            expected="drop | tfidf",
            found=repr(text),
            fix="drop the notes, or featurise them with TF-IDF",
        )
    _check_columns(fit_on, kinds, "training")
    _check_columns(frame, kinds, "input")
    compose = require("sklearn.compose", "ehr")
    impute = require("sklearn.impute", "ehr")
    pipeline = require("sklearn.pipeline", "ehr")
    pre = require("sklearn.preprocessing", "ehr")
    numeric = [c for c, k in kinds.items() if k == "numeric"]
    categorical = [c for c, k in kinds.items() if k in ("categorical", "binary")]
    texts = [c for c, k in kinds.items() if k == "text"] if text == "tfidf" else []
    parts: list[tuple[str, Any, Any]] = []
    if numeric:
        parts.append(
            (
                "num",
                pipeline.make_pipeline(
                    impute.SimpleImputer(strategy="median", add_indicator=True),
                    pre.StandardScaler(),
                ),
                numeric,
            )
        )
    if categorical:
        parts.append(
            (
                "cat",
                pipeline.make_pipeline(
                    pre.FunctionTransformer(_category_strings, feature_names_out="one-to-one"),
                    pre.OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                ),
                categorical,
            )
        )
    if texts:
        fe = require("sklearn.feature_extraction.text", "ehr")
        for col in texts:
            vectoriser = fe.TfidfVectorizer(ngram_range=(1, 2), max_features=tfidf_features)
            parts.append(
                (
                    f"text_{col}",
                    pipeline.make_pipeline(
                        pre.FunctionTransformer(_text_strings, feature_names_out="one-to-one"),
                        vectoriser,
                    ),
                    col,
                )
            )
    if not parts:
        raise ConfigError(
            "tabular_matrix: no usable column (text columns are dropped)",
            expected="at least one numeric, categorical or binary column, or text='tfidf'",
            found=kinds,
            fix="add structured columns or pass text='tfidf'",
        )
    transformer = compose.ColumnTransformer(parts, sparse_threshold=0.0)
    transformer.fit(_numeric_cast(fit_on, numeric))
    X = transformer.transform(_numeric_cast(frame, numeric))
    return np.asarray(X, dtype=np.float64), transformer


def _numeric_cast(frame: pd.DataFrame, numeric: list[str]) -> pd.DataFrame:
    """Numeric columns as float (object columns of numbers and None included)."""
    if not numeric:
        return frame
    return frame.assign(**{c: pd.to_numeric(frame[c]).astype(float) for c in numeric})


def feature_names(transformer: Any) -> list[str]:
    """Names of the matrix columns: ``col``, ``missing_col`` (indicator), ``col_category``, and
    ``col:term`` for a TF-IDF term of text column ``col``.

    Example: see :func:`tabular_matrix`.
    """
    names = []
    for full in transformer.get_feature_names_out():
        part, name = str(full).split("__", 1)
        if part.startswith("text_"):
            names.append(f"{part.removeprefix('text_')}:{name}")
        else:
            names.append(name.replace("missingindicator_", "missing_", 1))
    return names


# ------------------------------------------------------------------- models
def _linear(task: Task, seed: int, params: Mapping[str, Any]) -> Any:
    lm = require("sklearn.linear_model", "ehr")
    if task == "classification":
        defaults = {"C": 1.0, "max_iter": 2000, "class_weight": "balanced", "random_state": seed}
        return lm.LogisticRegression(**{**defaults, **params})
    return lm.Ridge(**{"alpha": 1.0, "random_state": seed, **params})


def _gbm(task: Task, seed: int, params: Mapping[str, Any]) -> Any:
    ens = require("sklearn.ensemble", "ehr")
    if task == "classification":
        defaults = {"class_weight": "balanced", "random_state": seed}
        return ens.HistGradientBoostingClassifier(**{**defaults, **params})
    return ens.HistGradientBoostingRegressor(**{"random_state": seed, **params})


BASELINES: dict[str, Callable[[Task, int, Mapping[str, Any]], Any]] = {
    "linear": _linear,
    "gbm": _gbm,
}
"""Baseline kind -> factory ``(task, seed, params) -> unfitted scikit-learn estimator``."""


def fit_baseline(
    kind: BaselineKind,
    task: Task,
    X: ArrayLike,
    y: ArrayLike,
    seed: int = 0,
    params: Mapping[str, Any] | None = None,
) -> Any:
    """Fit a linear or gradient-boosted baseline on a design matrix.

    ``linear``: ``LogisticRegression(C=1, max_iter=2000, class_weight="balanced")`` or
    ``Ridge(alpha=1)``. ``gbm``: ``HistGradientBoostingClassifier(class_weight="balanced")`` or
    ``HistGradientBoostingRegressor`` with scikit-learn's defaults (early stopping above 10,000
    rows, seeded by ``seed``). ``params`` override any of these.

    Shape:
        X: ``(n, q)`` from :func:`tabular_matrix`; y: ``(n,)`` class labels or real targets.
        Output: the fitted estimator.
    """
    if kind not in BASELINES:
        raise ConfigError(
            "fit_baseline: unknown baseline",
            expected=" | ".join(BASELINES),
            found=repr(kind),
            fix="choose 'linear' or 'gbm'",
        )
    if task not in ("classification", "regression"):
        raise ConfigError(
            "fit_baseline: unknown task",
            expected="classification | regression",
            found=repr(task),
            fix="choose 'classification' or 'regression'",
        )
    X_arr = np.asarray(X, dtype=np.float64)
    y_arr = np.asarray(y).reshape(-1)
    if X_arr.ndim != 2 or X_arr.shape[0] != y_arr.shape[0]:
        raise DataError(
            "fit_baseline: X and y do not match",
            expected="X of shape (n, q) and y of shape (n,)",
            found=f"X {X_arr.shape}, y {np.shape(y)}",
            fix="build X with tabular_matrix on the same rows as y",
        )
    if pd.isna(y_arr).any():
        raise DataError(
            "fit_baseline: the target has missing values",
            expected="a label for every training row",
            found=f"{int(pd.isna(y_arr).sum())} missing of {y_arr.size}",
            fix="drop the unlabelled rows before fitting",
        )
    if task == "classification" and np.unique(y_arr).size < 2:
        raise DataError(
            "fit_baseline: classification needs two or more classes",
            expected=">= 2 distinct labels",
            found=f"only {np.unique(y_arr).tolist()}",
            fix="check the target column and the split",
        )
    if task == "regression":
        y_arr = y_arr.astype(np.float64)
    model = BASELINES[kind](task, seed, dict(params or {}))
    return model.fit(X_arr, y_arr)


def predict(model: Any, X: ArrayLike) -> np.ndarray:
    """Predictions for AUROC or RMSE: class probabilities, or real values.

    Shape:
        X: ``(n, q)``. Output: ``(n,)`` positive-class probability for a binary classifier
        (the greater label, as in :func:`~clinfuse.metrics.classification.roc_auc`),
        ``(n, C)`` probabilities in ``model.classes_`` order for more classes, ``(n,)`` values
        for a regressor.
    """
    X_arr = np.asarray(X, dtype=np.float64)
    if hasattr(model, "predict_proba"):
        proba = model.predict_proba(X_arr)
        return proba[:, 1] if proba.shape[1] == 2 else proba
    return np.asarray(model.predict(X_arr), dtype=np.float64)


# ------------------------------------------------------------------- tuning
TUNING_GRIDS: dict[str, list[dict[str, Any]]] = {
    "linear": [{"C": c} for c in (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)],
    "gbm": [
        {
            "learning_rate": lr,
            "max_leaf_nodes": leaves,
            "min_samples_leaf": leaf,
            "max_iter": 300,
            "early_stopping": True,
            "n_iter_no_change": 20,
        }
        for lr in (0.05, 0.1)
        for leaves in (7, 31)
        for leaf in (20, 80)
    ],
}
"""Hyper-parameters searched by :func:`tune_baseline` (``C`` of the logistic model, ``1 / C``
as the ridge ``alpha``; learning rate, leaves and leaf size of the boosted trees)."""


def _params(kind: str, task: Task, p: Mapping[str, Any]) -> dict[str, Any]:
    if kind == "linear" and task == "regression":
        return {"alpha": 1.0 / p["C"]}
    return dict(p)


def tune_baseline(
    kind: BaselineKind,
    task: Task,
    X_fit: ArrayLike,
    y_fit: ArrayLike,
    X_valid: ArrayLike,
    y_valid: ArrayLike,
    seed: int = 0,
) -> tuple[Any, dict[str, Any], float]:
    """The :data:`TUNING_GRIDS` setting with the best validation AUROC (classification, binary)
    or log loss (more classes) or RMSE (regression), refitted on the fit and validation rows.

    Returns:
        (fitted model, chosen parameters, its validation score: higher is better).
    """
    from clinfuse.metrics.classification import roc_auc

    X_fit, X_valid = np.asarray(X_fit, dtype=float), np.asarray(X_valid, dtype=float)
    y_fit, y_valid = np.asarray(y_fit), np.asarray(y_valid)
    best: tuple[float, dict[str, Any]] = (-np.inf, {})
    for p in TUNING_GRIDS[kind]:
        model = fit_baseline(kind, task, X_fit, y_fit, seed, _params(kind, task, p))
        pred = predict(model, X_valid)
        if task == "regression":
            score = -float(np.sqrt(np.mean((pred - y_valid.astype(float)) ** 2)))
        elif pred.ndim == 1:
            score = roc_auc(pred, y_valid)
        else:
            idx = np.searchsorted(model.classes_, y_valid)
            score = float(np.mean(np.log(np.clip(pred[np.arange(len(idx)), idx], 1e-12, 1))))
        if score > best[0]:
            best = (score, p)
    X_all = np.concatenate([X_fit, X_valid])
    y_all = np.concatenate([y_fit, y_valid])
    model = fit_baseline(kind, task, X_all, y_all, seed, _params(kind, task, best[1]))
    return model, best[1], best[0]
