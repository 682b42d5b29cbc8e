"""SAEs on disk in SAELens' layout: ``sae_weights.safetensors`` + ``cfg.json`` at a folder or URI."""

from __future__ import annotations

import dataclasses
import json

import torch

import analysis.sae.saes  # noqa: F401 - registers the architectures
from analysis.sae.base import SparseAutoencoder
from analysis.sae.registry import get_architecture
from shards.errors import ActlakeError
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
