"""SAEs on disk in SAELens' layout: ``sae_weights.safetensors`` + ``cfg.json`` at a folder or URI."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass, field

import numpy as np
import torch

import analysis.sae.saes  # noqa: F401 - registers the architectures
from analysis.common.inputs import DatasetInput
from analysis.common.runstart import InputDefault
from analysis.sae.base import SparseAutoencoder
from analysis.sae.registry import get_architecture
from shards.columns import POSITION
from shards.errors import ActlakeError, ConfigError
from shards.manifest import DatasetRef, ModelInfo
from shards.storage import Storage, StorageOptions

WEIGHTS = "sae_weights.safetensors"
CFG = "cfg.json"
OTHER = "other:"  #: a model-diffing crosscoder's hooks of its second dataset (``analysis.sae.paired.PREFIX``)


#: our hook aliases (``ingest/hooks.py``) as TransformerLens names, the ``hook_name`` SAELens and Neuronpedia expect
TL_HOOKS = {"resid": "blocks.{}.hook_resid_post", "attn": "blocks.{}.hook_attn_out", "mlp": "blocks.{}.hook_mlp_out",
            "mlp_hidden": "blocks.{}.mlp.hook_post"}


def saelens_hook_name(hook: str | None, module: str | None = None) -> str | None:
    """SAELens' ``hook_name`` for our hook: its TransformerLens name where the alias maps to one (resid.N ->
    blocks.N.hook_resid_post, embed -> hook_embed, ...), else the module path it reads (``module``; a hook given
    as a module path is its own)."""
    if hook == "embed":
        return "hook_embed"
    m = re.fullmatch(r"(resid|attn|mlp|mlp_hidden)\.(\d+)", hook or "")
    return TL_HOOKS[m[1]].format(m[2]) if m else (module or hook)


def _saelens_names(extra: dict) -> dict:
    """cfg.json's ``model_name`` (the model the dataset was extracted from, as its manifest names it: a HF name,
    path or package; None where unknown) and ``hook_name`` (``hook_name_out`` too for a transcoder of one
    target hook), from what ``save_sae``'s caller records (``TrainedOn.to_cfg``)."""
    model = extra.get("model")
    names = {"model_name": model.get("name") if isinstance(model, dict) else None,
             "hook_name": saelens_hook_name(extra.get("hook"), extra.get("hook_module"))}
    out_hooks = extra.get("out_hooks") or []
    if extra.get("kind") == "transcoder" and len(out_hooks) == 1:
        names["hook_name_out"] = saelens_hook_name(out_hooks[0])
    return names


def save_sae(sae: SparseAutoencoder, uri: str, extra: dict | None = None,
             storage_options: StorageOptions | dict | None = None) -> None:
    """Write ``sae`` (float32) where SAELens' ``SAE.load_from_disk`` and ``load_sae`` read it.

    ``cfg.json`` holds SAELens' fields (d_in, d_sae, architecture, k, ``model_name`` and a TransformerLens-style
    ``hook_name``, ...) and actlake's (``actlake``: arch, options, hook, dataset, training summary; our hook alias
    also as ``metadata.actlake_hook``, what every actlake reader takes: ``TrainedOn.of``).
    """
    from safetensors.torch import save

    st = Storage(uri, storage_options)
    options = dataclasses.asdict(sae.options) if dataclasses.is_dataclass(sae.options) else {}
    names = _saelens_names(extra or {})
    # SAELens reads a cfg.json without sae_lens_version as its pre-6.0 layout: its metadata from the top-level
    # fields (the nested section is dropped); a reader of the 6.x layout takes the nested one
    cfg = {"d_in": sae.d_in, "d_sae": sae.d_sae, "dtype": "float32", "device": "cpu", "apply_b_dec_to_input": True,
           "normalize_activations": "none", "reshape_activations": "none", **sae.export_cfg(), **names,
           "metadata": {**names, "actlake_hook": (extra or {}).get("hook")},
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


def _data_ref(data: DatasetInput | None, dataset_id: str | None, hooks) -> dict | None:
    if data is None:
        return None
    return DatasetRef(data.uri, dataset_id or "", data.version if data.version is not None else -1,
                      tuple(hooks)).to_json()


def _data_of(value, dataset_id: str | None = None,
             version: int | None = None) -> tuple[DatasetInput | None, str | None]:
    """(input, dataset id) from a ``DatasetRef`` object, or (SAEs saved before) a URI with its id and version."""
    if isinstance(value, dict):
        version = value.get("version")
        return DatasetInput(value["uri"], None if version is None or version < 0 else int(version)), \
            value.get("dataset_id") or None
    return (DatasetInput(value, version) if value else None), dataset_id


@dataclass(frozen=True)
class TrainedOn:
    """What an SAE was trained on, as its ``cfg.json`` records it (the ``actlake`` section): the one place that
    section's data fields are written (``to_cfg``) and read (``of``).

    ``data`` is the dataset's URI and the version read (None for SAEs that record none), ``dataset_id`` which
    dataset it was; every tool reading the SAE defaults to that version of that dataset (``defaults``)."""

    data: DatasetInput | None = None
    dataset_id: str | None = None
    hook: str | None = None  #: the hook it reads (a crosscoder: the label of its hooks)
    in_hooks: tuple[str, ...] = ()  #: hooks read (a model-diffing crosscoder's second dataset's as other:HOOK)
    out_hooks: tuple[str, ...] = ()  #: hooks reconstructed (a transcoder's differ)
    kind: str = "sae"  #: sae, transcoder or crosscoder
    crosscoder: DatasetInput | None = None  #: a model-diffing crosscoder's second dataset, at the version read
    crosscoder_id: str | None = None
    min_position: int = 0  #: rows at positions >= this were read (``sae train --min-position``)
    model: ModelInfo | None = None  #: the model whose activations it read
    eval_split: dict = field(default_factory=dict)  #: the held-out examples (``EvalSplit.to_json``)

    def to_cfg(self) -> dict:
        """The fields of ``cfg.json``'s ``actlake`` section: each dataset as a ``DatasetRef`` object."""
        own = [h for h in (*self.in_hooks, *self.out_hooks) if not h.startswith(OTHER)]
        other = [h[len(OTHER):] for h in self.in_hooks if h.startswith(OTHER)]
        return {"hook": self.hook, "dataset": _data_ref(self.data, self.dataset_id, dict.fromkeys(own)),
                "in_hooks": list(self.in_hooks), "out_hooks": list(self.out_hooks), "kind": self.kind,
                "crosscoder_data": _data_ref(self.crosscoder, self.crosscoder_id, other),
                "min_position": self.min_position, "model": self.model.to_json() if self.model else None,
                "eval_split": self.eval_split}

    @classmethod
    def of(cls, cfg: dict) -> TrainedOn:
        """The record of a ``cfg.json``: actlake's section (this layout, or the flat one SAEs were saved with
        before), else our alias kept in SAELens' metadata (``actlake_hook``), else SAELens' ``metadata.hook_name``
        (what SAEs saved before held our alias in; SAELens records no dataset)."""
        ours = cfg.get("actlake") or {}
        data, dataset_id = _data_of(ours.get("dataset"), ours.get("dataset_id"), ours.get("dataset_version"))
        other, other_id = _data_of(ours.get("crosscoder_data"))
        meta = cfg.get("metadata") or {}
        hook = ours.get("hook") or meta.get("actlake_hook") or meta.get("hook_name")
        return cls(data=data, dataset_id=dataset_id, hook=hook, in_hooks=tuple(ours.get("in_hooks") or ()),
                   out_hooks=tuple(ours.get("out_hooks") or ()), kind=ours.get("kind") or "sae", crosscoder=other,
                   crosscoder_id=other_id, min_position=int(ours.get("min_position") or 0),
                   model=ModelInfo.from_json(ours["model"]) if ours.get("model") else None,
                   eval_split=dict(ours.get("eval_split") or {}))

    def dataset_ref(self) -> DatasetRef | None:
        """The training dataset as run records name what they read (None where the SAE does not say which
        version of which dataset)."""
        if self.data is None or self.data.version is None or not self.dataset_id:
            return None
        return DatasetRef(self.data.uri, self.dataset_id, self.data.version, (self.hook,) if self.hook else ())

    def defaults(self, source: str) -> dict[str, InputDefault]:
        """What a tool reading the SAE reads unless told otherwise: ``data``, the dataset it was trained on at the
        version it read, and (a model-diffing crosscoder) ``crosscoder_data``; each refused when its URI now holds
        another dataset. ``source`` names the SAE in that message."""
        out = {}
        if self.data is not None:
            out["data"] = InputDefault(self.data, self.dataset_id, source)
        if self.crosscoder is not None:
            out["crosscoder_data"] = InputDefault(self.crosscoder, self.crosscoder_id, f"{source} (its second dataset)")
        return out


def trained_on(sae) -> TrainedOn:
    """What a loaded SAE says it was trained on (``TrainedOn``; fields are None where it does not say)."""
    return TrainedOn.of(sae.loaded_cfg)


def sae_source(uri: str, storage_options: StorageOptions | dict | None = None) -> str:
    """How messages name the SAE at ``uri`` (its URI without credentials)."""
    return f"the SAE at {Storage(uri, storage_options).display()}"


def sae_dataset(sae, uri: str, data: DatasetInput | None, storage_options: StorageOptions | dict | None = None):
    """The dataset a tool reading the SAE at ``uri`` reads: ``data`` as given (``URI``: its latest, ``URI@vN``),
    else the one the SAE was trained on at the version it read (``@vN`` alone: at version N), refused when its URI
    now holds another dataset; a ConfigError when neither says which."""
    from analysis.common.runstart import open_input

    ds = open_input("data", data, trained_on(sae).defaults(sae_source(uri, storage_options)).get("data"),
                    storage_options)
    if ds is None:
        raise ConfigError(f"{sae_source(uri, storage_options)} does not say which dataset it was trained on (a "
                          "SAELens layout?): give --data")
    return ds


def recorded_model(sae, storage_options: StorageOptions | dict | None = None) -> ModelInfo | None:
    """The model whose activations a loaded SAE was trained on: what its ``cfg.json`` records (``sae train``
    writes it), else what the manifest of the dataset it names records at the version it was trained on, when that
    dataset is still there with the same id; None where neither says (SAELens' layout, or the dataset is gone or
    was replaced)."""
    record = trained_on(sae)
    if record.model is not None:
        return record.model
    if record.data is None or not record.dataset_id:
        return None
    try:
        ds = record.data.open(storage_options)
    except (ActlakeError, OSError, ValueError):
        return None
    return ds.manifest.model if ds.dataset_id == record.dataset_id else None


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
    return trained_on(sae).min_position


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

    top = pc.max(ds.metadata_table([POSITION]).column(POSITION)).as_py()
    if top is None or top < min_position:
        raise SaeRowsError(f"the SAE reads rows at positions >= {min_position} (its `sae train --min-position`), and "
                           f"{ds.storage.display()} has none (its highest position is {top}); pass --min-position 0 "
                           "to read every row")
