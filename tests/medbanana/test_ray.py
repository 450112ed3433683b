"""The Ray executor (a local instance) builds the same data set as the inline build: same
manifest rows and values, the same images, no duplicated task or attempt (two Ray workers append
to one log)."""

from __future__ import annotations

import pytest

import clinfuse


def test_ray_build_equals_the_serial_build(built, tmp_path, assert_same_build) -> None:
    ray = pytest.importorskip("ray")
    assert not ray.is_initialized()
    # a local instance with 2 CPUs and no dashboard, started and shut down by the builder
    _, card, rd = clinfuse.build(
        "medbanana", overrides=["progress=false", "executor=ray", "workers=2"], out=tmp_path / "ray"
    )
    assert not ray.is_initialized()
    assert card.n_records == built[1].n_records and rd.read_metrics()["n_run_now"] == 6
    assert_same_build(rd.path, built[2].path)
