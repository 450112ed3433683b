"""The process-pool executor builds the same data set as the inline build: same manifest rows
and values, the same images, no duplicated task or attempt (two processes append to one log)."""

from __future__ import annotations

import clinfuse


def test_process_pool_build_equals_the_serial_build(built, tmp_path, assert_same_build) -> None:
    _, card, rd = clinfuse.build(
        "medbanana",
        overrides=["progress=false", "executor=process", "workers=2"],
        out=tmp_path / "pool",
    )
    assert card.n_records == built[1].n_records
    assert_same_build(rd.path, built[2].path)
