"""Hook points: module paths, glob patterns and portable aliases resolved per architecture.

Aliases (N = block index):
- ``embed``: the token (+ position) embeddings entering block 0
- ``resid.N``: the residual stream after block N (the block's output hidden states)
- ``attn.N``: the attention sub-layer's output (before it is added to the residual)
- ``mlp.N``: the MLP sub-layer's output (before the residual add)
- ``mlp_hidden.N``: the MLP's hidden activations after the nonlinearity (for gated
  MLPs, act(gate) * up), i.e. the input of the MLP's output projection
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from dataclasses import dataclass

from shards.errors import UnknownHookError


@dataclass(frozen=True)
class HookPoint:
    """Where to read: a module, and whether its input (pre-hook) or output."""

    name: str  #: the name stored in the dataset
    module: str  #: dotted module path inside the model
    read_input: bool = False  #: read the module's (first) input instead of its output
    block: int | None = None  #: block index, for stopping the forward early


# Per family: (blocks path, embed, attn, mlp, mlp output projection, embed reads input?)
_FAMILIES = {
    "bert": ("encoder.layer", "embeddings", "{b}.attention", "{b}.output.dense", "{b}.output.dense"),
    "gpt2": ("transformer.h", "transformer.drop", "{b}.attn", "{b}.mlp", "{b}.mlp.c_proj"),
    "llama": ("model.layers", "model.embed_tokens", "{b}.self_attn", "{b}.mlp", "{b}.mlp.down_proj"),
}


def detect_family(model) -> str | None:
    names = {n for n, _ in model.named_modules()}
    if "encoder.layer.0" in names:
        return "bert"
    if "transformer.h.0" in names:
        return "gpt2"
    if "model.layers.0" in names:
        return "llama"
    return None


def num_blocks(model, family: str) -> int:
    prefix = _FAMILIES[family][0] + "."
    idx = {int(n[len(prefix):].split(".")[0]) for n, _ in model.named_modules()
           if n.startswith(prefix) and n[len(prefix):].split(".")[0].isdigit()}
    return max(idx) + 1 if idx else 0


def alias_names(model) -> list[str]:
    fam = detect_family(model)
    if fam is None:
        return []
    n = num_blocks(model, fam)
    return ["embed"] + [f"{kind}.{i}" for kind in ("resid", "attn", "mlp", "mlp_hidden") for i in range(n)]


def _alias(model, family: str, name: str) -> HookPoint | None:
    blocks, embed, attn, mlp, proj = _FAMILIES[family]
    if name == "embed":
        return HookPoint(name, embed, block=-1)
    m = re.fullmatch(r"(resid|attn|mlp|mlp_hidden)\.(\d+)", name)
    if not m:
        return None
    kind, i = m.group(1), int(m.group(2))
    if i >= num_blocks(model, family):
        return None
    b = f"{blocks}.{i}"
    if kind == "resid":
        return HookPoint(name, b, block=i)
    if kind == "attn":
        return HookPoint(name, attn.format(b=b), block=i)
    if kind == "mlp":
        # BERT's "output" module adds the residual and normalises: its dense layer is the MLP's output.
        return HookPoint(name, mlp.format(b=b), block=i)
    return HookPoint(name, proj.format(b=b), read_input=True, block=i)


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
        if any(c in spec for c in "*?["):
            hits = [a for a in aliases if fnmatch.fnmatchcase(a, spec)]
            if not hits:
                # a glob over module paths matches direct children only (model.layers.* = the blocks)
                depth = spec.count(".")
                hits = [m for m in modules if m.count(".") == depth and fnmatch.fnmatchcase(m, spec)]
            if not hits:
                raise UnknownHookError(f"hook pattern {spec!r} matches nothing. {_valid_hint(spec, aliases, modules)}")
            hits = sorted(hits, key=_natural_key)
        else:
            hits = [spec]
        for name in hits:
            hp = _alias(model, family, name) if family and name in aliases else None
            if hp is None:
                if name not in modules:
                    close = difflib.get_close_matches(name, aliases + modules, n=5, cutoff=0.5)
                    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
                    raise UnknownHookError(
                        f"unknown hook {name!r}.{hint} {_valid_hint(name, aliases, modules, with_close=False)}")
                hp = HookPoint(name, name, block=_block_of(name, family))
            out[hp.name] = hp
    return list(out.values())


def _natural_key(s: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def _block_of(module: str, family: str | None) -> int | None:
    if family is None:
        return None
    prefix = _FAMILIES[family][0] + "."
    if module.startswith(prefix):
        head = module[len(prefix):].split(".")[0]
        return int(head) if head.isdigit() else None
    return None


def _valid_hint(name: str, aliases: list[str], modules: list[str], with_close: bool = True) -> str:  # noqa: ARG001
    alias_text = (f"Aliases: embed, resid.0-{len([a for a in aliases if a.startswith('resid.')]) - 1}, "
                  "attn.N, mlp.N, mlp_hidden.N; ") if aliases else "No aliases for this architecture; "
    return alias_text + "or any module path (see model.named_modules())."
