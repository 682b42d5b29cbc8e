"""Hook points: module paths, glob patterns and portable aliases resolved per architecture.

Aliases (N = block index):
- ``embed``: the token (+ position) embeddings entering block 0
- ``resid.N``: the residual stream after block N (the block's output hidden states)
- ``attn.N``: the attention sub-layer's output (before it is added to the residual)
- ``mlp.N``: the MLP sub-layer's output (before the residual add)
- ``mlp_hidden.N``: the MLP's hidden activations after the nonlinearity (for gated
  MLPs, act(gate) * up), i.e. the input of the MLP's output projection
- ``stage.N`` (CNNs: ResNet, ConvNeXt): the output feature map of stage N
- ``block.N`` (any other ``nn.Module``, e.g. EfficientNet's ``_blocks``): the output of child N of the model's
  largest numbered container (``nn.ModuleList``/``nn.Sequential``)

Families: BERT/MiniLM, GPT-2, GPT-NeoX/Pythia (parallel attention and MLP: both read the block's input),
Llama-style (Llama, Qwen, Mistral, Gemma; Gemma 2's ``attn.N``/``mlp.N`` are before its post-norms, so not
exactly what is added to the residual); vision: ViT, DINOv2 (attn/mlp after the layer scale, i.e. what is added
to the residual), CLIP/SigLIP vision towers, and CNNs with ``encoder.stages`` (ResNet, ConvNeXt). Causal LMs are
loaded with their LM head (``ingest.models``), so their blocks are where these paths look.
"""

from __future__ import annotations

import difflib
import fnmatch
import re

from shards.errors import UnknownHookError
from shards.interventions import HookPoint  # where an intervention names its hook too (analysis reads it there)
from shards.schema import natural_key

# Per family: (blocks path, embed candidates "a|b" (first present wins), attn, mlp, mlp output projection)
_FAMILIES = {
    "bert": ("encoder.layer", "embeddings", "{b}.attention", "{b}.output.dense", "{b}.output.dense"),
    "gpt2": ("transformer.h", "transformer.drop", "{b}.attn", "{b}.mlp", "{b}.mlp.c_proj"),
    "llama": ("model.layers", "model.embed_tokens", "{b}.self_attn", "{b}.mlp", "{b}.mlp.down_proj"),
    "gpt_neox": ("gpt_neox.layers", "gpt_neox.embed_in", "{b}.attention", "{b}.mlp", "{b}.mlp.dense_4h_to_h"),
    "vit": ("layers", "embeddings", "{b}.attention", "{b}.mlp", "{b}.mlp.fc2"),
    "dinov2": ("encoder.layer", "embeddings", "{b}.layer_scale1", "{b}.layer_scale2", "{b}.mlp.fc2"),
    "clip_vision": ("encoder.layers", "pre_layrnorm|embeddings", "{b}.self_attn", "{b}.mlp", "{b}.mlp.fc2"),
    "cnn": ("encoder.stages", "embedder|embeddings", None, None, None),
}


def generic_blocks(model) -> str | None:
    """The module path of the largest numbered container (``nn.ModuleList``/``nn.Sequential`` of 2 or more
    children named 0, 1, ...; the shallowest on a tie): the blocks of a model no family describes."""
    import torch

    best, size = None, 1
    for name, mod in model.named_modules():
        if name and isinstance(mod, torch.nn.ModuleList | torch.nn.Sequential):
            kids = [k for k, _ in mod.named_children()]
            if len(kids) > size and all(k.isdigit() for k in kids):
                best, size = name, len(kids)
    return best


def blocks_path(model, family: str) -> str:
    return generic_blocks(model) or "" if family == "blocks" else _FAMILIES[family][0]


def detect_family(model) -> str | None:
    names = {n for n, _ in model.named_modules()}
    if "encoder.layer.0.layer_scale1" in names:
        return "dinov2"
    if "encoder.layers.0.self_attn" in names and "encoder.layers.0.mlp.fc2" in names:
        return "clip_vision"
    if "layers.0.mlp.fc2" in names and "embeddings.patch_embeddings" in names:
        return "vit"
    if "encoder.layer.0" in names:
        return "bert"
    if "encoder.stages.0" in names:
        return "cnn"
    if "transformer.h.0" in names:
        return "gpt2"
    if "model.layers.0" in names:
        return "llama"
    if "gpt_neox.layers.0" in names:
        return "gpt_neox"
    return "blocks" if generic_blocks(model) else None


def num_blocks(model, family: str) -> int:
    prefix = blocks_path(model, family) + "."
    idx = {int(n[len(prefix):].split(".")[0]) for n, _ in model.named_modules()
           if n.startswith(prefix) and n[len(prefix):].split(".")[0].isdigit()}
    return max(idx) + 1 if idx else 0


def alias_names(model) -> list[str]:
    fam = detect_family(model)
    if fam is None:
        return []
    n = num_blocks(model, fam)
    if fam == "blocks":
        return [f"block.{i}" for i in range(n)]
    kinds = ("stage",) if fam == "cnn" else ("resid", "attn", "mlp", "mlp_hidden")
    return ["embed"] + [f"{kind}.{i}" for kind in kinds for i in range(n)]


def _alias(model, family: str, name: str) -> HookPoint | None:
    if family == "blocks":
        m = re.fullmatch(r"block\.(\d+)", name)
        return HookPoint(name, f"{blocks_path(model, family)}.{m.group(1)}", block=int(m.group(1))) if m else None
    blocks, embed, attn, mlp, proj = _FAMILIES[family]
    if name == "embed":
        names = {n for n, _ in model.named_modules()}
        return HookPoint(name, next((e for e in embed.split("|") if e in names), embed.split("|")[0]), block=-1)
    m = re.fullmatch(r"(resid|attn|mlp|mlp_hidden|stage)\.(\d+)", name)
    if not m:
        return None
    kind, i = m.group(1), int(m.group(2))
    if i >= num_blocks(model, family) or (kind == "stage") != (family == "cnn"):
        return None
    b = f"{blocks}.{i}"
    if kind in ("resid", "stage"):
        return HookPoint(name, b, block=i)
    if kind == "attn":
        return HookPoint(name, attn.format(b=b), block=i)
    if kind == "mlp":
        # BERT's "output" module adds the residual and normalises: its dense layer is the MLP's output.
        return HookPoint(name, mlp.format(b=b), block=i)
    return HookPoint(name, proj.format(b=b), read_input=True, block=i)


def _expand(spec: str, aliases: list[str], modules: list[str]) -> list[str]:
    """The names a spec stands for: itself, or every alias (else direct-child module path) a glob matches."""
    if not any(c in spec for c in "*?["):
        return [spec]
    hits = [a for a in aliases if fnmatch.fnmatchcase(a, spec)]
    if not hits:
        # a glob over module paths matches direct children only (model.layers.* = the blocks)
        depth = spec.count(".")
        hits = [m for m in modules if m.count(".") == depth and fnmatch.fnmatchcase(m, spec)]
    if not hits:
        raise UnknownHookError(f"hook pattern {spec!r} matches nothing. {_valid_hint(aliases)}")
    return sorted(hits, key=natural_key)


def _hook_point(model, family: str | None, name: str, aliases: list[str], modules: list[str]) -> HookPoint:
    """An alias resolved for the model's family, or a module path; an unknown name names the nearest valid ones."""
    hp = _alias(model, family, name) if family and name in aliases else None
    if hp is not None:
        return hp
    if name not in modules:
        close = difflib.get_close_matches(name, aliases + modules, n=5, cutoff=0.5)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise UnknownHookError(f"unknown hook {name!r}.{hint} {_valid_hint(aliases)}")
    return HookPoint(name, name, block=_block_of(model, name, family))


def resolve_hooks(model, specs: list[str] | str) -> list[HookPoint]:
    """Turn hook names, globs (``resid.*``, ``model.layers.*``) and module paths into HookPoints.

    An unknown name raises ``UnknownHookError`` listing the nearest valid names.
    """
    if isinstance(specs, str):
        specs = [s.strip() for s in specs.split(",") if s.strip()]
    family = detect_family(model)
    modules = [n for n, _ in model.named_modules() if n]
    aliases = alias_names(model)
    out: dict[str, HookPoint] = {}
    for spec in specs:
        for name in _expand(spec, aliases, modules):
            hp = _hook_point(model, family, name, aliases, modules)
            out[hp.name] = hp
    return list(out.values())


def _block_of(model, module: str, family: str | None) -> int | None:
    if family is None:
        return None
    prefix = blocks_path(model, family) + "."
    if module.startswith(prefix):
        head = module[len(prefix):].split(".")[0]
        return int(head) if head.isdigit() else None
    return None


def _valid_hint(aliases: list[str]) -> str:
    """The valid names, in brief: the aliases by range, then module paths by where to find them."""
    stages = len([a for a in aliases if a.startswith("stage.")])
    blocks = len([a for a in aliases if a.startswith("block.")])
    if stages:
        alias_text = f"Aliases: embed, stage.0-{stages - 1}; "
    elif blocks:  # a model no family describes: its numbered blocks only (no embed, resid, attn, mlp)
        alias_text = f"Aliases: block.0-{blocks - 1}; "
    elif aliases:
        alias_text = (f"Aliases: embed, resid.0-{len([a for a in aliases if a.startswith('resid.')]) - 1}, "
                      "attn.N, mlp.N, mlp_hidden.N; ")
    else:
        alias_text = "No aliases for this architecture; "
    return alias_text + "or any module path (see model.named_modules())."
