"""Tensor dtypes the format stores, and their numpy/torch/arrow views.

bfloat16 has no numpy or Arrow type: it is stored and moved around as its raw
16-bit pattern (``uint16``) and reinterpreted by torch on the way out.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from shards.errors import UnsupportedDtypeError

#: dtype name -> (numpy storage dtype, item size in bytes)
STORAGE_DTYPES: dict[str, np.dtype] = {
    "float16": np.dtype("<f2"),
    "bfloat16": np.dtype("<u2"),
    "float32": np.dtype("<f4"),
    "int32": np.dtype("<i4"),  # index tensors (e.g. an SAE's top latent ids); statistics are computed as floats
}

#: arrow value type used by the list ("FixedSizeList") encoding
LIST_VALUE_TYPES: dict[str, pa.DataType] = {
    "float16": pa.float16(),
    "bfloat16": pa.float32(),  # Arrow has no bfloat16; float32 holds every bfloat16 exactly
    "float32": pa.float32(),
    "int32": pa.int32(),
}


def check_dtype(name: str) -> str:
    """Return ``name`` if the format stores it, else raise a clear error."""
    if name not in STORAGE_DTYPES:
        raise UnsupportedDtypeError(
            f"unsupported tensor dtype {name!r}; the format stores {sorted(STORAGE_DTYPES)}. "
            "Cast the activations to one of these before writing."
        )
    return name


def itemsize(name: str) -> int:
    return STORAGE_DTYPES[check_dtype(name)].itemsize


def dtype_name_of(array) -> str:
    """The format's dtype name for a numpy array or torch tensor."""
    try:
        import torch

        if isinstance(array, torch.Tensor):
            name = str(array.dtype).removeprefix("torch.")
            return check_dtype(name)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return check_dtype(np.asarray(array).dtype.name)


def to_storage_numpy(array, dtype: str) -> np.ndarray:
    """Turn a numpy array or torch tensor of ``dtype`` into a C-contiguous storage array.

    No conversion between dtypes happens here: writing float32 into a float16
    hook is refused, so that bytes in equal bytes out.
    """
    got = dtype_name_of(array)
    if got != dtype:
        raise UnsupportedDtypeError(
            f"tensor has dtype {got} but the hook is declared {dtype}; cast it first "
            f"(e.g. tensor.to(torch.{dtype}))"
        )
    try:
        import torch

        if isinstance(array, torch.Tensor):
            t = array.detach().cpu().contiguous()
            if dtype == "bfloat16":
                t = t.view(torch.int16)
                return t.numpy().view(np.uint16)
            return t.numpy()
    except ImportError:  # pragma: no cover
        pass
    return np.ascontiguousarray(array, dtype=STORAGE_DTYPES[dtype])


def storage_to_torch(array: np.ndarray, dtype: str):
    """View a storage array as a torch tensor of the declared dtype (no copy)."""
    import torch

    t = torch.from_numpy(array)
    if dtype == "bfloat16":
        return t.view(torch.bfloat16)
    return t


def storage_to_float32(array: np.ndarray, dtype: str) -> np.ndarray:
    """Exact float32 values of a storage array (bfloat16 widened by a shift)."""
    if dtype == "bfloat16":
        return (array.astype(np.uint32) << 16).view(np.float32)
    return array.astype(np.float32)
