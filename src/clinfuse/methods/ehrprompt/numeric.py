r"""The numeric and linear paths beside the prompt sentences.

A sentence embedding carries a number only as text ("The serum sodium is 141 mmol/L."), and a
frozen sentence encoder resolves nearby numbers poorly. Two paths give the fusion model the
numbers themselves:

* **value encoding** (:func:`fit_value_edges`, :func:`value_tensor`): every numeric cell also
  carries the piecewise-linear encoding of its value over training-quantile bins (Gorishniy et
  al., arXiv 2203.05556), which the model maps per column into the cell's token;
* **linear path** (:class:`LinearPath`): a logistic (ridge) model on the standardised raw table
  (:func:`~.baselines.tabular_matrix`), its inverse regularisation strength chosen by 5-fold
  cross-validation on the training rows. ``offset``: its log-probabilities are a fixed offset
  of the model's logits, cross-fitted on the training rows (each row's offset comes from a model
  that did not see it), so the transformer learns the residual of a tuned linear model (stacking,
  Wolpert 1992, with the offset form of generalised linear models); ``joint``: the standardised
  features feed a linear term trained with the transformer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from clinfuse.core.errors import require
from clinfuse.methods.ehrprompt.baselines import tabular_matrix

__all__ = ["C_GRID", "LinearPath", "fit_value_edges", "value_tensor"]

C_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
"""Inverse L2 strengths searched by cross-validation (logistic); ridge uses 1 / C."""


def fit_value_edges(
    frame: pd.DataFrame, columns: Sequence[str], numeric: Sequence[str], bins: int
) -> dict[str, np.ndarray]:
    """Bin edges (``bins + 1`` distinct training quantiles) of every numeric column.

    Example:
        >>> e = fit_value_edges(pd.DataFrame({"a": np.arange(100.0)}), ["a"], ["a"], 4)
        >>> e["a"].tolist()
        [0.0, 24.75, 49.5, 74.25, 99.0]
    """
    out = {}
    for c in columns:
        if c not in numeric:
            continue
        x = pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype=float)
        x = x[np.isfinite(x)]
        if x.size < 2:
            continue
        edges = np.unique(np.quantile(x, np.linspace(0, 1, bins + 1)))
        if edges.size >= 2:
            out[c] = edges
    return out


def value_tensor(
    frame: pd.DataFrame, columns: Sequence[str], edges: Mapping[str, np.ndarray], bins: int
) -> torch.Tensor:
    """``(n, m, bins)`` piecewise-linear encodings; zeros for text/categorical/missing cells.

    A column with fewer distinct quantiles than ``bins + 1`` fills its first components.
    """
    from clinfuse.methods.ehrprompt.model import piecewise_linear_encoding

    out = torch.zeros(len(frame), len(columns), bins)
    for j, c in enumerate(columns):
        if c not in edges:
            continue
        x = torch.as_tensor(pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype=float))
        e = torch.as_tensor(edges[c])
        enc = piecewise_linear_encoding(x.float(), e.float())
        out[:, j, : enc.shape[1]] = enc
    return out


class LinearPath:
    """A tuned linear model on the standardised raw table: design matrix, cross-fitted offsets.

    Classification: ``LogisticRegression`` without class weights (its log-probabilities are the
    offset, so they must be calibrated); regression: ``Ridge`` on the standardised target.
    """

    def __init__(self, specs: Sequence[Any], task: str, seed: int = 0, folds: int = 5) -> None:
        self.specs = list(specs)
        self.task = task
        self.seed = seed
        self.folds = folds
        self.transformer: Any = None
        self.C: float | None = None
        self.model: Any = None

    # -- design matrix ----------------------------------------------------------------------------
    def fit_matrix(self, frame: pd.DataFrame) -> np.ndarray:
        x, self.transformer = tabular_matrix(frame, self.specs, fit_on=frame)
        return x

    def matrix(self, frame: pd.DataFrame) -> np.ndarray:
        return tabular_matrix(frame, self.specs, fit_on=self._fit_frame)[0]

    def _estimator(self, C: float) -> Any:
        lm = require("sklearn.linear_model", "ehr")
        if self.task == "classification":
            return lm.LogisticRegression(C=C, max_iter=3000)
        return lm.Ridge(alpha=1.0 / C)

    def _folds(self, y: np.ndarray) -> Any:
        ms = require("sklearn.model_selection", "ehr")
        if self.task == "classification":
            return ms.StratifiedKFold(self.folds, shuffle=True, random_state=self.seed)
        return ms.KFold(self.folds, shuffle=True, random_state=self.seed)

    def _out(self, model: Any, x: np.ndarray) -> np.ndarray:
        if self.task == "classification":
            return np.clip(model.predict_log_proba(x), -30.0, 0.0)
        return model.predict(x)

    # -- fit ------------------------------------------------------------------------------------
    def fit(self, frame: pd.DataFrame, y: np.ndarray) -> np.ndarray:
        """Choose C by cross-validated log loss (MSE) on ``frame``; return the cross-fitted
        outputs of its rows (log-probabilities ``(n, C)`` or values ``(n,)``)."""
        ms = require("sklearn.model_selection", "ehr")
        self._fit_frame = frame
        x = self.fit_matrix(frame)
        folds = list(self._folds(y).split(x, y))
        scoring = "neg_log_loss" if self.task == "classification" else "neg_mean_squared_error"
        best = -np.inf
        for C in C_GRID:
            s = ms.cross_val_score(self._estimator(C), x, y, cv=folds, scoring=scoring).mean()
            if s > best:
                best, self.C = s, C
        oof = np.zeros((len(y), len(np.unique(y))) if self.task == "classification" else len(y))
        for tr, te in folds:
            oof[te] = self._out(self._estimator(self.C).fit(x[tr], y[tr]), x[te])
        self.model = self._estimator(self.C).fit(x, y)
        return oof

    def refit(self, frame: pd.DataFrame, y: np.ndarray) -> None:
        """Refit with the chosen C on more rows (the matrix's statistics too)."""
        self._fit_frame = frame
        x = self.fit_matrix(frame)
        self.model = self._estimator(self.C if self.C is not None else 1.0).fit(x, y)

    def outputs(self, frame: pd.DataFrame) -> np.ndarray:
        return self._out(self.model, self.matrix(frame))
