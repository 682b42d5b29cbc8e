"""Training checkpoints under ``OUT/checkpoints/``: the trainer's tensors (safetensors) and state (JSON).

The ``latest.json`` pointer is written last: a run killed mid-checkpoint resumes from the previous one.
"""

from __future__ import annotations

import json

import torch

from shards.storage import Storage

CHECKPOINTS = "checkpoints"
LATEST = f"{CHECKPOINTS}/latest.json"


def save_checkpoint(out: Storage, step: int, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    from safetensors.torch import save

    rel = f"{CHECKPOINTS}/step-{step:08d}"
    out.put_bytes(f"{rel}/state.safetensors", save(tensors))
    out.put_bytes(f"{rel}/state.json", json.dumps(meta).encode())
    out.put_bytes(LATEST, json.dumps({"step": step, "path": rel}).encode())
    for old in out.ls(CHECKPOINTS):
        name = old.rstrip("/").rsplit("/", 1)[-1]
        if name.startswith("step-") and name != f"step-{step:08d}":
            out.delete_prefix(f"{CHECKPOINTS}/{name}")


def load_checkpoint(out: Storage) -> tuple[dict[str, torch.Tensor], dict]:
    from safetensors.torch import load

    latest = json.loads(out.get_bytes(LATEST))
    return load(out.get_bytes(f"{latest['path']}/state.safetensors")), json.loads(
        out.get_bytes(f"{latest['path']}/state.json"))
