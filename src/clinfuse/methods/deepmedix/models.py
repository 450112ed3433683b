"""Models for DeepMedix-R1: tiny random Llama / Qwen2.5-VL for tests and demos, or a local folder.

Model specs accepted by :func:`load_model`:

- ``tiny-llama`` (text only): a random 2 x 64 ``LlamaForCausalLM`` with the SmolLM2 tokenizer and
  chat template (the factory of ``clinfuse.llm.models``). Images are ignored.
- ``tiny-qwen2.5-vl``: a random ``Qwen2_5_VLForConditionalGeneration`` (text 2 x 64, vision
  depth 2 x 32, ``mrope_section`` [2, 3, 3], which sums to half the head dim) with the SmolLM2
  tokenizer plus the four Qwen vision tokens, and an :class:`ImageOnlyQwenVLProcessor` (the PIL
  ``Qwen2VLImageProcessorPil``; no video processor, so no torchvision).
- a local folder: ``config.json`` of a causal LM (tokenizer only) or of Qwen2-VL / Qwen2.5-VL
  (a processor is required: ``preprocessor_config.json`` or ``processor_config.json``).

:func:`save_model` writes model and processor as a plain Hugging Face folder; that folder is
what the next stage (and GRPO's frozen reference model) loads. Nothing is downloaded: every
``from_pretrained`` passes ``local_files_only=True``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from clinfuse.core.errors import ConfigError, DataError, require

log = logging.getLogger(__name__)

VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
"""Special tokens a Qwen2-VL style model needs in its tokenizer (ids go into the config)."""
VLM_TYPES = ("qwen2_5_vl", "qwen2_vl")
"""``config.model_type`` values loaded as vision-language models."""
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
"""Files that mark a folder as holding an image processor."""
IMAGE_ONLY = "ImageOnlyQwenVLProcessor"
"""``processor_class`` written for the tiny processor (reloaded without AutoProcessor)."""

VLM_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif c['type'] == 'text' %}{{ c['text'] }}"
    "{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""Qwen2-VL style ChatML with image placeholders, for the tiny VLM (SmolLM2 has no image slot)."""

TINY_MAX_PIXELS = 128 * 28 * 28
"""Pixel budget of the tiny VLM's image processor (a 512 x 512 input becomes 308 x 308,
22 x 22 patches, 121 image tokens): keeps CPU tests fast."""


@dataclass
class LoadedModel:
    """A model with what prepares its inputs.

    ``processor`` is what TRL gets as ``processing_class``: the tokenizer for a text model,
    the (image + text) processor for a VLM.
    """

    model: nn.Module
    """The model, float32, in eval mode."""
    processor: Any
    """Tokenizer (text) or processor (VLM)."""
    tokenizer: Any
    """The tokenizer (``processor.tokenizer`` for a VLM)."""
    is_vlm: bool
    """Whether the model takes images."""
    spec: str
    """The spec or folder it came from."""


def _processor_class() -> type:
    """:class:`ImageOnlyQwenVLProcessor`, built on first use (transformers imported lazily)."""
    global _PROC
    if _PROC is not None:
        return _PROC
    from transformers import Qwen2_5_VLProcessor
    from transformers.processing_utils import ProcessorMixin

    class ImageOnlyQwenVLProcessor(Qwen2_5_VLProcessor):
        """``Qwen2_5_VLProcessor`` without a video processor (that one needs torchvision)."""

        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kw):
            self.image_token, self.video_token = "<|image_pad|>", "<|video_pad|>"
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    ImageOnlyQwenVLProcessor.__name__ = IMAGE_ONLY
    _PROC = ImageOnlyQwenVLProcessor
    return _PROC


_PROC: type | None = None


def image_only_processor(tokenizer: Any, image_processor: Any = None, chat_template=None) -> Any:
    """A Qwen2.5-VL processor from a tokenizer and a PIL ``Qwen2VLImageProcessorPil``.

    ``image_processor=None`` builds one with :data:`TINY_MAX_PIXELS`; missing vision tokens
    are added to ``tokenizer``. The processor expands each ``<|image_pad|>`` to
    :math:`\\prod(\\mathrm{grid\\_thw}) / \\mathrm{merge}^2` copies, as Qwen's does.
    """
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    missing = [t for t in VISION_TOKENS if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing})
    if image_processor is None:
        image_processor = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=TINY_MAX_PIXELS)
    return _processor_class()(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=chat_template or VLM_CHAT_TEMPLATE,
    )


def tiny_qwen_vl(tokenizer: Any, *, seed: int = 0) -> nn.Module:
    """A random ``Qwen2_5_VLForConditionalGeneration`` sized for ``tokenizer`` (which must hold
    :data:`VISION_TOKENS`): text 2 x 64 (4 heads, 2 KV heads), vision depth 2 x 32,
    ``mrope_section`` [2, 3, 3] (sums to head_dim / 2 = 8), tied embeddings, eager attention."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in VISION_TOKENS}
    special = {
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "bos_token_id": tokenizer.bos_token_id,
    }
    cfg = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 4096,
            "tie_word_embeddings": True,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 10000.0,
                "mrope_section": [2, 3, 3],
            },
            **special,
        },
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": 64,
            "fullatt_block_indexes": [1],
            "window_size": 112,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        **special,
    )
    cfg._attn_implementation = "eager"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration(cfg)
    return model.to(torch.float32).eval()


def _tiny_llama(seed: int) -> LoadedModel:
    from clinfuse.llm.models import smollm2_tokenizer, tiny_llama

    tok = smollm2_tokenizer()
    model = tiny_llama(tok, layers=2, hidden=64, seed=seed)
    return LoadedModel(model, tok, tok, False, "tiny-llama")


def _tiny_vlm(seed: int) -> LoadedModel:
    from clinfuse.llm.models import smollm2_tokenizer

    proc = image_only_processor(smollm2_tokenizer())
    model = tiny_qwen_vl(proc.tokenizer, seed=seed)
    return LoadedModel(model, proc, proc.tokenizer, True, "tiny-qwen2.5-vl")


_TINY = {"tiny-llama": _tiny_llama, "tiny-qwen2.5-vl": _tiny_vlm}


def _load_vlm_processor(folder: Path) -> Any:
    from transformers import AutoTokenizer

    found = [f for f in PROCESSOR_FILES if (folder / f).is_file()]
    if not found:
        raise DataError(
            f"the vision-language model in {folder} has no processor",
            expected=f"one of {list(PROCESSOR_FILES)} beside config.json (the image processor)",
            found=sorted(p.name for p in folder.iterdir())[:12],
            fix="copy the processor files of the checkpoint (processor.save_pretrained(folder)) "
            "into the folder",
        )
    meta = json.loads((folder / found[0]).read_text(encoding="utf-8"))
    if meta.get("processor_class") != IMAGE_ONLY:
        try:
            from transformers import AutoProcessor

            return AutoProcessor.from_pretrained(folder, local_files_only=True)
        except Exception as exc:  # e.g. the video processor needs torchvision
            log.warning("AutoProcessor failed (%s); using the image-only processor", exc)
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    image_processor = Qwen2VLImageProcessorPil.from_pretrained(folder, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    jinja = folder / "chat_template.jinja"  # the processor's template (the tokenizer's may differ)
    template = jinja.read_text(encoding="utf-8") if jinja.is_file() else tok.chat_template
    return image_only_processor(tok, image_processor, template)


def _load_folder(folder: Path) -> LoadedModel:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if not (folder / "config.json").is_file():
        raise DataError(
            f"not a Hugging Face model folder: {folder}",
            expected="a folder with config.json, weights and tokenizer (and processor) files",
            found=sorted(p.name for p in folder.iterdir())[:12],
            fix="pass a folder written by save_pretrained, a deepmedix run directory, "
            "or tiny-llama / tiny-qwen2.5-vl",
        )
    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    if config.model_type in VLM_TYPES:
        from transformers import AutoModelForImageTextToText

        proc = _load_vlm_processor(folder)
        model = AutoModelForImageTextToText.from_pretrained(
            folder, dtype=torch.float32, local_files_only=True
        )
        return LoadedModel(model.eval(), proc, proc.tokenizer, True, str(folder))
    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, local_files_only=True)
    return LoadedModel(model.eval(), tok, tok, False, str(folder))


def resolve_model_dir(path: str | Path) -> Path:
    """A model folder from ``path``: a deepmedix run directory (its ``model/``) or the folder."""
    p = Path(path).expanduser()
    if (p / "model" / "config.json").is_file():
        return p / "model"
    if not p.is_dir():
        raise DataError(
            f"no model at {str(p)!r}",
            expected="a deepmedix run directory (with model/) or a Hugging Face model folder",
            found="no such directory" if not p.exists() else "a file",
            fix="pass the run directory that `clinfuse fit deepmedix` printed",
        )
    return p


def load_model(spec: str | Path, *, seed: int = 0) -> LoadedModel:
    """Load a model spec: ``tiny-llama``, ``tiny-qwen2.5-vl``, a run directory or a folder.

    Raises:
        ConfigError: an unknown spec. DataError: a folder without ``config.json``, or a VLM
        folder without a processor.
    """
    require("transformers", "llm")
    text = str(spec)
    if text in _TINY:
        out = _TINY[text](seed)
    elif Path(text).expanduser().exists():
        out = _load_folder(resolve_model_dir(text))
    else:
        raise ConfigError(
            f"unknown model spec {text!r}",
            expected=f"one of {sorted(_TINY)}, a deepmedix run directory or a model folder",
            found=text,
            fix="check the spelling, or pass the path of a folder with config.json",
        )
    tok = out.tokenizer
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return out


def save_model(loaded: LoadedModel, folder: str | Path) -> Path:
    """Write model and processor to ``folder`` (created); a PEFT model is merged first."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = loaded.model
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.save_pretrained(folder)
    loaded.processor.save_pretrained(folder)  # a VLM processor writes its tokenizer too
    return folder


def load_image(path: str | Path | None, size: int) -> Any:
    """An RGB PIL image resized to ``size`` x ``size``; None gives the packaged radiograph.

    Raises:
        DataError: the file is missing or cannot be decoded as an image.
    """
    from PIL import Image, UnidentifiedImageError

    if path is None:
        from clinfuse.methods.deepmedix.data import default_image

        return default_image(size)
    try:
        with Image.open(path) as im:
            img = im.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DataError(
            f"cannot decode the image {str(path)!r}",
            expected="a PNG / JPEG (any format PIL reads) chest radiograph",
            found=f"{type(exc).__name__}: {exc}",
            fix="fix or drop the record (its `image` column)",
        ) from None
    return img.resize((size, size))


def model_info(model: nn.Module) -> dict[str, Any]:
    """Class, parameter count (tied tensors once) and whether it has a vision tower.

    Example:
        >>> model_info(torch.nn.Linear(3, 2))["n_params"]
        8
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    params = list({id(p): p for p in model.parameters()}.values())
    return {
        "class": type(base).__name__,
        "n_params": sum(p.numel() for p in params),
        "n_trainable": sum(p.numel() for p in params if p.requires_grad),
    }
