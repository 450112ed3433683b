r"""MEETI images: millimetre-exact ECG paper rendered straight into a numpy array.

MEETI ships a plotted image per study (300 dpi, 25 mm/s, 10 mm/mV; layouts 3x4, 6x2, 12x1). The
builder renders hundreds of thousands of records, so this module does not go through
matplotlib: the paper is a ``(H, W)`` array of palette indices (paper, minor grid, major grid,
trace, label), the grid is drawn once per geometry and cached, the traces are rasterised with
numpy column spans and the PNG is written by Pillow as a palette image (one byte per pixel).

Geometry, with :math:`d` the resolution in dpi, :math:`s` the paper speed in mm/s and :math:`g`
the gain in mm/mV:

.. math::

    p_{mm} = d / 25.4, \qquad p_s = s\,p_{mm}, \qquad p_{mV} = g\,p_{mm}

(11.81 px/mm, 295.3 px/s and 118.1 px/mV at the defaults). Every position is computed from the
paper origin in floating point and rounded once (half up), so minor grid line :math:`k` sits at
:math:`\lfloor x_0 + k\,p_{mm} + 1/2 \rfloor`: no drift accumulates across the 250+ mm of a
strip. A sample :math:`v_i` (mV) of a lead drawn in a panel whose row baseline is :math:`y_b`
lands at column :math:`x_T + (i / f_s)\,p_s` and row :math:`y_b - v_i\,p_{mV}`, where
:math:`x_T` is the start of the trace area (after the calibration pulse).

Page layout (all lengths in mm, the grid covers everything inside the margins)::

    margin | calibration (1 mV x 200 ms pulse per row) | trace area = duration x speed | margin

* ``3x4``: columns (I, II, III), (aVR, aVL, aVF), (V1, V2, V3), (V4, V5, V6), each showing its
  quarter of the record (2.5 s of a 10-s strip) in time order, plus a full-length rhythm strip of
  ``rhythm_lead`` at the bottom; rows 40 mm high by default.
* ``6x2``: columns (I, II, III, aVR, aVL, aVF) and (V1..V6), each showing half the record; 30 mm.
* ``12x1``: the twelve leads, full length, one per row; 25 mm.

Image size at the defaults (5-mm margins, 10-mm calibration area) for a 10-s record: 300 dpi
``3x4`` 3190 x 2009 px (W x H; 270 x 170 mm), ``6x2`` 3190 x 2245 px (270 x 190 mm), ``12x1``
3190 x 3662 px (270 x 310 mm); at 150 dpi 1595 x 1005, 1595 x 1123 and 1595 x 1832 px.

Leads are matched by name (case and surrounding spaces ignored: ``avr`` finds ``aVR``), in any
order; a layout lead the record lacks leaves its panel blank with its label. A trace that leaves
its row band is clipped to it and the clipping is reported per panel (:class:`Rendering`). NaN or
infinite samples leave gaps.

:func:`naive_render_png` is the plain-matplotlib baseline of the speed benchmark, not part of
the builder.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from clinfuse.core.errors import ConfigError, DataError

__all__ = [
    "LAYOUTS",
    "PALETTE_SLOTS",
    "PanelReport",
    "PlotConfig",
    "Rendering",
    "geometry",
    "naive_render_png",
    "render",
    "render_ecg",
    "write_ecg_png",
]

log = logging.getLogger(__name__)

Layout = Literal["3x4", "6x2", "12x1"]
RGB = tuple[int, int, int]

LAYOUTS: dict[str, tuple[tuple[str, ...], ...]] = {
    "3x4": (("I", "II", "III"), ("aVR", "aVL", "aVF"), ("V1", "V2", "V3"), ("V4", "V5", "V6")),
    "6x2": (("I", "II", "III", "aVR", "aVL", "aVF"), ("V1", "V2", "V3", "V4", "V5", "V6")),
    "12x1": (("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"),),
}
"""Standard lead order per layout: a tuple of columns, each a tuple of leads from top to bottom."""

_HAS_RHYTHM: dict[str, bool] = {"3x4": True, "6x2": False, "12x1": False}
_ROW_HEIGHT_MM: dict[str, float] = {"3x4": 40.0, "6x2": 30.0, "12x1": 25.0}

PALETTE_SLOTS: tuple[str, ...] = ("paper", "minor", "major", "trace", "label")
"""Meaning of each palette index of :attr:`Rendering.index` (0 = paper, ..., 4 = label)."""
_PAPER, _MINOR, _MAJOR, _TRACE, _LABEL = range(len(PALETTE_SLOTS))

_CAL_MV = 1.0
_CAL_S = 0.2
_CAL_PAD_MM = 2.5  # paper before and after the calibration pulse
_LINE_MM = 0.25  # automatic trace width
_MAJOR_LINE_MM = 0.15  # automatic major grid line width


@dataclass(frozen=True)
class PlotConfig:
    """How an ECG is drawn on millimetre paper (defaults: MEETI's 300 dpi, 25 mm/s, 10 mm/mV)."""

    dpi: int = 300
    """Resolution in pixels per inch; 1 mm is ``dpi / 25.4`` px."""
    speed_mm_s: float = 25.0
    """Paper speed: millimetres of paper per second of signal."""
    gain_mm_mv: float = 10.0
    """Gain: millimetres of paper per millivolt."""
    layout: Layout = "3x4"
    """Panel arrangement (see :data:`LAYOUTS`)."""
    rhythm_lead: str | None = "II"
    """Lead of the full-length rhythm strip under the ``3x4`` layout; None draws none."""
    calibration: bool = True
    """Draw a 1 mV x 200 ms calibration pulse at the start of every row."""
    minor_mm: float = 1.0
    """Spacing of the minor grid lines, in mm."""
    major_mm: float = 5.0
    """Spacing of the major grid lines, in mm (an integer multiple of ``minor_mm``)."""
    row_height_mm: float | None = None
    """Height of one row band in mm; None uses the layout's default (40, 30 or 25 mm)."""
    margins_mm: float = 5.0
    """Blank paper around the grid, on every side, in mm."""
    paper_rgb: RGB = (255, 255, 255)
    """Colour of the paper and margins."""
    minor_rgb: RGB = (255, 192, 192)
    """Colour of the minor (1-mm) grid lines: light pink."""
    major_rgb: RGB = (230, 96, 96)
    """Colour of the major (5-mm) grid lines: red."""
    trace_rgb: RGB = (0, 0, 0)
    """Colour of the traces and calibration pulses."""
    label_rgb: RGB = (0, 0, 0)
    """Colour of the lead names."""
    line_width_px: int | None = None
    """Trace width in px; None uses 0.25 mm rounded (3 px at 300 dpi, 1 px at 150 dpi). Odd
    widths centre the line on the samples; even widths sit half a pixel down and right."""
    major_line_px: int | None = None
    """Width of the major grid lines in px; None uses 0.15 mm rounded (2 px at 300 dpi)."""
    labels: bool = True
    """Write each panel's lead name in its top-left corner (Pillow's built-in font)."""
    label_height_mm: float = 3.0
    """Height of the lead names, in mm."""
    png_compress_level: int = 6
    """zlib level of the PNG (0-9). Render + write of a 300-dpi 3x4 LUDB page: 6 ~21 ms / 37 KiB,
    3 ~16 ms / 60 KiB, 1 ~16 ms / 73 KiB, 9 ~100 ms / 34 KiB (2-core Xeon)."""

    def __post_init__(self) -> None:
        positive = {
            "dpi": self.dpi,
            "speed_mm_s": self.speed_mm_s,
            "gain_mm_mv": self.gain_mm_mv,
            "minor_mm": self.minor_mm,
            "major_mm": self.major_mm,
            "label_height_mm": self.label_height_mm,
        }
        for name, value in positive.items():
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ConfigError(
                    f"PlotConfig.{name} must be a positive number",
                    expected="> 0",
                    found=value,
                    fix=f"set {name} to a positive value",
                )
        if self.layout not in LAYOUTS:
            raise ConfigError(
                "unknown ECG layout",
                expected=" | ".join(LAYOUTS),
                found=self.layout,
                fix="choose one of the listed layouts",
            )
        ratio = self.major_mm / self.minor_mm
        if abs(ratio - round(ratio)) > 1e-9:
            raise ConfigError(
                "PlotConfig.major_mm must be an integer multiple of minor_mm",
                expected="major_mm = k * minor_mm",
                found=f"major_mm={self.major_mm}, minor_mm={self.minor_mm}",
                fix="use e.g. minor_mm=1, major_mm=5",
            )
        if self.row_height_mm is not None and not self.row_height_mm > 0:
            raise ConfigError(
                "PlotConfig.row_height_mm must be positive",
                expected="> 0 or None",
                found=self.row_height_mm,
                fix="leave it None for the layout's default",
            )
        if not self.margins_mm >= 0:
            raise ConfigError(
                "PlotConfig.margins_mm must be >= 0", expected=">= 0", found=self.margins_mm
            )
        for name in ("line_width_px", "major_line_px"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int) and value >= 1):
                raise ConfigError(
                    f"PlotConfig.{name} must be a positive integer",
                    expected="int >= 1 or None",
                    found=value,
                    fix="leave it None to derive it from dpi",
                )
        for name in ("paper_rgb", "minor_rgb", "major_rgb", "trace_rgb", "label_rgb"):
            value = getattr(self, name)
            if len(value) != 3 or not all(0 <= int(c) <= 255 for c in value):
                raise ConfigError(
                    f"PlotConfig.{name} must be an RGB triple",
                    expected="three integers in 0..255",
                    found=value,
                )
        if not 0 <= self.png_compress_level <= 9:
            raise ConfigError(
                "PlotConfig.png_compress_level out of range",
                expected="0..9",
                found=self.png_compress_level,
            )

    @property
    def palette(self) -> np.ndarray:
        """``(5, 3)`` uint8 colours, in the order of :data:`PALETTE_SLOTS`."""
        return np.array(
            [self.paper_rgb, self.minor_rgb, self.major_rgb, self.trace_rgb, self.label_rgb],
            dtype=np.uint8,
        )


def _round(x: Any) -> Any:
    """Round half up (the one rounding used for every pixel position)."""
    return np.floor(np.asarray(x, dtype=np.float64) + 0.5).astype(np.int64)


def geometry(config: PlotConfig, duration_s: float) -> dict[str, Any]:
    """Where everything goes on the page, in floating-point pixels (drawn at round-half-up).

    Keys: ``px_per_mm``, ``px_per_s``, ``px_per_mv``, ``width`` and ``height`` (image size in
    px), ``grid`` (``x0``, ``y0``: origin in px; ``width_mm``, ``height_mm``, ``minor_mm``,
    ``major_every``), ``trace_x0`` (column of t = 0), ``rows`` (``top``, ``bottom``,
    ``baseline`` per row band), ``panels`` (``lead``, ``row``, ``col``, ``t0``, ``t1`` in s,
    ``x0``, ``x1``, ``top``, ``bottom``, ``baseline``), ``calibration`` (per row: baseline from
    ``x_start`` to ``x_end``, pulse edges ``x_rise``, ``x_fall``, levels ``y_base``, ``y_top``;
    empty when disabled), ``line_width_px``,
    ``major_line_px``, ``label_px``.

    The image holds pixels ``0 .. round(paper_mm * px_per_mm)``, so a grid line on the far
    edge still fits when the margins are 0.

    Example:
        >>> g = geometry(PlotConfig(), 10.0)
        >>> round(g["px_per_mm"], 2), round(g["px_per_s"], 1), round(g["px_per_mv"], 1)
        (11.81, 295.3, 118.1)
        >>> g["width"], g["height"], len(g["panels"])
        (3190, 2009, 13)
    """
    if not (math.isfinite(duration_s) and duration_s > 0):
        raise DataError(
            "ECG duration must be positive",
            expected="duration_s > 0",
            found=duration_s,
            fix="pass a signal with at least two samples and a positive fs",
        )
    c = config
    ppm = c.dpi / 25.4
    pps = c.speed_mm_s * ppm
    ppmv = c.gain_mm_mv * ppm
    columns = LAYOUTS[c.layout]
    rhythm = c.rhythm_lead if _HAS_RHYTHM[c.layout] else None
    n_rows = max(len(col) for col in columns) + (rhythm is not None)
    row_mm = c.row_height_mm if c.row_height_mm is not None else _ROW_HEIGHT_MM[c.layout]
    pulse_mm = _CAL_S * c.speed_mm_s
    cal_mm = math.ceil(pulse_mm + 2 * _CAL_PAD_MM - 1e-9) if c.calibration else 0.0
    trace_mm = duration_s * c.speed_mm_s
    # whole minor squares, so the grid closes on a line on every side
    grid_w = math.ceil((cal_mm + trace_mm) / c.minor_mm - 1e-9) * c.minor_mm
    grid_h = math.ceil(n_rows * row_mm / c.minor_mm - 1e-9) * c.minor_mm
    x0 = y0 = c.margins_mm * ppm
    trace_x0 = x0 + cal_mm * ppm
    rows = []
    for r in range(n_rows):
        top = y0 + r * row_mm * ppm
        rows.append({"top": top, "bottom": top + row_mm * ppm, "baseline": top + row_mm * ppm / 2})
    panels = []
    for ci, col in enumerate(columns):
        t0, t1 = ci * duration_s / len(columns), (ci + 1) * duration_s / len(columns)
        for ri, lead in enumerate(col):
            panels.append(_panel(lead, ri, ci, t0, t1, trace_x0, pps, rows[ri]))
    if rhythm is not None:
        panels.append(_panel(rhythm, n_rows - 1, 0, 0.0, duration_s, trace_x0, pps, rows[-1]))
    cal = []
    if c.calibration:
        for r, row in enumerate(rows):
            x_rise = x0 + (cal_mm - pulse_mm) / 2 * ppm
            cal.append(
                {
                    "row": r,
                    "x_start": x0 + ppm,
                    "x_rise": x_rise,
                    "x_fall": x_rise + pulse_mm * ppm,
                    "x_end": x0 + (cal_mm - 1) * ppm,
                    "y_base": row["baseline"],
                    "y_top": row["baseline"] - _CAL_MV * ppmv,
                }
            )
    return {
        "dpi": c.dpi,
        "duration_s": duration_s,
        "px_per_mm": ppm,
        "px_per_s": pps,
        "px_per_mv": ppmv,
        "width": int(_round((2 * c.margins_mm + grid_w) * ppm)) + 1,
        "height": int(_round((2 * c.margins_mm + grid_h) * ppm)) + 1,
        "grid": {
            "x0": x0,
            "y0": y0,
            "width_mm": grid_w,
            "height_mm": grid_h,
            "minor_mm": c.minor_mm,
            "major_every": round(c.major_mm / c.minor_mm),
        },
        "trace_x0": trace_x0,
        "rows": rows,
        "panels": panels,
        "calibration": cal,
        "line_width_px": c.line_width_px or max(1, int(_round(_LINE_MM * ppm))),
        "major_line_px": c.major_line_px or max(1, int(_round(_MAJOR_LINE_MM * ppm))),
        "label_px": max(6, int(_round(c.label_height_mm * ppm))),
    }


def _panel(
    lead: str, row: int, col: int, t0: float, t1: float, tx0: float, pps: float, band: dict
) -> dict[str, Any]:
    return {
        "lead": lead,
        "row": row,
        "col": col,
        "t0": t0,
        "t1": t1,
        "x0": tx0 + t0 * pps,
        "x1": tx0 + t1 * pps,
        "top": band["top"],
        "bottom": band["bottom"],
        "baseline": band["baseline"],
    }


@functools.lru_cache(maxsize=8)
def _background(config: PlotConfig, duration_s: float) -> np.ndarray:
    """The empty grid paper as palette indices, cached per geometry (read-only)."""
    g = geometry(config, duration_s)
    gr = g["grid"]
    ppm, every = g["px_per_mm"], gr["major_every"]
    pitch = gr["minor_mm"] * ppm
    nx = round(gr["width_mm"] / gr["minor_mm"])
    ny = round(gr["height_mm"] / gr["minor_mm"])
    xs = _round(gr["x0"] + np.arange(nx + 1) * pitch)
    ys = _round(gr["y0"] + np.arange(ny + 1) * pitch)
    wm = g["major_line_px"]
    lo, hi = (wm - 1) // 2, wm // 2
    img = np.full((g["height"], g["width"]), _PAPER, dtype=np.uint8)
    xa, xb, ya, yb = xs[0], xs[-1] + 1, ys[0], ys[-1] + 1
    img[ya:yb, xs] = _MINOR
    img[ys, xa:xb] = _MINOR
    for d in range(-lo, hi + 1):
        img[ya:yb, np.clip(xs[::every] + d, xa, xb - 1)] = _MAJOR
    for d in range(-lo, hi + 1):
        img[np.clip(ys[::every] + d, ya, yb - 1), xa:xb] = _MAJOR
    img.flags.writeable = False
    return img


@functools.lru_cache(maxsize=256)
def _text_mask(text: str, height_px: int) -> np.ndarray:
    """Binary glyph mask of ``text`` about ``height_px`` tall, from Pillow's built-in font."""
    from PIL import ImageFont

    try:  # Pillow's embedded scalable font (needs FreeType, no font file)
        font = ImageFont.load_default(size=height_px)
        mask = font.getmask(text, mode="1")
        scale = 1
    except (ImportError, OSError, TypeError):  # pragma: no cover - Pillow without FreeType
        font = ImageFont.load_default_imagefont()
        mask = font.getmask(text)
        scale = max(1, round(height_px / 11))
    w, h = mask.size
    arr = np.array(mask, dtype=np.uint8).reshape(h, w) > 127
    if scale > 1:  # pragma: no cover
        arr = arr.repeat(scale, axis=0).repeat(scale, axis=1)
    arr.flags.writeable = False
    return arr


def _column_spans(
    x: np.ndarray, y: np.ndarray, valid: np.ndarray
) -> tuple[int, np.ndarray, np.ndarray]:
    """Per pixel column, the vertical extent of a polyline whose ``x`` never decreases.

    Pixel column ``c`` covers ``x`` in ``[c - 1/2, c + 1/2)``. The part of the polyline inside
    a column is connected (x is monotone), so it covers exactly ``[min y, max y]`` over the
    vertices in that column and the points where segments cross its two edges. Segments touching
    an invalid vertex are not drawn.

    Shape:
        x, y, valid: ``(n,)``. Output: first column ``c0`` and ``(m,)`` float ``lo``, ``hi``
        (``lo > hi`` where a column is empty).
    """
    cx = _round(x)
    seg = np.flatnonzero(valid[:-1] & valid[1:])
    n_cross = cx[seg + 1] - cx[seg]
    rep = np.repeat(seg, n_cross)
    first = np.repeat(np.cumsum(n_cross) - n_cross, n_cross)
    k = cx[rep] + (np.arange(rep.size) - first)  # edge between columns k and k + 1
    frac = (k + 0.5 - x[rep]) / (x[rep + 1] - x[rep])
    by = y[rep] + frac * (y[rep + 1] - y[rep])
    cols = np.concatenate([cx[valid], k, k + 1])
    ys = np.concatenate([y[valid], by, by])
    if cols.size == 0:
        return 0, np.full(0, np.inf), np.full(0, -np.inf)
    c0 = int(cols.min())
    lo = np.full(int(cols.max()) - c0 + 1, np.inf)
    hi = np.full(lo.size, -np.inf)
    np.minimum.at(lo, cols - c0, ys)
    np.maximum.at(hi, cols - c0, ys)
    return c0, lo, hi


def _paint_polyline(
    img: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    valid: np.ndarray,
    band: tuple[int, int],
    width: int,
    value: int,
) -> None:
    """Rasterise a polyline ``width`` px thick into ``img`` rows ``band[0] .. band[1]``."""
    c0, lo, hi = _column_spans(x, y, valid)
    if lo.size == 0:
        return
    a, b = (width - 1) // 2, width // 2  # px above/left and below/right of the centre
    big = np.iinfo(np.int32).max
    empty = lo > hi
    lo_i = np.where(empty, big, _round(np.where(empty, 0.0, lo)) - a)
    hi_i = np.where(empty, -big, _round(np.where(empty, 0.0, hi)) + b)
    if a + b:  # horizontal thickness: column d takes the spans of columns d - b .. d + a
        n, w = lo_i.size, a + b
        pad_lo = np.concatenate([np.full(w, big), lo_i, np.full(w, big)])
        pad_hi = np.concatenate([np.full(w, -big), hi_i, np.full(w, -big)])
        lo_i = np.min([pad_lo[s : s + n + w] for s in range(w + 1)], axis=0)
        hi_i = np.max([pad_hi[s : s + n + w] for s in range(w + 1)], axis=0)
        c0 -= a
    lo_i = np.maximum(lo_i, band[0])
    hi_i = np.minimum(hi_i, band[1])
    cols = np.arange(lo_i.size) + c0
    keep = (cols >= 0) & (cols < img.shape[1])
    counts = np.where(keep, np.maximum(hi_i - lo_i + 1, 0), 0)
    total = int(counts.sum())
    if total == 0:
        return
    starts = np.repeat(lo_i, counts)
    offsets = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    img[starts + offsets, np.repeat(cols, counts)] = value


@dataclass(frozen=True)
class PanelReport:
    """What was drawn in one panel."""

    lead: str
    """Layout lead name (e.g. ``aVR``)."""
    row: int
    """Row band, 0 at the top."""
    col: int
    """Column, 0 at the left (the rhythm strip is column 0 of the last row)."""
    missing: bool
    """The record has no lead of this name: the panel holds only its label."""
    clipped_samples: int
    """Samples that fell outside the row band and were drawn on its edge."""
    nan_samples: int
    """Non-finite samples in the panel's time window (left as gaps)."""


@dataclass(frozen=True, eq=False)
class Rendering:
    """A rendered ECG page: palette indices, the palette, and what happened in each panel."""

    index: np.ndarray
    """``(H, W)`` uint8 palette indices (see :data:`PALETTE_SLOTS`)."""
    config: PlotConfig
    """The config it was drawn with."""
    geometry: dict[str, Any]
    """:func:`geometry` of the page."""
    panels: tuple[PanelReport, ...]
    """One report per panel, in :attr:`geometry` ``panels`` order."""

    @property
    def rgb(self) -> np.ndarray:
        """The page as ``(H, W, 3)`` uint8 RGB."""
        return np.take(self.config.palette, self.index, axis=0)  # 3x faster than palette[index]

    @property
    def clipped_leads(self) -> tuple[str, ...]:
        """Leads (layout names, sorted) with at least one sample clipped to the row band."""
        return tuple(sorted({p.lead for p in self.panels if p.clipped_samples}))

    @property
    def missing_leads(self) -> tuple[str, ...]:
        """Layout leads the record did not have (sorted)."""
        return tuple(sorted({p.lead for p in self.panels if p.missing}))

    def save_png(self, path: str | Path) -> Path:
        """Write the page as a palette PNG (atomic), tagged with its dpi; returns ``path``.

        Pillow reads it back as mode ``P``; ``.convert("RGB")`` gives :attr:`rgb` exactly.
        """
        from PIL import Image

        from clinfuse.core.runs import atomic_path  # imports torch: keep it off module import

        image = Image.fromarray(self.index)
        image.putpalette(self.config.palette.tobytes(), rawmode="RGB")
        dpi = self.config.dpi
        with atomic_path(path) as tmp:
            image.save(
                tmp, format="PNG", compress_level=self.config.png_compress_level, dpi=(dpi, dpi)
            )
        return Path(path)


def _norm(name: str) -> str:
    return str(name).strip().casefold()


def _check_signal(
    signal: Any, fs: float, leads: Sequence[str], record: str
) -> tuple[np.ndarray, dict[str, int]]:
    sig = np.asarray(signal, dtype=np.float64)
    names = [str(n) for n in leads]
    if sig.ndim != 2:
        raise DataError(
            f"ECG signal of {record} must be 2-D",
            expected="(n_samples, n_leads) in mV",
            found=f"shape {sig.shape}",
            fix="stack the leads as columns",
        )
    if sig.shape[1] != len(names):
        transposed = sig.shape[0] == len(names)
        raise DataError(
            f"ECG signal of {record} does not match its lead list",
            expected=f"(n_samples, {len(names)}) for leads {names}",
            found=f"shape {sig.shape}",
            fix="pass signal.T (samples along axis 0)" if transposed else "fix the lead list",
        )
    if sig.shape[0] < 2:
        raise DataError(
            f"ECG signal of {record} is too short",
            expected=">= 2 samples",
            found=sig.shape[0],
        )
    if not (isinstance(fs, int | float | np.number) and math.isfinite(fs) and fs > 0):
        raise DataError(
            f"sampling rate of {record} must be a positive number",
            expected="fs > 0 (Hz)",
            found=fs,
            fix="read fs from the record header",
        )
    by_name: dict[str, int] = {}
    for j, name in enumerate(names):
        key = _norm(name)
        if key in by_name:
            raise DataError(
                f"duplicate lead name in {record}",
                expected="unique lead names (case-insensitive)",
                found=f"{names[by_name[key]]!r} and {name!r}",
                fix="rename or drop one of the leads",
            )
        by_name[key] = j
    return sig, by_name


def render(
    signal: Any,
    fs: float,
    leads: Sequence[str],
    config: PlotConfig | None = None,
    *,
    record: str = "signal",
) -> Rendering:
    """Draw a 12-lead ECG on millimetre paper; see the module docstring for the geometry.

    Shape:
        signal: ``(n_samples, n_leads)`` in mV, leads named by ``leads`` in any order.
        Output: a :class:`Rendering` whose ``index`` is ``(H, W)`` with ``H, W`` from
        :func:`geometry` for ``duration_s = n_samples / fs``.

    Args:
        record: name used in error and log messages (e.g. the study id).
    """
    config = config or PlotConfig()
    sig, by_name = _check_signal(signal, fs, leads, record)
    n = sig.shape[0]
    duration = n / float(fs)
    g = geometry(config, duration)
    img = _background(config, duration).copy()
    width = g["line_width_px"]
    a, b = (width - 1) // 2, width // 2
    pps, ppmv = g["px_per_s"], g["px_per_mv"]
    finite = np.isfinite(sig)
    reports = []
    for p in g["panels"]:
        top, bottom = int(_round(p["top"])), int(_round(p["bottom"])) - 1
        j = by_name.get(_norm(p["lead"]))
        clipped = nans = 0
        if j is not None:
            i0 = max(0, math.ceil(p["t0"] * fs - 1e-9))
            i1 = min(n, math.ceil(p["t1"] * fs - 1e-9))
            i = np.arange(i0, i1)
            x = g["trace_x0"] + (i / fs) * pps
            valid = finite[i0:i1, j]
            y = p["baseline"] - np.where(valid, sig[i0:i1, j], 0.0) * ppmv
            y_lo, y_hi = top + a - 0.5, bottom - b + 0.5
            clipped = int(np.count_nonzero(valid & ((y < y_lo) | (y >= y_hi))))
            nans = int(valid.size - np.count_nonzero(valid))
            y = np.clip(y, y_lo, y_hi - 1e-6)
            _paint_polyline(img, x, y, valid, (top, bottom), width, _TRACE)
        reports.append(PanelReport(p["lead"], p["row"], p["col"], j is None, clipped, nans))
    for cal in g["calibration"]:
        row = g["rows"][cal["row"]]
        x_rise, x_fall = cal["x_rise"], cal["x_fall"]
        xs = np.array([cal["x_start"], x_rise, x_rise, x_fall, x_fall, cal["x_end"]])
        yb, yt = cal["y_base"], cal["y_top"]
        ys = np.array([yb, yb, yt, yt, yb, yb])
        band = (int(_round(row["top"])), int(_round(row["bottom"])) - 1)
        _paint_polyline(img, xs, ys, np.ones(6, bool), band, width, _TRACE)
    if config.labels:
        _draw_labels(img, g)
    if any(r.clipped_samples for r in reports) or any(r.missing for r in reports):
        log.debug(
            "%s: clipped %s, missing %s",
            record,
            sorted({r.lead for r in reports if r.clipped_samples}),
            sorted({r.lead for r in reports if r.missing}),
        )
    return Rendering(index=img, config=config, geometry=g, panels=tuple(reports))


def _draw_labels(img: np.ndarray, g: dict[str, Any]) -> None:
    ppm = g["px_per_mm"]
    for p in g["panels"]:
        mask = _text_mask(p["lead"], g["label_px"])
        y = int(_round(p["top"] + ppm))
        x = int(_round(p["x0"] + 0.5 * ppm))
        h = min(mask.shape[0], img.shape[0] - y)
        w = min(mask.shape[1], img.shape[1] - x)
        view = img[y : y + h, x : x + w]
        view[mask[:h, :w]] = _LABEL


def render_ecg(
    signal: Any, fs: float, leads: Sequence[str], config: PlotConfig | None = None
) -> np.ndarray:
    """Draw a 12-lead ECG on millimetre paper as an RGB array (:func:`render` keeps the reports).

    Shape:
        signal: ``(n_samples, n_leads)`` in mV. Output: ``(H, W, 3)`` uint8.

    Example:
        >>> t = np.arange(5000) / 500
        >>> sig = np.tile(np.sin(2 * np.pi * t)[:, None], (1, 12))
        >>> leads = LAYOUTS["12x1"][0]
        >>> render_ecg(sig, 500, leads, PlotConfig(dpi=100, layout="12x1")).shape
        (1221, 1064, 3)
    """
    return render(signal, fs, leads, config).rgb


def write_ecg_png(
    signal: Any,
    fs: float,
    leads: Sequence[str],
    path: str | Path,
    config: PlotConfig | None = None,
) -> Path:
    """Render an ECG and write it as a palette PNG atomically; returns ``path``.

    Clipped and missing leads are logged at DEBUG; call :func:`render` and
    :meth:`Rendering.save_png` to keep them.

    Shape:
        signal: ``(n_samples, n_leads)`` in mV.
    """
    return render(signal, fs, leads, config, record=Path(path).stem).save_png(path)


def naive_render_png(
    signal: Any, fs: float, leads: Sequence[str], path: str | Path, dpi: int = 300
) -> Path:
    """BASELINE ONLY (speed benchmark): a 3x4 + II page the way a user writes it in matplotlib.

    One axes of the same paper size as :func:`render`'s ``3x4`` page, each lead offset into
    its row and column, minor (0.04 s, 0.1 mV) and major (0.2 s, 0.5 mV) grids through
    tick marks, lead names as text, ``savefig`` at ``dpi``. Not millimetre-exact.

    Shape:
        signal: ``(n_samples, n_leads)`` in mV, leads named exactly as in :data:`LAYOUTS`.
    """
    from matplotlib.figure import Figure

    sig = np.asarray(signal, dtype=np.float64)
    names = list(leads)
    n = sig.shape[0]
    duration = n / fs
    t = np.arange(n) / fs
    g = geometry(PlotConfig(dpi=dpi), duration)
    fig = Figure(figsize=(g["width"] / dpi, g["height"] / dpi))
    ax = fig.add_axes((0.02, 0.02, 0.96, 0.96))
    quarter = n // 4
    for c, column in enumerate(LAYOUTS["3x4"]):
        for r, lead in enumerate(column):
            if lead in names:
                part = slice(c * quarter, (c + 1) * quarter)
                ax.plot(t[part], sig[part, names.index(lead)] - 4 * r, "k", lw=0.8)
                ax.text(c * duration / 4 + 0.05, 1.2 - 4 * r, lead)
    if "II" in names:
        ax.plot(t, sig[:, names.index("II")] - 12, "k", lw=0.8)
    ax.set_xticks(np.arange(0, duration + 1e-9, 0.2))
    ax.set_xticks(np.arange(0, duration + 1e-9, 0.04), minor=True)
    ax.set_yticks(np.arange(-14, 2.01, 0.5))
    ax.set_yticks(np.arange(-14, 2.01, 0.1), minor=True)
    ax.grid(which="major", color="#e06060", lw=0.6)
    ax.grid(which="minor", color="#ffc0c0", lw=0.3)
    ax.tick_params(which="both", labelbottom=False, labelleft=False, length=0)
    ax.set_xlim(0, duration)
    ax.set_ylim(-14, 2)
    fig.savefig(path, dpi=dpi)
    return Path(path)
