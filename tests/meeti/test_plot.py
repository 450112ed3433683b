"""MEETI images: grid pitch, calibration pulse and planted waves measured in the rendered pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tests.conftest import shared_path

from clinfuse.builders.meeti.plot import (
    LAYOUTS,
    PALETTE_SLOTS,
    PlotConfig,
    geometry,
    naive_render_png,
    render,
    render_ecg,
    write_ecg_png,
)
from clinfuse.core.errors import ConfigError, DataError

FS = 500
N = 10 * FS  # 10-s records throughout
TWELVE = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
TRACE = PALETTE_SLOTS.index("trace")
LABEL = PALETTE_SLOTS.index("label")


def _px(x: float) -> int:
    return int(np.floor(x + 0.5))


def _synthetic_ecg(rng: np.random.Generator) -> np.ndarray:
    """(N, 12) sum-of-Gaussians beats (P, QRS, T) at 75 bpm, lead-specific gains, mV."""
    t = np.arange(N) / FS
    beat = np.zeros(N)
    for r in np.arange(0.4, 10.0, 0.8):
        for dt, amp, width in ((-0.16, 0.15, 0.025), (0.0, 1.2, 0.012), (0.25, 0.3, 0.04)):
            beat += amp * np.exp(-0.5 * ((t - r - dt) / width) ** 2)
    gains = rng.uniform(-1.0, 1.0, 12)
    return beat[:, None] * gains[None, :] + 0.01 * rng.standard_normal((N, 12))


def _line_centres(rgb: np.ndarray, colour: tuple[int, int, int], axis: int) -> np.ndarray:
    """Centres of the grid lines of ``colour`` running along ``axis`` (0: vertical lines)."""
    is_colour = np.all(rgb == np.array(colour, dtype=np.uint8), axis=2)
    ink = np.all(rgb == 0, axis=2)  # traces and labels hide the grid under them
    hits = np.flatnonzero(is_colour.sum(axis=axis) > 0.5 * (~ink).sum(axis=axis))
    runs = np.split(hits, np.flatnonzero(np.diff(hits) > 1) + 1)
    return np.array([r.mean() for r in runs if r.size])


@pytest.mark.parametrize("dpi", [300, 150])
def test_grid_pitch_is_dpi_over_25_4_without_drift(tmp_path: Path, dpi: int) -> None:
    cfg = PlotConfig(dpi=dpi)
    sig = _synthetic_ecg(np.random.default_rng(0))
    path = write_ecg_png(sig, FS, TWELVE, tmp_path / "e.png", cfg)
    rgb = np.asarray(Image.open(path).convert("RGB"))
    g = geometry(cfg, 10.0)
    ppm = dpi / 25.4
    for axis, n_mm, origin in (
        (0, g["grid"]["width_mm"], g["grid"]["x0"]),
        (1, g["grid"]["height_mm"], g["grid"]["y0"]),
    ):
        minor = _line_centres(rgb, cfg.minor_rgb, axis)
        major = _line_centres(rgb, cfg.major_rgb, axis)
        lines = np.sort(np.concatenate([minor, major]))
        # every 1-mm line found, none merged: consecutive gaps are one pitch
        assert lines.size == n_mm + 1
        assert np.all(np.abs(np.diff(lines) - ppm) < 1.5)
        k = np.arange(lines.size)
        slope, intercept = np.polyfit(k, lines, 1)
        assert abs(slope - ppm) < 0.01  # 0.19 px off (round(ppm)=12) would drift 50 px
        assert abs((lines[-1] - lines[0]) / (lines.size - 1) - ppm) < 0.1
        assert np.max(np.abs(lines - (origin + k * ppm))) <= 1.0  # no drift anywhere
        # the major lines are every 5th line, starting at the grid origin
        is_major = np.isin(lines, major)
        assert np.array_equal(np.flatnonzero(is_major), k[k % 5 == 0])
        assert np.all(np.abs(np.diff(major) - 5 * ppm) < 1.5)


@pytest.mark.parametrize("dpi", [300, 150])
def test_calibration_pulse_is_1_mv_by_200_ms(tmp_path: Path, dpi: int) -> None:
    cfg = PlotConfig(dpi=dpi, labels=False)
    sig = np.full((N, 12), np.nan)  # no traces: only the pulses are drawn
    path = write_ecg_png(sig, FS, TWELVE, tmp_path / "cal.png", cfg)
    black = np.all(np.asarray(Image.open(path).convert("RGB")) == 0, axis=2)
    g = geometry(cfg, 10.0)
    ppm = dpi / 25.4
    assert len(g["calibration"]) == len(g["rows"]) == 4
    for cal, row in zip(g["calibration"], g["rows"], strict=True):
        top, bottom = _px(row["top"]), _px(row["bottom"])
        box = black[top:bottom, : _px(g["trace_x0"])]
        assert box.any()
        rows = np.flatnonzero(box.sum(axis=1) >= 2.5 * ppm)  # horizontal runs
        cols = np.flatnonzero(box.sum(axis=0) >= 5 * ppm)  # vertical edges
        row_runs = np.split(rows, np.flatnonzero(np.diff(rows) > 1) + 1)
        col_runs = np.split(cols, np.flatnonzero(np.diff(cols) > 1) + 1)
        assert len(row_runs) == 2 and len(col_runs) == 2  # plateau + baseline, rise + fall
        height = row_runs[1].mean() - row_runs[0].mean()
        width = col_runs[1].mean() - col_runs[0].mean()
        assert abs(height - 10 * ppm) <= 1.5  # 1 mV x 10 mm/mV = 118.1 px at 300 dpi
        assert abs(width - 0.2 * 25 * ppm) <= 1.5  # 200 ms x 25 mm/s = 59.1 px at 300 dpi
        assert abs(top + row_runs[1].mean() - row["baseline"]) <= 1.0
        assert abs(col_runs[0].mean() - cal["x_rise"]) <= 1.0


def test_planted_sine_and_square_land_on_expected_pixels() -> None:
    cfg = PlotConfig(layout="12x1", labels=False)
    g = geometry(cfg, 10.0)
    t = np.arange(N) / FS
    sig = np.full((N, 12), np.nan)
    amp, freq = 0.8, 1.25  # 1.25 Hz: a 20-mm period
    sig[:, 1] = amp * np.sin(2 * np.pi * freq * t)
    high, low, half_period = 1.0, -0.5, 0.2
    square = np.where(np.floor(t / half_period) % 2 == 0, high, low)
    sig[:, 6] = square
    r = render(sig, FS, TWELVE, cfg)
    trace = r.index == TRACE
    pps, ppmv, tx0 = g["px_per_s"], g["px_per_mv"], g["trace_x0"]
    assert abs(pps - 295.28) < 0.01 and abs(ppmv - 118.11) < 0.01
    a = (g["line_width_px"] - 1) // 2

    panel = next(p for p in g["panels"] if p["lead"] == "II")
    top, bottom = _px(panel["top"]), _px(panel["bottom"])
    band = trace[top:bottom]
    cols = np.arange(_px(tx0) + 3, _px(tx0 + 9.99 * pps) - 3)
    centre = np.array([np.flatnonzero(band[:, c]).mean() for c in cols]) + top
    expected = panel["baseline"] - amp * np.sin(2 * np.pi * freq * (cols - tx0) / pps) * ppmv
    assert np.max(np.abs(centre - expected)) < 1.5
    # crests: top-most pixel at baseline - 0.8 mV, at t = 0.2 + 0.8 k seconds
    first = np.array([np.flatnonzero(band[:, c])[0] for c in cols]) + top
    assert abs(first.min() + a - (panel["baseline"] - amp * ppmv)) <= 1.0
    for crest_t in 0.2 + 0.8 * np.arange(12):
        window = (cols > tx0 + (crest_t - 0.1) * pps) & (cols < tx0 + (crest_t + 0.1) * pps)
        assert abs(cols[window][np.argmin(first[window])] - (tx0 + crest_t * pps)) <= 4

    panel = next(p for p in g["panels"] if p["lead"] == "V1")
    top, bottom = _px(panel["top"]), _px(panel["bottom"])
    band = trace[top:bottom]
    tall = np.flatnonzero(band.sum(axis=0) > 0.8 * (high - low) * ppmv)  # vertical edges
    edges = np.array([run.mean() for run in np.split(tall, np.flatnonzero(np.diff(tall) > 1) + 1)])
    expected_edges = tx0 + np.arange(1, 50) * half_period * pps
    assert edges.size == expected_edges.size
    assert np.max(np.abs(edges - expected_edges)) <= 1.5
    for level, t_mid in ((high, 0.1), (low, 0.3)):
        c = _px(tx0 + t_mid * pps)
        rows = np.flatnonzero(band[:, c]) + top
        assert abs(rows.mean() - (panel["baseline"] - level * ppmv)) <= 1.0


LAYOUT_SIZES = {  # (W, H) of a 10-s record with the default 5-mm margins
    ("3x4", 300): (3190, 2009),
    ("6x2", 300): (3190, 2245),
    ("12x1", 300): (3190, 3662),
    ("3x4", 150): (1595, 1005),
    ("6x2", 150): (1595, 1123),
    ("12x1", 150): (1595, 1832),
}


@pytest.mark.parametrize("layout", ["3x4", "6x2", "12x1"])
def test_layouts_size_and_leads_found_by_name_in_any_order(layout: str) -> None:
    rng = np.random.default_rng(1)
    order = rng.permutation(12)
    # names shuffled, case mixed (LUDB writes "avr", "v1"), plus an extra lead not in the layout
    names = [TWELVE[j].upper() if k % 2 else TWELVE[j].lower() for k, j in enumerate(order)]
    names.append("vx")
    level = dict(zip(TWELVE, np.linspace(-1.0, 1.0, 12), strict=True))  # mV, one per lead
    sig = np.array([level[TWELVE[j]] for j in order] + [5.0])[None, :].repeat(N, axis=0)
    cfg = PlotConfig(layout=layout, labels=False, dpi=150)
    r = render(sig, FS, names, cfg)
    g = r.geometry
    assert (g["width"], g["height"]) == LAYOUT_SIZES[(layout, 150)]
    assert r.index.shape == (g["height"], g["width"])
    for dpi in (300, 150):
        size = geometry(PlotConfig(layout=layout, dpi=dpi), 10.0)
        assert (size["width"], size["height"]) == LAYOUT_SIZES[(layout, dpi)]
    assert r.missing_leads == () and r.clipped_leads == ()
    n_panels = sum(len(c) for c in LAYOUTS[layout]) + (layout == "3x4")
    assert len(g["panels"]) == len(r.panels) == n_panels
    trace = r.index == TRACE
    for p in g["panels"]:
        top = _px(p["top"])
        box = trace[top : _px(p["bottom"]), _px(p["x0"]) + 2 : _px(p["x1"]) - 2]
        rows = np.flatnonzero(box.any(axis=1)) + top
        # the panel shows its own lead: levels are 10.7 px apart at 150 dpi
        expected = p["baseline"] - level[p["lead"]] * g["px_per_mv"]
        assert rows.size and np.all(np.abs(rows - expected) < 2)


def test_missing_leads_are_blank_with_their_label() -> None:
    names = [n for n in TWELVE if n not in ("V3", "aVL")]
    sig = _synthetic_ecg(np.random.default_rng(2))[:, : len(names)]
    r = render(sig, FS, names, PlotConfig(dpi=150))
    assert r.missing_leads == ("V3", "aVL")
    for p, rep in zip(r.geometry["panels"], r.panels, strict=True):
        view = r.index[_px(p["top"]) : _px(p["bottom"]), _px(p["x0"]) + 1 : _px(p["x1"]) - 1]
        assert rep.missing == (p["lead"] in ("V3", "aVL"))
        assert (view == LABEL).any()
        assert (view == TRACE).any() != rep.missing


def test_clipping_stays_in_the_band_and_is_flagged() -> None:
    cfg = PlotConfig(labels=False, dpi=150)
    sig = _synthetic_ecg(np.random.default_rng(3)) * 0.5
    spiky = sig.copy()
    spiky[3600:3700, TWELVE.index("V2")] = 5.0  # 2.5 mV over the band
    flat = render(sig, FS, TWELVE, cfg)
    r = render(spiky, FS, TWELVE, cfg)
    assert flat.clipped_leads == () and r.clipped_leads == ("V2",)
    assert [rep.clipped_samples for rep in r.panels if rep.lead == "V2"] == [100]
    panel = next(p for p in r.geometry["panels"] if p["lead"] == "V2")
    changed = np.argwhere(r.index != flat.index)
    assert changed.size
    top, bottom = _px(panel["top"]), _px(panel["bottom"])
    assert changed[:, 0].min() == top and changed[:, 0].max() < bottom  # pinned to the edge


def test_nan_samples_leave_gaps() -> None:
    cfg = PlotConfig(layout="12x1", labels=False, dpi=150)
    sig = _synthetic_ecg(np.random.default_rng(4))
    sig[2 * FS : 3 * FS, 1] = np.nan
    sig[7 * FS : 7 * FS + 50, 1] = np.inf  # 0.1 s
    r = render(sig, FS, TWELVE, cfg)
    g = r.geometry
    p = g["panels"][1]
    assert p["lead"] == "II" and r.panels[1].nan_samples == FS + 50
    band = r.index[_px(p["top"]) : _px(p["bottom"])] == TRACE
    has = band.any(axis=0)
    x = g["trace_x0"] + np.array([2.0, 3.0, 7.0, 7.1]) * g["px_per_s"]
    assert not has[_px(x[0]) + 2 : _px(x[1]) - 2].any()  # the 1-s gap is blank
    assert has[_px(x[0]) - 3] and has[_px(x[1]) + 3]  # and the trace is drawn around it
    assert not has[_px(x[2]) + 2 : _px(x[3]) - 2].any()
    assert has[_px(x[2]) - 3] and has[_px(x[3]) + 3]
    empty = render(np.full((N, 12), np.nan), FS, TWELVE, cfg)  # all NaN: pulses only
    assert (empty.index[:, _px(g["trace_x0"]) :] != TRACE).all()


def test_png_round_trip_is_exact_and_atomic(tmp_path: Path) -> None:
    cfg = PlotConfig(dpi=150)
    sig = _synthetic_ecg(np.random.default_rng(5))
    path = write_ecg_png(sig, FS, TWELVE, tmp_path / "p1000" / "s1.png", cfg)
    image = Image.open(path)
    assert image.mode == "P" and round(image.info["dpi"][0]) == 150
    assert np.array_equal(np.asarray(image.convert("RGB")), render_ecg(sig, FS, TWELVE, cfg))
    assert sorted(p.name for p in path.parent.iterdir()) == ["s1.png"]  # no temp file left


def test_bad_input_raises_clear_errors() -> None:
    sig = np.zeros((N, 12))
    with pytest.raises(DataError, match="signal.T"):
        render(sig.T, FS, TWELVE)
    with pytest.raises(DataError, match="2-D"):
        render(sig[:, 0], FS, TWELVE)
    with pytest.raises(DataError, match="duplicate lead"):
        render(sig, FS, ["ii", *TWELVE[1:]])
    with pytest.raises(DataError, match="sampling rate"):
        render(sig, 0, TWELVE)
    with pytest.raises(ConfigError, match="layout"):
        PlotConfig(layout="4x3")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="multiple"):
        PlotConfig(major_mm=4.5)
    with pytest.raises(ConfigError, match="compress"):
        PlotConfig(png_compress_level=12)


def test_naive_baseline_draws_the_same_page_size(tmp_path: Path) -> None:
    sig = _synthetic_ecg(np.random.default_rng(6))
    path = naive_render_png(sig, FS, TWELVE, tmp_path / "naive.png", dpi=100)
    g = geometry(PlotConfig(dpi=100), 10.0)
    assert Image.open(path).size == (g["width"], g["height"])


@pytest.mark.shared_data
def test_ludb_record_rhythm_strip_repeats_lead_ii() -> None:
    wfdb = pytest.importorskip("wfdb")
    data = shared_path("ecg", "ludb", "data")
    rec = wfdb.rdrecord(str(data / "1"))
    assert rec.sig_name[1] == "ii"  # lower-case names in the header
    cfg = PlotConfig(dpi=150, labels=False)
    r = render(rec.p_signal, rec.fs, rec.sig_name, cfg)
    assert r.missing_leads == ()
    g = r.geometry
    ii, rhythm = g["panels"][1], g["panels"][-1]
    assert ii["lead"] == rhythm["lead"] == "II" and ii["col"] == 0
    cols = np.arange(_px(ii["x0"]) + 2, _px(ii["x1"]) - 2)
    shift = rhythm["baseline"] - ii["baseline"]

    def top_rows(panel: dict) -> np.ndarray:
        band = r.index[_px(panel["top"]) : _px(panel["bottom"]), cols] == TRACE
        return np.argmax(band, axis=0) + _px(panel["top"])

    assert np.max(np.abs(top_rows(rhythm) - top_rows(ii) - shift)) <= 1.0
