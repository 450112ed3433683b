"""Configuration of DIB, the double information bottleneck for multimodal sentiment analysis.

Every constant of the method is a field. Defaults are the values of the public ``DIB`` derivative
code [D] or of its MIB / MulT / MAG-BERT lineage [L]; a value the sources
do not give is marked ``[inferred]`` and stays configurable. ``configs/dib/paper.toml`` restates
these defaults; ``configs/dib/quick.toml`` is the CPU demo.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from clinfuse.core.errors import ConfigError

MODALITIES: tuple[str, ...] = ("text", "audio", "vision")
"""Modalities DIB knows, in the order the fusion stacks them (text first: it is the anchor)."""

MONITOR_MODES: dict[str, Literal["min", "max"]] = {
    "valid_loss": "min",
    "valid_mae": "min",
    "valid_mse": "min",
    "valid_corr": "max",
    "valid_acc2": "max",
    "valid_f1": "max",
}
"""Direction in which each monitored validation metric improves."""


@dataclass(frozen=True)
class DIBConfig:
    """Double information bottleneck (DIB) for robust multimodal sentiment analysis.

    Unimodal stochastic encoders compressed under the (low-rank) matrix-based Renyi entropy, an
    attention-bottleneck fusion anchored on text, and a multimodal bottleneck before the regressor
    (arXiv 2511.01444).
    """

    # -- run -------------------------------------------------------------------------------
    preset: str = "default"
    """Name of the preset this config was built from (recorded with the run)."""
    seed: int = 0
    """Seed of initialisation, shuffling and reparameterisation noise (paper: 5576 [L])."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where to train: `auto` picks CUDA when available."""
    num_workers: int = 0
    """DataLoader worker processes (0 loads in the main process)."""
    progress: bool = True
    """Show progress bars."""

    # -- data ------------------------------------------------------------------------------
    data: str = "synthetic_mosi"
    """A synthetic preset name or the path of an MMSA / MAG-BERT pickle."""
    modalities: tuple[str, ...] = MODALITIES
    """Modalities the model reads, a subset of text, audio, vision [inferred]."""
    text_dim: int | None = None
    """Text feature size; None takes it from the data (MMSA: 768)."""
    audio_dim: int | None = None
    """Audio feature size; None takes it from the data (MMSA MOSI: 5, MAG-BERT MOSI: 74)."""
    vision_dim: int | None = None
    """Vision feature size; None takes it from the data (MMSA MOSI: 20, MAG-BERT MOSI: 47)."""
    max_seq_length: int = 50
    """Text tokens kept per utterance [L]."""
    corrupt_train: str | None = None
    """Training-time corruption spec (robustness augmentation); None trains on clean data."""
    corrupt_train_p: float = 1.0
    """Share of the training samples that `corrupt_train` corrupts, redrawn each epoch (the rest
    stay clean) [inferred]."""

    # -- encoders --------------------------------------------------------------------------
    text_encoder: Literal["features", "bert"] = "features"
    """`features`: Conv1d+Transformer over precomputed text features; `bert`: fine-tune BERT [L]."""
    bert_path: str | None = None
    """Local directory of a Hugging Face BERT (e.g. bert-base-uncased); needed by `bert`."""
    bert_finetune: bool = True
    """Fine-tune the BERT weights (False freezes them) [L]."""
    text_pooling: Literal["cls", "mean", "last_valid", "last"] = "last_valid"
    """Text pooling; `last` is the source's `[:, :, -1]`, which reads a PAD position when padded."""
    av_pooling: Literal["cls", "mean", "last_valid", "last"] = "last_valid"
    """Audio/vision pooling over valid frames; the source takes the last time step [L]."""
    hidden: int = 50
    """Width of every encoder, latent and fusion token [D]."""
    conv_kernel: int = 3
    """Kernel of the Conv1d input projections ('same' padding keeps frame indices) [D]."""
    n_heads: int = 5
    """Attention heads of the modality transformers [L]."""
    n_layers: int = 3
    """Layers of each modality transformer [L]."""
    positional: Literal["sinusoidal", "learned"] = "sinusoidal"
    """Position encoding of the modality transformers (MulT: sinusoidal) [L]."""
    max_positions: int = 1024
    """Longest sequence a `learned` position table covers [inferred]."""
    attn_dropout: float = 0.5
    """Dropout on attention weights [L]."""
    relu_dropout: float = 0.3
    """Dropout after the feed-forward ReLU [L]."""
    res_dropout: float = 0.3
    """Dropout on residual branches [L]."""
    embed_dropout: float = 0.2
    """Dropout on the scaled, position-encoded input tokens [L]."""

    # -- information bottlenecks -----------------------------------------------------------
    ib: Literal["renyi", "vib", "none"] = "renyi"
    """Bottleneck regulariser: Renyi compression, variational KL (MIB), or none (deterministic)."""
    ib_hidden: int = 1024
    """Hidden width of each stochastic encoder, Linear(hidden->ib_hidden)+ReLU [D]."""
    sigma_offset: float = 5.0
    """Encoder scale sigma = softplus(Linear(.) - sigma_offset), about 0.0067 at zero [D]."""
    compression: Literal["H", "I"] = "H"
    """Compression: H(Z) as in [D] (= I(X;Z) for a deterministic encoder), or I(X;Z) [inferred]."""
    relevance: Literal["task", "mi"] = "task"
    """Relevance term: task losses of per-modality heads, or -gamma * I(Z_m;Y) [inferred]."""
    beta: float = 1e-5
    """Weight of each Renyi compression term (about inert at this value; sweep it) [D]."""
    beta_schedule: Literal["constant", "linear_warmup"] = "constant"
    """Schedule of beta and vib_beta over epochs [inferred]."""
    warmup_epochs: int = 5
    """Epochs of the `linear_warmup` beta schedule [inferred]."""
    gamma: float = 1e-2
    """Weight of each -I(Z_m;Y) relevance term (relevance = mi) [inferred]."""
    per_modality_heads: bool = False
    """Add a regression head per unimodal latent, trained on the task loss (MIB C-MIB) [L]."""
    head_weight: float = 1.0
    """Weight of each per-modality head's task loss [L]."""
    vib_beta: float = 1e-3
    """Weight of each KL(q(z|x) || N(0, I)) term when ib = vib [L]."""
    alpha: float = 1.9
    """Order of the matrix-based Renyi entropy [D]."""
    rank: int | None = 10
    """Eigenvalues kept by the low-rank entropy (rank >= batch-1 is exact); None: exact [D]."""
    solver: Literal["exact", "lanczos", "randomized"] = "exact"
    """Top-k eigen-solver; at batch sizes the exact spectrum is cheapest [inferred]."""
    knn_k: int = 5
    """Neighbours of the kNN bandwidth of Z [D]."""
    sigma_z: float | None = None
    """Kernel width of Z; None: detached mean distance to the knn_k nearest neighbours [D]."""
    sigma_y: float | None = None
    """Kernel width of the label kernel (relevance = mi); None: the batch std of y [inferred]."""
    sigma_text: float = 1.0
    """Kernel width of the text input X (compression = I) [D]."""
    sigma_audio: float = 1.0
    """Kernel width of the audio input X (compression = I) [D]."""
    sigma_vision: float = 65.0
    """Kernel width of the vision input X (compression = I) [D]."""
    sigma_fused: float = 1000.0
    """Kernel width of the fused input of the multimodal bottleneck (compression = I) [D]."""
    mi_eval_samples: int = 1024
    """Validation samples used to report I(Z_m;Y) per modality (exact spectrum) [inferred]."""

    # -- fusion ----------------------------------------------------------------------------
    fusion: Literal["latent", "mbt", "concat", "late"] = "latent"
    """Attention-bottleneck fusion: DIB latents [D], MBT bottleneck tokens, or the baselines
    concat (early fusion) and late (one linear head per modality, predictions averaged)."""
    anchor: Literal["text", "mean"] = "text"
    """Stream the fusion outputs: the text stream [D], or the mean of the modality streams."""
    n_latents: int = 4
    """Latents of the DIB bottleneck fusion; 0 cuts every cross-modal path [D]."""
    fusion_iters: int = 3
    """Shared-weight iterations of the DIB bottleneck fusion [D]."""
    latent_init_std: float = 0.02
    """Standard deviation of the initial latents (and MBT bottleneck tokens) [D]."""
    gate_init: float = 0.0
    """Initial value of the latent fusion's gates; 0 [D] makes the fusion the identity on text."""
    n_bottlenecks: int = 4
    """MBT bottleneck tokens shared between modalities; 0 cuts every cross-modal path [L]."""
    mbt_layers: int = 2
    """Per-modality transformer layers of the MBT fusion [inferred]."""
    mbt_fusion_layer: int = 0
    """First MBT layer (0-based) with bottleneck tokens; mbt_layers means no fusion [inferred]."""

    # -- head and training -----------------------------------------------------------------
    dropout: float = 0.5
    """Dropout before the regression head(s) [L]."""
    loss: Literal["l1", "mse"] = "l1"
    """Task loss on the sentiment score [L]."""
    optimizer: Literal["adam", "adamw"] = "adam"
    """Optimizer [L]."""
    lr: float = 2e-5
    """Learning rate of everything but BERT [L]; features-only models want about 1e-3."""
    lr_bert: float = 1e-5
    """Learning rate of the BERT weights [L]."""
    weight_decay: float = 0.0
    """Weight decay [L]."""
    grad_clip: float | None = None
    """Clip the global gradient norm to this value; None disables clipping [inferred]."""
    batch_size: int = 48
    """Training batch size; also the sample count of the Renyi estimates [L]."""
    eval_batch_size: int = 128
    """Validation and test batch size [L]."""
    epochs: int = 50
    """Maximum training epochs [L]."""
    patience: int = 8
    """Epochs without improvement of `monitor` before early stopping (MMSA early_stop) [L]."""
    monitor: Literal[
        "valid_loss", "valid_mae", "valid_mse", "valid_corr", "valid_acc2", "valid_f1"
    ] = "valid_mse"
    """Validation metric for model selection and early stopping (MIB: lowest dev MSE) [L]."""

    @property
    def monitor_mode(self) -> Literal["min", "max"]:
        """Whether `monitor` improves downwards (``"min"``) or upwards (``"max"``)."""
        return MONITOR_MODES[self.monitor]

    def feature_dim(self, modality: str) -> int | None:
        """The configured feature size of ``modality`` (None: take it from the data)."""
        return {"text": self.text_dim, "audio": self.audio_dim, "vision": self.vision_dim}[modality]

    def sigma_x(self, modality: str) -> float:
        """The fixed input-kernel width of ``modality`` (or ``"fused"``) for compression = I."""
        return {
            "text": self.sigma_text,
            "audio": self.sigma_audio,
            "vision": self.sigma_vision,
            "fused": self.sigma_fused,
        }[modality]

    def validate(self) -> None:
        """Raise :class:`ConfigError` on values or combinations that cannot work.

        Example:
            >>> DIBConfig().validate()
            >>> DIBConfig(rank=0).validate()
            Traceback (most recent call last):
            ...
            clinfuse.core.errors.ConfigError: rank must be at least 1
              expected: an integer >= 1, or "none" for the exact entropy
              found:    0
              fix:      --set rank=10 (low-rank) or --set rank=none (exact)
        """
        for check in _CHECKS:
            check(self)


# --- validation checks: each raises ConfigError on one kind of mistake --------------------------


def _fail(msg: str, expected: object, found: object, fix: str) -> None:
    raise ConfigError(msg, expected=expected, found=found, fix=fix)


def _check_positive(c: DIBConfig) -> None:
    for name in (
        "hidden", "conv_kernel", "n_heads", "ib_hidden", "knn_k", "batch_size",
        "eval_batch_size", "epochs", "max_seq_length", "max_positions", "mi_eval_samples",
    ):  # fmt: skip
        value = getattr(c, name)
        if value < 1:
            _fail(f"{name} must be at least 1", "an integer >= 1", value, f"--set {name}=...")
    for name in ("n_layers", "n_latents", "fusion_iters", "n_bottlenecks", "mbt_layers"):
        value = getattr(c, name)
        if value < 0:
            _fail(f"{name} must not be negative", "an integer >= 0", value, f"--set {name}=...")
    for name in ("num_workers", "patience", "warmup_epochs"):
        if getattr(c, name) < 0:
            _fail(f"{name} must not be negative", ">= 0", getattr(c, name), f"--set {name}=0")
    if c.batch_size < 2:
        _fail(
            "the Renyi estimates need at least 2 samples per batch",
            "batch_size >= 2",
            c.batch_size,
            "--set batch_size=48",
        )


def _check_heads(c: DIBConfig) -> None:
    if c.hidden % c.n_heads:
        _fail(
            "hidden must be divisible by n_heads",
            f"a multiple of n_heads={c.n_heads}",
            c.hidden,
            f"--set hidden={c.n_heads * max(1, round(c.hidden / c.n_heads))} or change n_heads",
        )


def _check_rates(c: DIBConfig) -> None:
    for name in ("attn_dropout", "relu_dropout", "res_dropout", "embed_dropout", "dropout"):
        value = getattr(c, name)
        if not 0.0 <= value < 1.0:
            _fail(f"{name} must lie in [0, 1)", "0 <= p < 1", value, f"--set {name}=0.1")
    for name in ("lr", "lr_bert"):
        if getattr(c, name) <= 0:
            _fail(f"{name} must be positive", "> 0", getattr(c, name), f"--set {name}=1e-3")
    for name in ("beta", "gamma", "vib_beta", "weight_decay", "head_weight", "latent_init_std"):
        if getattr(c, name) < 0:
            _fail(f"{name} must not be negative", ">= 0", getattr(c, name), f"--set {name}=0")
    if not 0.0 < c.corrupt_train_p <= 1.0:
        _fail(
            "corrupt_train_p must lie in (0, 1]",
            "0 < p <= 1",
            c.corrupt_train_p,
            "--set corrupt_train_p=0.5",
        )
    if c.grad_clip is not None and c.grad_clip <= 0:
        _fail("grad_clip must be positive", "> 0 or none", c.grad_clip, "--set grad_clip=none")


def _check_entropy(c: DIBConfig) -> None:
    if c.alpha <= 0:
        _fail("alpha must be positive", "alpha > 0 (DIB: 1.9)", c.alpha, "--set alpha=1.9")
    if c.rank is not None and c.rank < 1:
        _fail(
            "rank must be at least 1",
            'an integer >= 1, or "none" for the exact entropy',
            c.rank,
            "--set rank=10 (low-rank) or --set rank=none (exact)",
        )
    if c.rank is None and c.solver != "exact":
        _fail(
            f"solver={c.solver!r} computes a top-k spectrum but rank is none (exact entropy)",
            "rank >= 1 with a top-k solver, or solver=exact",
            f"rank=None, solver={c.solver!r}",
            "--set rank=10 or --set solver=exact",
        )
    for name in ("sigma_text", "sigma_audio", "sigma_vision", "sigma_fused"):
        if getattr(c, name) <= 0:
            _fail(f"{name} must be positive", "> 0", getattr(c, name), f"--set {name}=1.0")
    for name in ("sigma_z", "sigma_y"):
        value = getattr(c, name)
        if value is not None and value <= 0:
            _fail(f"{name} must be positive", "> 0 or none", value, f"--set {name}=none")


def _check_modalities(c: DIBConfig) -> None:
    unknown = [m for m in c.modalities if m not in MODALITIES]
    if not c.modalities or unknown or len(set(c.modalities)) != len(c.modalities):
        _fail(
            "modalities must be distinct names among text, audio, vision",
            f"a non-empty subset of {MODALITIES}",
            c.modalities,
            "--set modalities=text,audio,vision",
        )
    if c.anchor == "text" and "text" not in c.modalities:
        _fail(
            "anchor=text needs the text modality",
            "text in modalities, or anchor=mean",
            c.modalities,
            "--set anchor=mean",
        )


def _check_text_encoder(c: DIBConfig) -> None:
    if c.text_encoder == "bert" and not c.bert_path:
        _fail(
            "text_encoder=bert needs a local BERT directory (nothing is downloaded)",
            "bert_path = a directory with config.json and the weights",
            None if c.bert_path is None else repr(c.bert_path),
            "--set bert_path=/path/to/bert-base-uncased, or --set text_encoder=features",
        )


def _check_fusion(c: DIBConfig) -> None:
    if c.fusion == "mbt" and not 0 <= c.mbt_fusion_layer <= c.mbt_layers:
        _fail(
            "mbt_fusion_layer must index one of the MBT layers",
            f"0 <= mbt_fusion_layer <= mbt_layers={c.mbt_layers}",
            c.mbt_fusion_layer,
            f"--set mbt_fusion_layer={max(0, c.mbt_layers - 1)}",
        )
    if c.fusion == "mbt" and c.n_bottlenecks > 0 and c.mbt_layers - c.mbt_fusion_layer == 1:
        _fail(
            "one MBT fusion layer exchanges nothing: streams only read what earlier layers wrote",
            "at least two fusion layers (mbt_fusion_layer <= mbt_layers - 2), or none",
            f"mbt_layers={c.mbt_layers}, mbt_fusion_layer={c.mbt_fusion_layer}",
            f"--set mbt_fusion_layer={max(0, c.mbt_layers - 2)}",
        )
    if c.fusion == "mbt" and c.mbt_layers < 1:
        _fail("fusion=mbt needs layers", "mbt_layers >= 1", c.mbt_layers, "--set mbt_layers=2")


def _check_objective(c: DIBConfig) -> None:
    if c.relevance == "mi" and c.ib != "renyi":
        _fail(
            "relevance=mi is the Renyi I(Z_m;Y) term of the Renyi bottleneck",
            "ib=renyi with relevance=mi",
            f"ib={c.ib!r}",
            "--set ib=renyi, or --set relevance=task",
        )
    if c.relevance == "mi" and c.per_modality_heads:
        _fail(
            "per-modality heads are trained only by relevance=task; with mi they get no gradient",
            "per_modality_heads=false with relevance=mi",
            "per_modality_heads=true",
            "--set per_modality_heads=false, or --set relevance=task",
        )


_CHECKS = (
    _check_positive,
    _check_heads,
    _check_rates,
    _check_entropy,
    _check_modalities,
    _check_text_encoder,
    _check_fusion,
    _check_objective,
)


def field_names() -> tuple[str, ...]:
    """Names of the :class:`DIBConfig` fields, in declaration order."""
    return tuple(f.name for f in dataclasses.fields(DIBConfig))
