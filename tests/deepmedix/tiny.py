"""Tiny random models, a synthetic radiograph-like image and record stand-ins for the DeepMedix
tests (the model factories are the package's own: ``tiny-llama`` and ``tiny-qwen2.5-vl``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def tiny(spec: str = "tiny-llama", seed: int = 0):
    """``LoadedModel`` of a tiny random model (``tiny-llama`` or ``tiny-qwen2.5-vl``)."""
    from clinfuse.methods.deepmedix.models import load_model

    return load_model(spec, seed=seed)


def noise_image(seed: int, size: int = 512):
    """A seeded RGB noise image (``size`` x ``size``), different for every seed."""
    from PIL import Image

    arr = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return Image.fromarray(arr)


def snapshot(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def unchanged(before: dict[str, torch.Tensor], model) -> list[str]:
    """Names of parameters equal to their snapshot (PEFT prefixes stripped)."""
    after = {
        n.removeprefix("base_model.model.").replace(".base_layer", ""): p
        for n, p in model.named_parameters()
    }
    return [n for n, p in before.items() if torch.equal(p, after[n].detach().to(p.device))]


@dataclass(frozen=True)
class Rec:
    """Stand-in with the fields of ``deepmedix.data.XrayRecord``."""

    image: str | None
    question: str
    answer: str
    type: str = "presence"
    boxes: tuple = ()
