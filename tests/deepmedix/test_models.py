"""DeepMedix models: the tiny VLM sees the pydicom-data radiograph, folders round-trip, and bad
folders / images fail with clear errors."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from clinfuse.core.errors import ConfigError, DataError

pytest.importorskip("transformers")

from tests.deepmedix.tiny import noise_image, tiny  # noqa: E402

from clinfuse.methods.deepmedix.models import (  # noqa: E402
    IMAGE_ONLY,
    TINY_MAX_PIXELS,
    load_image,
    load_model,
    resolve_model_dir,
    save_model,
)
from clinfuse.methods.deepmedix.train import generate  # noqa: E402

logging.getLogger("transformers").setLevel(logging.ERROR)


@pytest.fixture(scope="module")
def vlm():
    return tiny("tiny-qwen2.5-vl")


def _encode(vlm, image, text="Is there a pleural effusion?"):
    msgs = [{"role": "user", "content": [{"type": "image", "image": image},
                                         {"type": "text", "text": text}]}]  # fmt: skip
    return vlm.processor.apply_chat_template(
        [msgs], add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )


def test_tiny_vlm_generates_on_the_radiograph_resized_to_512(vlm):
    radiograph = load_image(None, 512)  # the pydicom-data chest radiograph
    assert radiograph.size == (512, 512) and radiograph.mode == "RGB"
    enc = _encode(vlm, radiograph)
    # one <|image_pad|> per merged 2x2 patch group: prod(grid_thw) / merge^2
    (t, h, w) = enc["image_grid_thw"][0].tolist()
    pad = vlm.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert int((enc["input_ids"] == pad).sum()) == t * h * w // 4
    assert h * w * 14 * 14 <= TINY_MAX_PIXELS  # resized to the processor's pixel budget
    out = generate(vlm, ["Is there a pleural effusion?"], [radiograph], max_new_tokens=6)
    again = generate(vlm, ["Is there a pleural effusion?"], [radiograph], max_new_tokens=6)
    assert out == again and isinstance(out[0], str)  # greedy: deterministic
    ids = vlm.model.generate(**enc, max_new_tokens=6, do_sample=False, min_new_tokens=6)
    assert ids.shape[1] == enc["input_ids"].shape[1] + 6


def test_the_image_reaches_the_language_model(vlm):
    with torch.no_grad():
        a = vlm.model(**_encode(vlm, noise_image(1))).logits[0, -1]
        b = vlm.model(**_encode(vlm, noise_image(2))).logits[0, -1]
    assert (a - b).abs().max() > 1e-6


def test_vlm_folder_round_trip_gives_identical_logits(vlm, tmp_path):
    folder = save_model(vlm, tmp_path / "model")
    meta = json.loads((folder / "processor_config.json").read_text())
    assert meta["processor_class"] == IMAGE_ONLY
    again = load_model(folder)
    assert again.is_vlm and type(again.processor).__name__ == IMAGE_ONLY
    enc = _encode(vlm, noise_image(3))
    enc2 = _encode(again, noise_image(3))
    torch.testing.assert_close(enc["input_ids"], enc2["input_ids"])
    with torch.no_grad():
        torch.testing.assert_close(vlm.model(**enc).logits, again.model(**enc2).logits)
    # a run directory resolves to its model/ folder
    assert resolve_model_dir(tmp_path) == folder


def test_vlm_folder_without_processor_is_refused(vlm, tmp_path):
    folder = save_model(vlm, tmp_path / "m")
    (folder / "processor_config.json").unlink()
    with pytest.raises(DataError, match="has no processor"):
        load_model(folder)


def test_text_model_round_trip_and_bad_specs(tmp_path):
    llama = tiny("tiny-llama")
    assert not llama.is_vlm and llama.tokenizer.chat_template
    folder = save_model(llama, tmp_path / "llama")
    again = load_model(folder)
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        torch.testing.assert_close(llama.model(ids).logits, again.model(ids).logits)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="not a Hugging Face model folder"):
        load_model(tmp_path / "empty")
    with pytest.raises(ConfigError, match="unknown model spec"):
        load_model("tiny-lama")


def test_undecodable_image_is_a_data_error(tmp_path):
    bad = tmp_path / "xray.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(DataError, match="cannot decode the image"):
        load_image(bad, 512)
    with pytest.raises(DataError, match="cannot decode"):
        load_image(tmp_path / "missing.png", 512)
