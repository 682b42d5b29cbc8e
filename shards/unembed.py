"""A causal LM's unembedding (final norm + output projection) stored with a dataset, for the logit lens.

``actlake extract --save-unembed`` writes it as ``artifacts/unembed.safetensors`` (checksummed in the
manifest), so that whoever reads the dataset can map residual rows to next-token logits without the model.
Float32 tensors: ``unembed.weight`` (vocab × d), optional ``unembed.bias``, ``norm.weight``/``norm.bias``;
the norm's kind and epsilon and the model's block count live in the safetensors metadata.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from shards.errors import ActlakeError

UNEMBED = "unembed.safetensors"
#: where causal LM families keep their final norm (the first present wins)
FINAL_NORMS = ("transformer.ln_f", "model.norm", "gpt_neox.final_layer_norm", "model.final_layernorm",
               "model.decoder.final_layer_norm")
NormKind = Literal["layernorm", "rmsnorm", "none"]


class NoUnembeddingError(ActlakeError, ValueError):
    """The model (or dataset) has no unembedding to apply."""


@dataclass(kw_only=True)
class Unembed:
    """``logits(x) = norm(x) @ weight.T + bias``, exactly as the model computes its output logits."""

    weight: torch.Tensor
    bias: torch.Tensor | None = None
    norm: NormKind = "none"
    norm_weight: torch.Tensor | None = None
    norm_bias: torch.Tensor | None = None
    eps: float = 1e-5
    num_layers: int = 0  #: the model's blocks: resid.{num_layers - 1} is the last layer's output
    architecture: str = ""

    @property
    def d_model(self) -> int:
        return int(self.weight.shape[1])

    @property
    def vocab(self) -> int:
        return int(self.weight.shape[0])

    def normed(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if self.norm == "layernorm":
            return torch.nn.functional.layer_norm(x, (x.shape[-1],), self.norm_weight, self.norm_bias, self.eps)
        if self.norm == "rmsnorm":  # as Llama-family RMSNorm: in float32, weight applied after
            x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
            return x * self.norm_weight
        return x

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Next-token logits (float32) of residual rows ``x`` (n × d)."""
        out = self.normed(x) @ self.weight.T
        return out + self.bias if self.bias is not None else out

    def to_bytes(self) -> bytes:
        from safetensors.torch import save

        tensors = {"unembed.weight": self.weight.float().contiguous()}
        for key, t in (("unembed.bias", self.bias), ("norm.weight", self.norm_weight), ("norm.bias", self.norm_bias)):
            if t is not None:
                tensors[key] = t.float().contiguous()
        meta = {"norm": self.norm, "eps": repr(float(self.eps)), "num_layers": str(self.num_layers),
                "architecture": self.architecture, "format": "actlake-unembed-1"}
        return save(tensors, metadata=meta)

    @classmethod
    def from_bytes(cls, data: bytes) -> Unembed:
        from safetensors.torch import load

        tensors = load(data)
        meta = safetensors_metadata(data)
        return cls(weight=tensors["unembed.weight"], bias=tensors.get("unembed.bias"), norm=meta.get("norm", "none"),
                   norm_weight=tensors.get("norm.weight"), norm_bias=tensors.get("norm.bias"),
                   eps=float(meta.get("eps", 1e-5)), num_layers=int(meta.get("num_layers", 0)),
                   architecture=meta.get("architecture", ""))


def safetensors_metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file's bytes (its header: an 8-byte length, then JSON)."""
    import json
    import struct

    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n]).get("__metadata__") or {}


def _final_norm(model) -> tuple[NormKind, torch.Tensor | None, torch.Tensor | None, float]:
    modules = dict(model.named_modules())
    name = next((n for n in FINAL_NORMS if n in modules), None)
    if name is None:
        return "none", None, None, 0.0
    norm = modules[name]
    kind = type(norm).__name__
    if isinstance(norm, torch.nn.LayerNorm):
        bias = norm.bias.detach() if norm.bias is not None else None
        return "layernorm", norm.weight.detach(), bias, float(norm.eps)
    if "RMSNorm" in kind and "Gemma" not in kind:  # Gemma scales by (1 + weight): not this formula
        eps = getattr(norm, "variance_epsilon", getattr(norm, "eps", 1e-6))
        return "rmsnorm", norm.weight.detach(), None, float(eps)
    raise NoUnembeddingError(f"{name} is a {kind}, which actlake's logit lens does not implement "
                             "(LayerNorm and Llama-style RMSNorm are supported)")


def from_module(model) -> Unembed:
    """The unembedding of a loaded causal LM (GPT-2, Llama, SmolLM, Qwen, Mistral, GPT-NeoX families)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    arch = (getattr(getattr(model, "config", None), "architectures", None) or [type(model).__name__])[0]
    if head is None or getattr(head, "weight", None) is None:
        raise NoUnembeddingError(f"the model ({arch}) has no output embedding (no LM head): the logit lens needs "
                                 "a causal language model, e.g. GPT-2 or a Llama-family model")
    norm, nw, nb, eps = _final_norm(model)
    cfg = getattr(model, "config", None)
    layers = int(getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layer", 0) or 0)
    bias = head.bias.detach().float() if getattr(head, "bias", None) is not None else None
    return Unembed(weight=head.weight.detach().float().clone(), bias=bias, norm=norm,
                   norm_weight=None if nw is None else nw.float().clone(),
                   norm_bias=None if nb is None else nb.float().clone(), eps=eps, num_layers=layers, architecture=arch)


def load_unembed(spec: str) -> Unembed:
    """An unembedding from a saved ``.safetensors`` file, or from a causal LM: a local directory or an
    installed package that ships one (loaded offline, on the CPU, in float32)."""
    if spec.endswith(".safetensors") and Path(spec).is_file():
        return Unembed.from_bytes(Path(spec).read_bytes())
    from transformers import AutoConfig, AutoModelForCausalLM

    from shards.modelpaths import is_causal_lm_config, resolve_model_path

    path = resolve_model_path(spec)
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    if not is_causal_lm_config(config):
        raise NoUnembeddingError(f"--model {spec}: {config.architectures} is not a causal language model, so it has "
                                 "no unembedding for the logit lens")
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch.float32)
    return from_module(model)
