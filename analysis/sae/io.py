"""SAEs on disk in SAELens' layout: ``sae_weights.safetensors`` + ``cfg.json`` at a folder or URI."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import torch

import analysis.sae.saes  # noqa: F401 - registers the architectures
from analysis.sae.base import SparseAutoencoder
from analysis.sae.registry import get_architecture
from shards.errors import ActlakeError, ConfigError
from shards.manifest import ModelInfo
from shards.storage import Storage, StorageOptions

WEIGHTS = "sae_weights.safetensors"
CFG = "cfg.json"


def save_sae(sae: SparseAutoencoder, uri: str, extra: dict | None = None,
             storage_options: StorageOptions | dict | None = None) -> None:
    """Write ``sae`` (float32) where SAELens' ``SAE.load_from_disk`` and ``load_sae`` read it.

    ``cfg.json`` holds SAELens' fields (d_in, d_sae, architecture, k, ...) and actlake's
    (``actlake``: arch, options, hook, dataset, training summary).
    """
    from safetensors.torch import save

    st = Storage(uri, storage_options)
    options = dataclasses.asdict(sae.options) if dataclasses.is_dataclass(sae.options) else {}
    cfg = {"d_in": sae.d_in, "d_sae": sae.d_sae, "dtype": "float32", "device": "cpu", "apply_b_dec_to_input": True,
           "normalize_activations": "none", "reshape_activations": "none", **sae.export_cfg(),
           "metadata": {"hook_name": (extra or {}).get("hook")},
           "actlake": {"arch": sae.arch, "k": sae.k, "options": options, **(extra or {})}}
    if sae.transcoder:
        cfg.update(sae.transcoder_cfg(cfg["architecture"]))
    if sae.saelens_arch == "jumprelu" and sae.arch != "jumprelu":
        cfg["actlake"]["note"] = f"{sae.arch} trained; exported as a JumpReLU with its inference threshold"
    st.put_bytes(WEIGHTS, save(sae.export_tensors()))
    st.put_bytes(CFG, json.dumps(cfg, indent=1, default=str).encode())


RESID = "residual_directions.safetensors"


def save_residual_directions(sae: SparseAutoencoder, ds, hook: str, uri: str,
                             storage_options: StorageOptions | dict | None = None) -> bool:
    """For an SAE of ``mlp_hidden.N`` whose dataset stores that MLP's output projection (extract
    --save-weights): write each feature's residual-stream direction ``W_out @ z`` as ``W_resid``
    (d_sae × d_model) in ``residual_directions.safetensors`` beside the SAE. Whether it was written."""
    from safetensors.torch import save

    from analysis.sae.base import residual_directions
    from shards.mlpweights import MLP_OUT, load_mlp_weights

    if not hook.startswith("mlp_hidden.") or MLP_OUT not in ds.manifest.artifacts:
        return False
    w_out, _bias = load_mlp_weights(ds, hook)
    Storage(uri, storage_options).put_bytes(RESID, save({"W_resid": residual_directions(sae, w_out).contiguous()},
                                                        metadata={"hook": hook}))
    return True


class SaeNotFoundError(ActlakeError, FileNotFoundError):
    """No (readable) SAE at the given URI."""


def load_sae(uri: str, storage_options: StorageOptions | dict | None = None) -> SparseAutoencoder:
    """An SAE saved by ``save_sae`` (or by SAELens: standard, topk, jumprelu), in eval mode, raw units.

    Example::

        sae = load_sae("runs/minilm-topk")
        z = sae.encode(x)          # (batch, d_sae)
    """
    from safetensors.torch import load

    st = Storage(uri, storage_options)
    try:
        cfg = json.loads(st.get_bytes(CFG))
        tensors = load(st.get_bytes(WEIGHTS))
    except FileNotFoundError:
        raise SaeNotFoundError(f"no SAE at {st.display()}: it needs {CFG} and {WEIGHTS} (what `actlake sae train` "
                               "writes at its --out). Check --sae.") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise SaeNotFoundError(f"the SAE at {st.display()} is damaged ({type(exc).__name__}: {exc})") from None
    ours = cfg.get("actlake") or {}
    arch = ours.get("arch") or {"standard": "relu", "topk": "topk", "jumprelu": "jumprelu", "transcoder": "relu",
                                "skip_transcoder": "relu", "jumprelu_transcoder": "jumprelu",
                                "jumprelu_skip_transcoder": "jumprelu"}.get(cfg["architecture"])
    if arch is None:
        raise ValueError(f"{st.display()}: SAE architecture {cfg['architecture']!r} is not one actlake loads")
    # BatchTopK and Matryoshka are exported as JumpReLUs with their inference threshold
    target = get_architecture("jumprelu" if get_architecture(arch).sae_class.saelens_arch == "jumprelu" else arch)
    saved = ours.get("options") or {}
    options = target.options(**{f.name: saved[f.name] for f in dataclasses.fields(target.options) if f.name in saved})
    sae = target.sae_class(cfg["d_in"], cfg["d_sae"], ours.get("k") or cfg.get("k"), options=options)
    if "transcoder" in cfg["architecture"] or cfg.get("d_out", cfg["d_in"]) != cfg["d_in"]:
        sae.make_transcoder(int(cfg.get("d_out", cfg["d_in"])), skip="W_skip" in tensors)
    with torch.no_grad():
        for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
            getattr(sae, name).copy_(tensors[name])
        if "W_skip" in tensors:
            sae.W_skip.copy_(tensors["W_skip"].t())
        if "threshold" in tensors:
            sae.log_threshold.copy_(tensors["threshold"].clamp_min(1e-30).log())
    sae.loaded_cfg = cfg
    return sae.eval()


def trained_on(sae) -> tuple[str | None, str | None]:
    """(dataset URI, hook) a loaded SAE says it was trained on: actlake's own ``cfg.json`` section, else SAELens'
    ``metadata.hook_name`` (SAELens records no dataset); None where it does not say."""
    ours = sae.loaded_cfg.get("actlake") or {}
    return ours.get("dataset"), ours.get("hook") or (sae.loaded_cfg.get("metadata") or {}).get("hook_name")


def recorded_model(sae, storage_options: StorageOptions | dict | None = None) -> ModelInfo | None:
    """The model whose activations a loaded SAE was trained on: what its ``cfg.json`` records (``sae train``
    writes it), else what the manifest of the dataset it names records when that dataset is still there, with the
    same id; None where neither says (SAELens' layout, or the dataset is gone or was replaced)."""
    ours = sae.loaded_cfg.get("actlake") or {}
    if ours.get("model"):
        return ModelInfo.from_json(ours["model"])
    if not ours.get("dataset") or not ours.get("dataset_id"):
        return None
    from shards.reader import open_dataset

    try:
        ds = open_dataset(ours["dataset"], storage_options)
    except (ActlakeError, OSError, ValueError):
        return None
    return ds.manifest.model if ds.dataset_id == ours["dataset_id"] else None


def model_differences(a: ModelInfo, b: ModelInfo) -> list[str]:
    """How two models as manifests record them differ: architecture, parameter count and revision where both
    record them, and the name unless both name the same folder (a package and its directory are one model)."""
    diffs = [f"{f} {getattr(a, f)!r} vs {getattr(b, f)!r}" for f in ("architecture", "parameters", "revision")
             if getattr(a, f) and getattr(b, f) and getattr(a, f) != getattr(b, f)]
    same_folder = bool(a.path and b.path) and os.path.realpath(a.path) == os.path.realpath(b.path)
    if a.name != b.name and not same_folder:
        diffs.insert(0, f"name {a.name!r} vs {b.name!r}")
    return diffs


def trained_min_position(sae) -> int:
    """The rows filter an SAE was trained with: it read rows at positions >= this (``sae train
    --min-position``; 0 for SAEs that do not record one, SAELens' among them)."""
    return int((sae.loaded_cfg.get("actlake") or {}).get("min_position") or 0)


def rows_min_position(sae, override: int | None = None) -> int:
    """The positions every tool reading ``sae`` keeps (dashboard, ``sae evaluate``, ``sae encode``, ``sae eval``,
    splice and clamp): the user's explicit ``--min-position`` (``override``), else the filter the SAE was trained
    with, so that rows it never saw (a causal LM's attention sink, norms ~100x the rest) are not read by default."""
    if override is not None:
        if override < 0:
            raise ConfigError(f"--min-position cannot be negative, got {override}")
        return int(override)
    return trained_min_position(sae)


class SaeRowsError(ActlakeError, ValueError):
    """The rows filter an SAE reads with leaves no row of a dataset."""


def kept_rows(position, min_position: int) -> torch.Tensor:
    """Which rows (by their ``position`` column; null or -1 for pooled and image rows) a reader with
    ``min_position`` keeps, as a bool tensor."""
    pos = torch.as_tensor(np.asarray(position, dtype=np.int64) if not isinstance(position, torch.Tensor) else position)
    return pos >= min_position


def require_kept_rows(ds, min_position: int) -> None:
    """Refuse, before any pass over the data, a filter that keeps no row of ``ds`` (pooled or image rows have
    position -1: an SAE trained with --min-position 1 on token rows reads none of them)."""
    if not min_position:
        return
    import pyarrow.compute as pc

    top = pc.max(ds.metadata_table(["position"]).column("position")).as_py()
    if top is None or top < min_position:
        raise SaeRowsError(f"the SAE reads rows at positions >= {min_position} (its `sae train --min-position`), and "
                           f"{ds.storage.display()} has none (its highest position is {top}); pass --min-position 0 "
                           "to read every row")
