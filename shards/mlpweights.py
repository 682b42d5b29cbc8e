"""The MLP output projections of the ``mlp_hidden.N`` hooks, stored with a dataset.

``actlake extract --save-weights`` writes them as ``artifacts/mlp_out.safetensors`` (checksummed in the
manifest, as the logit lens' unembedding is), so that a decomposition of MLP hidden activations (the
``snmf`` architecture) can express its features in the residual stream without the model: the block adds
``hidden @ W_out.T + b_out`` to the residual, so a feature ``z`` over neurons writes ``W_out @ z`` there.
Float32 tensors ``<hook>.weight`` (d_model × d_mlp, nn.Linear's layout whatever the model's) and
``<hook>.bias``.
"""

from __future__ import annotations

import torch

from shards.errors import ActlakeError

MLP_OUT = "mlp_out.safetensors"


class NoMlpWeightsError(ActlakeError, ValueError):
    """The dataset (or model) has no MLP output projection for the hook asked for."""


def projection(module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(weight as d_out × d_in, bias) of a linear module: ``nn.Linear``, or GPT-2's ``Conv1D`` (stored
    transposed, ``y = x @ W + b``)."""
    w = module.weight.detach().float()
    if type(module).__name__ == "Conv1D":
        w = w.t()
    b = getattr(module, "bias", None)
    return w.contiguous(), (b.detach().float().contiguous() if b is not None else None)


def to_bytes(weights: dict[str, tuple[torch.Tensor, torch.Tensor | None]]) -> bytes:
    from safetensors.torch import save

    tensors = {}
    for hook, (w, b) in weights.items():
        tensors[f"{hook}.weight"] = w
        if b is not None:
            tensors[f"{hook}.bias"] = b
    return save(tensors, metadata={"format": "actlake-mlp-out-1"})


def from_bytes(data: bytes) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
    from safetensors.torch import load

    tensors = load(data)
    hooks = sorted({k.rsplit(".", 1)[0] for k in tensors})
    return {h: (tensors[f"{h}.weight"], tensors.get(f"{h}.bias")) for h in hooks}


def load_mlp_weights(ds, hook: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The output projection behind ``hook`` (``mlp_hidden.N``) stored with dataset ``ds``."""
    data = ds.read_artifact(MLP_OUT, "Extract again with --save-weights.")
    if data is None:
        raise NoMlpWeightsError(f"dataset {ds.storage.display()} stores no MLP weights; extract it with "
                                "--save-weights to express MLP features in the residual stream")
    weights = from_bytes(data)
    if hook not in weights:
        raise NoMlpWeightsError(f"dataset {ds.storage.display()} stores MLP weights for {sorted(weights)}, "
                                f"not {hook!r}")
    return weights[hook]
