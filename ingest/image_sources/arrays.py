"""Image arrays inside ``.npz`` / ``.mat`` files: array order along the first axis; id = ``image_NN``
(1-based, zero-padded), or the ``--id-field`` array. A MATLAB struct array gives one image field; its
other scalar fields are metadata (e.g. the category flags of Kriegeskorte's 92 images)."""

from __future__ import annotations

import io

import numpy as np

from ingest.image_sources.base import ImageSource, ImageSourceError, SourceKind, SourceOptions, numbered_ids
from shards.storage import Storage

ARRAY_FORMATS = (".npz", ".mat")


def matches(uri: str, st: Storage) -> bool:
    return uri.lower().rstrip("/").endswith(ARRAY_FORMATS)


def _read_arrays(uri: str, st: Storage) -> dict[str, np.ndarray]:
    try:
        raw = st.get_bytes("")
    except FileNotFoundError:
        raise ImageSourceError(f"array file {uri!r} not found (looked at {st.display()})") from None
    if uri.lower().endswith(".npz"):
        with np.load(io.BytesIO(raw), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    import scipy.io

    return {k: v for k, v in scipy.io.loadmat(io.BytesIO(raw)).items() if not k.startswith("__")}


def _image_stack(v) -> bool:
    return isinstance(v, np.ndarray) and v.dtype.names is None and v.dtype.kind in "uif" and (
        v.ndim == 4 and (v.shape[-1] in (1, 3) or v.shape[1] in (1, 3)) or v.ndim == 3 and v.shape[0] > 3)


def _struct_images(v) -> bool:
    if not (isinstance(v, np.ndarray) and v.dtype.names and v.size):
        return False
    first = v.reshape(-1)[0]
    # colour images (H, W, 3), or grey uint8 ones of at least 8x8; an RDM or a colour triple is not an image
    return any((a.ndim == 3 and a.shape[-1] in (1, 3)) or (a.ndim == 2 and a.dtype == np.uint8 and min(a.shape) >= 8)
               for a in (np.asarray(first[n]) for n in v.dtype.names))


def mat_scalar(v):
    """A MATLAB cell/array holding one scalar or string, as a Python value (None otherwise)."""
    a = np.asarray(v)
    while a.dtype == object and a.size == 1:
        a = np.asarray(a.reshape(-1)[0])
    if a.dtype.kind == "U":
        return str(a.reshape(-1)[0]) if a.size == 1 else None
    if a.size == 1 and a.dtype.kind in "biuf":
        x = a.reshape(-1)[0].item()
        return int(x) if a.dtype.kind in "biu" else x
    return None


def _variable(arrays: dict, image_field: str | None, uri: str) -> tuple[str, str | None]:
    """(variable, struct field) holding the images: as named (``VAR`` or ``VAR.FIELD``), else the first image stack."""
    var, sub = (image_field.split(".", 1) + [None])[:2] if image_field else (None, None)
    if var is None:
        var = next((k for k, v in arrays.items() if _image_stack(v) or _struct_images(v)), None)
        if var is None:
            raise ImageSourceError(f"no image array found in {uri!r} (variables: {sorted(arrays)}); name it "
                                   "with --image-field VAR (or VAR.FIELD for a struct array)")
    if var not in arrays:
        raise ImageSourceError(f"image variable {var!r} not in {uri!r}; it has {sorted(arrays)}")
    return var, sub


def _from_struct(value: np.ndarray, sub: str | None, var: str, uri: str) -> tuple[list, dict[str, list]]:
    entries, names = value.reshape(-1), list(value.dtype.names)
    img_name = sub or next((n for n in names if np.asarray(entries[0][n]).ndim == 3), None) or next(
        (n for n in names if np.asarray(entries[0][n]).ndim == 2), None)
    if img_name not in names:
        raise ImageSourceError(f"struct {var!r} in {uri!r} has no image field {img_name!r}; fields: {names}")
    meta = {n: [mat_scalar(e[n]) for e in entries] for n in names if n != img_name}
    return [np.asarray(e[img_name]) for e in entries], {n: v for n, v in meta.items() if None not in v}


def _from_stack(arrays: dict, var: str, exclude: set, uri: str) -> tuple[list, dict[str, list]]:
    value = arrays[var]
    if not _image_stack(value):
        raise ImageSourceError(f"variable {var!r} in {uri!r} has shape {value.shape}; expected images as "
                               "(N, H, W, 3), (N, 3, H, W) or (N, H, W)")
    if value.ndim == 4 and value.shape[1] in (1, 3) and value.shape[-1] not in (1, 3):
        value = value.transpose(0, 2, 3, 1)  # channels first -> last
    n = len(value)
    meta = {k: v.tolist() for k, v in arrays.items()
            if k not in exclude and v.ndim == 1 and len(v) == n and v.dtype.kind in "biufU"}
    return list(value), meta


def load(uri: str, st: Storage, opts: SourceOptions) -> ImageSource:
    arrays = _read_arrays(uri, st)
    var, sub = _variable(arrays, opts.image_field, uri)
    items, meta = (_from_struct(arrays[var], sub, var, uri) if arrays[var].dtype.names
                   else _from_stack(arrays, var, {var, opts.id_field}, uri))
    ids = numbered_ids(len(items))
    if opts.id_field:
        if opts.id_field not in arrays:
            raise ImageSourceError(f"id variable {opts.id_field!r} not in {uri!r}; it has {sorted(arrays)}")
        ids = [str(mat_scalar(v)) for v in np.asarray(arrays[opts.id_field]).reshape(-1)]
        if len(ids) != len(items):
            raise ImageSourceError(f"id variable {opts.id_field!r} has {len(ids)} entries for {len(items)} images")
    return ImageSource(uri, uri.lower().rsplit(".", 1)[-1], ids, items, meta, opts.storage_options)


SOURCE = SourceKind("arrays", matches, matches, load)
