"""The trust boundary, one failure at a time: each test builds the hostile or careless input that
broke a guarantee (writes outside ``--out``, deletions named by a log, keys sent on a redirect or
kept in a pickle, a crash instead of a report, a silent merge of two records, a traceback instead
of a clean error, a folder left behind, an unbounded config value) and asserts the guarantee."""

from __future__ import annotations

import csv
import json
import os
import pickle
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import clinfuse
from clinfuse.cli import main
from clinfuse.core.config import check_bounds, load_config, preset_names
from clinfuse.core.errors import ConfigError, RunDirError, UnsafePathError
from clinfuse.core.runs import LOCK_NAME, RunDir

MB_FAST = ["progress=false", "executor=serial", "max_rounds=1"]
ME_FAST = ["progress=false", "images=false", "executor=serial", "dpi=100"]


def _png(path: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:96, :96]
    arr = 90 + 60 * np.exp(-((x - 48) ** 2 + (y - 48) ** 2) / 900) + rng.normal(0, 3, (96, 96))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "L").save(path)
    return path


def _manifest(folder: Path, rows: list[dict[str, str]]) -> Path:
    path = folder / "evil.csv"
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["image", "label", "dataset", "modality"])
        w.writeheader()
        w.writerows(rows)
    return path


# -- 1. medbanana never writes outside --out --------------------------------------------------
def test_manifest_names_cannot_place_images_outside_out(sandbox, snap) -> None:
    data = sandbox / "inputs"
    _png(data / "a.png")
    _png(data / "b.png", 1)
    up = "../../../x"
    manifest = _manifest(data, [
        {"image": "a.png", "label": up, "dataset": up, "modality": "chest_xray"},
        {"image": "b.png", "label": str(sandbox / "abs"), "dataset": str(sandbox / "abs_ds"),
         "modality": "chest_xray"},
    ])  # fmt: skip
    out = sandbox / "o"
    before = snap(sandbox, skip=[out])
    _, card, rd = clinfuse.build("medbanana", overrides=MB_FAST, data=manifest, out=out)
    assert snap(sandbox, skip=[out]) == before  # nothing created, changed or removed outside
    written = [p for p in out.rglob("*.png") if "images" in p.parts]
    assert len(written) == 2 and all(p.resolve().is_relative_to(out.resolve()) for p in written)


def test_manifest_paths_outside_its_folder_need_the_flag(sandbox) -> None:
    _png(sandbox / "outside.png")
    manifest = _manifest(sandbox / "inputs", [
        {"image": "../outside.png", "label": "normal", "dataset": "d", "modality": "chest_xray"},
    ])  # fmt: skip
    with pytest.raises(UnsafePathError, match="outside its folder"):
        clinfuse.build("medbanana", overrides=MB_FAST, data=manifest, out=sandbox / "o")
    assert not (sandbox / "o").exists()  # refused before the build folder was made
    flag = [*MB_FAST, "allow_outside_paths=true", "limit=1"]
    _, card, _ = clinfuse.build("medbanana", data=manifest, out=sandbox / "o2", overrides=flag)
    assert card.n_records + card.n_failed == 1


def test_names_that_collide_after_cleaning_are_refused(sandbox) -> None:
    data = sandbox / "inputs"
    _png(data / "a b.png")
    _png(data / "a_b.png", 1)
    manifest = _manifest(data, [
        {"image": "a b.png", "label": "Edema", "dataset": "d", "modality": "chest_xray"},
        {"image": "a_b.png", "label": "Edema", "dataset": "d", "modality": "chest_xray"},
    ])  # fmt: skip
    with pytest.raises(UnsafePathError, match="same file name") as e:
        clinfuse.build("medbanana", overrides=MB_FAST, data=manifest, out=sandbox / "o")
    assert "a b.png" in str(e.value) and "a_b.png" in str(e.value)


# -- 2. resume deletes only files the build wrote (hash recorded) ------------------------------
def test_resume_never_deletes_files_a_log_names(sandbox, snap) -> None:
    out = sandbox / "o"
    clinfuse.build("medbanana", overrides=[*MB_FAST, "limit=1"], out=out)
    inside = out / "inputs" / "manifest.csv"
    victims = [sandbox / "bystander.txt", sandbox / "inputs" / "keep.txt", inside]
    lines = [{"task_id": "ghost", "image": str(victims[0]), "round": 1},
             {"task_id": "ghost", "image": "../inputs/keep.txt", "round": 1},
             {"task_id": "ghost", "image": "inputs/manifest.csv", "round": 1,
              "image_sha256": "0" * 64}]  # fmt: skip
    with open(out / "attempts.jsonl", "a") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in lines)
    before = snap(sandbox, skip=[out])
    clinfuse.build("medbanana", overrides=[*MB_FAST, "limit=1"], out=out, resume=True)
    assert all(v.exists() for v in victims)
    assert snap(sandbox, skip=[out]) == before


# -- 3. keys stay home --------------------------------------------------------------------------
class _Server:
    """A local HTTP server: ``redirect`` answers every request with a 302 to ``location``;
    otherwise it records the headers and answers a chat completion (or an error)."""

    def __init__(self, status: int = 200, location: str | None = None) -> None:
        self.seen: list[dict[str, str]] = []
        srv = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(n)
                srv.seen.append({k.lower(): v for k, v in self.headers.items()})
                if location is not None:
                    self.send_response(302)
                    self.send_header("Location", location)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = json.dumps({"choices": [{"message": {"content": "ok"}}],
                                   "candidates": [{"content": {"parts": [{"text": "ok"}]}}],
                                   "model": "m"}).encode()  # fmt: skip
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Retry-After", "0")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer  # noqa: N815

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def redirect_pair() -> Iterator[tuple[_Server, _Server]]:
    target = _Server()
    front = _Server(location=f"{target.url}/v1/chat/completions")
    yield front, target
    front.close()
    target.close()


def test_redirect_to_another_origin_drops_the_openai_key(redirect_pair) -> None:
    from clinfuse.llm.base import Message
    from clinfuse.llm.openai_compat import OpenAICompatBackend

    front, target = redirect_pair
    backend = OpenAICompatBackend("m", f"{front.url}/v1", api_key="sk-secret-1", max_retries=0)
    try:
        backend.generate([Message("user", "hi")])
    except Exception:  # noqa: BLE001 - the answer does not matter, what was sent does
        pass
    assert front.seen and front.seen[0]["authorization"] == "Bearer sk-secret-1"
    assert target.seen, "the redirect was not followed"
    assert all("authorization" not in h and "sk-secret-1" not in json.dumps(h)
               for h in target.seen)  # fmt: skip


def test_redirect_to_another_origin_drops_the_gemini_key(redirect_pair, monkeypatch) -> None:
    from clinfuse.llm.base import Message
    from clinfuse.llm.gemini import GeminiBackend

    front, target = redirect_pair
    monkeypatch.setenv("GEMINI_API_KEY", "AIza-secret-2")
    backend = GeminiBackend("gemini-x", base_url=front.url, max_retries=0)
    try:
        backend.generate([Message("user", "hi")])
    except Exception:  # noqa: BLE001
        pass
    assert front.seen and front.seen[0].get("x-goog-api-key") == "AIza-secret-2"
    assert target.seen and all("AIza-secret-2" not in json.dumps(h) for h in target.seen)


def test_same_origin_redirect_keeps_the_key() -> None:
    from clinfuse.llm.openai_compat import open_url

    target = _Server()
    import urllib.request

    front = _Server(location=f"{target.url}/x")  # a different port: another origin
    try:
        req = urllib.request.Request(f"{target.url}/y", headers={"Authorization": "Bearer k"})
        with open_url(req, 5.0, "k") as resp:
            resp.read()
        assert target.seen[-1]["authorization"] == "Bearer k"  # no redirect: sent as given
    finally:
        front.close()
        target.close()


def test_no_backend_keeps_a_key_in_its_pickle_or_repr(monkeypatch) -> None:
    from clinfuse.llm.gemini import GeminiBackend
    from clinfuse.llm.openai_compat import OpenAICompatBackend

    monkeypatch.setenv("GEMINI_API_KEY", "AIza-secret-3")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env-5")
    explicit = OpenAICompatBackend("m", "http://127.0.0.1:9/v1", api_key="sk-secret-4")
    for backend, secret in ((explicit, "sk-secret-4"), (GeminiBackend("g"), "AIza-secret-3")):
        blob = pickle.dumps(backend)
        assert secret.encode() not in blob and secret not in repr(backend)
    again = pickle.loads(pickle.dumps(explicit))
    assert again._api_key == "sk-env-5"  # read again from $OPENAI_API_KEY, never from the pickle


# -- 4. meeti reports when every record fails -------------------------------------------------
@pytest.fixture(scope="module")
def ecg_inputs(tmp_path_factory) -> Path:
    from clinfuse.builders.meeti import io
    from clinfuse.builders.meeti.default_data import simulated_records

    folder = tmp_path_factory.mktemp("ecg") / "inputs"
    io.write_mimic_layout(simulated_records(3, seed=0), folder)
    return folder


def test_meeti_with_a_failing_text_backend_writes_its_report_and_exits_2(
    ecg_inputs, tmp_path, capsys
) -> None:
    server = _Server(status=500)
    try:
        spec = f"text_backend=openai:m@{server.url}/v1"
        out = tmp_path / "o"
        args = ["build", "meeti", "--data", str(ecg_inputs), "--out", str(out)]
        code = main([*args, *sum((["--set", s] for s in [*ME_FAST, spec]), [])])
    finally:
        server.close()
    assert code == 2 and "no record of meeti was built" in capsys.readouterr().err
    failures = json.loads((out / "failures.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(failures) == 3 and metrics["n_failed"] == 3 and metrics["n_records"] == 0
    assert "HTTP 500" in next(iter(failures.values()))
    assert (out / "dataset_card.md").exists()


def test_meeti_target_fs_nan_is_a_config_error_before_any_folder(tmp_path, capsys) -> None:
    code = main(["build", "meeti", "--out", str(tmp_path / "o"), "--set", "target_fs=nan"])
    assert code == 2 and "target_fs" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# -- 5. meeti study ids that collide, record paths outside the input ---------------------------
def _copy_with_ids(src: Path, dst: Path, edit) -> Path:
    import shutil

    shutil.copytree(src, dst)
    path = dst / "record_list.csv"
    rows = list(csv.DictReader(open(path)))
    edit(rows)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return dst


def test_meeti_study_ids_that_collide_after_cleaning_are_refused(ecg_inputs, tmp_path) -> None:
    def edit(rows):
        rows[0]["study_id"], rows[1]["study_id"] = "77 1", "77_1"
        rows[1]["subject_id"] = rows[0]["subject_id"]

    data = _copy_with_ids(ecg_inputs, tmp_path / "in", edit)
    with pytest.raises(UnsafePathError) as e:
        clinfuse.build("meeti", overrides=ME_FAST, data=data, out=tmp_path / "o")
    assert "77 1" in str(e.value) and "77_1" in str(e.value)
    assert not (tmp_path / "o").exists()


def test_meeti_record_paths_must_stay_under_the_input(ecg_inputs, tmp_path) -> None:
    def edit(rows):
        rows[0]["path"] = "../elsewhere/" + Path(rows[0]["path"]).name

    data = _copy_with_ids(ecg_inputs, tmp_path / "in", edit)
    with pytest.raises(UnsafePathError, match="outside its folder"):
        clinfuse.build("meeti", overrides=ME_FAST, data=data, out=tmp_path / "o")
    assert not (tmp_path / "o").exists()


# -- 6. clean errors (exit 2) instead of tracebacks ---------------------------------------------
class _Payload:
    def __reduce__(self):
        return (os.system, ("touch /tmp/clinfuse-payload-ran",))


@pytest.mark.parametrize("kind", ["truncated", "payload", "garbage"])
def test_bad_checkpoints_give_a_clean_error(tmp_path, kind, capsys) -> None:
    import torch

    from clinfuse.core.config import config_to_dict
    from clinfuse.methods.dib.config import DIBConfig

    rd = RunDir.create(tmp_path / "run", "dib", config_to_dict(DIBConfig()))
    best = rd.checkpoint_path("best")
    if kind == "truncated":
        torch.save({"model": {"w": torch.ones(100)}}, best)
        best.write_bytes(best.read_bytes()[:200])
    elif kind == "payload":
        torch.save({"model": _Payload()}, best)
    else:
        best.write_bytes(b"\x00\xff not a checkpoint")
    with pytest.raises(RunDirError, match="cannot be read safely") as e:
        rd.load_checkpoint("best")
    assert "weights_only=False" not in str(e.value) and "can still be loaded" not in str(e.value)
    assert not Path("/tmp/clinfuse-payload-ran").exists()
    code = main(["evaluate", "dib", "--run", str(rd.path)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and "cannot be read safely" in err


def test_out_of_memory_at_model_build_is_a_clean_error_and_leaves_no_folder(
    tmp_path, monkeypatch, capsys
) -> None:
    from clinfuse.methods.dib.method import DIB

    def fit(self, data, run, resume=False):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:114] DefaultCPUAllocator: can't "
                           "allocate memory: you tried to allocate 400000000000 bytes")  # fmt: skip

    monkeypatch.setattr(DIB, "fit", fit)
    out = tmp_path / "run"
    assert main(["fit", "dib", "--out", str(out)]) == 2
    assert "out of memory" in capsys.readouterr().err
    assert not out.exists()  # the half-made run folder is gone: the rerun is not blocked


def test_unknown_split_is_a_clean_error() -> None:
    import argparse

    from clinfuse.cli import known_failure

    err = known_failure(KeyError("dev"), argparse.Namespace(split="dev"))
    assert isinstance(err, ConfigError) and "unknown split 'dev'" in str(err)
    assert known_failure(KeyError("other"), argparse.Namespace(split="dev")) is None


def test_ls_into_a_closed_pipe_ends_quietly() -> None:
    proc = subprocess.run(
        f"{sys.executable} -m clinfuse.cli ls | head -1", shell=True, capture_output=True,
        text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip
    assert proc.stdout.strip() == "methods:"
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr


# -- 7. validation before side effects, locks, atomic history ----------------------------------
@pytest.mark.parametrize(
    "argv",
    [
        ["fit", "dib", "--set", "lr=nan"],
        ["fit", "dib", "--set", "hidden=1e7"],
        ["fit", "dib", "--data", "/nonexistent/data.pkl"],
        ["build", "medbanana", "--data", "/nonexistent/evil.csv"],
        ["build", "meeti", "--data", "/nonexistent/ecg"],
    ],
)
def test_bad_input_leaves_no_folder(tmp_path, argv, capsys) -> None:
    out = tmp_path / "o"
    assert main([*argv, "--out", str(out)]) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert not out.exists()


def test_failed_resume_leaves_config_json_alone(tmp_path) -> None:
    from clinfuse.core.config import config_to_dict
    from clinfuse.methods.dib.config import DIBConfig

    rd = RunDir.create(tmp_path / "run", "dib", config_to_dict(DIBConfig(epochs=2)))
    before = rd.config_path.read_bytes()
    assert main(["fit", "dib", "--out", str(rd.path), "--resume", "--set", "epochs=3"]) == 2
    assert rd.config_path.read_bytes() == before
    assert not (rd.path / LOCK_NAME).exists()


def test_run_folder_lock_is_exclusive_and_a_dead_owner_is_taken_over(tmp_path) -> None:
    held = RunDir.create(tmp_path / "a", "dib", {}, hold_lock=True)
    with pytest.raises(RunDirError, match="in use"):
        RunDir(held.path).acquire()
    with pytest.raises(RunDirError, match="in use"):
        RunDir.create(held.path, "dib", {}, exist_ok=True)
    held.release()
    assert not (held.path / LOCK_NAME).exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    (held.path / LOCK_NAME).write_text(dead + "\n")
    with RunDir(held.path) as rd:
        assert (rd.path / LOCK_NAME).read_text().strip() == str(os.getpid())
    assert not (held.path / LOCK_NAME).exists()


def test_history_truncation_is_atomic(tmp_path, monkeypatch) -> None:
    rd = RunDir.create(tmp_path / "run", "dib", {})
    for e in range(1, 6):
        rd.log_epoch({"epoch": e, "loss": 1.0 / e})
    before = (rd.path / "metrics.csv").read_bytes()

    def killed(*a, **k):
        raise KeyboardInterrupt  # the process dies in the middle of the rewrite

    import clinfuse.core.runs as runs

    monkeypatch.setattr(runs.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        rd.truncate_history(3)
    assert (rd.path / "metrics.csv").read_bytes() == before  # the history is whole
    monkeypatch.undo()
    rd.truncate_history(3)
    assert [r["epoch"] for r in rd.read_history()] == ["1", "2", "3"]


# -- 8. unbounded config values are refused ----------------------------------------------------
@pytest.mark.parametrize(
    "name, override",
    [
        ("dib", "lr=nan"),
        ("dib", "beta=inf"),
        ("dib", "epochs=1e26"),
        ("dib", "batch_size=1e9"),
        ("dib", "hidden=1e7"),
        ("tunsr", "lr=-inf"),
        ("dpsurv", "n_folds=0"),
        ("deepen", "hidden=64,1e9"),
        ("meeti", "target_fs=nan"),
        ("medbanana", "max_side=1e8"),
        ("medbanana", "min_compliance=nan"),
    ],
)
def test_unbounded_values_are_refused(name, override) -> None:
    from clinfuse.api import get_builder, get_method

    key = override.split("=")[0]
    cls = get_builder(name) if name in ("meeti", "medbanana") else get_method(name)
    with pytest.raises(ConfigError) as e:
        load_config(cls.config_cls, overrides=[override])
    assert key in str(e.value)


def test_every_preset_and_default_is_within_bounds() -> None:
    from clinfuse.builders import load_all as load_builders
    from clinfuse.core.builder import BUILDERS
    from clinfuse.core.learner import METHODS
    from clinfuse.methods import load_all

    load_all()
    load_builders()
    n = 0
    for registry in (METHODS, BUILDERS):
        for name, cls in registry.items():
            check_bounds(cls.config_cls())
            for preset in preset_names(name):
                load_config(cls.config_cls, method=name, preset=preset)
                n += 1
    assert n >= 10
