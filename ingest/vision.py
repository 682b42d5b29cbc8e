"""Turning a unit of images into dataset rows: decode, preprocess, forward, pool per hook.

Pools (``--pool``, one for every hook, or per hook as ``'resid.*=cls,stage.3=flatten'``):
- ``cls``: the first token of a ViT-style (B, T, D) output
- ``mean``: the mean over patch tokens (prefix tokens, i.e. CLS and registers, left out)
- ``spatial_mean``: the mean over H and W of a CNN's (B, C, H, W) map
- ``flatten``: the whole per-image output, its shape ((T, D) or (C, H, W)) recorded
- ``none``: one row per patch token / map location with its grid ``patch_row``, ``patch_col``
- ``auto``: ``cls`` for token outputs, ``spatial_mean`` for maps, as-is for (B, D) outputs
"""

from __future__ import annotations

import fnmatch

import numpy as np
import torch

from ingest.capture import capture
from ingest.hooks import HookPoint
from ingest.image_sources import ImageDecodeError, ImageSource
from ingest.interventions import intervening
from ingest.preprocess import Preprocessor
from shards.columns import EXAMPLE_ID, PATCH_COL, PATCH_ROW, POSITION, STIMULUS_ID
from shards.dtypes import get_dtype
from shards.errors import ActlakeError
from shards.manifest import SkippedInput

IMAGE_POOLS = ("auto", "cls", "mean", "spatial_mean", "flatten", "none")


class PoolError(ActlakeError, ValueError):
    """A pool does not fit a hook's output."""


def _parse_pool_spec(spec: str) -> tuple[str, list[tuple[str, str]]]:
    """``"cls,stage.3=flatten"`` -> the default pool and the (hook pattern, pool) overrides."""
    default, per_hook = "auto", []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        if "=" in part:
            pattern, pool = (s.strip() for s in part.split("=", 1))
            per_hook.append((pattern, pool))
        else:
            default = part
    return default, per_hook


def _pool_for(name: str, shape: tuple, pool: str) -> str:
    """``pool`` checked against the hook's output shape (``auto`` resolved: cls for tokens, spatial_mean for maps)."""
    if pool not in IMAGE_POOLS:
        raise PoolError(f"pool {pool!r} for hook {name!r}: use one of {IMAGE_POOLS}")
    if pool == "auto":
        pool = {2: "cls", 3: "spatial_mean"}.get(len(shape), "identity")
    ok = {"cls": 2, "mean": 2, "spatial_mean": 3}.get(pool)
    if ok is not None and len(shape) != ok:
        kind = "token outputs (B, T, D)" if ok == 2 else "feature maps (B, C, H, W)"
        raise PoolError(f"pool {pool!r} needs {kind}; hook {name!r} gives per-image shape {list(shape)}. "
                        "Use flatten, or auto (cls for tokens, spatial_mean for maps).")
    return pool


def _check_patch_rows(pools: dict[str, str], shapes: dict[str, tuple]) -> None:
    """Per-patch rows (pool none) fill a dataset alone, from hooks with one number of positions."""
    if "none" not in pools.values():
        return
    if set(pools.values()) != {"none"}:
        raise PoolError(f"per-patch rows (pool none) cannot be mixed with pooled rows in one dataset: {pools}")
    counts = {n: (s[0] if len(s) == 2 else s[1] * s[2]) for n, s in shapes.items()}
    if len(set(counts.values())) > 1:
        raise PoolError(f"per-patch rows need hooks with the same number of positions; got {counts}")


def resolve_pools(spec: str, shapes: dict[str, tuple]) -> dict[str, str]:
    """Per hook, the pool to apply, from ``spec`` and each hook's per-image output shape (no batch dim)."""
    default, per_hook = _parse_pool_spec(spec)
    out = {name: _pool_for(name, shape, next((p for pat, p in per_hook if fnmatch.fnmatchcase(name, pat)), default))
           for name, shape in shapes.items()}
    for pattern, _ in per_hook:
        if not any(fnmatch.fnmatchcase(n, pattern) for n in shapes):
            raise PoolError(f"pool pattern {pattern!r} matches none of the hooks {sorted(shapes)}")
    _check_patch_rows(out, shapes)
    return out


def stored_shape(pool: str, shape: tuple) -> list[int]:
    """The per-row shape stored for a hook with per-image output ``shape`` under ``pool``."""
    if pool in ("cls", "mean"):
        return [shape[-1]]
    if pool == "spatial_mean":
        return [shape[0]]
    if pool == "none":
        return [shape[-1]] if len(shape) == 2 else [shape[0]]
    return list(shape)  # flatten, identity


def prefix_tokens(num_tokens: int, pixel_hw: tuple[int, int], patch_size: int | None) -> int:
    """CLS/register tokens before the patch tokens: T minus the patch grid (0 when unknown)."""
    if not patch_size:
        return 1 if num_tokens > 1 else 0
    grid = (pixel_hw[0] // patch_size) * (pixel_hw[1] // patch_size)
    return max(num_tokens - grid, 0)


def patch_size_of(model) -> int | None:
    from ingest.models import config_size

    return config_size(model, "patch_size")


class VisionExtractor:
    """Extraction of one unit of images with a loaded model (runs inside an actor)."""

    def __init__(self, *, model, hooks: list[HookPoint], preprocessor: Preprocessor, pools: dict[str, str],
                 stored_shapes: dict[str, list[int]], dtype: str, batch_size: int, on_bad_image: str = "fail",
                 interventions: list | None = None) -> None:
        self.model, self.hooks, self.pre, self.pools = model, hooks, preprocessor, pools
        self.interventions = interventions or []
        self.stored_shapes = stored_shapes  #: per hook, the stored row shape
        self.stored, self.batch_size, self.on_bad_image = get_dtype(dtype).torch, batch_size, on_bad_image
        params = next(model.parameters(), None)
        self.device = params.device if params is not None else torch.device("cpu")
        self.model_dtype = params.dtype if params is not None else torch.float32
        self.patch_size = patch_size_of(model)
        self.per_patch = set(pools.values()) == {"none"}

    def prepare(self, source: ImageSource, start: int, stop: int) -> tuple[list[torch.Tensor], list[int],
                                                                          list[SkippedInput]]:
        """Decode and preprocess images [start, stop): pixel batches, the indices kept, the ones skipped."""
        batches, kept, skipped = [], [], []
        images, ids = [], []
        for i in range(start, stop):
            try:
                images.append(source.image(i))
            except ImageDecodeError as exc:
                if self.on_bad_image != "skip":
                    raise
                skipped.append(SkippedInput(exc.stimulus_id, i, exc.reason))
                continue
            ids.append(source.ids[i])
            kept.append(i)
            if len(images) == self.batch_size:
                batches.append(self.pre(images, ids))
                images, ids = [], []
        if images:
            batches.append(self.pre(images, ids))
        return batches, kept, skipped

    def forward(self, batches: list[torch.Tensor], kept: list[int], source: ImageSource,
            meta_fields: list[str]) -> dict:
        """Columns of the unit's rows from preprocessed pixel batches (forward passes happen here)."""
        parts: dict[str, list] = {h.name: [] for h in self.hooks}
        pos_p, row_p, col_p = [], [], []
        for px in batches:
            px = px.to(self.device, self.model_dtype)
            with intervening(self.model, self.interventions):
                acts = capture(self.model, self.hooks, {"pixel_values": px})
            hw = (px.shape[2], px.shape[3])
            for name, a in acts.items():
                parts[name].append(self._pool(name, a, hw).to("cpu", self.stored))
            if self.per_patch:
                p, r, c = self._grid(next(iter(acts.values())), hw)
                pos_p.append(np.tile(p, len(px)))
                row_p.append(np.tile(r, len(px)))
                col_p.append(np.tile(c, len(px)))
        cols: dict = {name: torch.cat(p) if p else torch.empty((0, *self.stored_shapes[name]), dtype=self.stored)
                      for name, p in parts.items()}
        kept_arr = np.asarray(kept, dtype=np.int64)
        reps = 1
        if self.per_patch and pos_p:
            reps = len(pos_p[0]) // len(batches[0])  # positions per image
            cols[POSITION] = np.concatenate(pos_p)
            cols[PATCH_ROW] = np.concatenate(row_p)
            cols[PATCH_COL] = np.concatenate(col_p)
        rows_of = np.repeat(kept_arr, reps)
        cols[EXAMPLE_ID] = rows_of
        cols[STIMULUS_ID] = np.asarray(source.ids, dtype=object)[rows_of] if len(rows_of) else np.asarray([], object)
        for name in meta_fields:
            values = source.metadata[name]
            arr = np.asarray(values, dtype=object if any(isinstance(v, str) for v in values) else None)
            cols[name] = arr[rows_of]
        return cols

    def _pool(self, name: str, a: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        pool = self.pools[name]
        if pool == "cls":
            return a[:, 0]
        if pool == "mean":
            skip = prefix_tokens(a.shape[1], hw, self.patch_size)
            return a[:, skip:].float().mean(1)
        if pool == "spatial_mean":
            return a.float().mean((2, 3))
        if pool == "none":
            if a.dim() == 3:
                return a.reshape(-1, a.shape[-1])
            return a.permute(0, 2, 3, 1).reshape(-1, a.shape[1])  # row-major over (H, W)
        return a.reshape(a.shape[0], -1) if pool == "flatten" else a

    def _grid(self, a: torch.Tensor, hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per position of one image: index, patch row and column (-1 for CLS/register tokens)."""
        if a.dim() == 4:
            h, w = a.shape[2], a.shape[3]
            t = np.arange(h * w, dtype=np.int32)
            return t, t // w, t % w
        n = a.shape[1]
        skip = prefix_tokens(n, hw, self.patch_size)
        gw = hw[1] // self.patch_size if self.patch_size else 0
        t = np.arange(n, dtype=np.int32)
        k = t - skip
        row = np.where(k >= 0, k // gw, -1) if gw else np.full(n, -1, np.int32)
        col = np.where(k >= 0, k % gw, -1) if gw else np.full(n, -1, np.int32)
        return t, row.astype(np.int32), col.astype(np.int32)

