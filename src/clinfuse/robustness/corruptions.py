r"""Seeded, composable test-time corruptions of multimodal feature batches.

The available text of the DIB paper (arXiv 2511.01444) does not give its noise protocol, so
the three kinds here are our choice [inferred]: Gaussian feature noise scaled by the training
std, random missing frames as in MMSA's ``generate_m`` (``data_loader.py`` of
github.com/thuiar/MMSA), and dropping a whole modality.

A batch is a plain ``dict[str, np.ndarray]`` of modality arrays shaped ``(N, T, d)`` (keys such
as ``"text"``, ``"audio"``, ``"vision"``), with optional lengths ``dict[str, np.ndarray]`` shaped
``(N,)``: the first ``length`` frames of a sample are valid, the rest is padding. A modality
absent from ``lengths`` (or ``lengths=None``) has all its frames valid, as in MMSA's aligned data.

Every corruption is called as ``corruption(features, lengths, rng) -> features``:

- it is deterministic given the state of ``rng`` (a ``numpy.random.Generator``), and draws for
  the modalities in the order they are listed;
- it never writes into its input: corrupted modalities are new arrays; the modalities it does
  not touch are passed through **by reference** (not copied), so a corruption costs memory only
  for what it changes;
- padded frames beyond ``lengths`` are left untouched by noise and missing-frame masks.

CLI specs (:func:`parse_corruption`)::

    gaussian:audio,vision:0.5        x + N(0, (0.5 * std_train)^2) on audio and vision
    missing:audio,vision:0.2         each valid frame zeroed with probability 0.2
    drop:vision                      vision set to zeros
    gaussian:audio:0.5+drop:vision   applied left to right
"""

from __future__ import annotations

import dataclasses
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Self

import numpy as np

from clinfuse.core.errors import ClinfuseError, ConfigError, DataError, suggest
from clinfuse.core.registry import Registry

__all__ = [
    "CORRUPTIONS",
    "Compose",
    "Corruption",
    "Features",
    "GaussianNoise",
    "Lengths",
    "MODALITIES",
    "ModalityCorruption",
    "ModalityDrop",
    "RandomMissing",
    "SPEC_GRAMMAR",
    "UNK_TOKEN_ID",
    "make_corruption",
    "mask_token_ids",
    "parse_corruption",
    "valid_frames",
]

Features = dict[str, np.ndarray]
"""Modality name -> ``(N, T, d)`` array."""
Lengths = Mapping[str, np.ndarray]
"""Modality name -> ``(N,)`` number of valid (leading) frames."""

MODALITIES: tuple[str, ...] = ("text", "audio", "vision")
"""Default modality names accepted by :func:`parse_corruption`."""
UNK_TOKEN_ID = 100
"""``[UNK]`` in the bert-base vocabularies; MMSA's ``generate_m`` writes it for missing tokens."""
SPEC_GRAMMAR = (
    "KIND:MODALITY[,MODALITY...][:SEVERITY], several joined by '+', "
    "e.g. 'gaussian:audio,vision:0.5', 'missing:audio:0.2', 'drop:vision', "
    "'gaussian:audio:0.5+drop:vision'"
)


# ---------------------------------------------------------------------------------------------
# helpers


def _close(name: str, known: Sequence[str]) -> str:
    return suggest(name, known, f"use one of: {', '.join(known)}")


def _as_modalities(modalities: str | Sequence[str], who: str) -> tuple[str, ...]:
    """A non-empty tuple of distinct names; a string is read as a comma-separated list."""
    if isinstance(modalities, str):
        modalities = modalities.split(",")
    mods = tuple(str(m).strip() for m in modalities)
    if not mods or any(not m for m in mods) or len(set(mods)) != len(mods):
        raise ConfigError(
            f"{who}: bad modality list",
            expected="one or more distinct, non-empty modality names",
            found=repr(modalities),
            fix="e.g. ('audio', 'vision')",
        )
    return mods


def _modality(features: Mapping[str, np.ndarray], name: str, who: str) -> np.ndarray:
    """``features[name]`` as an ``(N, T, d)`` array; missing keys and bad shapes raise DataError."""
    if name not in features:
        raise DataError(
            f"{who}: modality {name!r} is not in the batch",
            expected=f"a key {name!r}",
            found=f"keys {sorted(features)}",
            fix=_close(name, sorted(features)),
        )
    x = np.asarray(features[name])
    if x.ndim != 3:
        raise DataError(
            f"{who}: modality {name!r} must be a (N, T, d) frame sequence",
            expected="a 3-D array",
            found=f"shape {x.shape}",
            fix="add a time axis of length 1 for utterance-level features: x[:, None, :]",
        )
    return x


def _float_dtype(x: np.ndarray) -> np.dtype:
    return x.dtype if np.issubdtype(x.dtype, np.floating) else np.dtype(np.float64)


def valid_frames(x: np.ndarray, length: np.ndarray | Sequence[int] | None) -> np.ndarray:
    r"""Boolean mask of the valid frames of a padded batch: ``mask[i, t] = t < length[i]``.

    Shape:
        x: ``(N, T, ...)``; length: ``(N,)`` integers in ``[0, T]`` or None (all valid).
        Output: ``(N, T)`` bool.

    Example:
        >>> valid_frames(np.zeros((2, 3, 1)), [1, 3]).astype(int).tolist()
        [[1, 0, 0], [1, 1, 1]]
    """
    n, t = x.shape[:2]
    if length is None:
        return np.ones((n, t), dtype=bool)
    ln = np.asarray(length)
    ok = ln.shape == (n,) and np.issubdtype(ln.dtype, np.number)
    if ok:
        ok = bool(np.all(ln == np.round(ln)) and np.all((ln >= 0) & (ln <= t)))
    if not ok:
        raise DataError(
            "bad lengths for a padded batch",
            expected=f"shape ({n},) integers in [0, {t}]",
            found=f"shape {ln.shape}, dtype {ln.dtype}, range "
            f"[{np.min(ln) if ln.size else '-'}, {np.max(ln) if ln.size else '-'}]",
            fix="lengths count the leading valid frames of each sample, per modality",
        )
    return np.arange(t)[None, :] < ln.astype(np.int64)[:, None]


def _length(lengths: Lengths | None, name: str) -> np.ndarray | None:
    return None if lengths is None else lengths.get(name)


def _masked_std(x: np.ndarray, mask: np.ndarray, who: str, chunk: int = 256) -> np.ndarray:
    """Per-feature population std over the frames where ``mask``; two passes, float64, chunked."""
    count = int(mask.sum())
    if count < 2:
        raise DataError(
            f"{who}: too few valid frames to estimate a std",
            expected="at least 2 valid frames",
            found=f"{count}",
            fix="fit on the full training split",
        )
    total = np.zeros(x.shape[-1])
    for i in range(0, x.shape[0], chunk):
        v = x[i : i + chunk][mask[i : i + chunk]].astype(np.float64)
        if not np.isfinite(v).all():
            raise DataError(
                f"{who}: non-finite values in the valid training frames",
                expected="finite features",
                found=f"{int((~np.isfinite(v)).sum())} non-finite value(s) in samples {i}..",
                fix="replace -inf/NaN first (MMSA's loader sets audio -inf to 0)",
            )
        total += v.sum(axis=0)
    mean = total / count
    sq = np.zeros_like(mean)
    for i in range(0, x.shape[0], chunk):
        v = x[i : i + chunk][mask[i : i + chunk]].astype(np.float64) - mean
        sq += np.einsum("kd,kd->d", v, v)
    return np.sqrt(sq / count)


def _check_fraction(value: float, name: str, who: str) -> float:
    v = float(value)
    if not (0.0 <= v <= 1.0):
        raise ConfigError(
            f"{who}: {name} must be a probability",
            expected=f"{name} in [0, 1]",
            found=repr(value),
            fix=f"e.g. {name}=0.2",
        )
    return v


# ---------------------------------------------------------------------------------------------
# corruptions


class Corruption(ABC):
    """A seeded test-time corruption: ``corruption(features, lengths, rng) -> features``."""

    def fit(self, features: Mapping[str, np.ndarray], lengths: Lengths | None = None) -> Self:
        """Estimate what the corruption needs from the training split; a no-op by default."""
        return self

    @property
    def is_fitted(self) -> bool:
        """Whether :meth:`__call__` can run (only :class:`GaussianNoise` needs :meth:`fit`)."""
        return True

    @property
    @abstractmethod
    def spec(self) -> str:
        """The CLI spec that :func:`parse_corruption` turns back into an equal corruption."""

    @abstractmethod
    def __call__(
        self,
        features: Mapping[str, np.ndarray],
        lengths: Lengths | None,
        rng: np.random.Generator,
    ) -> Features:
        """A new dict with the corrupted modalities replaced; the input is never modified."""


class ModalityCorruption(Corruption):
    """A corruption of a set of named modalities with at most one severity parameter."""

    kind: ClassVar[str]
    """Registry name, the first field of a spec."""
    severity_name: ClassVar[str | None]
    """Name of the severity field (``rho``, ``rate``), None when the kind has no severity."""
    modalities: tuple[str, ...]

    @classmethod
    @abstractmethod
    def from_severity(cls, modalities: Sequence[str], severity: float | None) -> Self:
        """Build from a modality list and the spec's number (None for kinds without one)."""

    def with_severity(self, severity: float) -> Self:
        """The same corruption (fitted statistics included) at another severity."""
        if self.severity_name is None:
            raise ConfigError(
                f"{self.kind!r} has no severity to sweep",
                expected="a kind with a severity: "
                + ", ".join(n for n, c in CORRUPTIONS.items() if c.severity_name),
                found=self.kind,
                fix=f"evaluate parse_corruption({self.spec!r}) once instead of sweeping it",
            )
        return dataclasses.replace(self, **{self.severity_name: float(severity)})

    @property
    def spec(self) -> str:
        head = f"{self.kind}:{','.join(self.modalities)}"
        if self.severity_name is None:
            return head
        return f"{head}:{float(getattr(self, self.severity_name))!r}"


CORRUPTIONS: Registry[type[ModalityCorruption]] = Registry("corruption")
"""Spec kind -> corruption class (``gaussian``, ``missing``, ``drop``)."""


@CORRUPTIONS.register("gaussian")
@dataclass
class GaussianNoise(ModalityCorruption):
    r"""Additive feature noise scaled by the training std: :math:`\tilde x = x + \rho\,\sigma
    \odot \varepsilon`, :math:`\varepsilon \sim \mathcal N(0, I)`, on valid frames only.

    :math:`\sigma \in \mathbb R^d` is the per-feature (population) std of the modality over the
    **valid frames of the training split**, estimated by :meth:`fit` (or passed as ``std``). The
    noise is drawn in the input's float dtype; padded frames are returned unchanged.

    Shape:
        features[m]: ``(N, T, d)`` for each ``m`` in ``modalities``; std[m]: ``(d,)``.

    Example:
        >>> train = {"audio": np.array([[[0.0], [2.0]], [[4.0], [6.0]]])}
        >>> g = GaussianNoise(("audio",), rho=0.5).fit(train)
        >>> g.std["audio"].round(3).tolist()   # std of 0, 2, 4, 6
        [2.236]
        >>> x = {"audio": np.zeros((1, 3, 1)), "text": np.ones((1, 3, 2))}
        >>> y = g(x, {"audio": np.array([2])}, np.random.default_rng(0))
        >>> float(y["audio"][0, 2, 0]), y["text"] is x["text"]  # padding untouched, text as is
        (0.0, True)
    """

    modalities: tuple[str, ...]
    rho: float
    """Noise std as a multiple of the training std (0 leaves the features unchanged)."""
    std: dict[str, np.ndarray] | None = field(default=None, repr=False, compare=False)
    """Per-modality ``(d,)`` training std; set by :meth:`fit`."""

    kind: ClassVar[str] = "gaussian"
    severity_name: ClassVar[str | None] = "rho"

    def __post_init__(self) -> None:
        self.modalities = _as_modalities(self.modalities, "GaussianNoise")
        rho = float(self.rho)
        if not (math.isfinite(rho) and rho >= 0.0):
            raise ConfigError(
                "GaussianNoise: rho must be a finite, non-negative multiple of the std",
                expected="rho >= 0",
                found=repr(self.rho),
                fix="e.g. rho=0.5",
            )
        self.rho = rho
        if self.std is not None:
            missing = [m for m in self.modalities if m not in self.std]
            if missing:
                raise ConfigError(
                    "GaussianNoise: std given without every modality",
                    expected=f"std for {', '.join(self.modalities)}",
                    found=f"std for {', '.join(sorted(self.std)) or 'nothing'}",
                    fix="pass std=None and call fit(train_features, train_lengths)",
                )
            self.std = {m: np.asarray(self.std[m], dtype=np.float64) for m in self.modalities}

    @classmethod
    def from_severity(cls, modalities: Sequence[str], severity: float | None) -> GaussianNoise:
        return cls(tuple(modalities), rho=float(severity if severity is not None else 0.0))

    def fit(
        self, features: Mapping[str, np.ndarray], lengths: Lengths | None = None
    ) -> GaussianNoise:
        """Store the per-feature std of each modality over the valid training frames."""
        std = {}
        for m in self.modalities:
            x = _modality(features, m, "GaussianNoise.fit")
            std[m] = _masked_std(x, valid_frames(x, _length(lengths, m)), f"GaussianNoise.fit[{m}]")
        self.std = std
        return self

    @property
    def is_fitted(self) -> bool:
        return self.std is not None

    def __call__(
        self,
        features: Mapping[str, np.ndarray],
        lengths: Lengths | None,
        rng: np.random.Generator,
    ) -> Features:
        if self.std is None:
            raise ClinfuseError(
                "GaussianNoise is not fitted: the noise scale is rho times the training std",
                expected="fit(train_features, train_lengths) before calling it",
                found="std=None",
                fix="corruption.fit(train_features, train_lengths), or pass std={modality: (d,)}",
            )
        out = dict(features)
        for m in self.modalities:
            x = _modality(features, m, "GaussianNoise")
            std = self.std[m]
            if std.shape != (x.shape[-1],):
                raise DataError(
                    f"GaussianNoise: the fitted std of {m!r} does not match the features",
                    expected=f"{x.shape[-1]} features",
                    found=f"std of shape {std.shape}",
                    fix="fit on the training split of the same feature set",
                )
            dtype = _float_dtype(x)
            noise = rng.standard_normal(size=x.shape, dtype=dtype)
            noise *= (self.rho * std).astype(dtype)
            mask = valid_frames(x, _length(lengths, m))[..., None]
            out[m] = np.where(mask, x + noise, x).astype(dtype, copy=False)
        return out


@CORRUPTIONS.register("missing")
@dataclass
class RandomMissing(ModalityCorruption):
    r"""Random missing frames, as MMSA's ``generate_m``: each valid frame is zeroed with
    probability ``rate`` (kept where :math:`u > \mathrm{rate}`, :math:`u \sim U[0, 1)`),
    independently per sample, frame and modality. Padded frames are untouched.

    Text given as precomputed features (``(N, L, 768)``) gets the same treatment: the frame is
    zeroed. MMSA instead corrupts BERT token ids, replacing missing tokens by ``[UNK]`` (id 100)
    and keeping ``[CLS]`` and ``[SEP]``; use :func:`mask_token_ids` on ``text_bert`` for that.
    Masks follow MMSA's distribution but not its bits: MMSA reseeds numpy's legacy global RNG
    (``np.random.seed(1111)``), we draw from the ``Generator`` passed in.

    Shape:
        features[m]: ``(N, T, d)``.

    Example:
        >>> x = {"vision": np.ones((1000, 4, 2))}
        >>> y = RandomMissing(("vision",), rate=0.25)(x, None, np.random.default_rng(0))
        >>> round(float((y["vision"][..., 0] == 0).mean()), 2)
        0.25
    """

    modalities: tuple[str, ...]
    rate: float
    """Probability that a valid frame goes missing (MMSA default 0.2)."""

    kind: ClassVar[str] = "missing"
    severity_name: ClassVar[str | None] = "rate"

    def __post_init__(self) -> None:
        self.modalities = _as_modalities(self.modalities, "RandomMissing")
        self.rate = _check_fraction(self.rate, "rate", "RandomMissing")

    @classmethod
    def from_severity(cls, modalities: Sequence[str], severity: float | None) -> RandomMissing:
        return cls(tuple(modalities), rate=float(severity if severity is not None else 0.0))

    def __call__(
        self,
        features: Mapping[str, np.ndarray],
        lengths: Lengths | None,
        rng: np.random.Generator,
    ) -> Features:
        out = dict(features)
        for m in self.modalities:
            x = _modality(features, m, "RandomMissing")
            missing = valid_frames(x, _length(lengths, m)) & ~(rng.random(x.shape[:2]) > self.rate)
            out[m] = np.where(missing[..., None], np.zeros((), dtype=x.dtype), x)
        return out


@CORRUPTIONS.register("drop")
@dataclass
class ModalityDrop(ModalityCorruption):
    """Drop whole modalities: every named modality becomes zeros (all frames, padding included).

    Draws nothing from ``rng``. Any array shape is accepted.

    Example:
        >>> x = {"audio": np.ones((2, 3, 4)), "vision": np.ones((2, 3, 5))}
        >>> y = ModalityDrop(("vision",))(x, None, np.random.default_rng(0))
        >>> float(y["vision"].sum()), float(y["audio"].sum())
        (0.0, 24.0)
    """

    modalities: tuple[str, ...]

    kind: ClassVar[str] = "drop"
    severity_name: ClassVar[str | None] = None

    def __post_init__(self) -> None:
        self.modalities = _as_modalities(self.modalities, "ModalityDrop")

    @classmethod
    def from_severity(cls, modalities: Sequence[str], severity: float | None) -> ModalityDrop:
        return cls(tuple(modalities))

    def __call__(
        self,
        features: Mapping[str, np.ndarray],
        lengths: Lengths | None,
        rng: np.random.Generator,
    ) -> Features:
        out = dict(features)
        for m in self.modalities:
            if m not in features:
                _modality(features, m, "ModalityDrop")  # raises with close matches
            out[m] = np.zeros_like(np.asarray(features[m]))
        return out


@dataclass
class Compose(Corruption):
    """Apply corruptions left to right, all drawing from the same ``rng``.

    Example:
        >>> c = parse_corruption("missing:audio:0.5+drop:vision")
        >>> type(c).__name__, c.spec
        ('Compose', 'missing:audio:0.5+drop:vision')
    """

    corruptions: Sequence[Corruption]

    def __post_init__(self) -> None:
        items = tuple(self.corruptions)
        if not items or not all(isinstance(c, Corruption) for c in items):
            raise ConfigError(
                "Compose needs a non-empty list of corruptions",
                expected="[GaussianNoise(...), ModalityDrop(...), ...]",
                found=repr(self.corruptions),
            )
        self.corruptions = items

    def fit(self, features: Mapping[str, np.ndarray], lengths: Lengths | None = None) -> Compose:
        for c in self.corruptions:
            c.fit(features, lengths)
        return self

    @property
    def is_fitted(self) -> bool:
        return all(c.is_fitted for c in self.corruptions)

    @property
    def spec(self) -> str:
        return "+".join(c.spec for c in self.corruptions)

    def __call__(
        self,
        features: Mapping[str, np.ndarray],
        lengths: Lengths | None,
        rng: np.random.Generator,
    ) -> Features:
        out = dict(features)
        for c in self.corruptions:
            out = c(out, lengths, rng)
        return out


# ---------------------------------------------------------------------------------------------
# token ids


def mask_token_ids(
    text_bert: np.ndarray,
    rate: float,
    rng: np.random.Generator,
    *,
    unk_id: int = UNK_TOKEN_ID,
) -> np.ndarray:
    r"""MMSA ``generate_m`` for BERT inputs: replace each real token by ``[UNK]`` with
    probability ``rate``, keeping ``[CLS]`` (position 0) and ``[SEP]`` (position length-1).

    ``text_bert`` is MMSA's ``(N, 3, L)`` stack of input ids, attention mask and segment ids,
    right-padded. Only the ids change (mask and segments are kept, so BERT still attends to the
    ``[UNK]`` positions, as in MMSA); padding is untouched; the dtype is kept (MMSA stores the
    stack as float32).

    Shape:
        text_bert: ``(N, 3, L)``. Output: ``(N, 3, L)``, a new array.

    Example:
        >>> tb = np.array([[[101, 7, 8, 9, 102, 0], [1, 1, 1, 1, 1, 0], [0] * 6]])
        >>> mask_token_ids(tb, 1.0, np.random.default_rng(0))[0, 0].tolist()
        [101, 100, 100, 100, 102, 0]
    """
    a = np.asarray(text_bert)
    if a.ndim != 3 or a.shape[1] != 3:
        raise DataError(
            "mask_token_ids expects MMSA's text_bert stack",
            expected="shape (N, 3, L): input ids, attention mask, segment ids",
            found=f"shape {a.shape}",
            fix="pass data[split]['text_bert']",
        )
    rate = _check_fraction(rate, "rate", "mask_token_ids")
    real = a[:, 1, :] != 0
    n_real = real.sum(axis=1)
    pos = np.arange(a.shape[2])
    if not np.array_equal(real, pos[None, :] < n_real[:, None]):
        raise DataError(
            "mask_token_ids: the attention mask is not right-padded",
            expected="ones for the real tokens first, then zeros",
            found=f"{int((real != (pos[None, :] < n_real[:, None])).any(axis=1).sum())} bad rows",
            fix="check that text_bert[:, 1] is the attention mask",
        )
    keep = rng.random(real.shape) > rate
    keep |= (pos[None, :] == 0) | (pos[None, :] == n_real[:, None] - 1)
    out = a.copy()
    out[:, 0, :] = np.where(real & ~keep, unk_id, a[:, 0, :])
    return out


# ---------------------------------------------------------------------------------------------
# specs


def make_corruption(
    kind: str,
    modalities: str | Sequence[str],
    severity: float | None = None,
    *,
    known_modalities: Sequence[str] | None = MODALITIES,
) -> ModalityCorruption:
    """Build a registered corruption; unknown kinds and modalities raise ConfigError.

    ``known_modalities=None`` skips the modality-name check.

    Example:
        >>> make_corruption("missing", "audio,vision", 0.2)
        RandomMissing(modalities=('audio', 'vision'), rate=0.2)
    """
    if kind not in CORRUPTIONS:
        raise ConfigError(
            f"unknown corruption kind {kind!r}",
            expected=f"one of: {', '.join(CORRUPTIONS.names())}",
            found=repr(kind),
            fix=_close(kind, CORRUPTIONS.names()),
        )
    cls = CORRUPTIONS.get(kind)
    mods = _as_modalities(modalities, kind)
    if known_modalities is not None:
        for m in mods:
            if m not in known_modalities:
                raise ConfigError(
                    f"unknown modality {m!r} in a {kind!r} corruption",
                    expected=f"one of: {', '.join(known_modalities)}",
                    found=repr(m),
                    fix=_close(m, list(known_modalities)),
                )
    return cls.from_severity(mods, severity)


_SPLIT = re.compile(r"\+(?![\d.])")  # joins specs; a '+' before a digit is an exponent (1e+3)


def _parse_item(item: str, spec: str, known: Sequence[str]) -> ModalityCorruption:
    fields = [f.strip() for f in item.split(":")]
    kind = fields[0]
    if not kind:
        raise ConfigError(
            f"empty corruption in spec {spec!r}", expected=SPEC_GRAMMAR, found=repr(item)
        )
    if kind not in CORRUPTIONS:
        raise ConfigError(
            f"unknown corruption kind {kind!r} in spec {spec!r}",
            expected=f"one of: {', '.join(CORRUPTIONS.names())}; grammar: {SPEC_GRAMMAR}",
            found=repr(kind),
            fix=_close(kind, CORRUPTIONS.names()),
        )
    sev_name = CORRUPTIONS.get(kind).severity_name
    form = f"{kind}:MODALITY[,MODALITY...]" + (f":{sev_name.upper()}" if sev_name else "")
    if len(fields) != (3 if sev_name else 2) or not fields[1]:
        raise ConfigError(
            f"bad {kind!r} corruption in spec {spec!r}",
            expected=form,
            found=repr(item),
            fix=f"write it as {form}" + ("" if sev_name else f" ({kind!r} takes no number)"),
        )
    severity = None
    if sev_name:
        try:
            severity = float(fields[2])
        except ValueError:
            severity = math.nan
        if not math.isfinite(severity):
            raise ConfigError(
                f"bad {sev_name} in spec {spec!r}",
                expected=f"a finite number, as in {form}",
                found=repr(fields[2]),
                fix=f"e.g. {kind}:{fields[1]}:0.5",
            )
    return make_corruption(kind, fields[1], severity, known_modalities=known)


def parse_corruption(spec: str, modalities: Sequence[str] = MODALITIES) -> Corruption:
    """Parse a CLI corruption spec; several specs joined by ``+`` give a :class:`Compose`.

    Grammar: ``KIND:MODALITY[,MODALITY...][:SEVERITY]`` with KIND one of ``gaussian`` (severity
    = rho), ``missing`` (severity = rate) and ``drop`` (no severity). ``modalities`` lists the
    valid modality names. Errors raise :class:`ConfigError` with the grammar, what was found and
    close matches. ``parse_corruption(c.spec)`` rebuilds ``c`` (without fitted statistics).

    Example:
        >>> parse_corruption("gaussian:audio,vision:0.5")
        GaussianNoise(modalities=('audio', 'vision'), rho=0.5)
        >>> parse_corruption("drop:vison")
        Traceback (most recent call last):
        ...
        clinfuse.core.errors.ConfigError: unknown modality 'vison' in a 'drop' corruption
          expected: one of: text, audio, vision
          found:    'vison'
          fix:      did you mean: vision?
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(
            "empty corruption spec", expected=SPEC_GRAMMAR, found=repr(spec), fix="see expected"
        )
    known = tuple(modalities)
    items = [_parse_item(part, spec, known) for part in _SPLIT.split(spec.strip())]
    return items[0] if len(items) == 1 else Compose(items)
