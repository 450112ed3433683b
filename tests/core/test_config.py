from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest

from clinfuse.core.config import (
    config_from_dict,
    config_to_dict,
    describe,
    field_docs,
    load_config,
)
from clinfuse.core.errors import ConfigError


@dataclass(frozen=True)
class Cfg:
    epochs: int = 3
    """Passes over the data."""
    lr: float = 1e-3
    """Learning rate."""
    fusion: Literal["latent", "mbt", "concat"] = "latent"
    """Fusion variant."""
    rank: int | None = 10
    """Kept eigenvalues; none = exact."""
    mods: tuple[str, ...] = ("audio", "vision")
    """Modalities."""
    progress: bool = True
    """Show bars."""
    preset: str | None = None
    """Preset name."""

    def validate(self) -> None:
        if self.epochs < 1:
            raise ConfigError("epochs must be >= 1", expected=">= 1", found=self.epochs)


def test_overrides_are_typed() -> None:
    cfg = load_config(
        Cfg, overrides=["epochs=7", "lr=0.5", "rank=none", "mods=text", "progress=false"]
    )
    assert cfg == Cfg(epochs=7, lr=0.5, rank=None, mods=("text",), progress=False)
    assert isinstance(cfg.lr, float) and cfg.rank is None


def test_unknown_key_lists_close_matches() -> None:
    with pytest.raises(ConfigError) as e:
        load_config(Cfg, overrides=["epoch=2"])
    assert "did you mean: epochs" in str(e.value)


@pytest.mark.parametrize(
    "override, words",
    [
        ("epochs=abc", "int"),
        ("fusion=latnt", "'latent'"),
        ("progress=maybe", "bool"),
        ("lr=", "float"),
        ("epochs", "key=value"),
        ("epochs=0", ">= 1"),
    ],
)
def test_bad_values_are_refused(override: str, words: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(Cfg, overrides=[override])
    assert words in str(e.value)


def test_toml_file_with_base_and_unknown_key(tmp_path) -> None:
    (tmp_path / "quick.toml").write_text('epochs = 2\nfusion = "mbt"\n')
    (tmp_path / "abl.toml").write_text('base = "quick"\nfusion = "concat"\nrank = "none"\n')
    cfg = load_config(Cfg, path=tmp_path / "abl.toml")
    assert (cfg.epochs, cfg.fusion, cfg.rank) == (2, "concat", None)
    (tmp_path / "bad.toml").write_text("epohcs = 2\n")
    with pytest.raises(ConfigError, match="did you mean: epochs"):
        load_config(Cfg, path=tmp_path / "bad.toml")
    (tmp_path / "typed.toml").write_text('epochs = "two"\n')
    with pytest.raises(ConfigError, match="wrong type"):
        load_config(Cfg, path=tmp_path / "typed.toml")
    (tmp_path / "broken.toml").write_text("epochs = = 2\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(Cfg, path=tmp_path / "broken.toml")


def test_round_trip_and_docs() -> None:
    cfg = Cfg(mods=("a", "b"), rank=None)
    assert config_from_dict(Cfg, config_to_dict(cfg)) == cfg
    docs = field_docs(Cfg)
    assert docs["lr"] == "Learning rate."
    rows = {r[0]: r for r in describe(Cfg)}
    assert rows["fusion"][1] == "'latent' | 'mbt' | 'concat'"
