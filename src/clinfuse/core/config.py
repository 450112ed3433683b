"""Frozen-dataclass configs: TOML presets, ``--set key=value`` overrides, typed validation.

A config class is a flat ``@dataclass(frozen=True)`` whose fields are ``int``, ``float``, ``bool``,
``str``, ``Literal[...]``, ``X | None`` or ``tuple[X, ...]``; each field is followed by a one-line
docstring that becomes its help text. TOML has no null: ``"none"`` sets an optional field to None.
A preset may name another preset as ``base = "quick"``; the base is applied first.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import math
import textwrap
import tomllib
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from clinfuse.core.errors import ConfigError, suggest

C = TypeVar("C")

_NONE_WORDS = {"none", "null", "~"}
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}
BASE_KEY = "base"


def package_config_dirs() -> list[Path]:
    """Where presets are looked up: ``clinfuse/configs`` (``configs/`` at the repository root
    links to it, so an installed wheel has the same presets)."""
    d = Path(__file__).resolve().parents[1] / "configs"
    return [d] if d.is_dir() else []


def preset_names(method: str) -> list[str]:
    """The preset names available for ``method`` (TOML file stems)."""
    names: set[str] = set()
    for d in package_config_dirs():
        names.update(p.stem for p in (d / method).glob("*.toml"))
    return sorted(names)


def preset_path(method: str, preset: str) -> Path:
    """The TOML file of a named preset, or a ConfigError listing the known presets."""
    for d in package_config_dirs():
        p = d / method / f"{preset}.toml"
        if p.is_file():
            return p
    known = preset_names(method)
    raise ConfigError(
        f"unknown preset {preset!r} for {method}",
        expected=f"one of: {', '.join(known) or '(none)'}",
        found=repr(preset),
        fix=suggest(preset, known, "pass a TOML file with --config"),
    )


def field_docs(cls: type) -> dict[str, str]:
    """The docstring line under each dataclass field, read from the class source."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            src = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        body = ast.parse(src).body[0].body  # type: ignore[attr-defined]
        for node, nxt in zip(body, body[1:], strict=False):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin is tuple:
        return f"tuple[{_type_name(get_args(tp)[0])}, ...]"
    if tp is type(None):
        return "none"
    return getattr(tp, "__name__", str(tp))


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert ``value`` (a TOML value or a ``--set`` string) to type ``tp`` or raise ConfigError.

    Example:
        >>> coerce("3", int, "epochs"), coerce("none", int | None, "rank")
        (3, None)
        >>> coerce("a,b", tuple[str, ...], "modalities")
        ('a', 'b')
    """
    origin = get_origin(tp)
    try:
        if origin in (Union, types.UnionType):
            return _to_union(value, tp, key)
        if origin is Literal:
            return _to_literal(value, get_args(tp), key)
        if origin is tuple:
            return _to_tuple(value, get_args(tp)[0], key)
        if tp in _SCALARS:
            return _SCALARS[tp](value)
    except _Mismatch:
        raise _wrong_type(value, tp, key) from None
    raise ConfigError(f"config key {key!r} has an unsupported annotation {tp!r}")


class _Mismatch(Exception):
    """A value that does not convert to the annotation (reported by :func:`coerce`)."""


def _wrong_type(value: Any, tp: Any, key: str) -> ConfigError:
    return ConfigError(
        f"config key {key!r} has a value of the wrong type",
        expected=_type_name(tp),
        found=f"{value!r} ({type(value).__name__})",
        fix=f"--set {key}=<{_type_name(tp)}>",
    )


def _to_union(value: Any, tp: Any, key: str) -> Any:
    """``None`` (or a none-word) when the union admits it, else the first member that fits."""
    args = get_args(tp)
    if value is None or (isinstance(value, str) and value.strip().lower() in _NONE_WORDS):
        if type(None) in args:
            return None
        raise _Mismatch
    for arg in args:
        if arg is type(None):
            continue
        try:
            return coerce(value, arg, key)
        except ConfigError:
            continue
    raise _Mismatch


def _to_literal(value: Any, choices: tuple[Any, ...], key: str) -> Any:
    if value in choices:
        return value
    if isinstance(value, str):
        for c in choices:
            if str(c) == value.strip():
                return c
    raise ConfigError(
        f"config key {key!r} must be one of {list(choices)}",
        expected=" | ".join(repr(c) for c in choices),
        found=repr(value),
        fix=suggest(str(value), map(str, choices), f"--set {key}={choices[0]}", cutoff=0.4),
    )


def _to_tuple(value: Any, inner: Any, key: str) -> tuple[Any, ...]:
    """``"a,b"`` / ``"(a, b)"`` / a list, each item converted to ``inner``."""
    if isinstance(value, str):
        items = [v.strip() for v in value.strip("()[] ").split(",") if v.strip()]
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise _Mismatch
    return tuple(coerce(v, inner, key) for v in items)


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise _Mismatch


def _to_int(value: Any) -> int:
    """An int, an integral float, or a string of either (``"1e3"`` is 1000); never a bool."""
    if isinstance(value, bool):
        raise _Mismatch
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            try:
                value = float(value)
            except ValueError:
                raise _Mismatch from None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise _Mismatch


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise _Mismatch
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            raise _Mismatch from None
    raise _Mismatch


def _to_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    raise _Mismatch


_SCALARS: dict[Any, Callable[[Any], Any]] = {
    bool: _to_bool,
    int: _to_int,
    float: _to_float,
    str: _to_str,
}


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _check_keys(cls: type, keys: Iterable[str], source: str) -> None:
    fields = [f.name for f in dataclasses.fields(cls)]
    for key in keys:
        if key not in fields:
            raise ConfigError(
                f"unknown config key {key!r} in {source}",
                expected=f"a field of {cls.__name__}",
                found=repr(key),
                fix=(
                    suggest(
                        key, fields, f"`clinfuse ls` lists the fields; known: {', '.join(fields)}"
                    )
                ),
            )


def read_toml(path: str | Path, method: str | None = None, _seen: tuple[Path, ...] = ()) -> dict:
    """A TOML preset as a flat dict, with its ``base`` chain resolved (base first)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"config file {str(path)!r} does not exist",
            expected="a TOML file",
            found="no such file",
            fix="check the path, or use --preset NAME",
        )
    if path.resolve() in _seen:
        raise ConfigError(f"preset {path} names itself as a base (cycle)")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"config file {str(path)!r} is not valid TOML",
            expected="key = value lines",
            found=str(exc),
            fix="fix the syntax on that line",
        ) from None
    nested = [k for k, v in data.items() if isinstance(v, dict)]
    if nested:
        raise ConfigError(
            f"config file {str(path)!r} has tables; configs are flat",
            expected="key = value at the top level",
            found=f"table(s) {nested}",
            fix="move the keys to the top level",
        )
    base = data.pop(BASE_KEY, None)
    if base is None:
        return data
    if method is None:
        method = path.parent.name
    sibling = path.parent / f"{base}.toml"
    base_path = sibling if sibling.is_file() else preset_path(method, base)
    merged = read_toml(base_path, method, (*_seen, path.resolve()))
    merged.update(data)
    return merged


def parse_overrides(pairs: Sequence[str]) -> dict[str, str]:
    """``["a=1", "b=x"]`` -> ``{"a": "1", "b": "x"}``, refusing items without ``=``."""
    out: dict[str, str] = {}
    for item in pairs:
        key, sep, val = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"bad override {item!r}",
                expected="key=value",
                found=repr(item),
                fix="write --set epochs=10",
            )
        out[key.strip()] = val.strip()
    return out


@dataclasses.dataclass(frozen=True)
class Bound:
    """A closed, open or half-open interval of allowed values, written as in mathematics.

    Example:
        >>> b = Bound.parse("(0, 10]")
        >>> b.contains(10.0), b.contains(0.0), str(b)
        (True, False, '(0, 10]')
    """

    lo: float
    hi: float
    open_lo: bool = False
    open_hi: bool = False

    @classmethod
    def parse(cls, text: str) -> Bound:
        t = text.strip()
        if len(t) < 5 or t[0] not in "[(" or t[-1] not in "])" or "," not in t:
            raise ValueError(f"bad interval {text!r}; write e.g. '[1, 100]' or '(0, inf)'")
        lo, hi = (float(x) for x in t[1:-1].split(","))
        return cls(lo, hi, t[0] == "(", t[-1] == ")")

    def contains(self, x: float) -> bool:
        above = x > self.lo if self.open_lo else x >= self.lo
        below = x < self.hi if self.open_hi else x <= self.hi
        return above and below

    def __str__(self) -> str:
        def num(v: float) -> str:
            return "inf" if v == math.inf else "-inf" if v == -math.inf else f"{v:g}"

        lb, rb = "(" if self.open_lo else "[", ")" if self.open_hi else "]"
        return f"{lb}{num(self.lo)}, {num(self.hi)}{rb}"


MAX_INT = 2**53
"""Largest magnitude of any integer field (exact in JSON and in a float)."""

COMMON_BOUNDS: dict[str, str] = {
    # optimisation
    "lr": "(0, 10]",
    "lr_bert": "(0, 10]",
    "weight_decay": "[0, 100]",
    "epochs": "[1, 100000]",
    "min_epochs": "[0, 100000]",
    "patience": "[0, 100000]",
    "warmup_epochs": "[0, 100000]",
    "steps": "[0, 100000000]",
    "grad_accum": "[1, 100000]",
    "batch_size": "[1, 1048576]",
    "eval_batch_size": "[1, 1048576]",
    "encoder_batch": "[1, 1048576]",
    "grad_clip": "(0, 1e6]",
    # model size
    "hidden": "[1, 65536]",
    "ib_hidden": "[1, 65536]",
    "d_model": "[1, 65536]",
    "attn_dim": "[1, 65536]",
    "time_dim": "[1, 65536]",
    "n_layers": "[1, 1024]",
    "layers": "[1, 1024]",
    "n_heads": "[1, 1024]",
    "heads": "[1, 1024]",
    "lora_r": "[1, 65536]",
    "max_seq_length": "[1, 1048576]",
    "max_positions": "[1, 1048576]",
    # probabilities and shares
    "dropout": "[0, 1)",
    "attn_dropout": "[0, 1)",
    "relu_dropout": "[0, 1)",
    "res_dropout": "[0, 1)",
    "embed_dropout": "[0, 1)",
    "test_fraction": "[0, 1)",
    "valid_fraction": "[0, 1)",
    "inner_fraction": "(0, 1)",
    # weights and temperatures
    "beta": "[0, 1e6]",
    "vib_beta": "[0, 1e6]",
    "lam": "[0, 1e6]",
    "temperature": "[0, 1e3]",
    # data and folds
    "n_folds": "[2, 1000]",
    "fold": "[0, 999]",
    "n_boot": "[0, 1000000]",
    "limit": "[1, 1e12]",
    "max_rows": "[1, 1e12]",
    # builders and execution
    "workers": "[1, 1024]",
    "num_workers": "[0, 1024]",
    "max_side": "[32, 16384]",
    "target_fs": "[1, 100000]",
    "dpi": "[50, 1200]",
    "max_rounds": "[1, 20]",
    "rate_limit_per_min": "(0, 1e6]",
    "image_size": "[8, 16384]",
    "max_new_tokens": "[1, 1048576]",
    "max_completion_length": "[1, 1048576]",
    "n_simulated": "[0, 1000000]",
    "n_patients": "[1, 1e8]",
    "n_records": "[1, 1e8]",
    "n_cases": "[1, 1e8]",
}
"""Bounds of fields that many configs share, by field name; a config class overrides or adds
its own in a ``BOUNDS`` class attribute (name -> interval) or in a field's
``metadata={"bounds": "[lo, hi]"}``. Every float field must also be finite unless its interval
reaches ``inf``, and every int field stays within :data:`MAX_INT`."""


def field_bounds(cls: type) -> dict[str, Bound]:
    """The interval each field of ``cls`` is checked against (common, class, field metadata)."""
    names = {f.name for f in dataclasses.fields(cls)}
    spec = {k: v for k, v in COMMON_BOUNDS.items() if k in names}
    spec.update(getattr(cls, "BOUNDS", {}) or {})
    for f in dataclasses.fields(cls):
        if "bounds" in f.metadata:
            spec[f.name] = f.metadata["bounds"]
    return {k: Bound.parse(v) for k, v in spec.items() if v is not None}


def _numbers(value: Any) -> list[Any]:
    items = value if isinstance(value, tuple | list) else (value,)
    return [x for x in items if isinstance(x, int | float) and not isinstance(x, bool)]


def check_bounds(cfg: Any) -> None:
    """Refuse a config with a non-finite float, an integer beyond :data:`MAX_INT`, or a number
    outside its field's interval (:func:`field_bounds`); tuples are checked item by item.

    Example:
        >>> @dataclasses.dataclass(frozen=True)
        ... class Cfg:
        ...     lr: float = 1e-3
        >>> check_bounds(Cfg(lr=float("nan")))
        Traceback (most recent call last):
        ...
        clinfuse.core.errors.ConfigError: bad value for lr
          expected: a finite number in (0, 10]
          found:    nan
          fix:      --set lr=<a value in (0, 10]>
    """
    bounds = field_bounds(type(cfg))
    for f in dataclasses.fields(cfg):
        bound = bounds.get(f.name)
        for x in _numbers(getattr(cfg, f.name)):
            finite_ok = math.isfinite(x) or (
                bound is not None and math.isinf(x) and bound.contains(x)
            )
            if isinstance(x, int):
                ok = abs(x) <= MAX_INT and (bound is None or bound.contains(x))
                want = f"an integer in {bound}" if bound else "an integer of magnitude <= 2^53"
            else:
                ok = finite_ok and (bound is None or bound.contains(x))
                want = f"a finite number in {bound}" if bound else "a finite number"
            if not ok:
                raise ConfigError(
                    f"bad value for {f.name}",
                    expected=want,
                    found=repr(getattr(cfg, f.name)),
                    fix=f"--set {f.name}=<a value in {bound}>"
                    if bound
                    else f"--set {f.name}=<{want}>",
                )


def build_config(cls: type[C], values: Mapping[str, Any], source: str = "config") -> C:
    """Build and validate ``cls`` from raw values (TOML types or strings): types, the class's
    own checks (``__post_init__``, ``validate``), then :func:`check_bounds`."""
    _check_keys(cls, values, source)
    hints = _hints(cls)
    kwargs = {k: coerce(v, hints[k], k) for k, v in values.items()}
    try:
        cfg = cls(**kwargs)
    except TypeError as exc:  # pragma: no cover - a required field without default
        raise ConfigError(f"cannot build {cls.__name__}: {exc}") from None
    validate = getattr(cfg, "validate", None)
    if callable(validate):
        validate()
    check_bounds(cfg)
    return cfg


def load_config(
    cls: type[C],
    *,
    method: str | None = None,
    preset: str | None = None,
    path: str | Path | None = None,
    overrides: Sequence[str] | Mapping[str, Any] = (),
) -> C:
    """Defaults <- preset <- TOML file <- ``--set`` overrides, typed and validated.

    Example:
        >>> @dataclasses.dataclass(frozen=True)
        ... class Cfg:
        ...     epochs: int = 3
        ...     '''Passes over the data.'''
        >>> load_config(Cfg, overrides=["epochs=5"]).epochs
        5
    """
    values: dict[str, Any] = {}
    if preset is not None:
        if method is None:
            raise ConfigError("a preset needs the method name")
        values.update(read_toml(preset_path(method, preset), method))
        if "preset" in {f.name for f in dataclasses.fields(cls)}:  # type: ignore[arg-type]
            values.setdefault("preset", preset)
    if path is not None:
        file_values = read_toml(path, method)
        _check_keys(cls, file_values, str(path))
        values.update(file_values)
    over = dict(overrides) if isinstance(overrides, Mapping) else parse_overrides(overrides)
    _check_keys(cls, over, "--set")
    values.update(over)
    return build_config(cls, values, source=str(path) if path else "config")


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def config_from_dict(cls: type[C], d: Mapping[str, Any]) -> C:
    """Rebuild a config saved by :func:`config_to_dict` (e.g. from a run's config.json)."""
    return build_config(cls, d, source="config.json")


def describe(cls: type) -> list[tuple[str, str, Any, str]]:
    """(name, type, default, help) for every field: the source of CLI help."""
    docs = field_docs(cls)
    hints = _hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else None
        rows.append((f.name, _type_name(hints[f.name]), default, docs.get(f.name, "")))
    return rows


def check_fields(config: Any, checks: Mapping[str, tuple[bool, str]]) -> None:
    """Raise a :class:`ConfigError` for the first field whose check failed.

    ``checks`` maps a field name to ``(ok, expected)``; the error names the field, what was
    expected, the value found and the ``--set`` that fixes it.

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass
        ... class C:
        ...     lr: float = -1.0
        >>> check_fields(C(), {"lr": (C().lr > 0, "> 0")})
        Traceback (most recent call last):
        ...
        clinfuse.core.errors.ConfigError: bad value for lr
          expected: > 0
          found:    -1.0
          fix:      --set lr=...
    """
    for name, (ok, expected) in checks.items():
        if not ok:
            raise ConfigError(
                f"bad value for {name}",
                expected=expected,
                found=getattr(config, name),
                fix=f"--set {name}=...",
            )
