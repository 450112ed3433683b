"""The local judge on the real packaged chest radiograph: an honest edit passes; global gamma,
burned-in text, a duplicated (copy-moved) patch and a resized output fail with the right reason;
scores are normalised."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from clinfuse.builders.medbanana import local, sources
from clinfuse.builders.medbanana.config import MedBananaConfig
from clinfuse.builders.medbanana.metrics import decide
from clinfuse.builders.medbanana.prompts import normalise_scores, parse_json_object
from clinfuse.builders.medbanana.tasks import Task
from clinfuse.core.packages import package_file


def _chest_xray_file():
    package, parts = sources.DEFAULT_FILES["chest_xray"]
    return package_file(package, *parts)


CFG = MedBananaConfig()


@pytest.fixture(scope="module")
def cxr():
    img = sources.load_image(_chest_xray_file(), 512)
    arr = sources.to_array(img)
    return img, arr, local.organ_mask(arr, "chest_xray")


TASK = Task("t", "chest_xray", "chest_xray", "Lung_Opacity", "add", "x.png")


def test_monochrome1_radiograph_is_inverted(cxr) -> None:
    img, arr, lungs = cxr
    assert img.size == (482, 512) and img.info["orig_size"] == (1841, 1955)
    # after inversion the aerated lungs are darker than the film border region of the body
    assert arr[lungs].mean() < np.median(arr)


def test_honest_local_edit_passes(cxr) -> None:
    img, arr, lungs = cxr
    out, roi = local.draw_lesion(arr, "chest_xray", "Lung_Opacity", lungs,
                                 np.random.default_rng(0), 1.6)  # fmt: skip
    v = local.LocalJudge(CFG).judge(TASK, img, sources.from_array(out), lungs)
    assert v.qualified, v.reason
    assert v.metrics["ssim_outside"] > 0.99 and v.metrics["inside_allowed"] == 1.0
    assert v.metrics["dup_score"] < 0.5  # a drawn lesion copies nothing
    assert all(s >= 0.6 for s in v.scores().values())


@pytest.mark.parametrize(
    ("corrupt", "code", "word"),
    [
        (lambda im: sources.from_array(sources.to_array(im) ** 0.7), "global_change", "global"),
        ("text", "sharp_edges", "text"),
        (lambda im: im.resize((im.size[0] * 3 // 4, im.size[1] * 3 // 4)), "resized", "resized"),
    ],
    ids=["gamma", "burned_in_text", "resized"],
)
def test_corrupted_edits_fail_with_the_right_reason(cxr, corrupt, code, word) -> None:
    img, arr, lungs = cxr
    out, _ = local.draw_lesion(arr, "chest_xray", "Lung_Opacity", lungs,
                               np.random.default_rng(0), 1.0)  # fmt: skip
    edited = sources.from_array(out)
    if corrupt == "text":
        ImageDraw.Draw(edited).text((12, 12), "R  PORTABLE AP", fill=255)
    else:
        edited = corrupt(edited)
    v = local.LocalJudge(CFG).judge(TASK, img, edited, lungs)
    assert not v.qualified and v.reason_code == code and word in v.reason


@pytest.mark.parametrize(
    ("donor", "target"),
    [
        ((150, 300), "lesion"),  # right lung -> over the drawn lesion (inside the edited region)
        ((150, 300), (180, 100)),  # right lung -> upper left lung, away from the lesion
        ((430, 200), (150, 320)),  # below the lungs -> right lung
    ],
    ids=["into_edit", "lung_to_lung_outside_edit", "body_to_lung"],
)
def test_duplicated_patch_fails_and_its_displacement_is_found(cxr, donor, target) -> None:
    img, arr, lungs = cxr
    out, lesion = local.draw_lesion(arr, "chest_xray", "Lung_Opacity", lungs,
                                    np.random.default_rng(0), 1.6)  # fmt: skip
    side = 64
    if target == "lesion":
        ys, xs = np.nonzero(lesion)
        target = (int(ys.mean()) - side // 2, int(xs.mean()) - side // 2)
    (sy, sx), (ty, tx) = donor, target
    out[ty : ty + side, tx : tx + side] = arr[sy : sy + side, sx : sx + side]
    v = local.LocalJudge(CFG).judge(TASK, img, sources.from_array(out), lungs)
    assert not v.qualified and v.reason_code == "duplicated_patch" and "duplicated" in v.reason
    assert (v.metrics["dup_dy"], v.metrics["dup_dx"]) == (sy - ty, sx - tx)  # planted shift
    assert v.metrics["dup_score"] > 0.9 and v.realism < CFG.min_realism


def test_faint_edit_fails_as_weak_and_removal_restores_the_planted_normal(cxr) -> None:
    img, arr, lungs = cxr
    faint, _ = local.draw_lesion(arr, "chest_xray", "Lung_Opacity", lungs,
                                 np.random.default_rng(0), 0.5)  # fmt: skip
    assert local.LocalJudge(CFG).judge(TASK, img, sources.from_array(faint), lungs).reason_code \
        == "weak_edit"  # fmt: skip
    sick, lesion = local.draw_lesion(arr, "chest_xray", "Lung_Opacity", lungs,
                                     np.random.default_rng(2), 1.3)  # fmt: skip
    healed = local.remove_lesion(sick, lesion, np.random.default_rng(3))
    # the planted lesion brightened the core; removal takes most of the excess away
    assert (healed - arr)[lesion].mean() < 0.5 * (sick - arr)[lesion].mean()
    from scipy import ndimage

    assert np.abs(healed - sick)[~ndimage.binary_dilation(lesion, iterations=4)].max() == 0.0


def test_thresholds_decide_and_model_scores_are_normalised() -> None:
    m = {"size_kept": 1.0, "region_fraction": 0.01, "changed_fraction": 0.01}
    scores = normalise_scores({"compliance": 5, "structure": 4, "realism": 3, "fidelity": 2})
    assert scores == {"compliance": 1.0, "structure": 0.75, "realism": 0.5, "fidelity": 0.25}
    ok, code, _ = decide(scores, m, CFG, gates=False)
    assert not ok and code == "low_realism"
    strict = MedBananaConfig(min_realism=0.5, min_fidelity=0.2)
    assert decide(scores, m, strict, gates=False)[0]
    assert parse_json_object('noise ```json\n{"a": {"b": 1}}\n``` tail') == {"a": {"b": 1}}
    with pytest.raises(ValueError):
        parse_json_object("I cannot judge this image.")


def test_grey_source_returned_as_grey_rgb_keeps_mode_but_colour_fails() -> None:
    from clinfuse.builders.medbanana.metrics import edit_metrics

    src = Image.new("L", (64, 64), 90)
    assert edit_metrics(src, src.convert("RGB"))["mode_kept"] == 1.0
    assert edit_metrics(src, Image.new("RGB", (64, 64), (200, 20, 20)))["mode_kept"] == 0.0
