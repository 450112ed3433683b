"""DIB data layer: MMSA / MAG-BERT loaders, schema errors, synthetic planted signal, Dataset."""

from __future__ import annotations

import logging
import math
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from clinfuse.core.errors import DataError, UnknownNameError
from clinfuse.core.safe_pickle import safe_load
from clinfuse.methods.dib.data import (
    KNOWN_SHA256,
    MSADataset,
    load_magbert_pickle,
    load_mmsa_pickle,
    load_msa,
    save_mmsa_pickle,
    sha256_file,
)
from clinfuse.methods.dib.synthetic import (
    SYNTHETIC_PRESETS,
    make_synthetic_msa,
    synthetic_mosi,
    synthetic_sims,
    write_synthetic,
)

MODS = ("text", "audio", "vision")
SMALL = {"n_train": 40, "n_valid": 12, "n_test": 16}


@pytest.fixture
def small():
    return make_synthetic_msa(**SMALL, seed=3)


@pytest.fixture
def mmsa_file(tmp_path, small) -> Path:
    return save_mmsa_pickle(small, tmp_path / "unaligned_50.pkl")


def _raw(path: Path) -> dict:
    with path.open("rb") as fh:
        return pickle.load(fh)  # our own test file: plain pickle is fine here


def _dump(obj, path: Path) -> Path:
    path.write_bytes(pickle.dumps(obj, protocol=4))
    return path


def _pooled(split, modality: str) -> np.ndarray:
    x = split.features()[modality].astype(np.float64)
    lengths = split.lengths()[modality]
    valid = np.arange(x.shape[1])[None, :, None] < lengths[:, None, None]
    return (x * valid).sum(1) / lengths[:, None]


def _non0_acc2(train, test, modality: str) -> float:
    """Least squares on mean-pooled features of one modality, Non0 Acc-2 on test."""
    x = np.c_[_pooled(train, modality), np.ones(train.n)]
    coef, *_ = np.linalg.lstsq(x, train.labels.astype(np.float64), rcond=None)
    pred = np.c_[_pooled(test, modality), np.ones(test.n)] @ coef
    nz = test.labels != 0
    return float(((pred[nz] > 0) == (test.labels[nz] > 0)).mean())


# --------------------------------------------------------------------------------------------
# MMSA round trip
# --------------------------------------------------------------------------------------------
def test_mmsa_round_trip_every_key(small, mmsa_file):
    raw = _raw(mmsa_file)
    assert sorted(raw) == ["test", "train", "valid"]
    expected_keys = {
        "raw_text",
        "audio",
        "vision",
        "id",
        "text",
        "annotations",
        "classification_labels",
        "regression_labels",
        "audio_lengths",
        "vision_lengths",
    }
    for split in ("train", "valid", "test"):
        assert set(raw[split]) == expected_keys
        assert raw[split]["raw_text"].dtype == object and raw[split]["id"].dtype == object

    data = load_msa(mmsa_file)
    assert data.dataset_kind == "mosi" and data.source == str(mmsa_file)
    assert data.meta["layout"] == "mmsa" and data.meta["aligned"] is False
    assert data.dims() == {"text": 64, "audio": 5, "vision": 20}
    assert data.seq_lens() == {"text": 20, "audio": 20, "vision": 20}
    for name, want in small.splits.items():
        got = data.splits[name]
        assert got.n == want.n == {"train": 40, "valid": 12, "test": 16}[name]
        for m in MODS:
            np.testing.assert_array_equal(got.features()[m], want.features()[m])
            np.testing.assert_array_equal(got.lengths()[m], want.lengths()[m])
            assert got.features()[m].dtype == np.float32 and got.lengths()[m].dtype == np.int64
        np.testing.assert_array_equal(got.labels, want.labels)
        assert list(got.ids) == list(want.ids) and list(got.raw_text) == list(want.raw_text)
        assert got.text_bert is None and got.modality_labels == {}
        assert set(got.extra) == {"annotations", "classification_labels"}
        # derived annotations follow the sign of the label
        signs = np.sign(want.labels).astype(int) + 1
        assert list(got.extra["annotations"]) == [
            ["Negative", "Neutral", "Positive"][s] for s in signs
        ]


def test_aligned_file_has_no_lengths_and_uses_full_length(tmp_path, small):
    path = save_mmsa_pickle(small, tmp_path / "aligned_50.pkl", aligned=True)
    assert "audio_lengths" not in _raw(path)["train"]
    data = load_mmsa_pickle(path)
    assert data.meta["aligned"] is True
    assert (data.train.audio_lengths == 20).all() and (data.train.vision_lengths == 20).all()
    # text lengths come from the non-zero frames, which the generator left-aligned
    np.testing.assert_array_equal(data.train.text_lengths, small.train.text_lengths)


def test_text_lengths_from_text_bert_mask(tmp_path, small):
    raw = _raw(save_mmsa_pickle(small, tmp_path / "a.pkl"))
    rng = np.random.default_rng(0)
    for split in raw.values():
        n, length = split["text"].shape[:2]
        valid = rng.integers(2, length + 1, n)
        mask = (np.arange(length)[None, :] < valid[:, None]).astype(np.int64)
        ids = rng.integers(1000, 3000, (n, length)) * mask
        split["text_bert"] = np.stack([ids, mask, np.zeros_like(mask)], axis=1)
    path = _dump(raw, tmp_path / "with_bert.pkl")
    data = load_msa(path, use_bert_ids=True)
    for name, split in data.splits.items():
        np.testing.assert_array_equal(split.text_lengths, raw[name]["text_bert"][:, 1].sum(1))
        assert split.text_bert.shape == (split.n, 3, 20) and split.text_bert.dtype == np.int64
    batch = next(iter(DataLoader(MSADataset(data.train), batch_size=8)))
    assert batch["text_bert"].shape == (8, 3, 20) and batch["text_bert"].dtype == torch.int64


def test_use_bert_ids_requires_text_bert(mmsa_file):
    with pytest.raises(DataError, match="key 'text_bert' is missing from split 'train'") as err:
        load_msa(mmsa_file, use_bert_ids=True)
    assert "use_bert_ids=False" in str(err.value)


def test_audio_minus_inf_and_nan_replaced_and_counted(tmp_path, mmsa_file, caplog):
    raw = _raw(mmsa_file)
    raw["train"]["audio"][0, 0, :3] = -np.inf
    raw["train"]["audio"][1, 2, 0] = np.nan
    raw["test"]["audio"][0, 1, 1] = -np.inf
    path = _dump(raw, tmp_path / "inf.pkl")
    with caplog.at_level(logging.WARNING, logger="clinfuse.methods.dib.data"):
        data = load_msa(path)
    assert np.isfinite(data.train.audio).all() and np.isfinite(data.test.audio).all()
    assert (data.train.audio[0, 0, :3] == 0).all() and data.train.audio[1, 2, 0] == 0
    assert data.test.audio[0, 1, 1] == 0
    msgs = [r.getMessage() for r in caplog.records]
    assert any("replaced 4 non-finite audio" in m and "'train'" in m for m in msgs), msgs
    assert any("replaced 1 non-finite audio" in m and "'test'" in m for m in msgs), msgs


def test_sims_modality_labels_round_trip_and_kind_inferred(tmp_path):
    sims = synthetic_sims(n_train=30, n_valid=10, n_test=10, seed=1)
    path = save_mmsa_pickle(sims, tmp_path / "features.pkl")  # no data set name in the path
    raw = _raw(path)
    assert {"regression_labels_T", "regression_labels_A", "regression_labels_V"} <= set(
        raw["train"]
    )
    data = load_msa(path)
    assert data.dataset_kind == "sims"
    assert data.dims() == {"text": 64, "audio": 33, "vision": 40}
    for m in MODS:
        np.testing.assert_array_equal(data.valid.modality_labels[m], sims.valid.modality_labels[m])


@pytest.mark.parametrize(
    "filename, kind", [("mosei/aligned_50.pkl", "mosei"), ("ch-sims_small.pkl", "sims")]
)
def test_kind_from_path_token(tmp_path, filename, kind):
    data = make_synthetic_msa("sims", **SMALL)  # labels valid for both kinds
    data.train.modality_labels = data.valid.modality_labels = data.test.modality_labels = {}
    path = tmp_path / filename
    save_mmsa_pickle(data, path)
    assert load_msa(path).dataset_kind == kind
    assert load_msa(path, dataset_kind="mosi").dataset_kind == "mosi"


# --------------------------------------------------------------------------------------------
# MAG-BERT / MIB layout
# --------------------------------------------------------------------------------------------
def _magbert_sample(rng, n_words: int, label: float, segment: str, t: int | None = None):
    t = n_words if t is None else t
    words = [f"w{i}" for i in range(n_words)]
    visual = rng.normal(size=(t, 47)).astype(np.float32)
    acoustic = rng.normal(size=(t, 74)).astype(np.float32)
    return ((words, visual, acoustic), np.array([[label]]), segment)


@pytest.fixture
def magbert_file(tmp_path) -> tuple[Path, dict]:
    rng = np.random.default_rng(0)
    obj = {
        "train": [
            _magbert_sample(rng, 3, 1.4, "a[0]"),
            _magbert_sample(rng, 60, -2.2, "a[1]"),
            _magbert_sample(rng, 7, 0.0, "b[0]"),
        ],
        "dev": [_magbert_sample(rng, 5, -0.6, "c[0]"), _magbert_sample(rng, 1, 3.0, "c[1]")],
        "test": [_magbert_sample(rng, 12, 2.0, "d[0]")],
    }
    obj["train"][1][0][2][5] = -np.inf  # COVAREP-style -inf in one acoustic frame
    return _dump(obj, tmp_path / "mosi.pkl"), obj


def test_magbert_round_trip(magbert_file):
    path, obj = magbert_file
    data = load_magbert_pickle(path)
    assert set(data.splits) == {"train", "valid", "test"}
    assert data.dataset_kind == "mosi" and data.meta["text_features"] is False
    assert data.dims() == {"text": 1, "audio": 74, "vision": 47}
    assert data.seq_lens() == {"text": 50, "audio": 50, "vision": 50}
    tr = data.train
    np.testing.assert_allclose(tr.labels, [1.4, -2.2, 0.0], rtol=1e-6)
    assert tr.labels.shape == (3,) and tr.labels.dtype == np.float32
    assert list(tr.ids) == ["a[0]", "a[1]", "b[0]"]
    assert tr.raw_text[0] == "w0 w1 w2" and list(tr.extra["words"][2]) == [
        f"w{i}" for i in range(7)
    ]
    np.testing.assert_array_equal(tr.audio_lengths, [3, 50, 7])  # 60 frames truncated to 50
    np.testing.assert_array_equal(tr.text_lengths, [3, 50, 7])
    np.testing.assert_array_equal(tr.vision[0, :3], obj["train"][0][0][1])
    assert (tr.vision[0, 3:] == 0).all()
    np.testing.assert_array_equal(tr.vision[1], obj["train"][1][0][1][:50])
    assert tr.audio[1, 5].tolist() == [0.0] * 74  # the -inf frame was cleaned
    np.testing.assert_array_equal(tr.text[:, :, 0].sum(1), [3, 50, 7])
    assert list(data.valid.ids) == ["c[0]", "c[1]"] and data.valid.labels[1] == 3.0
    assert data.test.n == 1
    # dispatch by content gives the same thing
    again = load_msa(path, max_seq_len=16)
    assert again.meta["layout"] == "magbert" and again.seq_lens()["audio"] == 16


def test_magbert_expected_dims_skip_text_but_check_audio(magbert_file):
    path, _ = magbert_file
    load_msa(path, expected_dims={"text": 768, "audio": 74, "vision": 47})  # text not checked
    with pytest.raises(DataError, match="config says vision_dim=35, file has 47"):
        load_msa(path, expected_dims={"vision": 35})


def test_wrong_layout_loader_points_to_the_other(magbert_file, mmsa_file):
    path, _ = magbert_file
    with pytest.raises(DataError, match="load_magbert_pickle"):
        load_mmsa_pickle(path)
    with pytest.raises(DataError, match="load_mmsa_pickle"):
        load_magbert_pickle(mmsa_file)


def test_magbert_bad_sample_structure(tmp_path):
    rng = np.random.default_rng(0)
    good = _magbert_sample(rng, 3, 1.0, "x")
    obj = {"train": [good, (good[0], 1.0)], "dev": [good], "test": [good]}
    path = _dump(obj, tmp_path / "bad.pkl")
    before = sha256_file(path)
    with pytest.raises(DataError, match="sample 1 of split 'train'.*wrong structure"):
        load_msa(path)
    obj["train"][1] = ((["a"], np.zeros((1, 35)), np.zeros((1, 74))), 1.0, "y")
    path2 = _dump(obj, tmp_path / "bad2.pkl")
    with pytest.raises(DataError, match="visual dim of sample 1 of split 'train'"):
        load_msa(path2)
    assert sha256_file(path) == before


# --------------------------------------------------------------------------------------------
# bad inputs: a clear DataError, and the file is left byte-identical
# --------------------------------------------------------------------------------------------
def _drop_split(raw):
    del raw["valid"]


def _drop_key(raw):
    del raw["test"]["audio"]


def _short_vision(raw):
    raw["train"]["vision"] = raw["train"]["vision"][:-1]


def _wider_audio(raw):
    a = raw["test"]["audio"]
    raw["test"]["audio"] = np.concatenate([a, np.zeros(a.shape[:2] + (1,), a.dtype)], axis=2)


def _flat_text(raw):
    raw["valid"]["text"] = raw["valid"]["text"][:, :, 0]


def _nan_label(raw):
    raw["train"]["regression_labels"][[2, 5]] = np.nan


def _label_out_of_range(raw):
    raw["test"]["regression_labels"][0] = 3.5


def _not_splits(raw):
    raw.clear()
    raw["features"] = np.zeros(3)


BAD_CASES = {
    "missing split": (_drop_split, {}, ["split 'valid' is missing", "['test', 'train']"]),
    "missing key": (_drop_key, {}, ["key 'audio' is missing from split 'test'"]),
    "n mismatch": (_short_vision, {}, ["split 'train'", "disagree on the number", "vision: 39"]),
    "dim across splits": (_wider_audio, {}, ["audio feature dim differs", "dim 6 in 'test'"]),
    "wrong ndim": (_flat_text, {}, ["'text' in split 'valid'", "wrong number of dimensions"]),
    "nan labels": (_nan_label, {}, ["split 'train'", "2 NaN"]),
    "out of range": (_label_out_of_range, {}, ["out of range", "[-3, 3]", "max 3.5"]),
    "wrong kind": (
        lambda raw: None,
        {"dataset_kind": "sims"},
        ["out of range for dataset_kind 'sims'", "dataset_kind='mosi'"],
    ),
    "config dims": (
        lambda raw: None,
        {"expected_dims": {"text": 64, "audio": 74}},
        ["config says audio_dim=74, file has 5", "--set audio_dim=5"],
    ),
    "not msa": (_not_splits, {}, ["not an MSA data pickle", "features"]),
    "sha mismatch": (lambda raw: None, {"expected_sha256": "0" * 64}, ["SHA-256", "0" * 64]),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_input_is_a_clear_data_error_and_file_unchanged(tmp_path, mmsa_file, case):
    mutate, kwargs, words = BAD_CASES[case]
    raw = _raw(mmsa_file)
    mutate(raw)
    path = _dump(raw, tmp_path / "bad.pkl")
    before = sha256_file(path)
    with pytest.raises(DataError) as err:
        load_msa(path, **kwargs)
    for w in words:
        assert w in str(err.value), (w, str(err.value))
    assert err.value.fix
    assert sha256_file(path) == before


def test_good_sha_passes(mmsa_file):
    assert KNOWN_SHA256 == {}  # deliberately empty until the published digests are verified
    digest = sha256_file(mmsa_file)
    assert load_msa(mmsa_file, expected_sha256=digest.upper()).train.n == 40


def test_truncated_pickle(tmp_path, mmsa_file):
    data = mmsa_file.read_bytes()
    path = tmp_path / "cut.pkl"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated or corrupt") as err:
        load_msa(path)
    assert str(path) in str(err.value)


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_non_array_object_refused_and_never_executed(tmp_path, mmsa_file):
    marker = tmp_path / "PWNED"
    raw = _raw(mmsa_file)
    raw["train"]["annotations"] = _Evil(marker)
    path = _dump(raw, tmp_path / "evil.pkl")
    with pytest.raises(DataError, match="refused to unpickle"):
        load_msa(path)
    assert not marker.exists()


def test_save_is_atomic(tmp_path, small):
    path = save_mmsa_pickle(small, tmp_path / "d.pkl")
    before = sha256_file(path)
    small.train.extra["broken"] = lambda: None  # cannot be pickled
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        save_mmsa_pickle(small, path)
    assert sha256_file(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.pkl"]  # no temp file left


# --------------------------------------------------------------------------------------------
# synthetic data: planted signal, determinism, schema
# --------------------------------------------------------------------------------------------
def test_planted_signal_text_strong_audio_vision_weak():
    data = synthetic_mosi()
    acc = {m: _non0_acc2(data.train, data.test, m) for m in MODS}
    assert acc["text"] >= 0.9, acc
    for m in ("audio", "vision"):
        assert 0.55 <= acc[m] <= 0.8, acc
        assert acc["text"] - acc[m] >= 0.15, acc
    gt = data.meta["ground_truth"]
    assert gt["informative_ranking"] == ["text", "audio", "vision"]
    # the published direction recovers y from pooled text; nuisance columns carry no signal
    y = data.train.labels
    proj = _pooled(data.train, "text") @ gt["directions"]["text"]
    assert np.corrcoef(proj, y)[0, 1] > 0.9
    nuis = _pooled(data.train, "text")[:, gt["nuisance_columns"]["text"]]
    assert nuis.std(0).min() > 2.0  # high variance
    assert max(abs(np.corrcoef(c, y)[0, 1]) for c in nuis.T) < 0.15


def test_planted_signal_sims():
    data = synthetic_sims()
    assert data.dataset_kind == "sims" and data.dims() == {"text": 64, "audio": 33, "vision": 40}
    assert _non0_acc2(data.train, data.test, "text") >= 0.9
    assert _non0_acc2(data.train, data.test, "audio") <= 0.8


def test_labels_grid_zeros_and_lengths():
    data = make_synthetic_msa(seq_len=(10, 15, 7), seed=5)
    y = np.concatenate([s.labels for s in data.splits.values()])
    assert y.min() >= -3 and y.max() <= 3
    np.testing.assert_allclose(y * 3, np.round(y * 3), atol=1e-5)  # 1/3 grid
    assert 0.02 < (y == 0).mean() < 0.12  # exact zeros: Has0 and Non0 differ
    for s in data.splits.values():
        for m, t in zip(MODS, (10, 15, 7), strict=True):
            x, lengths = s.features()[m], s.lengths()[m]
            assert lengths.min() >= math.ceil(t / 2) and lengths.max() <= t
            valid = np.arange(t)[None, :] < lengths[:, None]
            frame_nonzero = np.any(x != 0, axis=2)
            np.testing.assert_array_equal(frame_nonzero, valid)  # zero padding after lengths
    sims = synthetic_sims(n_train=50, n_valid=10, n_test=10)
    ys = sims.train.labels
    assert ys.min() >= -1 and ys.max() <= 1
    np.testing.assert_allclose(ys * 5, np.round(ys * 5), atol=1e-5)  # 0.2 grid


def test_seeded_determinism():
    a, b = make_synthetic_msa(**SMALL, seed=7), make_synthetic_msa(**SMALL, seed=7)
    c = make_synthetic_msa(**SMALL, seed=8)
    for name in ("train", "valid", "test"):
        for m in MODS:
            np.testing.assert_array_equal(
                a.splits[name].features()[m], b.splits[name].features()[m]
            )
            np.testing.assert_array_equal(a.splits[name].lengths()[m], b.splits[name].lengths()[m])
        np.testing.assert_array_equal(a.splits[name].labels, b.splits[name].labels)
    assert not np.array_equal(a.train.text, c.train.text)
    assert not np.array_equal(a.train.labels, c.train.labels)
    gen = make_synthetic_msa(**SMALL, seed=np.random.default_rng(7))
    np.testing.assert_array_equal(gen.train.audio, a.train.audio)


def test_write_synthetic_and_presets(tmp_path):
    assert set(SYNTHETIC_PRESETS) == {"synthetic_mosi", "synthetic_sims", "synthetic_mosi_hard"}
    path = write_synthetic("synthetic_mosi", tmp_path / "syn" / "mosi.pkl", **SMALL)
    data = load_msa(path)
    assert data.name == "mosi" and data.train.n == 40
    assert set(safe_load(path)) == {"train", "valid", "test"}
    with pytest.raises(UnknownNameError, match="did you mean: synthetic_sims"):
        write_synthetic("synthetic_simz", tmp_path / "x.pkl")


# --------------------------------------------------------------------------------------------
# Dataset, DataLoader, corruption hook
# --------------------------------------------------------------------------------------------
def test_dataset_and_dataloader_batches(small):
    ds = MSADataset(small.train)
    assert len(ds) == 40
    item = ds[3]
    assert item["text"].shape == (20, 64) and item["audio"].shape == (20, 5)
    assert item["label"].dtype == torch.float32 and item["label"].ndim == 0
    assert item["index"].item() == 3 and "text_bert" not in item
    batch = next(iter(DataLoader(ds, batch_size=16, shuffle=False)))
    assert batch["text"].shape == (16, 20, 64) and batch["text"].dtype == torch.float32
    assert batch["audio"].shape == (16, 20, 5) and batch["vision"].shape == (16, 20, 20)
    for m in MODS:
        assert batch[f"{m}_lengths"].shape == (16,) and batch[f"{m}_lengths"].dtype == torch.int64
    assert batch["label"].shape == (16,) and batch["index"].tolist() == list(range(16))
    np.testing.assert_array_equal(batch["audio"].numpy(), small.train.audio[:16])
    np.testing.assert_array_equal(batch["label"].numpy(), small.train.labels[:16])


def test_with_features_replaces_copy_only(small):
    split = small.test
    noisy = split.audio + 1.0
    out = split.with_features({"audio": noisy}, lengths={"vision": np.ones(split.n, np.int64)})
    np.testing.assert_array_equal(out.audio, noisy)
    assert out.text is split.text and (out.vision_lengths == 1).all()
    assert not np.array_equal(split.audio, noisy) and (split.vision_lengths >= 10).all()
    with pytest.raises(DataError, match="change the shape"):
        split.with_features({"audio": noisy[:, :5]})
    with pytest.raises(DataError, match="unknown modality 'video'"):
        split.with_features({"video": noisy})
