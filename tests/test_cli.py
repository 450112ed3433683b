"""The README's commands, end to end on a small synthetic MMSA pickle (quick preset, 2 epochs)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from clinfuse.cli import main
from clinfuse.methods.dib.synthetic import write_synthetic

FAST = ["--set", "epochs=2", "--set", "progress=false"]


@pytest.fixture(scope="module")
def small_pickle(tmp_path_factory):
    p = tmp_path_factory.mktemp("data") / "aligned_50.pkl"
    write_synthetic("synthetic_mosi", p, n_train=192, n_valid=64, n_test=96)
    return p


@pytest.fixture(scope="module")
def trained(small_pickle, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "dib"
    assert (
        main(
            [
                "fit",
                "dib",
                "--preset",
                "quick",
                "--data",
                str(small_pickle),
                "--out",
                str(out),
                *FAST,
            ]
        )
        == 0
    )
    return out


def test_fit_writes_a_complete_run(trained, capsys) -> None:
    for name in ("config.json", "env.json", "metrics.json", "metrics.csv", "predictions.parquet"):
        assert (trained / name).is_file(), name
    assert (trained / "checkpoints" / "best.pt").is_file() and (
        trained / "checkpoints" / "last.pt"
    ).is_file()
    assert list((trained / "plots").glob("*.png"))
    metrics = json.loads((trained / "metrics.json").read_text())
    assert 0.0 <= metrics["test_non0_acc2"] <= 1.0
    preds = pd.read_parquet(trained / "predictions.parquet")
    assert set(preds["split"]) == {"valid", "test"} and len(preds) == 64 + 96


def test_ls(capsys) -> None:
    assert main(["ls"]) == 0
    assert "dib" in capsys.readouterr().out
    assert main(["ls", "dib"]) == 0
    out = capsys.readouterr().out
    assert "fusion = 'latent'" in out and "quick" in out


def test_evaluate_predict_sweep(trained, small_pickle, capsys) -> None:
    run = str(trained)
    assert (
        main(
            [
                "evaluate",
                "dib",
                "--run",
                run,
                "--data",
                str(small_pickle),
                "--corrupt",
                "gaussian:audio,vision:0.5",
            ]
        )
        == 0
    )
    assert "results written to" in capsys.readouterr().out
    assert list((trained / "evaluations").glob("test-gaussian*.json"))
    assert main(["predict", "dib", "--run", run, "--data", str(small_pickle)]) == 0
    assert (trained / "predictions-test.parquet").is_file()
    assert (
        main(
            [
                "sweep",
                "dib",
                "--run",
                run,
                "--data",
                str(small_pickle),
                "--corrupt",
                "gaussian:audio,vision",
                "--severities",
                "0.5",
                "2",
            ]
        )
        == 0
    )
    assert list((trained / "sweeps").glob("*.csv")) and list((trained / "sweeps").glob("*.png"))


@pytest.mark.parametrize(
    ("command", "flag", "words"),
    [("predict", "--explain", "has no explanations"), ("evaluate", "--arena", "no Report Arena")],
)
def test_capability_a_method_lacks_is_refused(
    trained, small_pickle, capsys, command, flag, words
) -> None:
    """The learner's default capability refuses with a fix, before anything is written."""
    before = sorted(p.name for p in trained.rglob("*"))
    argv = [command, "dib", "--run", str(trained), "--data", str(small_pickle), flag]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert words in err and "drop " + flag in err
    if command == "predict":
        assert sorted(p.name for p in trained.rglob("*")) == before


def test_resume_extends_a_run(trained, small_pickle, tmp_path) -> None:
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(trained, run)
    assert (
        main(
            [
                "fit",
                "dib",
                "--out",
                str(run),
                "--resume",
                "--data",
                str(small_pickle),
                "--set",
                "epochs=3",
                "--set",
                "progress=false",
            ]
        )
        == 0
    )
    epochs = [int(float(r)) for r in pd.read_csv(run / "metrics.csv")["epoch"]]
    assert epochs == [1, 2, 3]


@pytest.mark.parametrize(
    "argv, words",
    [
        (["fit", "dbi"], "did you mean: dib"),
        (["fit", "dib", "--set", "fusoin=mbt"], "did you mean: fusion"),
        (["fit", "dib", "--set", "fusion=mtb"], "did you mean: mbt"),
        (["fit", "dib", "--set", "epochs=many"], "wrong type"),
        (["fit", "dib", "--preset", "quik"], "did you mean: quick"),
        (["evaluate", "dib", "--run", "/nonexistent/run"], "not a directory"),
    ],
)
def test_bad_input_gives_a_clear_error(argv, words, capsys, tmp_path) -> None:
    assert main([*argv, "--out", str(tmp_path / "o")] if argv[0] == "fit" else argv) == 2
    err = capsys.readouterr().err
    assert words in err and "clinfuse: error" in err
    assert not (tmp_path / "o").exists()  # nothing was written


def test_run_flag_must_point_at_a_run(tmp_path, capsys) -> None:
    (tmp_path / "junk").mkdir()
    assert main(["evaluate", "dib", "--run", str(tmp_path / "junk")]) == 2
    assert "not a clinfuse run" in capsys.readouterr().err


def test_feature_dim_mismatch_is_refused(small_pickle, tmp_path, capsys) -> None:
    before = small_pickle.read_bytes()
    rc = main(
        [
            "fit",
            "dib",
            "--data",
            str(small_pickle),
            "--set",
            "audio_dim=74",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert "audio" in err and "74" in err
    assert small_pickle.read_bytes() == before
