"""PANTHER patch prototypes: k-means, the frozen DirNIW prior and the MAP-EM slide summaries."""

from __future__ import annotations

import dataclasses
import doctest
import warnings

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from scipy.stats import pearsonr

from clinfuse.core.errors import ConfigError, DataError
from clinfuse.methods.dpsurv import proto
from clinfuse.methods.dpsurv.proto import (
    GMMSummary,
    PantherConfig,
    PrototypeConfig,
    PrototypePrior,
    fit_prototypes,
    kmeans,
    map_objective,
    panther_batch,
    panther_em,
    panther_vector,
    slide_embedding,
)

C, D = 6, 32


@dataclasses.dataclass
class Blobs:
    bags: list[torch.Tensor]
    labels: list[np.ndarray]
    props: np.ndarray  # (n_bags, C) true per-bag proportions (empirical)
    means: np.ndarray
    sds: np.ndarray


def make_blobs(n_bags: int = 40, seed: int = 0) -> Blobs:
    """6 well-separated diagonal Gaussians in D=32; bags of 100-300 patches, Dirichlet(0.5)."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0.0, 4.0, size=(C, D))
    sds = rng.uniform(0.5, 1.5, size=(C, D))
    bags, labels, props = [], [], []
    for _ in range(n_bags):
        m = int(rng.integers(100, 301))
        w = rng.dirichlet(np.full(C, 0.5))
        lab = rng.choice(C, size=m, p=w)
        x = means[lab] + sds[lab] * rng.standard_normal((m, D))
        bags.append(torch.from_numpy(x.astype(np.float32)))
        labels.append(lab)
        props.append(np.bincount(lab, minlength=C) / m)
    return Blobs(bags, labels, np.asarray(props), means, sds)


@pytest.fixture(scope="module")
def blobs() -> Blobs:
    return make_blobs()


@pytest.fixture(scope="module")
def fitted(blobs: Blobs):
    prior, res = fit_prototypes(blobs.bags, PrototypeConfig(n_components=C, seed=1))
    true = np.concatenate(blobs.labels)
    conf = np.zeros((C, C))
    np.add.at(conf, (true, res.labels.numpy()), 1)
    rows, cols = linear_sum_assignment(-conf)
    to_true = np.empty(C, dtype=int)
    to_true[cols] = rows  # k-means cluster -> true component
    return prior, res, to_true


def test_kmeans_recovers_planted_blobs(blobs: Blobs, fitted) -> None:
    from sklearn.metrics import adjusted_rand_score

    _, res, to_true = fitted
    true = np.concatenate(blobs.labels)
    assert adjusted_rand_score(true, res.labels.numpy()) > 0.95
    # matched centers sit on the planted means
    err = np.abs(res.centers.numpy() - blobs.means[to_true]).max()
    assert err < 0.3


def test_kmeans_subsample_cosine_and_chunking_agree(blobs: Blobs) -> None:
    from sklearn.metrics import adjusted_rand_score

    x = torch.cat(blobs.bags[:20])
    true = np.concatenate(blobs.labels[:20])
    sub = kmeans(x, C, max_points=1000, seed=3)
    assert sub.labels.shape == (x.shape[0],)  # labels for all points, fitted on 1000
    assert adjusted_rand_score(true, sub.labels.numpy()) > 0.95
    cos = kmeans(x, C, metric="cosine", seed=3)
    assert adjusted_rand_score(true, cos.labels.numpy()) > 0.95
    assert torch.allclose(cos.centers.norm(dim=1), torch.ones(C), atol=1e-5)
    # chunked distance computation changes nothing
    x = x[:2000]
    a = kmeans(x, C, seed=5, n_init=1, chunk_size=1 << 20)
    b = kmeans(x, C, seed=5, n_init=1, chunk_size=97)
    assert torch.equal(a.labels, b.labels)
    assert torch.allclose(a.centers, b.centers, atol=1e-5)
    assert a.inertia == pytest.approx(b.inertia, rel=1e-5)
    # inertia is the sum of squared distances to the assigned centers
    direct = ((x - a.centers[a.labels]) ** 2).sum().item()
    assert a.inertia == pytest.approx(direct, rel=1e-4)


def test_kmeans_reseeds_empty_cluster_at_farthest_point() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(50, 2, generator=g)
    b = torch.randn(50, 2, generator=g) + torch.tensor([10.0, 0.0])
    outlier = torch.tensor([[0.0, 40.0]])
    x = torch.cat([a, b, outlier])
    # third start center far from everything: empty after the first assignment
    init = torch.tensor([[0.0, 0.0], [10.0, 0.0], [-1000.0, -1000.0]])
    res = kmeans(x, 3, init=init)
    counts = torch.bincount(res.labels, minlength=3)
    assert bool((counts > 0).all()) and bool(torch.isfinite(res.centers).all())
    # the re-seeded cluster took the farthest point (the outlier) and only it
    assert int(res.labels[-1]) == 2 and int(counts[2]) == 1
    assert torch.allclose(res.centers[2], outlier[0])


def test_kmeans_errors() -> None:
    with pytest.raises(DataError, match="non-finite"):
        kmeans(torch.tensor([[0.0, 1.0], [float("nan"), 0.0]]), 1)
    with pytest.raises(DataError, match="more clusters than points"):
        kmeans(torch.zeros(3, 2), 4)
    with pytest.raises(ConfigError):
        kmeans(torch.zeros(3, 2), 2, metric="manhattan")  # type: ignore[arg-type]


def test_prior_variance_sources_and_save_load(blobs: Blobs, fitted, tmp_path) -> None:
    prior, res, to_true = fitted
    x = torch.cat(blobs.bags)
    # within-cluster variance recovers the planted per-dimension variances
    assert np.abs(np.sqrt(prior.var.numpy()) - blobs.sds[to_true]).max() < 0.2
    assert torch.allclose(prior.means.float(), res.centers, atol=1e-4)
    half = PrototypePrior.from_kmeans(x, res, eps=0.5)
    assert torch.allclose(half.var, 0.5 * prior.var)
    pooled = PrototypePrior.from_kmeans(x, res, variance="pooled")
    assert torch.allclose(pooled.var, pooled.var[:1].expand(C, -1))
    glob = PrototypePrior.from_kmeans(x, res, variance="global")
    assert torch.allclose(glob.var[0], x.double().var(0, unbiased=False), rtol=1e-6)
    ones = PrototypePrior.from_kmeans(x, res, variance="ones", eps=2.0)
    assert torch.equal(ones.var, torch.full((C, D), 2.0, dtype=torch.float64))
    p = prior.save(tmp_path / "proto.npz")
    back = PrototypePrior.load(p)
    assert torch.equal(back.means, prior.means) and torch.equal(back.var, prior.var)
    assert [f.name for f in tmp_path.iterdir()] == ["proto.npz"]
    with pytest.raises(DataError, match="do not match"):
        PrototypePrior.from_kmeans(x[:10], res)


def test_panther_assignments_and_proportions(blobs: Blobs, fitted) -> None:
    prior, _, to_true = fitted
    summaries = panther_batch(blobs.bags, prior, tau=1.0, iters=1)
    pis, acc = [], []
    for s, lab in zip(summaries, blobs.labels, strict=True):
        pred = to_true[s.q.argmax(1).numpy()]
        acc.append((pred == lab).mean())
        pi_true_order = np.empty(C)
        pi_true_order[to_true] = s.pi.numpy()
        pis.append(pi_true_order)
        assert torch.allclose(s.q.sum(1), torch.ones(len(lab), dtype=torch.float64))
        assert float(s.pi.sum()) == pytest.approx(1.0, abs=1e-12)
    assert min(acc) > 0.9
    r = pearsonr(np.concatenate(pis), blobs.props.reshape(-1)).statistic
    assert r > 0.95


def test_em_does_not_decrease_map_objective(blobs: Blobs, fitted) -> None:
    prior, _, _ = fitted
    # a harder case too: a prior whose means are shifted halfway between components
    shifted = PrototypePrior(0.7 * prior.means + 0.3 * prior.means.roll(1, 0), prior.var * 3.0)
    for pr, tau in ((prior, 1.0), (shifted, 10.0)):
        bag = blobs.bags[3]
        objs = [
            map_objective(bag, pr, panther_em(bag, pr, tau=tau, iters=k), tau=tau)
            for k in range(21)
        ]
        steps = np.diff(objs)
        assert (steps >= -1e-9 * np.abs(objs[:-1])).all(), steps
        if pr is shifted:  # EM really moved
            assert objs[-1] > objs[0] + 1.0


def test_tau_to_zero_matches_sklearn_gmm() -> None:
    from sklearn.mixture import GaussianMixture

    rng = np.random.default_rng(7)
    means = np.array([[0.0, 0.0, 0.0], [2.0, 1.0, 0.0], [0.0, 2.5, 1.5]])
    lab = rng.choice(3, size=400, p=[0.5, 0.3, 0.2])
    x = means[lab] + rng.standard_normal((400, 3)) * np.array([1.0, 0.7, 1.2])
    m0 = means + rng.normal(0, 0.5, size=means.shape)  # start off the truth: EM has work to do
    v0 = np.full((3, 3), 1.5)
    prior = PrototypePrior(torch.from_numpy(m0), torch.from_numpy(v0))
    s = panther_em(torch.from_numpy(x), prior, tau=1e-10, iters=300)
    gm = GaussianMixture(
        3,
        covariance_type="diag",
        weights_init=np.full(3, 1 / 3),
        means_init=m0,
        precisions_init=1.0 / v0,
        reg_covar=0.0,
        max_iter=300,
        tol=0.0,
        random_state=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm.fit(x)
    assert np.abs(s.pi.numpy() - gm.weights_).max() < 1e-3
    assert np.abs(s.mu.numpy() - gm.means_).max() < 1e-3
    assert np.abs(s.sigma.numpy() - gm.covariances_).max() < 1e-3
    # the first iteration already agrees to round-off (same algorithm, same start)
    s1 = panther_em(torch.from_numpy(x), prior, tau=0.0, iters=1)
    gm.set_params(max_iter=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm.fit(x)
    assert np.abs(s1.mu.numpy() - gm.means_).max() < 1e-10


def test_tau_to_infinity_returns_the_prior(blobs: Blobs, fitted) -> None:
    prior, _, _ = fitted
    s = panther_em(blobs.bags[0], prior, tau=1e9, iters=3)
    assert torch.allclose(s.pi, torch.full((C,), 1.0 / C, dtype=torch.float64), atol=1e-7)
    assert torch.allclose(s.mu, prior.means, atol=1e-4)
    assert torch.allclose(s.sigma, prior.var, atol=1e-3)


def test_batched_equals_looped(blobs: Blobs, fitted) -> None:
    prior, _, _ = fitted
    bags = blobs.bags[:9]
    # small groups force several padded batches with unequal lengths
    batched = panther_batch(bags, prior, tau=10.0, iters=3, batch_size=4, progress=False)
    for bag, b in zip(bags, batched, strict=True):
        one = panther_em(bag, prior, tau=10.0, iters=3)
        for f in ("pi", "mu", "sigma", "q"):
            assert torch.allclose(getattr(one, f), getattr(b, f), atol=1e-10, rtol=1e-10), f
    cfg = PantherConfig(tau=10.0, iters=3)
    again = panther_em(bags[0], prior, **dataclasses.asdict(cfg))
    assert torch.allclose(again.mu, batched[0].mu, atol=1e-10)


def test_embedding_layouts(blobs: Blobs, fitted) -> None:
    prior, _, _ = fitted
    s = panther_em(blobs.bags[1], prior)
    e = slide_embedding(s)
    assert e.shape == (C, 1 + 2 * D)
    assert torch.equal(e[:, 0], s.pi) and torch.equal(e[:, 1 : 1 + D], s.mu)
    assert torch.equal(e[:, 1 + D :], s.sigma)
    v = panther_vector(s)
    assert v.shape == (C * (1 + 2 * D),) and torch.equal(v.view(C, -1), e)
    a = panther_vector(s, "allcat")
    assert torch.equal(a[:C], s.pi) and torch.equal(a[C : C + C * D].view(C, D), s.mu)
    assert torch.equal(torch.sort(a).values, torch.sort(v).values)


def test_em_errors_name_the_slide(fitted) -> None:
    prior, _, _ = fitted
    with pytest.raises(DataError, match="dimension of slide 'TCGA-01'") as e:
        panther_em(torch.zeros(5, D + 1), prior, slide_id="TCGA-01")
    assert "D = 33" in str(e.value)
    with pytest.raises(DataError, match="slide 'TCGA-02' has no patches"):
        panther_em(torch.zeros(0, D), prior, slide_id="TCGA-02")
    bad = torch.zeros(5, D)
    bad[2, 4] = float("nan")
    with pytest.raises(DataError, match="slide 'TCGA-03' has non-finite") as e:
        panther_em(bad, prior, slide_id="TCGA-03")
    assert "row 2" in str(e.value)
    with pytest.raises(DataError, match="slide 'b'"):
        panther_batch([torch.zeros(3, D), bad], prior, slide_ids=["a", "b"])
    with pytest.raises(ConfigError):
        panther_em(torch.zeros(3, D), prior, tau=-1.0)
    with pytest.raises(ConfigError):
        panther_em(torch.zeros(3, D), prior, init="kmeans")  # type: ignore[arg-type]


def test_summary_is_float64_and_doctests() -> None:
    prior = PrototypePrior(torch.zeros(2, 3), torch.ones(2, 3))
    s = panther_em(torch.randn(7, 3, generator=torch.Generator().manual_seed(0)), prior)
    assert isinstance(s, GMMSummary) and s.mu.dtype == torch.float64
    s32 = panther_em(torch.zeros(7, 3), prior, dtype="float32")
    assert s32.mu.dtype == torch.float32
    result = doctest.testmod(proto, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted >= 3
