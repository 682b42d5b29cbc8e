"""The one table of tensor dtypes the format stores, with their numpy, torch and Arrow views.

bfloat16 has no numpy or Arrow type: it is stored and moved around as its raw 16-bit pattern
(``uint16``) and reinterpreted by torch on the way out. Torch is looked up only when a caller
asks for a torch view, so ``import shards`` does not load it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa

from shards.errors import UnsupportedDtypeError


@dataclass(frozen=True)
class TensorDType:
    """One storable dtype: its name in manifests, its stored bytes, its list-encoding values."""

    name: str
    storage: np.dtype  #: numpy dtype of the stored little-endian values
    list_value: pa.DataType  #: Arrow value type of the ``list`` encoding (bfloat16: exact float32)
    is_float: bool  #: activations; the rest are index tensors (statistics are still computed as floats)

    @property
    def itemsize(self) -> int:
        return self.storage.itemsize

    @property
    def torch(self):
        """The torch dtype (imports torch)."""
        import torch

        return getattr(torch, self.name)


DTYPES: dict[str, TensorDType] = {d.name: d for d in (
    TensorDType("float16", np.dtype("<f2"), pa.float16(), True),
    TensorDType("bfloat16", np.dtype("<u2"), pa.float32(), True),
    TensorDType("float32", np.dtype("<f4"), pa.float32(), True),
    TensorDType("int32", np.dtype("<i4"), pa.int32(), False),  # e.g. an SAE's top latent ids
)}
#: the dtypes activations are stored in and models run in
FLOAT_DTYPES: tuple[str, ...] = tuple(n for n, d in DTYPES.items() if d.is_float)
#: the same names as a config field's type (``--dtype``, ``--model-dtype``): the table above is the one list
FloatDtype = Literal[FLOAT_DTYPES]  # type: ignore[valid-type]


def get_dtype(name: str) -> TensorDType:
    """The table entry of ``name``; a clear error for dtypes the format cannot store."""
    try:
        return DTYPES[name]
    except (KeyError, TypeError):
        raise UnsupportedDtypeError(
            f"unsupported tensor dtype {name!r}; the format stores {sorted(DTYPES)}. "
            "Cast the activations to one of these before writing."
        ) from None


def check_dtype(name: str) -> str:
    """``name`` if the format stores it, else a clear error."""
    return get_dtype(name).name


def _torch_module():
    """torch if something already imported it: a numpy caller never pays for the import."""
    return sys.modules.get("torch")


def is_tensor(value) -> bool:
    torch = _torch_module()
    return torch is not None and isinstance(value, torch.Tensor)


def as_numpy(values) -> np.ndarray:
    """A numpy view of a numpy array, torch tensor (moved to the CPU) or list."""
    if is_tensor(values):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def dtype_name_of(array) -> str:
    """The format's dtype name for a numpy array or torch tensor."""
    if is_tensor(array):
        return check_dtype(str(array.dtype).removeprefix("torch."))
    return check_dtype(np.asarray(array).dtype.name)


def to_storage_numpy(array, dtype: str) -> np.ndarray:
    """A numpy array or torch tensor of ``dtype`` as a C-contiguous array of its stored values.

    No conversion between dtypes happens here: writing float32 into a float16 hook is
    refused, so that bytes in equal bytes out.
    """
    got = dtype_name_of(array)
    if got != dtype:
        raise UnsupportedDtypeError(
            f"tensor has dtype {got} but the hook is declared {dtype}; cast it first (e.g. tensor.to(torch.{dtype}))"
        )
    if is_tensor(array):
        t = array.detach().cpu().contiguous()
        if dtype == "bfloat16":
            return t.view(_torch_module().int16).numpy().view(np.uint16)
        return t.numpy()
    return np.ascontiguousarray(array, dtype=DTYPES[dtype].storage)


def storage_to_torch(array: np.ndarray, dtype: str):
    """View a storage array as a torch tensor of the declared dtype (no copy)."""
    import torch

    t = torch.from_numpy(array)
    return t.view(torch.bfloat16) if dtype == "bfloat16" else t


def storage_to_numpy(array: np.ndarray, dtype: str) -> np.ndarray:
    """A storage array as numpy values: the stored dtype, except bfloat16 (which numpy lacks), widened
    exactly to float32 by a shift."""
    if dtype == "bfloat16":
        return (array.astype(np.uint32) << 16).view(np.float32)
    return array


def storage_to_float32(array: np.ndarray, dtype: str) -> np.ndarray:
    """Exact float32 values of a storage array."""
    return storage_to_numpy(array, dtype).astype(np.float32, copy=False)


def resolve_torch_dtype(dtype, stored: str):
    """The torch dtype a reader should return: ``dtype`` (a name or a torch dtype), or the stored one for None."""
    if dtype is None:
        return get_dtype(stored).torch
    if isinstance(dtype, str):
        import torch

        return getattr(torch, dtype)
    return dtype
