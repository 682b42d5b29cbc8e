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

from analysis.common.inputs import DatasetInput, dataset_of, ref_of
from analysis.sae.io import CFG, WEIGHTS, SaeNotFoundError, load_sae, model_differences, recorded_model, trained_on
from shards.checksums import checksum
from shards.errors import InterventionError
from shards.storage import Storage

if TYPE_CHECKING:
    from shards.interventions import ResolveContext

log = logging.getLogger("actlake.intervene")
PROBE_DIRECTIONS = "directions.safetensors"  #: what `actlake probe` writes at its --out
PROBE_SUMMARY = "summary.json"


def width(ctx: ResolveContext) -> int:
    """The number of values per token (or per image) at the hook."""
    return math.prod(ctx.shape)


#: a direction whose norm is below this is a zero (or underflowed) vector: added it changes nothing, and
#: ``normalize=true`` would blow rounding noise up to unit length. Activations are O(1) and larger.
NEAR_ZERO = 1e-6


def _check_hook(made_for: str | None, what: str, ctx: ResolveContext) -> None:
    """A source made for another hook: refused, or (``--force``) warned about."""
    if made_for is None or made_for == ctx.hook.name:
        return
    if not ctx.force:
        raise InterventionError(f"{what} was made for hook {made_for!r}, not {ctx.hook.name!r}; intervene at "
                                f"{made_for!r}, or pass --force to apply it at {ctx.hook.name!r} anyway")
    log.warning("%s was made for hook %r; applying it at %r (--force)", what, made_for, ctx.hook.name)


def _check_model(sae, what: str, ctx: ResolveContext) -> None:
    """An SAE trained on another model's activations (same hook name and width, other weights): refused, or
    (``--force``) warned about. An SAE that records no model (SAELens' layout, older actlake) is warned about."""
    if ctx.model_info is None:  # a caller that does not say which model it runs
        return
    theirs = recorded_model(sae, ctx.storage)
    if theirs is None:
        log.warning("%s does not record the model it was trained for; check yourself that it is %r", what,
                    ctx.model_info.name)
        return
    diffs = model_differences(theirs, ctx.model_info)
    if not diffs:
        return
    told = f"{what} was trained on activations of model {theirs.name!r}, not {ctx.model_info.name!r} " \
           f"({'; '.join(diffs)})"
    if not ctx.force:
        raise InterventionError(f"{told}; intervene in the model it was trained for (--model), or pass --force "
                                "to apply it anyway")
    log.warning("%s; applying it anyway (--force)", told)


def _load_sae(uri: str, storage) -> tuple[object, Storage]:
    """The SAE at ``uri`` with finite weights, its store; every failure an ``InterventionError`` naming it."""
    st = Storage(uri, storage)
    try:
        sae = load_sae(uri, storage)
    except (SaeNotFoundError, ValueError, KeyError) as exc:
        raise InterventionError(str(exc) if isinstance(exc, SaeNotFoundError) else
                                f"the SAE at {st.display()} cannot be read ({type(exc).__name__}: {exc})") from None
    bad = [n for n, p in sae.named_parameters() if not bool(torch.isfinite(p).all())]
    if bad:
        raise InterventionError(f"the SAE at {st.display()} holds NaN or infinite weights ({', '.join(bad)}): its "
                                "training diverged; train it again with a lower --lr")
    return sae, st


def check_sae(uri: str, storage) -> None:
    """An SAE option checked before the model loads: it exists, reads, and its weights are finite."""
    _load_sae(uri, storage)


def sae_source(uri: str, ctx: ResolveContext):
    """A trained SAE (``actlake sae train`` output or SAELens layout) checked against the hook and the model:
    (sae, identity)."""
    sae, st = _load_sae(uri, ctx.storage)
    record = trained_on(sae)
    if sae.d_in != width(ctx):
        raise InterventionError(f"the SAE at {st.display()} takes d_in={sae.d_in} values, but hook {ctx.hook.name!r} "
                                f"of this model has {width(ctx)} per token; use an SAE trained on this hook")
    _check_hook(record.hook, f"the SAE at {st.display()}", ctx)
    _check_model(sae, f"the SAE at {st.display()}", ctx)
    trained = record.dataset_ref()  # the version of the dataset it was trained on: what it read, recorded
    return sae, {"uri": st.display(), "checksum": checksum(st.get_bytes(WEIGHTS)),
                 "dataset": trained.to_json() if trained else None, "hook": record.hook}


def _require_nonzero(rows: torch.Tensor, what: str) -> None:
    """Each row's norm at least ``NEAR_ZERO``: a zero direction is refused, not applied as a no-op."""
    norms = rows.double().norm(dim=-1).reshape(-1)
    tiny = torch.nonzero(norms < NEAR_ZERO).reshape(-1).tolist()
    if tiny:
        which = "" if len(norms) == 1 else f" (row {tiny[0]} of {len(norms)})"
        raise InterventionError(f"{what}{which} has norm {float(norms[tiny[0]]):.3g}, below {NEAR_ZERO:g}: a zero or "
                                "near-zero direction changes nothing (normalize=true cannot give it a direction "
                                "either); check the file, or leave this intervention out")


def _as_rows(t: torch.Tensor, what: str, ctx: ResolveContext) -> torch.Tensor:
    """``t`` as (k, width) float32 rows: exactly one direction (``(width,)`` or the hook's own shape) or k of them
    (``(k, width)`` or ``(k, *shape)``); any other shape, even of the right size, names both shapes (a (4, 8)
    matrix is not a (32,) direction)."""
    t = torch.as_tensor(t).detach().float()
    d, shape = width(ctx), tuple(t.shape)
    if shape in ((d,), tuple(ctx.shape)):
        rows = t.reshape(1, d)
    elif len(shape) >= 2 and shape[1:] in ((d,), tuple(ctx.shape)) and shape[0] > 0:
        rows = t.reshape(shape[0], d)
    else:
        raise InterventionError(f"{what} has shape {shape}, but hook {ctx.hook.name!r} has {d} values per token "
                                f"(shape {tuple(ctx.shape)}); give a ({d},) vector or (k, {d}) rows")
    if not torch.isfinite(rows).all():
        raise InterventionError(f"{what} holds NaN or infinite values")
    _require_nonzero(rows, what)
    return rows


def _decode_file(data: bytes, name: str, where: str, pick: str) -> torch.Tensor:
    """The tensor a ``.npy`` or ``.safetensors`` file holds (``pick``: which of a safetensors file's), float32,
    finite; anything else (pickled objects, strings, integers, a damaged file) refused naming the file."""
    if name.endswith(".npy"):
        try:
            arr = np.load(io.BytesIO(data), allow_pickle=False)  # never unpickle: a .npy can carry code
        except (ValueError, EOFError, OSError) as exc:
            raise InterventionError(f"direction file {where} is not a readable .npy array of numbers "
                                    f"({type(exc).__name__}: {exc}); save it with numpy.save(path, "
                                    "vector.astype(numpy.float32))") from None
        if not isinstance(arr, np.ndarray) or arr.dtype.kind != "f":
            kind = type(arr).__name__ if not isinstance(arr, np.ndarray) else f"dtype {arr.dtype}"
            raise InterventionError(f"direction file {where} holds {kind}, not floating-point numbers; save it with "
                                    "numpy.save(path, vector.astype(numpy.float32))")
        t = torch.from_numpy(arr.astype(np.float32))
    else:
        from safetensors import SafetensorError
        from safetensors.torch import load

        try:
            tensors = load(data)
        except SafetensorError as exc:
            raise InterventionError(f"direction file {where} is not a readable .safetensors file ({exc})") from None
        if not pick and len(tensors) != 1:
            raise InterventionError(f"{where} holds {len(tensors)} tensors; name one: FILE#NAME "
                                    f"({', '.join(sorted(tensors)[:8])})")
        key = pick or next(iter(tensors), "")
        if key not in tensors:
            raise InterventionError(f"{where} has no tensor {key!r} ({', '.join(sorted(tensors)[:8])})")
        if not tensors[key].is_floating_point():
            raise InterventionError(f"tensor {key!r} of direction file {where} is {tensors[key].dtype}, not "
                                    "floating-point numbers; store the direction as float32")
        t = tensors[key].float()
    if not torch.isfinite(t).all():
        raise InterventionError(f"direction file {where} holds NaN or infinite values")
    return t


def _file_tensor(path: str, pick: str, storage) -> tuple[torch.Tensor, bytes, str]:
    """(tensor, raw bytes, display name) of a direction file, checked as ``_decode_file`` checks it."""
    st, name = Storage.for_file(path, storage)
    where = st.display(name)
    if not st.exists(name):
        raise InterventionError(f"direction file {where} does not exist")
    data = st.get_bytes(name)
    return _decode_file(data, name, where, pick), data, where


def _load_probe_file(st: Storage) -> tuple[dict[str, torch.Tensor], bytes]:
    from safetensors import SafetensorError
    from safetensors.torch import load

    data = st.get_bytes(PROBE_DIRECTIONS)
    try:
        return load(data), data
    except SafetensorError as exc:
        raise InterventionError(f"{st.display(PROBE_DIRECTIONS)} is not a readable .safetensors file ({exc}); "
                                "run the probe again") from None


def check_direction(src: str, storage) -> None:
    """A direction option checked before the model loads: a file reads as finite floats whose norm is not
    (near) zero; a probe run or SAE exists and reads. Its shape is checked against the hook once it is known."""
    path, _, pick = src.partition("#")
    if path.endswith((".npy", ".safetensors")):
        t, _data, where = _file_tensor(path, pick, storage)
        if t.numel() == 0:
            raise InterventionError(f"direction file {where} holds an empty array")
        _require_nonzero(t.reshape(1, -1), f"the direction in {where}")
        return
    st = Storage(path, storage)
    if st.exists(PROBE_DIRECTIONS):
        _load_probe_file(st)
    elif st.exists(CFG):
        check_sae(path, storage)
    else:
        raise InterventionError(f"direction {src!r}: not a .npy/.safetensors file, a probe run (no "
                                f"{PROBE_DIRECTIONS}) or an SAE (no {CFG}) at {st.display()}")


def _probe_tensor(st: Storage, pick: str, ctx: ResolveContext) -> tuple[torch.Tensor, bytes, str | None]:
    """A probe run's direction(s) at the hook: ``#CLASS`` (diff in means), ``#diffmean`` (all classes),
    ``#probe`` (the probe's weight rows), or a full tensor name ``#HOOK/diffmean/CLASS``."""
    tensors, data = _load_probe_file(st)
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
        t, data, where = _file_tensor(path, pick, ctx.storage)
        ident = {"uri": where, "checksum": checksum(data), "pick": pick or None}
        return _as_rows(t, f"the direction in {where}", ctx), ident
    st = Storage(path, ctx.storage)
    if st.exists(PROBE_DIRECTIONS):
        t, data, hook = _probe_tensor(st, pick, ctx)
        _check_hook(hook, f"the probe direction {src!r}", ctx)
        summary = json.loads(st.get_bytes(PROBE_SUMMARY)) if st.exists(PROBE_SUMMARY) else {}
        trained = dataset_of(summary)  # the dataset (and version) the probe run read
        ident = {"uri": st.display(), "checksum": checksum(data), "pick": pick or "diffmean",
                 "dataset": trained.to_json() if trained else None}
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


def _open_source_dataset(data: DatasetInput, storage):
    from shards.errors import ActlakeError

    try:
        return data.open(storage)
    except ActlakeError as exc:
        raise InterventionError(f"data={data}: {exc}") from None


def check_dataset(data: DatasetInput, storage) -> None:
    """A dataset option checked before the model loads: it opens (at the version it names)."""
    _open_source_dataset(data, storage)


def dataset_mean(data: DatasetInput, ctx: ResolveContext) -> tuple[torch.Tensor, dict]:
    """The hook's mean over a dataset's rows at the version ``data`` names (``URI@vN``; else the latest when the
    interventions are built, once, before any work), from its stored statistics (no rows read); with the
    ``DatasetRef`` of what was read."""
    ds = _open_source_dataset(data, ctx.storage)
    if ctx.hook.name not in ds.hooks or ctx.hook.name not in ds.manifest.stats:
        raise InterventionError(f"dataset {ds.storage.display()} has no statistics for hook {ctx.hook.name!r} "
                                f"(it has {ds.hooks}); mean-ablation needs a dataset extracted at that hook")
    mean = torch.as_tensor(np.asarray(ds.stats(ctx.hook.name).mean, dtype=np.float32)).reshape(-1)
    if mean.numel() != width(ctx):
        raise InterventionError(f"dataset {ds.storage.display()} stores {mean.numel()} values per row at "
                                f"{ctx.hook.name!r}, the model has {width(ctx)}; was it pooled or another model?")
    return mean.reshape(ctx.shape), ref_of(ds, [ctx.hook.name]).to_json()
