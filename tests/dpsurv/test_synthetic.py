"""Planted synthetic WSI cohort: proportions, morphologies, hazard, censoring, maps, OOD bags."""

from __future__ import annotations

import doctest
from dataclasses import replace

import numpy as np
import pytest
from scipy import stats

from clinfuse.core.errors import ConfigError
from clinfuse.methods.dpsurv import synthetic as synthetic_module
from clinfuse.methods.dpsurv.synthetic import SyntheticConfig, make_synthetic_cohort, ood_bags

FAST = {"min_patches": 20, "max_patches": 40}


def harrell_c(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float:
    """Harrell's C by brute force over comparable pairs (ties in risk count 1/2)."""
    i, j = np.nonzero((time[:, None] < time[None, :]) & (event[:, None] == 1))
    return float(((risk[i] > risk[j]) + 0.5 * (risk[i] == risk[j])).mean())


@pytest.fixture(scope="module")
def default():
    return make_synthetic_cohort()  # 400 cases, 100-300 patches, seed 0


def test_patch_label_shares_equal_the_dirichlet_proportions(default):
    props = default.truth["proportions"]
    for i, case in enumerate(default.case_ids):
        labels = default.truth["patch_labels"][case]
        assert 100 <= len(labels) <= 300 and len(labels) == default.bag(case).n_patches
        shares = np.bincount(labels, minlength=6) / len(labels)
        assert np.abs(shares - props[i]).max() <= 1.0 / len(labels) + 1e-12


def test_proportions_follow_dirichlet_moments(default):
    props = default.truth["proportions"]
    alpha, k = 0.5, 6
    np.testing.assert_allclose(props.sum(axis=1), 1.0)
    np.testing.assert_allclose(props.mean(axis=0), 1 / k, atol=0.035)  # 3.7 SE of the mean
    var = (1 / k) * (1 - 1 / k) / (k * alpha + 1)  # Dirichlet: a_c (a0 - a_c) / (a0^2 (a0 + 1))
    np.testing.assert_allclose(props.var(axis=0), var, rtol=0.3)
    for c in range(k):  # each marginal of Dir(alpha 1_k) is Beta(alpha, (k - 1) alpha)
        assert stats.kstest(props[:, c], stats.beta(alpha, (k - 1) * alpha).cdf).pvalue > 0.01


def test_patch_features_sit_at_their_morphology(default):
    means = default.truth["means"]
    np.testing.assert_allclose(np.linalg.norm(means, axis=1), 6.0)
    np.testing.assert_allclose(means @ means.T, 36.0 * np.eye(6), atol=1e-9)  # orthogonal
    feats, labels = [], []
    for case in default.case_ids[:60]:
        feats.append(default.bag(case).features)
        labels.append(default.truth["patch_labels"][case])
    x, z = np.vstack(feats), np.concatenate(labels)
    nearest = ((x[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)
    assert (nearest == z).mean() > 0.999
    resid = x - means[z]
    np.testing.assert_allclose(resid.std(), 1.0, atol=0.02)
    np.testing.assert_allclose(resid.mean(0), 0.0, atol=0.02)


def test_censoring_share_at_defaults(default):
    assert 0.35 <= 1 - default.event.mean() <= 0.45
    shares = [1 - make_synthetic_cohort(seed=s, **FAST).event.mean() for s in range(1, 6)]
    assert abs(np.mean(shares) - 0.40) < 0.025  # mean of 5 x 400 cases: SE 0.011
    t = default.truth
    np.testing.assert_array_equal(default.time, np.minimum(t["event_time"], t["censor_time"]))
    np.testing.assert_array_equal(default.event, t["event_time"] <= t["censor_time"])
    cmax = t["censor_time"].max()
    assert np.histogram(t["censor_time"], bins=4, range=(0, cmax))[0].min() > 70  # uniform


def test_weibull_ph_times_and_true_risk_concordance(default):
    t = default.truth
    eta, T = t["log_hazard"], t["event_time"]
    props = t["proportions"]
    np.testing.assert_allclose(eta, 2.0 * props[:, 3] - 1.5 * props[:, 5])
    # (T / lambda)^k e^eta ~ Exp(1) under S(t) = exp(-(t / lambda)^k e^eta)
    e = (T / 1000.0) ** 1.5 * np.exp(eta)
    assert abs(e.mean() - 1.0) < 0.15 and abs(np.median(e) - np.log(2)) < 0.12
    # closed form for PH: P(T_i < T_j) = sigmoid(eta_i - eta_j), whatever the baseline
    diff = np.abs(eta[:, None] - eta[None, :])[np.triu_indices(len(eta), 1)]
    expected = float((1 / (1 + np.exp(-diff))).mean())
    c_latent = harrell_c(T, np.ones_like(default.event), eta)
    assert abs(c_latent - expected) < 0.03
    c_obs = harrell_c(default.time, default.event, eta)
    assert 0.6 < c_obs and abs(c_obs - expected) < 0.04
    strong = make_synthetic_cohort(risk_weights=(6.0, -4.5), **FAST)
    c_strong = harrell_c(strong.time, strong.event, strong.truth["log_hazard"])
    assert c_strong > 0.7


def test_assignment_maps_are_contiguous_tissue(default):
    same, chance = [], []
    for case in default.case_ids[:40]:
        bag = default.bag(case)
        labels = default.truth["patch_labels"][case]
        assert (bag.coords % 256 == 0).all()
        cells = bag.coords // 256
        assert len({tuple(c) for c in cells}) == len(cells)  # one patch per grid cell
        where = {tuple(c): i for i, c in enumerate(cells)}
        pairs = np.array(
            [
                (i, where[(x + dx, y + dy)])
                for (x, y), i in where.items()
                for dx, dy in ((1, 0), (0, 1))
                if (x + dx, y + dy) in where
            ]
        )
        assert len(pairs) > 1.3 * len(cells)  # a compact section, not scattered cells
        same.append((labels[pairs[:, 0]] == labels[pairs[:, 1]]).mean())
        shares = np.bincount(labels) / len(labels)
        chance.append((shares**2).sum())
    assert np.mean(same) > np.mean(chance) + 0.3


def test_seed_reproduces_exactly_and_changes_draws():
    a = make_synthetic_cohort(n_cases=20, seed=11, two_slide_fraction=0.5, **FAST)
    b = make_synthetic_cohort(n_cases=20, seed=11, two_slide_fraction=0.5, **FAST)
    c = make_synthetic_cohort(n_cases=20, seed=12, two_slide_fraction=0.5, **FAST)
    np.testing.assert_array_equal(a.time, b.time)
    np.testing.assert_array_equal(a.event, b.event)
    assert a.slides == b.slides
    for case in a.case_ids:
        np.testing.assert_array_equal(a.bag(case).features, b.bag(case).features)
        np.testing.assert_array_equal(a.bag(case).coords, b.bag(case).coords)
    assert all(
        np.array_equal(x, y)
        for fa, fb in zip(a.folds, b.folds, strict=True)
        for x, y in zip(fa, fb, strict=True)
    )
    assert not np.allclose(a.time, c.time)
    assert not np.array_equal(a.bag(0).features[:5], c.bag(0).features[:5])
    # child seeds: the number of folds does not touch the bags or labels
    d = make_synthetic_cohort(n_cases=20, seed=11, two_slide_fraction=0.5, n_folds=3, **FAST)
    np.testing.assert_array_equal(a.time, d.time)
    np.testing.assert_array_equal(a.bag(3).features, d.bag(3).features)


def test_folds_patient_level_and_stratified(default):
    folds = default.folds
    assert len(folds) == 5
    tests = np.concatenate([te for _, te in folds])
    assert sorted(tests.tolist()) == list(range(len(default)))
    per_fold_events = [int(default.event[te].sum()) for _, te in folds]
    assert max(per_fold_events) - min(per_fold_events) <= 1


def test_two_slide_cases():
    c = make_synthetic_cohort(n_cases=60, two_slide_fraction=0.5, **FAST)
    n_two = sum(len(s) == 2 for s in c.slides.values())
    assert 18 <= n_two <= 42
    case = next(k for k, s in c.slides.items() if len(s) == 2)
    bag = c.bag(case)
    labels = c.truth["patch_labels"][case]
    assert len(labels) == bag.n_patches and set(bag.slide_index.tolist()) == {0, 1}
    props = c.truth["proportions"][c.index(case)]
    shares = np.bincount(labels, minlength=6) / len(labels)
    assert np.abs(shares - props).max() <= 2.0 / len(labels)


def test_ood_bags_are_far_from_every_morphology():
    c = make_synthetic_cohort(n_cases=10, **FAST)
    means = c.truth["means"]
    unit = means / np.linalg.norm(means, axis=1, keepdims=True)
    for bag in ood_bags(c, n=4, shift=30.0, seed=1):
        centre = bag.features.mean(0)
        cos = unit @ centre / np.linalg.norm(centre)
        assert np.abs(cos).max() < 0.1
        dist = np.linalg.norm(bag.features[:, None, :] - means[None], axis=-1).min(1)
        assert dist.min() > 25.0
        assert 20 <= bag.n_patches <= 40 and bag.coords.shape == (bag.n_patches, 2)
    in_dist = c.bag(0).features.mean(0)
    assert (unit @ in_dist / np.linalg.norm(in_dist)).max() > 0.3
    with pytest.raises(ConfigError, match="synthetic cohort"):
        ood_bags(replace(c, truth=None), n=1)


@pytest.mark.parametrize(
    ("override", "rule"),
    [
        ({"risk_components": (6,)}, "risk_components"),
        ({"dim": 6}, "dim > n_components"),
        ({"min_patches": 50, "max_patches": 10}, "min_patches <= max_patches"),
        ({"censor_rate": 1.0}, "censor_rate"),
    ],
)
def test_config_errors(override, rule):
    with pytest.raises(ConfigError, match=rule):
        SyntheticConfig(**override)


def test_no_censoring_option():
    c = make_synthetic_cohort(n_cases=30, censor_rate=0.0, **FAST)
    assert c.event.all()


def test_doctests():
    result = doctest.testmod(synthetic_module)
    assert result.failed == 0 and result.attempted >= 3
