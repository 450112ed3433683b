"""Test-time corruptions and severity sweeps: determinism, planted statistics, specs, files."""

from __future__ import annotations

import copy
import doctest
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clinfuse.core.errors import ClinfuseError, ConfigError, DataError
from clinfuse.robustness import (
    CORRUPTIONS,
    SPEC_GRAMMAR,
    SWEEP_COLUMNS,
    Compose,
    GaussianNoise,
    ModalityDrop,
    RandomMissing,
    corruptions,
    mask_token_ids,
    parse_corruption,
    severity_sweep,
    sweep,
    sweep_severities,
    valid_frames,
    write_sweep,
)

PAD = 123.0  # sentinel in padded frames: any change to padding shows up
SHAPES = {"text": (10, 8), "audio": (20, 5), "vision": (15, 7)}
EXAMPLE_SPECS = {
    "gaussian": "gaussian:audio,vision:0.5",
    "missing": "missing:audio,text:0.3",
    "drop": "drop:vision",
}


def make_batch(
    seed: int, n: int = 64, scale: float = 1.0
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Random float32 features with padded frames set to PAD; lengths for audio and vision only."""
    rng = np.random.default_rng(seed)
    feats, lengths = {}, {}
    for m, (t, d) in SHAPES.items():
        x = (scale * rng.normal(size=(n, t, d)) + 1.0).astype(np.float32)
        if m != "text":
            lengths[m] = rng.integers(1, t + 1, size=n)
            x[~valid_frames(x, lengths[m])] = PAD
        feats[m] = x
    return feats, lengths


@pytest.fixture
def train() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    return make_batch(0, n=256)


@pytest.fixture
def test_batch() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    return make_batch(1)


def fitted(spec: str, train) -> object:
    return parse_corruption(spec).fit(*train)


def test_every_registered_kind_has_an_example() -> None:
    assert set(EXAMPLE_SPECS) == set(CORRUPTIONS.names())


# ---------------------------------------------------------------------------------------------
# determinism, purity, padding


ALL_SPECS = [*EXAMPLE_SPECS.values(), "gaussian:text:0.3+missing:audio:0.5+drop:vision"]


@pytest.mark.parametrize("spec", ALL_SPECS)
def test_seeded_determinism(spec: str, train, test_batch) -> None:
    c = fitted(spec, train)
    x, lengths = test_batch
    a = c(x, lengths, np.random.default_rng(7))
    b = c(x, lengths, np.random.default_rng(7))
    other = c(x, lengths, np.random.default_rng(8))
    assert a.keys() == x.keys()
    for m in x:
        np.testing.assert_array_equal(a[m], b[m])
    uses_rng = not spec.startswith("drop")
    assert uses_rng == any(not np.array_equal(a[m], other[m]) for m in x)


@pytest.mark.parametrize("spec", ALL_SPECS)
def test_input_never_modified(spec: str, train, test_batch) -> None:
    c = fitted(spec, train)
    x, lengths = test_batch
    x_before, l_before = copy.deepcopy(x), copy.deepcopy(lengths)
    train_before = copy.deepcopy(train)
    out = c(x, lengths, np.random.default_rng(0))
    for m in x:
        np.testing.assert_array_equal(x[m], x_before[m])
        if not np.array_equal(out[m], x[m]):
            assert not np.shares_memory(out[m], x[m])
    for m in lengths:
        np.testing.assert_array_equal(lengths[m], l_before[m])
    for m in train[0]:
        np.testing.assert_array_equal(train[0][m], train_before[0][m])


@pytest.mark.parametrize("spec", ["gaussian:audio,vision:1.0", "missing:audio,vision:0.9"])
def test_padded_frames_untouched(spec: str, train, test_batch) -> None:
    x, lengths = test_batch
    out = fitted(spec, train)(x, lengths, np.random.default_rng(0))
    for m in ("audio", "vision"):
        pad = ~valid_frames(x[m], lengths[m])
        assert pad.any()
        assert np.all(out[m][pad] == PAD)
        assert not np.any(out[m][~pad] == PAD)
        assert out[m].dtype == x[m].dtype


# ---------------------------------------------------------------------------------------------
# Gaussian noise


def test_fit_std_uses_valid_frames_only(train) -> None:
    g = GaussianNoise(("audio", "vision", "text"), rho=0.5).fit(*train)
    feats, lengths = train
    for m in ("audio", "vision"):
        valid = feats[m][valid_frames(feats[m], lengths[m])].astype(np.float64)
        np.testing.assert_allclose(g.std[m], valid.std(axis=0), rtol=1e-10)
        assert np.all(g.std[m] < 5)  # PAD = 123 would inflate it
    text = feats["text"].reshape(-1, 8).astype(np.float64)
    np.testing.assert_allclose(g.std["text"], text.std(axis=0), rtol=1e-10)


@pytest.mark.parametrize("rho", [0.1, 0.5, 1.0])
def test_noise_std_matches_rho_times_train_std(rho: float) -> None:
    rng = np.random.default_rng(0)
    true_std = np.array([0.5, 2.0, 10.0])
    train = {"audio": rng.normal(3.0, true_std, size=(4000, 6, 3))}
    x = {"audio": rng.normal(-1.0, true_std, size=(4000, 6, 3))}
    lengths = {"audio": rng.integers(1, 7, size=4000)}
    g = GaussianNoise(("audio",), rho).fit(train)
    noise = (g(x, lengths, np.random.default_rng(1))["audio"] - x["audio"])[
        valid_frames(x["audio"], lengths["audio"])
    ]
    np.testing.assert_allclose(noise.std(axis=0), rho * true_std, rtol=0.03)
    assert np.all(np.abs(noise.mean(axis=0)) < 0.03 * rho * true_std)


def test_gaussian_requires_fit_and_matching_dims(test_batch) -> None:
    x, lengths = test_batch
    with pytest.raises(ClinfuseError, match="not fitted"):
        GaussianNoise(("audio",), 0.5)(x, lengths, np.random.default_rng(0))
    g = GaussianNoise(("audio",), 0.5, std={"audio": np.ones(4)})  # audio has 5 features
    with pytest.raises(DataError, match="does not match"):
        g(x, lengths, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="every modality"):
        GaussianNoise(("audio", "vision"), 0.5, std={"audio": np.ones(5)})


def test_fit_rejects_non_finite_training_frames(train) -> None:
    feats, lengths = copy.deepcopy(train)
    feats["audio"][0, 0, 0] = -np.inf  # frame 0 is always valid
    with pytest.raises(DataError, match="non-finite"):
        GaussianNoise(("audio",), 0.5).fit(feats, lengths)


def test_with_severity_keeps_fitted_std(train) -> None:
    g = GaussianNoise(("audio",), 0.5).fit(*train)
    g2 = g.with_severity(1.0)
    assert g2.rho == 1.0 and g.rho == 0.5
    np.testing.assert_array_equal(g2.std["audio"], g.std["audio"])
    with pytest.raises(ConfigError, match="no severity"):
        ModalityDrop(("audio",)).with_severity(0.5)


# ---------------------------------------------------------------------------------------------
# random missing, drop, token ids


@pytest.mark.parametrize("rate", [0.0, 0.2, 0.5, 1.0])
def test_missing_rate_realised(rate: float) -> None:
    x, lengths = make_batch(2, n=2000)
    out = RandomMissing(("audio", "vision"), rate)(x, lengths, np.random.default_rng(0))
    for m in ("audio", "vision"):
        valid = valid_frames(x[m], lengths[m])
        zeroed = np.all(out[m] == 0, axis=-1)
        changed = np.any(out[m] != x[m], axis=-1)
        assert np.array_equal(zeroed & valid, changed)  # a frame is zeroed whole, or kept whole
        assert valid[zeroed].all()
        assert abs(zeroed[valid].mean() - rate) < 0.01
    assert out["text"] is x["text"]


def test_drop_zeros_only_named_modalities(test_batch) -> None:
    x, lengths = test_batch
    out = parse_corruption("drop:audio,vision")(x, lengths, np.random.default_rng(0))
    assert np.all(out["audio"] == 0) and np.all(out["vision"] == 0)
    assert out["audio"].shape == x["audio"].shape and out["audio"].dtype == x["audio"].dtype
    assert out["text"] is x["text"] and np.any(x["text"] != 0)


def test_missing_modality_in_batch_raises(test_batch) -> None:
    x, lengths = test_batch
    del x["vision"]
    for c in (ModalityDrop(("vision",)), RandomMissing(("vision",), 0.5)):
        with pytest.raises(DataError, match="did you mean"):
            c({**x, "visual": x["audio"]}, lengths, np.random.default_rng(0))


def test_bad_lengths_raise(test_batch) -> None:
    x, lengths = test_batch
    bad = {**lengths, "audio": lengths["audio"] + 100}
    with pytest.raises(DataError, match="lengths"):
        RandomMissing(("audio",), 0.5)(x, bad, np.random.default_rng(0))
    with pytest.raises(DataError, match="lengths"):
        RandomMissing(("audio",), 0.5)(x, {"audio": lengths["audio"][:3]}, np.random.default_rng(0))


def make_text_bert(n: int = 500, length: int = 30, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    real = rng.integers(3, length + 1, size=n)
    ids = rng.integers(1000, 30000, size=(n, length))
    mask = (np.arange(length)[None] < real[:, None]).astype(np.int64)
    ids[:, 0] = 101
    ids[np.arange(n), real - 1] = 102
    ids[mask == 0] = 0
    return np.stack([ids, mask, np.zeros_like(ids)], axis=1).astype(np.float32)  # MMSA: float32


def test_mask_token_ids_like_mmsa() -> None:
    tb = make_text_bert()
    before = tb.copy()
    real = tb[:, 1] == 1
    n_real = real.sum(1)
    out = mask_token_ids(tb, 0.3, np.random.default_rng(0))
    np.testing.assert_array_equal(tb, before)
    assert out.dtype == np.float32 and out.shape == tb.shape
    np.testing.assert_array_equal(out[:, 1:], tb[:, 1:])  # mask and segments unchanged
    np.testing.assert_array_equal(out[:, 0][~real], 0)  # padding unchanged
    assert np.all(out[:, 0, 0] == 101) and np.all(out[np.arange(len(tb)), 0, n_real - 1] == 102)
    inner = real.copy()
    inner[:, 0] = False
    inner[np.arange(len(tb)), n_real - 1] = False
    replaced = out[:, 0] != tb[:, 0]
    assert np.all(out[:, 0][replaced] == 100)
    assert not (replaced & ~inner).any()
    assert abs(replaced[inner].mean() - 0.3) < 0.02
    np.testing.assert_array_equal(mask_token_ids(tb, 0.0, np.random.default_rng(0)), tb)
    assert np.all(mask_token_ids(tb, 1.0, np.random.default_rng(0))[:, 0][inner] == 100)


def test_mask_token_ids_rejects_bad_input() -> None:
    tb = make_text_bert(n=4)
    with pytest.raises(DataError, match=r"\(N, 3, L\)"):
        mask_token_ids(tb[:, :2], 0.2, np.random.default_rng(0))
    tb[0, 1, 0] = 0  # a hole at the front of the mask
    with pytest.raises(DataError, match="right-padded"):
        mask_token_ids(tb, 0.2, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="probability"):
        mask_token_ids(make_text_bert(n=4), 1.5, np.random.default_rng(0))


# ---------------------------------------------------------------------------------------------
# specs


def test_parse_valid_specs() -> None:
    g = parse_corruption("gaussian:audio,vision:0.5")
    assert isinstance(g, GaussianNoise) and g.modalities == ("audio", "vision") and g.rho == 0.5
    m = parse_corruption(" missing : audio , vision : 0.2 ")
    assert isinstance(m, RandomMissing) and m.modalities == ("audio", "vision") and m.rate == 0.2
    d = parse_corruption("drop:vision")
    assert isinstance(d, ModalityDrop) and d.modalities == ("vision",)
    assert parse_corruption("gaussian:audio:1e+1").rho == 10.0  # '+' inside a number
    eeg = parse_corruption("drop:eeg", modalities=("eeg", "ecg"))
    assert eeg.modalities == ("eeg",)


def test_parse_composition_and_round_trip(train, test_batch) -> None:
    c = parse_corruption("gaussian:audio:0.5+drop:vision+missing:text:0.1")
    assert isinstance(c, Compose)
    assert [type(x) for x in c.corruptions] == [GaussianNoise, ModalityDrop, RandomMissing]
    assert c.spec == "gaussian:audio:0.5+drop:vision+missing:text:0.1"
    assert parse_corruption(c.spec) == c
    assert not c.is_fitted and c.fit(*train).is_fitted
    # composition is sequential application with the same generator
    x, lengths = test_batch
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    step = x
    for part in c.corruptions:
        step = part(step, lengths, rng_b)
    out = c(x, lengths, rng_a)
    for m in x:
        np.testing.assert_array_equal(out[m], step[m])


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("gausian:audio:0.5", "did you mean: gaussian"),
        ("dorp:vision", "did you mean: drop"),
        ("gaussian:audoi:0.5", "did you mean: audio"),
        ("missing:audio,visual:0.2", "did you mean: vision"),
        ("gaussian:audio:abc", "bad rho"),
        ("gaussian:audio:nan", "bad rho"),
        ("gaussian:audio", "gaussian:MODALITY"),
        ("drop:vision:0.5", "takes no number"),
        ("missing:audio:1.5", "probability"),
        ("gaussian:audio:-1", "non-negative"),
        ("missing::0.2", "missing:MODALITY"),
        ("missing:audio,audio:0.2", "distinct"),
        ("drop:vision+", "empty corruption"),
        ("", "empty corruption spec"),
    ],
)
def test_parse_bad_specs(spec: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        parse_corruption(spec)
    assert info.value.found is not None and info.value.expected is not None


def test_unknown_kind_error_states_grammar() -> None:
    with pytest.raises(ConfigError) as info:
        parse_corruption("blur:vision:0.1")
    assert SPEC_GRAMMAR in str(info.value) and "'blur'" in str(info.value)


def test_parse_unknown_modality_for_custom_names() -> None:
    with pytest.raises(ConfigError, match="one of: eeg, ecg"):
        parse_corruption("drop:text", modalities=("eeg", "ecg"))


# ---------------------------------------------------------------------------------------------
# sweeps


def test_sweep_delta_is_clean_minus_corrupted() -> None:
    def evaluate(c):
        r = 0.0 if c is None else c.rate
        return {"acc": 0.9 - 0.3 * r, "mae": 0.5 + r}

    df = severity_sweep(evaluate, "missing", ("audio", "vision"), [0.1, 0.4, 0.8])
    assert tuple(df.columns) == SWEEP_COLUMNS
    assert len(df) == 6
    np.testing.assert_allclose(df["delta"], df["clean"] - df["corrupted"])
    acc = df[df.metric == "acc"]
    np.testing.assert_allclose(acc["corrupted"], [0.87, 0.78, 0.66])
    np.testing.assert_allclose(acc["delta"], [0.03, 0.12, 0.24])
    np.testing.assert_allclose(df[df.metric == "mae"]["delta"], [-0.1, -0.4, -0.8])


def test_gaussian_sweep_fits_once_and_is_linear_in_rho(train, test_batch) -> None:
    x, lengths = test_batch
    seen = []

    def evaluate(c):
        seen.append(c)
        if c is None:
            return {"dev": 0.0}
        out = c(x, lengths, np.random.default_rng(0))  # common random numbers
        return {"dev": float(np.abs(out["audio"] - x["audio"]).mean())}

    df = severity_sweep(
        evaluate, "gaussian", "audio", [0.5, 1.0], train_features=train[0], train_lengths=train[1]
    )
    dev = df.set_index("severity")["corrupted"]
    assert dev[1.0] == pytest.approx(2 * dev[0.5], rel=1e-5)
    np.testing.assert_allclose(df["delta"], -df["corrupted"])
    assert seen[1].std["audio"] is seen[2].std["audio"]  # fitted once, reused


def test_unfitted_sweep_leaves_fitting_to_evaluate(train, test_batch) -> None:
    # the CLI's pattern: evaluate rebuilds the corruption from its spec and fits it itself
    x, lengths = test_batch

    def evaluate(c):
        if c is None:
            return {"dev": 0.0}
        assert not c.is_fitted
        with pytest.raises(ClinfuseError, match="not fitted"):
            c(x, lengths, np.random.default_rng(0))
        out = parse_corruption(c.spec).fit(*train)(x, lengths, np.random.default_rng(0))
        return {"dev": float(np.abs(out["audio"] - x["audio"]).mean())}

    df = severity_sweep(evaluate, "gaussian", "audio", [0.25, 0.75])
    assert df["corrupted"].iloc[1] == pytest.approx(3 * df["corrupted"].iloc[0], rel=1e-5)


def test_sweep_severities_takes_the_number() -> None:
    calls = []

    def evaluate_at(s):
        calls.append(s)
        return {"acc": 1.0 - (s or 0.0)}

    df = sweep_severities(evaluate_at, [0.1, 0.3])
    assert calls == [None, 0.1, 0.3]
    np.testing.assert_allclose(df["delta"], [0.1, 0.3])
    assert tuple(df.columns) == SWEEP_COLUMNS


def test_sweep_rejects_bad_requests() -> None:
    with pytest.raises(ConfigError, match="no severity"):
        severity_sweep(lambda c: {"a": 1.0}, "drop", "vision", [0.5])
    with pytest.raises(ConfigError, match="did you mean: missing"):
        severity_sweep(lambda c: {"a": 1.0}, "mising", "vision", [0.5])
    with pytest.raises(ConfigError, match="at least one"):
        severity_sweep(lambda c: {"a": 1.0}, "missing", "vision", [])
    with pytest.raises(DataError, match="different metrics"):
        severity_sweep(lambda c: {"a": 1.0} if c is None else {"b": 1.0}, "missing", "audio", [1])


def test_write_sweep_atomic_files(tmp_path: Path) -> None:
    df = severity_sweep(
        lambda c: {"acc": 0.9 - (c.rate if c else 0.0), "f1": 0.8}, "missing", "audio", [0.2, 0.6]
    )
    csv, png = write_sweep(df, tmp_path / "out", "missing-audio")
    assert csv == tmp_path / "out" / "missing-audio.csv"
    pd.testing.assert_frame_equal(pd.read_csv(csv), df)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "missing-audio.csv",
        "missing-audio.png",
    ]  # no temporary files left
    write_sweep(df, tmp_path / "out", "missing-audio", title="t")  # overwrite in place
    with pytest.raises(ConfigError, match="bad sweep name"):
        write_sweep(df, tmp_path, "../escape")
    with pytest.raises(DataError, match="not a severity sweep"):
        write_sweep(df.drop(columns="delta"), tmp_path, "x")


# ---------------------------------------------------------------------------------------------
# hygiene


@pytest.mark.parametrize("module", [corruptions, sweep])
def test_docstring_examples(module) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_robustness_does_not_import_methods_or_torch() -> None:
    code = (
        "import sys, clinfuse.robustness; "
        "assert not any(m.startswith('clinfuse.methods') for m in sys.modules); "
        "assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
