"""Image sources: a folder of images, a table of paths or bytes, a saved HF dataset with an Image column,
or image arrays inside ``.npz``/``.mat`` files. Every image gets a ``stimulus_id`` and keeps its order.

Order and ids (they join activations to brain data, so they are part of the contract):
- folder: files sorted by their path relative to the folder; id = file stem
  (relative path without extension when stems repeat); an optional sidecar
  table (``metadata.csv``/``.parquet`` in the folder, or ``--metadata``) adds columns.
- table / HF dataset: row order; id = ``--id-field`` (default ``stimulus_id`` or
  ``id`` when present), else the stem of the image path, else ``image_NN``.
- ``.npz``/``.mat``: array order along the first axis; id = ``image_NN`` (1-based,
  zero-padded), or the ``--id-field`` array when given.
"""

from __future__ import annotations

import io
import posixpath
from dataclasses import dataclass, field

import numpy as np

from shards.errors import ActlakeError
from shards.storage import Storage

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
_TABLE_FORMATS = (".parquet", ".csv", ".jsonl", ".json")
_ARRAY_FORMATS = (".npz", ".mat")
_SIDECARS = ("metadata.csv", "metadata.parquet", "stimuli.csv", "stimuli.parquet")
_IMAGE_FIELD_GUESSES = ("image", "img", "image_path", "path", "file", "filename", "file_name", "image_bytes")
_SCALAR_TYPES = (str, int, float, bool, np.integer, np.floating, np.bool_, np.str_)


class ImageSourceError(ActlakeError, ValueError):
    """The image source is missing, empty, or a field or file in it is wrong."""


class ImageDecodeError(ActlakeError, ValueError):
    """One image could not be read or decoded."""

    def __init__(self, stimulus_id: str, reason: str) -> None:
        super().__init__(f"image {stimulus_id!r} cannot be decoded: {reason}. Fix or remove it, or run with "
                         "--on-bad-image skip to leave it out (it is then listed in the manifest).")
        self.stimulus_id = stimulus_id
        self.reason = reason

    def __reduce__(self):  # raised inside Ray actors: must survive pickling with its fields
        return (type(self), (self.stimulus_id, self.reason))


@dataclass
class ImageSource:
    """Images in a fixed order with their ids and metadata columns; ``image(i)`` decodes one to RGB."""

    uri: str
    kind: str  #: folder, table, hf, npz, mat
    ids: list[str]
    items: list  #: per image: a path/URI (str), encoded bytes, or a decoded array
    metadata: dict[str, list] = field(default_factory=dict)
    storage_options: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def column_types(self) -> dict[str, str]:
        out = {"stimulus_id": "string"}
        for name, values in self.metadata.items():
            out[name] = _arrow_type(values, name)
        return out

    def image(self, i: int):
        """The i-th image as a PIL RGB image; ``ImageDecodeError`` names it when it cannot be read."""
        from PIL import Image, UnidentifiedImageError

        item = self.items[i]
        try:
            if isinstance(item, np.ndarray):
                return Image.fromarray(_as_uint8(item)).convert("RGB")
            if isinstance(item, str):
                item = _read_bytes(item, self.storage_options)
            img = Image.open(io.BytesIO(item))
            img.load()  # decode now: a truncated file fails here, not later
            return img.convert("RGB")
        except (OSError, UnidentifiedImageError, ValueError, TypeError) as exc:
            raise ImageDecodeError(self.ids[i], f"{type(exc).__name__}: {exc}") from None


def _as_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if np.issubdtype(arr.dtype, np.floating) and arr.size and float(np.nanmax(arr)) <= 1.0:
        return np.clip(np.rint(arr * 255), 0, 255).astype(np.uint8)  # float images in [0, 1]
    return np.clip(arr, 0, 255).astype(np.uint8)


def _read_bytes(uri: str, storage_options: dict) -> bytes:
    import fsspec

    with fsspec.open(uri, "rb", **storage_options) as f:
        return f.read()


def _arrow_type(values: list, name: str) -> str:
    kinds = {type(v) for v in values if v is not None}
    if kinds and all(issubclass(k, (bool, np.bool_)) for k in kinds):
        return "bool"
    if kinds and all(issubclass(k, (int, np.integer)) and not issubclass(k, (bool, np.bool_)) for k in kinds):
        return "int64"
    if kinds and all(issubclass(k, (int, float, np.integer, np.floating)) for k in kinds):
        return "float64"
    if kinds and all(issubclass(k, (str, np.str_)) for k in kinds):
        return "string"
    raise ImageSourceError(f"metadata column {name!r} holds {sorted(k.__name__ for k in kinds)}; only scalar "
                           "strings, numbers and booleans can be carried")


def is_image_source(uri: str, storage_options: dict | None = None) -> bool:
    """Whether ``uri`` looks like an image source (used to pick the modality automatically)."""
    low = uri.lower().rstrip("/")
    if low.endswith(_ARRAY_FORMATS) or low.endswith(IMAGE_EXTENSIONS):
        return True
    st = Storage(uri, storage_options or {})
    try:
        if st.fs.isdir(st.root):
            if st.fs.exists(posixpath.join(st.root, "dataset_info.json")):
                return _hf_image_column(uri) is not None
            return any(p.lower().endswith(IMAGE_EXTENSIONS) for p in st.fs.find(st.root))
    except Exception:  # noqa: BLE001 - not reachable here: let the corpus loader report it
        return False
    return False


def load_image_source(uri: str, image_field: str | None = None, id_field: str | None = None,
                      fields: list[str] | None = None, metadata: str | None = None,
                      storage_options: dict | None = None) -> ImageSource:
    """Open an image source (see the module docstring for order and ids).

    Example::

        src = load_image_source("../shared/data/net2brain78/stimuli")
        src.ids[:2], src.image(0).size   # (['image_01', 'image_02'], (W, H))
    """
    so = storage_options or {}
    low = uri.lower().rstrip("/")
    if low.endswith(".npz") or low.endswith(".mat"):
        src = _array_source(uri, image_field, id_field, so)
    elif low.endswith(_TABLE_FORMATS):
        src = _table_source(uri, image_field, id_field, so)
    else:
        st = Storage(uri, so)
        if not st.fs.exists(st.root):
            raise ImageSourceError(f"image source {uri!r} not found (looked at {st.display()})")
        if st.fs.isdir(st.root) and st.fs.exists(posixpath.join(st.root, "dataset_info.json")):
            src = _hf_source(uri, image_field, id_field)
        elif st.fs.isdir(st.root):
            src = _folder_source(uri, st, metadata, so)
        else:
            raise ImageSourceError(f"image source {uri!r} is a file of an unknown kind; give a folder of images, "
                                   f"a table ({', '.join(_TABLE_FORMATS)}), a saved HF dataset, or .npz/.mat")
    if not len(src):
        raise ImageSourceError(f"image source {uri!r} holds no images")
    if len(set(src.ids)) != len(src.ids):
        dup = sorted({i for i in src.ids if src.ids.count(i) > 1})[:5]
        raise ImageSourceError(f"image source {uri!r}: stimulus ids are not unique (e.g. {dup}); give --id-field")
    if fields:
        missing = [f for f in fields if f not in src.metadata]
        if missing:
            raise ImageSourceError(f"metadata fields {missing} not in {uri!r}; it has {sorted(src.metadata)}")
        src.metadata = {f: src.metadata[f] for f in fields}
    return src


def _numbered_ids(n: int) -> list[str]:
    width = max(2, len(str(n)))
    return [f"image_{i + 1:0{width}d}" for i in range(n)]


# --- folder -------------------------------------------------------------------------------------
def _folder_source(uri: str, st: Storage, metadata: str | None, so: dict) -> ImageSource:
    root = st.root.rstrip("/")
    files = sorted(p for p in st.fs.find(root) if p.lower().endswith(IMAGE_EXTENSIONS))
    rel = [posixpath.relpath(p, root) for p in files]
    stems = [posixpath.splitext(posixpath.basename(r))[0] for r in rel]
    ids = stems if len(set(stems)) == len(stems) else [posixpath.splitext(r)[0] for r in rel]
    proto = st.fs.protocol[0] if isinstance(st.fs.protocol, (tuple, list)) else st.fs.protocol
    items = [p if proto in ("file", "local") else f"{proto}://{p}" for p in files]
    meta: dict[str, list] = {}
    sidecar = metadata
    if sidecar is None:
        for name in _SIDECARS:
            if st.fs.exists(posixpath.join(root, name)):
                sidecar = posixpath.join(uri.rstrip("/"), name)
                break
    if sidecar:
        meta = _join_sidecar(sidecar, ids, rel, so)
    return ImageSource(uri, "folder", ids, items, meta, so)


def _read_table(uri: str, so: dict):
    import pyarrow.csv as pacsv
    import pyarrow.json as pajson
    import pyarrow.parquet as pq

    st = Storage(uri, so)
    if not st.fs.exists(st.root):
        raise ImageSourceError(f"table {uri!r} not found (looked at {st.display()})")
    low = uri.lower()
    with st.fs.open(st.root, "rb") as f:
        if low.endswith(".parquet"):
            return pq.read_table(f)
        if low.endswith(".csv"):
            return pacsv.read_csv(f)
        return pajson.read_json(f)


def _join_sidecar(sidecar: str, ids: list[str], rel: list[str], so: dict) -> dict[str, list]:
    table = _read_table(sidecar, so).to_pydict()
    key = next((k for k in ("stimulus_id", "id", "file", "filename", "file_name", "image") if k in table), None)
    if key is None:
        raise ImageSourceError(f"metadata table {sidecar!r} needs a column naming the image (stimulus_id, id, "
                               f"file or filename); it has {sorted(table)}")
    index = {}
    for row, value in enumerate(table[key]):
        v = str(value)
        index[v] = row
        index[posixpath.splitext(posixpath.basename(v))[0]] = row
    missing = [i for i, r in zip(ids, rel, strict=True) if i not in index and r not in index]
    if missing:
        raise ImageSourceError(f"metadata table {sidecar!r} has no row for {len(missing)} images "
                               f"(e.g. {missing[:5]}) in column {key!r}")
    rows = [index.get(i, index.get(r)) for i, r in zip(ids, rel, strict=True)]
    return {name: [values[r] for r in rows] for name, values in table.items()
            if name not in (key, "stimulus_id") and all(isinstance(values[r], _SCALAR_TYPES) for r in rows)}


# --- table / HF dataset -------------------------------------------------------------------------
def _pick_image_field(columns: list[str], image_field: str | None, uri: str) -> str:
    if image_field:
        if image_field not in columns:
            import difflib

            close = difflib.get_close_matches(image_field, columns, n=3, cutoff=0.4)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise ImageSourceError(f"image column {image_field!r} not in {uri!r}.{hint} Columns: {columns}")
        return image_field
    for guess in _IMAGE_FIELD_GUESSES:
        if guess in columns:
            return guess
    raise ImageSourceError(f"no image column found in {uri!r} (looked for {list(_IMAGE_FIELD_GUESSES)}); "
                           f"name it with --image-field. Columns: {columns}")


def _ids_from(data: dict, id_field: str | None, items: list, uri: str) -> list[str]:
    if id_field:
        if id_field not in data:
            raise ImageSourceError(f"id column {id_field!r} not in {uri!r}; columns: {sorted(data)}")
        return [str(v) for v in data[id_field]]
    for guess in ("stimulus_id", "id"):
        if guess in data:
            return [str(v) for v in data[guess]]
    if items and all(isinstance(p, str) for p in items):
        return [posixpath.splitext(posixpath.basename(p))[0] for p in items]
    return _numbered_ids(len(items))


def _table_source(uri: str, image_field: str | None, id_field: str | None, so: dict) -> ImageSource:
    data = _read_table(uri, so).to_pydict()
    col = _pick_image_field(list(data), image_field, uri)
    base = posixpath.dirname(uri.rstrip("/"))
    items = []
    for v in data[col]:
        if isinstance(v, dict):  # HF-style {"bytes": ..., "path": ...}
            v = v.get("bytes") or v.get("path")
        if isinstance(v, str) and "://" not in v and not posixpath.isabs(v):
            v = posixpath.join(base, v)  # paths relative to the table
        items.append(v)
    paths = [v if isinstance(v, str) else None for v in data[col]]
    ids = _ids_from(data, id_field, paths if all(paths) else items, uri)
    meta = {k: v for k, v in data.items()
            if k not in (col, id_field, "stimulus_id") and all(isinstance(x, _SCALAR_TYPES) for x in v)}
    return ImageSource(uri, "table", ids, items, meta, so)


def _hf_image_column(uri: str) -> str | None:
    import datasets

    ds = datasets.load_from_disk(uri)
    return next((n for n, f in ds.features.items() if isinstance(f, datasets.Image)), None)


def _hf_source(uri: str, image_field: str | None, id_field: str | None) -> ImageSource:
    import datasets

    ds = datasets.load_from_disk(uri)
    image_cols = [n for n, f in ds.features.items() if isinstance(f, datasets.Image)]
    col = image_field or (image_cols[0] if image_cols else None)
    col = _pick_image_field(list(ds.features), col, uri)
    ds = ds.cast_column(col, datasets.Image(decode=False)) if col in image_cols else ds
    data = ds.to_dict()
    items = [v.get("bytes") or v.get("path") if isinstance(v, dict) else v for v in data[col]]
    paths = [v.get("path") if isinstance(v, dict) else None for v in data[col]]
    ids = _ids_from(data, id_field, paths if all(paths) else items, uri)
    meta = {k: v for k, v in data.items()
            if k not in (col, id_field, "stimulus_id") and all(isinstance(x, _SCALAR_TYPES) for x in v)}
    return ImageSource(uri, "hf", ids, items, meta)


# --- arrays in .npz / .mat ----------------------------------------------------------------------
def _array_source(uri: str, image_field: str | None, id_field: str | None, so: dict) -> ImageSource:
    st = Storage(uri, so)
    if not st.fs.exists(st.root):
        raise ImageSourceError(f"array file {uri!r} not found (looked at {st.display()})")
    with st.fs.open(st.root, "rb") as f:
        raw = f.read()
    if uri.lower().endswith(".npz"):
        with np.load(io.BytesIO(raw), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    else:
        import scipy.io

        arrays = {k: v for k, v in scipy.io.loadmat(io.BytesIO(raw)).items() if not k.startswith("__")}
    var, sub = (image_field.split(".", 1) + [None])[:2] if image_field else (None, None)
    if var is None:
        var = next((k for k, v in arrays.items() if _image_stack(v) or _struct_images(v)), None)
        if var is None:
            raise ImageSourceError(f"no image array found in {uri!r} (variables: {sorted(arrays)}); name it "
                                   "with --image-field VAR (or VAR.FIELD for a struct array)")
    if var not in arrays:
        raise ImageSourceError(f"image variable {var!r} not in {uri!r}; it has {sorted(arrays)}")
    value = arrays[var]
    meta: dict[str, list] = {}
    if value.dtype.names:  # a MATLAB struct array: one image field, the other scalar fields are metadata
        entries = value.reshape(-1)
        names = list(value.dtype.names)
        img_name = sub or next((n for n in names if np.asarray(entries[0][n]).ndim == 3), None) or next(
            (n for n in names if np.asarray(entries[0][n]).ndim == 2), None)
        if img_name not in names:
            raise ImageSourceError(f"struct {var!r} in {uri!r} has no image field {img_name!r}; fields: {names}")
        items = [np.asarray(e[img_name]) for e in entries]
        for n in names:
            if n == img_name:
                continue
            vals = [_mat_scalar(e[n]) for e in entries]
            if all(v is not None for v in vals):
                meta[n] = vals
    else:
        if not _image_stack(value):
            raise ImageSourceError(f"variable {var!r} in {uri!r} has shape {value.shape}; expected images as "
                                   "(N, H, W, 3), (N, 3, H, W) or (N, H, W)")
        if value.ndim == 4 and value.shape[1] in (1, 3) and value.shape[-1] not in (1, 3):
            value = value.transpose(0, 2, 3, 1)  # channels first -> last
        items = list(value)
        n = len(items)
        for k, v in arrays.items():
            if k != var and k != id_field and v.ndim == 1 and len(v) == n and v.dtype.kind in "biufU":
                meta[k] = v.tolist()
    if id_field:
        if id_field not in arrays:
            raise ImageSourceError(f"id variable {id_field!r} not in {uri!r}; it has {sorted(arrays)}")
        ids = [str(_mat_scalar(v)) for v in np.asarray(arrays[id_field]).reshape(-1)]
        if len(ids) != len(items):
            raise ImageSourceError(f"id variable {id_field!r} has {len(ids)} entries for {len(items)} images")
    else:
        ids = _numbered_ids(len(items))
    return ImageSource(uri, uri.lower().rsplit(".", 1)[-1], ids, items, meta, so)


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


def _mat_scalar(v):
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
