"""The Med-Banana builder end to end with the local backend and fake model backends: tasks,
logs, manifests, preference pairs, history reaching the refiner, bad input, resume."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import clinfuse
from clinfuse.builders.medbanana import local, sources
from clinfuse.builders.medbanana.build import MedBanana
from clinfuse.builders.medbanana.config import MedBananaConfig
from clinfuse.builders.medbanana.loop import run_task
from clinfuse.builders.medbanana.roles import (
    ImageBackendEditor,
    LLMJudge,
    LLMWriter,
    Roles,
)
from clinfuse.builders.medbanana.tasks import DISEASE_PRESETS, make_tasks, scan_folder
from clinfuse.core.errors import ConfigError
from clinfuse.core.packages import package_file
from clinfuse.core.runs import RunDir
from clinfuse.llm.base import ImagePart
from clinfuse.llm.local import CallableBackend


def _chest_xray_file():
    package, parts = sources.DEFAULT_FILES["chest_xray"]
    return package_file(package, *parts)


def test_default_build_tables_and_preference_pairs(built) -> None:
    _, card, rd = built
    t, a = pd.read_parquet(rd.path / "tasks.parquet"), pd.read_parquet(rd.path / "attempts.parquet")
    assert len(t) == 6 and set(t["direction"]) == {"add", "remove"}  # 3 normal x 1 + 3 diseased
    assert t["task_id"].is_unique and not a.duplicated(["task_id", "round"]).any()
    assert (t["rounds"] <= 5).all() and card.n_records == (t["status"] == "success").sum()
    # every task's attempts are rounds 1..n; only a success's last round is qualified
    for r in t.to_dict("records"):
        mine = a[a["task_id"] == r["task_id"]].sort_values("round")
        assert list(mine["round"]) == list(range(1, r["rounds"] + 1))
        assert list(mine["qualified"]) == [False] * (r["rounds"] - 1) + [r["status"] == "success"]
    pairs = pd.read_parquet(rd.path / "preference_pairs.parquet")
    won = t[t["status"] == "success"]
    assert len(pairs) == int((won["rounds"] - 1).sum()) >= 1  # k - 1 pairs per success at k
    for p in pairs.to_dict("records"):
        assert (rd.path / p["chosen"]).is_file() and (rd.path / p["rejected"]).is_file()
        assert "accepted" in p["chosen"] and "failed" in p["rejected"] and p["rejected_reason"]
    kto = pd.read_parquet(rd.path / "kto.parquet")
    assert len(kto) == a["image"].notna().sum() and (~kto["label"]).sum() >= len(pairs)
    conv = json.loads(next((rd.path / "conversations").glob("*.json")).read_text())
    assert conv["models"]["writer"] == local.WRITER_ID
    assert all(len(r["writer_prompt_hash"]) == 64 for r in conv["rounds"])
    m = rd.read_metrics()
    assert m["share_images_present"] == 1.0 and m["share_success_consistent"] == 1.0
    assert (rd.path / "dataset_card.md").is_file() and (rd.plots / "examples.png").is_file()


def test_huggingface_datasets_reads_the_manifests(built) -> None:
    datasets = pytest.importorskip("datasets")
    _, _, rd = built
    ds = datasets.load_dataset("parquet", data_files=str(rd.path / "preference_pairs.parquet"),
                               split="train", cache_dir=str(rd.path.parent / "hf"))  # fmt: skip
    assert {"source", "instruction", "chosen", "rejected"} <= set(ds.column_names)


def test_folder_layout_gives_the_papers_tasks(tmp_path) -> None:
    assert sum(len(v) for v in DISEASE_PRESETS.values()) == 20
    ds = tmp_path / "MIMIC_cxr"
    for label, n in (("normal", 2), ("Pneumothorax", 1), ("Edema", 2)):
        (ds / label).mkdir(parents=True)
        for i in range(n):
            Image.new("L", (32, 32), 80).save(ds / label / f"{label}{i}.png")
    (ds / "normal" / "notes.txt").write_text("ignored")
    tasks = make_tasks(scan_folder(ds))
    assert {t.modality for t in tasks} == {"chest_xray"}
    add = [t for t in tasks if t.direction == "add"]
    assert len(add) == 2 * 2 and {t.disease for t in add} == {"Pneumothorax", "Edema"}
    assert len(tasks) - len(add) == 3 and len({t.task_id for t in tasks}) == len(tasks)
    only_normal = make_tasks(scan_folder(ds), diseases=(), directions=("add",))
    assert len(only_normal) == 4


def _lesion_png(image: ImagePart) -> bytes:
    arr = sources.to_array(Image.open(io.BytesIO(image.data)))
    lungs = local.organ_mask(arr, "chest_xray")
    out, _ = local.draw_lesion(arr, "chest_xray", "Lung_Opacity", lungs,
                               np.random.default_rng(0), 1.6)  # fmt: skip
    return sources.encode_image(sources.from_array(out))


class FakeEditor:
    """An ImageEditBackend: draws an honest lesion; or replies without an image."""

    model_id = "fake-editor-v1"

    def __init__(self, empty: bool = False) -> None:
        self.empty = empty

    def edit(self, image: ImagePart, instruction: str, *, seed: int | None = None):
        from types import SimpleNamespace

        data = b"" if self.empty else _lesion_png(image)
        return SimpleNamespace(image=SimpleNamespace(data=data), text="", model_id=self.model_id,
                               backend="fake", prompt_hash="0" * 64)  # fmt: skip


def _cxr_task(tmp_path: Path):
    src = tmp_path / "cxr.png"
    img = sources.load_image(_chest_xray_file(), 256)
    img.save(src)
    return make_tasks([sources_source(src)], directions=("add",), diseases=("Lung_Opacity",))[0]


def sources_source(path: Path):
    from clinfuse.builders.medbanana.tasks import Source

    return Source(str(path), "normal", "chest", "chest_xray")


def test_refiner_sees_the_source_and_full_history(tmp_path) -> None:
    seen: list = []

    def writer(messages):
        seen.append(messages)
        hist = "HISTORY OF ALL PREVIOUS ATTEMPTS" in messages[-1].text
        return json.dumps({"instruction": "Add a marked opacity; leave all else untouched"
                           if hist else "Add a subtle opacity"})  # fmt: skip

    cfg = MedBananaConfig(local_flaw_rate=0.0)
    roles = Roles(LLMWriter(CallableBackend(writer, "fake-writer-v1")), local.LocalEditor(cfg),
                  local.LocalJudge(cfg))  # fmt: skip
    task = _cxr_task(tmp_path)
    res = run_task(task, cfg, tmp_path / "out", roles)
    assert res["status"] == "success" and res["rounds"] == 2
    refine = seen[1][-1]
    assert any(isinstance(p, ImagePart) for p in refine.parts)  # the original source
    assert "Attempt 1:" in refine.text and "Add a subtle opacity" in refine.text
    assert "weak_edit" in refine.text and "too faint" in refine.text


def test_bad_replies_become_failed_attempts_and_fake_editor_passes(tmp_path) -> None:
    cfg = MedBananaConfig(max_rounds=2)
    task = _cxr_task(tmp_path)
    prose = CallableBackend(lambda m: "Looks fine to me.", "prose-judge")
    good_writer = LLMWriter(CallableBackend(lambda m: '{"instruction": "add"}', "w"))
    cases = {
        "bad_json": Roles(good_writer, ImageBackendEditor(FakeEditor()), LLMJudge(prose, cfg)),
        "no_image": Roles(good_writer, ImageBackendEditor(FakeEditor(True)), local.LocalJudge(cfg)),
    }
    for code, roles in cases.items():
        res = run_task(task, cfg, tmp_path / code, roles)
        lines = [
            json.loads(x) for x in (tmp_path / code / "attempts.jsonl").read_text().split("\n") if x
        ]
        assert res["status"] == "failed" and [x["reason_code"] for x in lines] == [code, code]
    judge = LLMJudge(CallableBackend(lambda m: '```json\n{"compliance": 5, "structure": 5, '
                                     '"realism": 4, "fidelity": 5, "has_disease": true, '
                                     '"reason": "ok"}\n```', "fake-judge"), cfg)  # fmt: skip
    res = run_task(task, cfg, tmp_path / "good",
                   Roles(good_writer, ImageBackendEditor(FakeEditor()), judge))  # fmt: skip
    assert res["status"] == "success" and res["editor_model"] == "fake-editor-v1"


def test_bad_input_files_are_recorded_and_the_build_goes_on(tmp_path) -> None:
    import pydicom

    data = tmp_path / "in"
    data.mkdir()
    (data / "broken.png").write_bytes(b"not an image")
    ds = pydicom.dcmread(_chest_xray_file())
    from pydicom.encaps import encapsulate

    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2: no decoder
    ds.PixelData = encapsulate([b"\x00\x01" * 64])
    ds.save_as(data / "mpeg.dcm")
    Image.new("L", (64, 64), 60).save(data / "ok.png")
    pd.DataFrame(
        {
            "image": ["broken.png", "mpeg.dcm", "ok.png", "ok.png"],
            "label": ["normal", "normal", "Edema", "normal"],
            "dataset": ["cxr"] * 4,
            "mask": ["", "", "10 10 999 20", ""],
        }  # fmt: skip
    ).to_csv(data / "m.csv", index=False)
    cfg = MedBananaConfig(data=str(data / "m.csv"), directions=("remove",), progress=False,
                          executor="serial")  # fmt: skip
    rd = RunDir.create(tmp_path / "b", "medbanana", {}, seed=0)
    MedBanana(cfg).build(rd)
    a = pd.read_parquet(rd.path / "attempts.parquet").set_index("task_id")
    assert a.loc["cxr__ok__Edema__remove", "reason_code"] == "bad_mask"
    cfg2 = MedBananaConfig(data=str(data / "m.csv"), directions=("add",), diseases=("Edema",),
                           progress=False, executor="serial")  # fmt: skip
    rd2 = RunDir.create(tmp_path / "b2", "medbanana", {}, seed=0)
    MedBanana(cfg2).build(rd2)
    a2 = pd.read_parquet(rd2.path / "attempts.parquet").set_index("task_id")
    assert a2.loc["cxr__broken__Edema__add", "reason_code"] == "bad_source"
    assert "transfer syntax" in a2.loc["cxr__mpeg__Edema__add", "reason"]
    assert pd.read_parquet(rd2.path / "tasks.parquet").shape[0] == 3  # ok.png still ran


def test_killed_build_resumes_to_the_uninterrupted_result(tmp_path, built, assert_same_build):
    _, _, ref = built

    class Boom(RuntimeError):
        pass

    seen = {"n": 0}

    def hook(rec):
        seen["n"] += 1
        if seen["n"] == 5:
            raise Boom("injected crash")

    cfg = MedBananaConfig(progress=False, executor="thread", workers=2)
    rd = RunDir.create(tmp_path / "killed", "medbanana", {}, seed=0)
    builder = MedBanana(cfg)
    builder.attempt_hook = hook
    with pytest.raises(Boom):
        builder.build(rd)
    with open(rd.path / "attempts.jsonl", "ab") as fh:  # a torn last line from a hard kill
        fh.write(b'{"task_id": "half')
    with pytest.raises(Exception, match="resume"):
        MedBanana(cfg).build(rd)
    _, card, rd2 = clinfuse.build(
        "medbanana", out=rd.path, resume=True, overrides=["progress=false"]
    )
    assert card.n_skipped >= 1
    assert_same_build(rd2.path, ref.path)


def test_progress_bar_and_metrics_report_speed_and_success(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CLINFUSE_PROGRESS", "1")  # `clinfuse -q` elsewhere may have set 0
    _, card, rd = clinfuse.build(
        "medbanana", overrides=["executor=serial", "progress=true", "limit=3"], out=tmp_path / "b"
    )
    lines = [json.loads(x) for x in (rd.path / "tasks.jsonl").read_text().splitlines()]
    n, n_ok = len(lines), sum(r["status"] == "success" for r in lines)
    assert n == 3 and 0 < n_ok < n  # one failure among them: the rate is not trivially 0 or 1
    bar = re.findall(r"tasks_per_min=([\d.]+), success_rate=(\d+)%", capsys.readouterr().err)
    assert len(bar) >= n and float(bar[-1][0]) > 0 and int(bar[-1][1]) == round(100 * n_ok / n)
    m = rd.read_metrics()
    assert m["success_rate"] == n_ok / n and m["n_run_now"] == n and m["n_success_now"] == n_ok
    assert m["tasks_per_min"] == pytest.approx(60 * n / m["build_seconds"])
    saved = json.loads((rd.path / "dataset_card.json").read_text())["stats"]
    assert saved["tasks_per_min"] == m["tasks_per_min"] and saved["success_rate"] == n_ok / n
    assert "| tasks_per_min |" in (rd.path / "dataset_card.md").read_text()


def test_model_roles_get_rate_limits_and_disk_caches(tmp_path) -> None:
    from clinfuse.builders.medbanana.roles import make_roles
    from clinfuse.llm.cache import CachedBackend
    from clinfuse.llm.images import CachedImageBackend

    url = "openai:m@http://127.0.0.1:9/v1"  # nothing is sent while the roles are built
    cfg = MedBananaConfig(writer=url, editor=url, judge="local", rate_limit_per_min=30)
    roles = make_roles(cfg, tmp_path)
    writer, editor = roles.writer.backend, roles.editor.backend
    assert isinstance(writer, CachedBackend) and writer.directory == tmp_path / "llm_cache"
    assert isinstance(editor, CachedImageBackend) and editor.directory == tmp_path / "image_cache"
    limits = [b.backend._transport.rate_limiter for b in (writer, editor)]
    assert [x.per_minute for x in limits] == [30.0, 30.0] and limits[0] is not limits[1]
    assert isinstance(roles.judge, local.LocalJudge)
    bare = make_roles(MedBananaConfig(writer=url, llm_cache=False), tmp_path)
    assert bare.writer.backend._transport.rate_limiter is None  # not cached, not limited
    with pytest.raises(ConfigError, match="rate_limit_per_min"):
        MedBananaConfig(rate_limit_per_min=0)
