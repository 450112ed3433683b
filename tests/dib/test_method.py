"""DIB learner wiring: training-time corruption, evaluation under corruption, reload."""

from __future__ import annotations

import numpy as np
import torch

from clinfuse.api import make_config
from clinfuse.methods.dib.method import (
    DIB,
    _EpochCorrupted,
    corrupt_split,
    corrupted_train_split,
    fit_ridge,
)
from clinfuse.methods.dib.synthetic import make_synthetic_msa


def _small():
    return make_synthetic_msa("mosi", n_train=96, n_valid=32, n_test=48, seed=3)


def test_corrupt_train_feeds_corrupted_batches() -> None:
    cfg = make_config(
        "dib",
        overrides=["corrupt_train=drop:audio,vision", "corrupt_train_p=1", "batch_size=16"],
    )
    learner = DIB(cfg)
    data = _small()
    batches = _EpochCorrupted(learner, data, None, torch.Generator().manual_seed(0))
    batch = next(iter(batches))
    assert float(batch["audio"].abs().sum()) == 0.0 and float(batch["vision"].abs().sum()) == 0.0
    assert float(batch["text"].abs().sum()) > 0.0
    assert data.splits["train"].audio.any()  # the data set itself is untouched


def test_corrupt_train_p_corrupts_a_fresh_share_each_epoch() -> None:
    cfg = make_config(
        "dib", overrides=["corrupt_train=drop:audio", "corrupt_train_p=0.5", "seed=2"]
    )
    data = _small()
    clean = data.splits["train"]
    dropped = []
    for epoch in (1, 2):
        split = corrupted_train_split(data, cfg, epoch)
        gone = ~split.audio.any(axis=(1, 2))
        assert np.array_equal(split.audio[~gone], clean.audio[~gone])
        assert np.array_equal(split.text, clean.text)
        dropped.append(gone)
    for gone in dropped:
        assert 0.3 < gone.mean() < 0.7
    assert not np.array_equal(dropped[0], dropped[1])
    again = corrupted_train_split(data, cfg, 1).audio  # seeded: the same epoch, the same share
    np.testing.assert_array_equal(again, clean.audio * ~dropped[0][:, None, None])
    no_noise = make_config("dib", overrides=["corrupt_train=none"])
    assert corrupted_train_split(data, no_noise, 1) is clean


def test_corruption_is_seeded_and_reaches_only_named_modalities() -> None:
    data = _small()
    a = corrupt_split(data, "test", "gaussian:audio:1.0", 0, ("text", "audio", "vision"))
    b = corrupt_split(data, "test", "gaussian:audio:1.0", 0, ("text", "audio", "vision"))
    c = corrupt_split(data, "test", "gaussian:audio:1.0", 1, ("text", "audio", "vision"))
    assert np.array_equal(a.audio, b.audio) and not np.array_equal(a.audio, c.audio)
    assert np.array_equal(a.text, data.splits["test"].text)
    assert np.array_equal(a.vision, data.splits["test"].vision)


def test_ridge_baseline_recovers_the_linear_signal() -> None:
    data = make_synthetic_msa("mosi", seed=0)
    pred = fit_ridge(data.splits["train"])(data.splits["test"])
    y = data.splits["test"].labels
    keep = y != 0
    assert np.mean((pred[keep] > 0) == (y[keep] > 0)) > 0.9
