r"""Image metrics of an edit (source vs edited), the checks built on them and the verdict rule.

No weights: everything is computed locally on greyscale luminance at <= 512 px.

* The **edited region** :math:`R`: pixels whose Gaussian-smoothed (:math:`\sigma=1.5`) absolute
  difference exceeds ``change_tol``, connected components smaller than ``max(16, 2\cdot10^{-4}
  N)`` pixels dropped, dilated by 3 px. Outside it lies everything the edit should not touch.
* Fidelity: mean SSIM outside :math:`R` (MedEBench's SSIM_context) and the changed-pixel
  fraction outside :math:`R`; a global change shows as a large changed fraction overall.
* Compliance: the 95th percentile of the absolute change inside :math:`R`.
* Realism: the noise-grain ratio :math:`\operatorname{sd}(x_e - G_1 x_e)_R /
  \operatorname{sd}(x_s - G_1 x_s)_R` and, per component, the ratio of mean Sobel gradient
  magnitude (burned-in text and hard edges raise it).
* Structure: the share of :math:`R` inside the allowed mask (organ, or a given mask).
* Duplicated patch (copy-move): :func:`copy_move_score`, block matching of the edit's high-pass
  texture against every other place of the source.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from PIL import Image

__all__ = ["CHECKS", "copy_move_score", "decide", "edit_metrics", "gray", "metric_scores"]

METRIC_SIDE = 512
"""Metrics are computed at this longer side at most (both images downscaled alike)."""


def gray(img: Image.Image, side: int = METRIC_SIDE) -> np.ndarray:
    """Luminance in [0, 1] as float32 ``(H, W)``, downscaled to ``side`` at most."""
    g = img.convert("L")
    if max(g.size) > side:
        s = side / max(g.size)
        g = g.resize(
            (max(1, round(g.size[0] * s)), max(1, round(g.size[1] * s))), Image.Resampling.BILINEAR
        )
    return np.asarray(g, dtype=np.float32) / 255.0


COPY_BLOCK = 32
"""Side of the blocks :func:`copy_move_score` matches (metric pixels)."""


def copy_move_score(
    source: np.ndarray,
    edited: np.ndarray,
    block: int = COPY_BLOCK,
    max_blocks: int = 8,
    min_shift: int = 4,
    min_std: float = 2e-3,
) -> tuple[float, int, int]:
    r"""How much an edited block is a copy of another place of the source (copy-move forgery).

    On the high-pass images :math:`h = x - G_1 x`, blocks of side ``block`` on a half-block grid
    whose texture the edit replaced (local correlation of :math:`h_e` with :math:`h_s` below 0.5,
    :math:`\operatorname{sd}(h_e) \ge` ``min_std``; at most ``max_blocks``, least correlated
    first) are matched by normalised cross-correlation against every block of :math:`h_s`
    displaced by at least ``min_shift`` px. For a block :math:`B` and its best displacement
    :math:`d`,

    .. math:: c(B, d) = \mathrm{NCC}(h_e[B], h_s[B+d]) - \max(0, \mathrm{NCC}(h_s[B], h_s[B+d])),

    and the score is the second largest :math:`c(B', d)` over :math:`B` and its 8 half-block
    neighbours :math:`B'`: a copied patch (at least 2 blocks wide) scores about 1, as its grain
    is found elsewhere, in agreeing neighbouring blocks; periodic texture (grid lines), which also
    matches in the source itself, fresh noise, and a smooth lesion that happens to resemble one
    spot of the source score low. Copies made at another resolution (a half-pixel shift after
    the downscale to the metric size) score lower (about 0.6-0.8).

    Shape:
        ``source``, ``edited``: ``(H, W)`` float in [0, 1]. Output: ``(score, dy, dx)``, the best
        block's score and the displacement from it to its donor in the source.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> src = rng.random((128, 128)).astype(np.float32)
        >>> edt = src.copy()
        >>> edt[10:70, 60:120] = src[50:110, 30:90]  # a 60 px block moved by (+40, -30)
        >>> score, dy, dx = copy_move_score(src, edt)
        >>> bool(score > 0.9), dy, dx
        (True, 40, -30)
        >>> copy_move_score(src, src)[0]
        0.0
    """
    from scipy import ndimage, signal

    h, w = source.shape
    b = int(block)
    if min(h, w) < 3 * b:
        return 0.0, 0, 0
    hs = source - ndimage.gaussian_filter(source, 1.0)
    he = edited - ndimage.gaussian_filter(edited, 1.0)

    def local_mean(x: np.ndarray) -> np.ndarray:
        return ndimage.uniform_filter(x, b, mode="constant")

    me, ms = local_mean(he), local_mean(hs)
    ve = local_mean(he * he) - me**2
    corr = (local_mean(he * hs) - me * ms) / np.sqrt(
        np.maximum(ve * (local_mean(hs * hs) - ms**2), 1e-12)
    )
    cy, cx = np.meshgrid(
        np.arange(b // 2, h - b // 2 + 1, b // 2),
        np.arange(b // 2, w - b // 2 + 1, b // 2),
        indexing="ij",
    )
    c, sd = corr[cy, cx].ravel(), np.sqrt(np.maximum(ve[cy, cx], 0.0)).ravel()
    idx = np.flatnonzero((sd >= min_std) & (c < 0.5))
    idx = idx[np.argsort(c[idx], kind="stable")][:max_blocks]
    if idx.size == 0:
        return 0.0, 0, 0
    ones = np.ones((b, b), np.float32)
    s1 = signal.fftconvolve(hs, ones, mode="valid")
    var_s = signal.fftconvolve(hs * hs, ones, mode="valid") - s1**2 / b**2
    flat = var_s < min_std**2 * b * b  # no texture there: NCC undefined
    sd_s = np.sqrt(np.maximum(var_s, 1e-12))

    def ncc(a: np.ndarray, d: np.ndarray) -> float:
        a, d = a - a.mean(), d - d.mean()
        return float((a * d).sum() / (np.linalg.norm(a) * np.linalg.norm(d) + 1e-12))

    best = (0.0, 0, 0)
    for i in idx:
        y0, x0 = int(cy.ravel()[i]) - b // 2, int(cx.ravel()[i]) - b // 2
        t = he[y0 : y0 + b, x0 : x0 + b]
        t0 = t - t.mean()
        m = signal.fftconvolve(hs, t0[::-1, ::-1], mode="valid")
        m /= sd_s * np.linalg.norm(t0) + 1e-12
        m[flat] = -1.0
        near = slice(max(0, y0 - min_shift + 1), y0 + min_shift)
        m[near, max(0, x0 - min_shift + 1) : x0 + min_shift] = -1.0  # the block's own place
        py, px = np.unravel_index(int(np.argmax(m)), m.shape)
        dy, dx = int(py - y0), int(px - x0)
        support = [  # the block and its 8 half-block neighbours, all at displacement (dy, dx)
            ncc(he[ny : ny + b, nx : nx + b], hs[ny + dy : ny + dy + b, nx + dx : nx + dx + b])
            - max(
                0.0,
                ncc(hs[ny : ny + b, nx : nx + b], hs[ny + dy : ny + dy + b, nx + dx : nx + dx + b]),
            )
            for ny in (y0 - b // 2, y0, y0 + b // 2)
            for nx in (x0 - b // 2, x0, x0 + b // 2)
            if min(ny, nx, ny + dy, nx + dx) >= 0
            and max(ny, ny + dy) + b <= h
            and max(nx, nx + dx) + b <= w
        ]
        score = sorted(support)[-2] if len(support) > 1 else 0.0
        if score > best[0]:
            best = (score, dy, dx)
    return best


def _effectively_same_mode(src: Image.Image, edt: Image.Image) -> bool:
    if src.mode == edt.mode:
        return True
    if src.mode == "L" and edt.mode in ("RGB", "RGBA"):  # a grey image returned as RGB
        a = np.asarray(edt.convert("RGB"), dtype=np.int16)
        return (
            int(np.abs(a[..., 0] - a[..., 1]).max()) <= 8
            and int(np.abs(a[..., 1] - a[..., 2]).max()) <= 8
        )
    return False


def edit_metrics(
    source: Image.Image,
    edited: Image.Image,
    allowed: np.ndarray | None = None,
    change_tol: float = 0.03,
) -> dict[str, float]:
    """The metrics of one edit (see the module docstring); NaN where undefined.

    Shape:
        ``allowed``: boolean ``(H, W)`` at the source's size, or None (everywhere allowed).
        Output: a flat dict of floats.

    Example:
        >>> img = Image.new("L", (64, 64), 100)
        >>> m = edit_metrics(img, img.copy())
        >>> m["size_kept"], m["region_fraction"], m["ssim_outside"]
        (1.0, 0.0, 1.0)
    """
    from scipy import ndimage
    from skimage.filters import sobel
    from skimage.metrics import structural_similarity

    nan = math.nan
    out: dict[str, float] = {
        "size_kept": float(source.size == edited.size),
        "mode_kept": float(_effectively_same_mode(source, edited)),
        "width": float(edited.size[0]),
        "height": float(edited.size[1]),
    }
    if not out["size_kept"]:
        return out
    s, e = gray(source), gray(edited)
    dup, dy, dx = copy_move_score(s, e)
    out.update(dup_score=dup, dup_dy=float(dy), dup_dx=float(dx))
    diff = np.abs(ndimage.gaussian_filter(e, 1.5) - ndimage.gaussian_filter(s, 1.5))
    changed = diff > change_tol
    labels, n = ndimage.label(changed)
    min_px = max(16, int(2e-4 * s.size))
    sizes = ndimage.sum_labels(changed, labels, index=np.arange(1, n + 1)) if n else np.zeros(0)
    keep = [i + 1 for i, sz in enumerate(sizes) if sz >= min_px]
    region = (
        ndimage.binary_dilation(np.isin(labels, keep), iterations=3)
        if keep
        else np.zeros_like(changed)
    )
    outside = ~region
    _, smap = structural_similarity(s, e, data_range=1.0, full=True)
    out.update(
        changed_fraction=float(changed.mean()),
        region_fraction=float(region.mean()),
        n_regions=float(len(keep)),
        changed_outside=float(changed[outside].mean()) if outside.any() else 0.0,
        ssim_outside=float(smap[outside].mean()) if outside.any() else nan,
        ssim=float(smap.mean()),
    )
    if not region.any():
        out.update(
            roi_change_p95=0.0,
            roi_signed_change=0.0,
            grain_ratio=1.0,
            edge_ratio=1.0,
            inside_allowed=1.0,
        )
        return out
    out["roi_change_p95"] = float(np.percentile(np.abs(e - s)[region], 95))
    out["roi_signed_change"] = float((e - s)[region].mean())
    hp_s, hp_e = s - ndimage.gaussian_filter(s, 1.0), e - ndimage.gaussian_filter(e, 1.0)
    out["grain_ratio"] = float(hp_e[region].std() / max(hp_s[region].std(), 1e-4))
    gs, ge = sobel(s), sobel(e)
    comp_labels, nc = ndimage.label(region)
    ratios = [
        float(ge[comp_labels == i].mean() / max(gs[comp_labels == i].mean(), 2e-3))
        for i in range(1, nc + 1)
    ]
    out["edge_ratio"] = max(ratios) if ratios else 1.0
    if allowed is not None:
        a = allowed
        if a.shape != region.shape:
            a = (
                np.asarray(
                    Image.fromarray(a.astype(np.uint8) * 255).resize(
                        (region.shape[1], region.shape[0]), Image.Resampling.NEAREST
                    )
                )
                > 0
            )
        out["inside_allowed"] = float((region & a).sum() / region.sum())
    else:
        out["inside_allowed"] = 1.0
    return out


Check = tuple[str, Callable[[Mapping[str, float], Any], bool], Callable[[Mapping, Any], str]]


def _get(m: Mapping[str, float], k: str, default: float) -> float:
    v = m.get(k, default)
    return default if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


CHECKS: tuple[Check, ...] = (
    (
        "resized",
        lambda m, c: _get(m, "size_kept", 1) < 1,
        lambda m, c: f"resized output: {m['width']:.0f}x{m['height']:.0f} differs from the source",
    ),
    (
        "mode_changed",
        lambda m, c: _get(m, "mode_kept", 1) < 1,
        lambda m, c: "colour mode changed (grey source returned in colour, or the reverse)",
    ),
    (
        "duplicated_patch",
        lambda m, c: _get(m, "dup_score", 0) > c.max_duplicate_score,
        lambda m, c: (
            f"duplicated patch: a block of the edit copies the source {m['dup_dy']:+.0f}, "
            f"{m['dup_dx']:+.0f} px away (copy-move score {m['dup_score']:.2f} > "
            f"{c.max_duplicate_score})"
        ),
    ),
    (
        "no_edit",
        lambda m, c: _get(m, "region_fraction", 0) == 0,
        lambda m, c: "no visible change: the finding was not drawn / removed",
    ),
    (
        "global_change",
        lambda m, c: _get(m, "changed_fraction", 0) > c.max_changed_fraction,
        lambda m, c: (
            f"global change: {m['changed_fraction']:.0%} of the image changed "
            f"(brightness, contrast or gamma altered everywhere)"
        ),
    ),
    (
        "sharp_edges",
        lambda m, c: _get(m, "edge_ratio", 1) > c.max_edge_ratio,
        lambda m, c: (
            f"burned-in text or sharp edges in the edited region (gradient ratio "
            f"{m['edge_ratio']:.2f} > {c.max_edge_ratio})"
        ),
    ),
    (
        "outside_mask",
        lambda m, c: _get(m, "inside_allowed", 1) < c.min_inside,
        lambda m, c: f"edit outside the target anatomy ({m['inside_allowed']:.0%} inside)",
    ),
    (
        "fidelity",
        lambda m, c: (
            _get(m, "ssim_outside", 1) < c.min_ssim_outside
            or _get(m, "changed_outside", 0) > c.max_changed_outside
        ),
        lambda m, c: (
            f"image changed outside the edit (SSIM {m['ssim_outside']:.3f}, "
            f"{m['changed_outside']:.1%} changed pixels)"
        ),
    ),
    (
        "grain",
        lambda m, c: not c.grain_range[0] <= _get(m, "grain_ratio", 1) <= c.grain_range[1],
        lambda m, c: f"noise grain not preserved in the edit (ratio {m['grain_ratio']:.2f})",
    ),
    (
        "weak_edit",
        lambda m, c: _get(m, "roi_change_p95", 0) < c.min_roi_change,
        lambda m, c: (
            f"change too faint to be seen ({m['roi_change_p95']:.3f} < {c.min_roi_change})"
        ),
    ),
)
"""Ordered checks: (reason code, fails(metrics, config), message). The first failing one is the
verdict's reason."""


def metric_scores(m: Mapping[str, float], cfg: Any) -> dict[str, float]:
    r"""Rubric scores in [0, 1] from the metrics (the local judge). Each equals 0.6 exactly at
    its metric limit: compliance :math:`0.6\,p_{95}/\text{min\_roi\_change}`, structure the
    share inside the mask scaled likewise, realism from the grain and gradient ratios and the
    copy-move score, fidelity
    :math:`1 - 0.4\,(1-\mathrm{SSIM}_{out})/(1-\text{min\_ssim\_outside})`; all 0 for a
    resized or unchanged output."""
    if _get(m, "size_kept", 1) < 1 or _get(m, "region_fraction", 0) == 0:
        return {"compliance": 0.0, "structure": 0.0, "realism": 0.0, "fidelity": 0.0}

    def clip(x: float) -> float:
        return float(min(1.0, max(0.0, x)))

    g = _get(m, "grain_ratio", 1)
    lo, hi = cfg.grain_range
    bound = lo if g < 1 else hi
    grain_bad = abs(math.log(max(g, 1e-6))) / max(abs(math.log(bound)), 1e-6)
    edge_bad = (_get(m, "edge_ratio", 1) - 1) / max(cfg.max_edge_ratio - 1, 1e-6)
    dup_bad = _get(m, "dup_score", 0) / max(cfg.max_duplicate_score, 1e-6)
    return {
        "compliance": clip(0.6 * _get(m, "roi_change_p95", 0) / cfg.min_roi_change),
        "structure": clip(0.6 * _get(m, "inside_allowed", 1) / max(cfg.min_inside, 1e-6)),
        "realism": clip(1 - 0.4 * max(grain_bad, edge_bad, dup_bad, 0.0)),
        "fidelity": clip(
            1
            - 0.4
            * max(
                (1 - _get(m, "ssim_outside", 1)) / max(1 - cfg.min_ssim_outside, 1e-6),
                _get(m, "changed_outside", 0) / max(cfg.max_changed_outside, 1e-6),
            )
        ),
    }


def decide(
    scores: Mapping[str, float | None],
    metrics: Mapping[str, float],
    cfg: Any,
    *,
    gates: bool = True,
    model_reason: str = "",
) -> tuple[bool, str, str]:
    """``(qualified, reason_code, reason)``: the first failing metric check (when ``gates``),
    else the first rubric score below its ``min_<name>`` threshold, else qualified."""
    if gates:
        for code, fails, message in CHECKS:
            if fails(metrics, cfg):
                return False, code, message(metrics, cfg)
    for name in ("compliance", "structure", "realism", "fidelity"):
        v = scores.get(name)
        thr = getattr(cfg, f"min_{name}")
        if v is None or not v >= thr:
            why = model_reason or f"{name} score {v} below {thr}"
            return False, f"low_{name}", why
    return True, "ok", model_reason or "all rubric scores and image checks pass"
