"""Where interventions get their vectors: trained SAEs, probe runs' directions, plain ``.npy``/``.safetensors``
files, and datasets' statistics. Each source is read through ``Storage`` (local or object storage), checked
against the hook before any work starts, and described by what identifies it (URI, checksum, dataset id)."""

from __future__ import annotations

import io
import json
import logging
import math
from typing import TYPE_CHECKING

import numpy as np
import torch

from analysis.sae.io import CFG, WEIGHTS, SaeNotFoundError, load_sae, trained_on
from shards.checksums import checksum
from shards.errors import InterventionError
from shards.storage import Storage

if TYPE_CHECKING:
    from ingest.interventions import ResolveContext

log = logging.getLogger("actlake.intervene")
PROBE_DIRECTIONS = "directions.safetensors"  #: what `actlake probe` writes at its --out
PROBE_SUMMARY = "summary.json"


def width(ctx: ResolveContext) -> int:
    """The number of values per token (or per image) at the hook."""
    return math.prod(ctx.shape)


def _check_hook(made_for: str | None, what: str, ctx: ResolveContext) -> None:
    """A source made for another hook: refused, or (``--force``) warned about."""
    if made_for is None or made_for == ctx.hook.name:
        return
    if not ctx.force:
        raise InterventionError(f"{what} was made for hook {made_for!r}, not {ctx.hook.name!r}; intervene at "
                                f"{made_for!r}, or pass --force to apply it at {ctx.hook.name!r} anyway")
    log.warning("%s was made for hook %r; applying it at %r (--force)", what, made_for, ctx.hook.name)


def sae_source(uri: str, ctx: ResolveContext):
    """A trained SAE (``actlake sae train`` output or SAELens layout) checked against the hook: (sae, identity)."""
    st = Storage(uri, ctx.storage)
    try:
        sae = load_sae(uri, ctx.storage)
    except SaeNotFoundError as exc:
        raise InterventionError(str(exc)) from None
    cfg = sae.loaded_cfg
    ours = cfg.get("actlake") or {}
    if sae.d_in != width(ctx):
        raise InterventionError(f"the SAE at {st.display()} takes d_in={sae.d_in} values, but hook {ctx.hook.name!r} "
                                f"of this model has {width(ctx)} per token; use an SAE trained on this hook")
    _check_hook(trained_on(sae)[1], f"the SAE at {st.display()}", ctx)
    return sae, {"uri": st.display(), "checksum": checksum(st.get_bytes(WEIGHTS)),
                 "dataset_id": ours.get("dataset_id"), "hook": ours.get("hook")}


def _as_rows(t: torch.Tensor, what: str, ctx: ResolveContext) -> torch.Tensor:
    """``t`` as (k, width) float32 rows; a vector of the wrong size names both shapes."""
    t = torch.as_tensor(t).detach().float()
    d = width(ctx)
    if t.ndim == 1:
        t = t[None]
    elif t.ndim > 2 or (t.ndim == 2 and t.shape[1] != d and t.numel() == d):
        t = t.reshape(1, -1)
    if t.ndim != 2 or t.shape[1] != d:
        raise InterventionError(f"{what} has shape {tuple(t.shape)}, but hook {ctx.hook.name!r} has "
                                f"{d} values per token (shape {ctx.shape}); give a ({d},) vector or (k, {d}) rows")
    if not torch.isfinite(t).all():
        raise InterventionError(f"{what} holds NaN or infinite values")
    return t


def _file_tensor(st: Storage, name: str, pick: str) -> tuple[torch.Tensor, bytes]:
    data = st.get_bytes(name)
    if name.endswith(".npy"):
        return torch.from_numpy(np.load(io.BytesIO(data), allow_pickle=False).astype(np.float32)), data
    from safetensors.torch import load

    tensors = load(data)
    if not pick and len(tensors) != 1:
        raise InterventionError(f"{st.display(name)} holds {len(tensors)} tensors; name one: FILE#NAME "
                                f"({', '.join(sorted(tensors)[:8])})")
    key = pick or next(iter(tensors))
    if key not in tensors:
        raise InterventionError(f"{st.display(name)} has no tensor {key!r} ({', '.join(sorted(tensors)[:8])})")
    return tensors[key], data


def _probe_tensor(st: Storage, pick: str, ctx: ResolveContext) -> tuple[torch.Tensor, bytes, str | None]:
    """A probe run's direction(s) at the hook: ``#CLASS`` (diff in means), ``#diffmean`` (all classes),
    ``#probe`` (the probe's weight rows), or a full tensor name ``#HOOK/diffmean/CLASS``."""
    from safetensors.torch import load

    data = st.get_bytes(PROBE_DIRECTIONS)
    tensors = load(data)
    hook = pick.split("/")[0] if "/" in pick else ctx.hook.name
    if "/" in pick:
        names = [pick]
    elif pick in ("", "diffmean"):
        names = sorted(k for k in tensors if k.startswith(f"{hook}/diffmean/")) or [f"{hook}/diffmean/*"]
    else:
        names = [f"{hook}/probe" if pick == "probe" else f"{hook}/diffmean/{pick}"]
    missing = [n for n in names if n not in tensors]
    if missing:
        hooks = sorted({k.split("/")[0] for k in tensors})
        classes = sorted({k.rsplit("/", 1)[1] for k in tensors if "/diffmean/" in k})
        raise InterventionError(f"the probe run at {st.display()} has no direction {missing[0]!r}: it probed hooks "
                                f"{hooks} with classes {classes}; use RUN#CLASS, RUN#diffmean or RUN#probe at a "
                                "probed hook (or RUN#HOOK/diffmean/CLASS with --force)")
    t = torch.stack([tensors[n] for n in names]) if len(names) > 1 else tensors[names[0]]
    return t, data, hook


def direction_source(src: str, ctx: ResolveContext) -> tuple[torch.Tensor, dict]:
    """The direction rows ``src`` names, (k, width) float32, and its identity.

    ``src``: ``FILE.npy``, ``FILE.safetensors[#TENSOR]``, a probe run ``RUN#CLASS|diffmean|probe``, or an SAE
    latent's decoder row ``SAE_RUN#I[+J...]``."""
    path, _, pick = src.partition("#")
    if path.endswith((".npy", ".safetensors")):
        parent, _, name = path.rpartition("/")
        st = Storage(parent or ".", ctx.storage)
        if not st.exists(name):
            raise InterventionError(f"direction file {st.display(name)} does not exist")
        t, data = _file_tensor(st, name, pick)
        ident = {"uri": st.display(name), "checksum": checksum(data), "pick": pick or None}
        return _as_rows(t, f"the direction in {st.display(name)}", ctx), ident
    st = Storage(path, ctx.storage)
    if st.exists(PROBE_DIRECTIONS):
        t, data, hook = _probe_tensor(st, pick, ctx)
        _check_hook(hook, f"the probe direction {src!r}", ctx)
        summary = json.loads(st.get_bytes(PROBE_SUMMARY)) if st.exists(PROBE_SUMMARY) else {}
        ident = {"uri": st.display(), "checksum": checksum(data), "pick": pick or "diffmean",
                 "dataset_id": summary.get("dataset_id")}
        return _as_rows(t, f"the probe direction {src!r}", ctx), ident
    if st.exists(CFG):
        return _sae_latents(path, pick, ctx)
    raise InterventionError(f"direction {src!r}: not a .npy/.safetensors file, a probe run (no "
                            f"{PROBE_DIRECTIONS}) or an SAE (no {CFG}) at {st.display()}")


def _sae_latents(path: str, pick: str, ctx: ResolveContext) -> tuple[torch.Tensor, dict]:
    sae, ident = sae_source(path, ctx)
    latents = parse_latents(pick, sae.d_sae, f"direction {path}#{pick}")
    return sae.W_dec.detach()[latents].float(), {**ident, "pick": "+".join(map(str, latents))}


def parse_latents(text: str, d_sae: int, what: str) -> list[int]:
    """``12`` or ``12+40``: latent ids, each checked against the SAE's width."""
    try:
        ids = [int(p) for p in text.split("+") if p.strip()]
    except ValueError:
        ids = []
    if not ids:
        raise InterventionError(f"{what}: name latent ids as I or I+J (e.g. 12+40), got {text!r}")
    bad = [i for i in ids if not 0 <= i < d_sae]
    if bad:
        raise InterventionError(f"{what}: latent(s) {bad} outside the SAE's 0..{d_sae - 1}")
    return ids


def dataset_mean(uri: str, ctx: ResolveContext) -> tuple[torch.Tensor, dict]:
    """The hook's mean over a dataset's rows, from its stored statistics (no rows read)."""
    from shards.reader import open_dataset

    ds = open_dataset(uri, ctx.storage)
    if ctx.hook.name not in ds.hooks or ctx.hook.name not in ds.manifest.stats:
        raise InterventionError(f"dataset {ds.storage.display()} has no statistics for hook {ctx.hook.name!r} "
                                f"(it has {ds.hooks}); mean-ablation needs a dataset extracted at that hook")
    mean = torch.as_tensor(np.asarray(ds.stats(ctx.hook.name).mean, dtype=np.float32)).reshape(-1)
    if mean.numel() != width(ctx):
        raise InterventionError(f"dataset {ds.storage.display()} stores {mean.numel()} values per row at "
                                f"{ctx.hook.name!r}, the model has {width(ctx)}; was it pooled or another model?")
    return mean.reshape(ctx.shape), {"uri": ds.storage.display(), "dataset_id": ds.dataset_id,
                                     "version": ds.version}
