"""What every image source yields: images in a fixed order with stimulus ids and metadata columns.

Order and ids join activations to brain data, so they are part of the contract; each source module
documents its own.
"""

from __future__ import annotations

import difflib
import hashlib
import io
import json
import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from shards.columns import STIMULUS_ID
from shards.errors import ActlakeError
from shards.schema import infer_column_type
from shards.storage import Storage

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
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


@dataclass(frozen=True)
class SourceOptions:
    """How to read a source: which field holds the images and the ids, a metadata sidecar, storage."""

    image_field: str | None = None
    id_field: str | None = None
    metadata: str | None = None
    storage_options: dict = field(default_factory=dict)


@dataclass
class ImageSource:
    """Images in a fixed order with their ids and metadata columns; ``image(i)`` decodes one to RGB."""

    uri: str
    kind: str
    ids: list[str]
    items: list  #: per image: a path/URI (str), encoded bytes, or a decoded array
    metadata: dict[str, list] = field(default_factory=dict)
    storage_options: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def column_types(self) -> dict[str, str]:
        return {STIMULUS_ID: "string", **{n: infer_column_type(v, n) for n, v in self.metadata.items()}}

    def subset(self, items: tuple[str, ...] | list[str]) -> ImageSource:
        """The images whose path/URI is in ``items``, in that order (what a scheduled tick extracts)."""
        where = {str(item): i for i, item in enumerate(self.items) if isinstance(item, str)}
        missing = [x for x in items if x not in where]
        if missing:
            raise ImageSourceError(f"image source {self.uri!r} no longer holds {len(missing)} planned images "
                                   f"(e.g. {missing[:3]})")
        idx = [where[x] for x in items]
        return ImageSource(self.uri, self.kind, [self.ids[i] for i in idx], [self.items[i] for i in idx],
                           {k: [v[i] for i in idx] for k, v in self.metadata.items()}, self.storage_options)

    def ids_sha256(self, n: int | None = None) -> str:
        """A fingerprint of the first ``n`` ids, in order (what a job read)."""
        return hashlib.sha256(json.dumps(self.ids[:n]).encode()).hexdigest()

    def image(self, i: int):
        """The i-th image as a PIL RGB image; ``ImageDecodeError`` names it when it cannot be read."""
        from PIL import Image, UnidentifiedImageError

        item = self.items[i]
        try:
            if isinstance(item, np.ndarray):
                return Image.fromarray(as_uint8(item)).convert("RGB")
            if isinstance(item, str):
                item = read_bytes(item, self.storage_options)
            img = Image.open(io.BytesIO(item))
            img.load()  # decode now: a truncated file fails here, not later
            return img.convert("RGB")
        except (OSError, UnidentifiedImageError, ValueError, TypeError) as exc:
            raise ImageDecodeError(self.ids[i], f"{type(exc).__name__}: {exc}") from None


@dataclass(frozen=True)
class SourceKind:
    """One kind of image source, registered by name in ``ingest.image_sources``."""

    name: str
    matches: Callable[[str, Storage], bool]  #: can this kind read the URI
    detects: Callable[[str, Storage], bool]  #: is the URI unambiguously images (to pick the modality)
    load: Callable[[str, Storage, SourceOptions], ImageSource]


def as_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if np.issubdtype(arr.dtype, np.floating) and arr.size and float(np.nanmax(arr)) <= 1.0:
        return np.clip(np.rint(arr * 255), 0, 255).astype(np.uint8)  # float images in [0, 1]
    return np.clip(arr, 0, 255).astype(np.uint8)


def read_bytes(uri: str, storage_options: dict) -> bytes:
    """One image file's bytes, through ``Storage`` (retries, secrets kept out of messages); FileNotFoundError
    when it does not exist."""
    st, name = Storage.for_file(uri, storage_options)
    return st.get_bytes(name)


def numbered_ids(n: int) -> list[str]:
    """``image_01`` ... (1-based, zero-padded), the ids of sources that carry none."""
    width = max(2, len(str(n)))
    return [f"image_{i + 1:0{width}d}" for i in range(n)]


def scalar_columns(data: dict[str, list], exclude) -> dict[str, list]:
    """The columns of a table whose every value is a scalar (strings, numbers, booleans): metadata to carry."""
    return {k: v for k, v in data.items() if k not in exclude and all(isinstance(x, _SCALAR_TYPES) for x in v)}


def read_table(uri: str, storage_options: dict):
    """A Parquet, CSV or JSON(L) table as an Arrow table."""
    import pyarrow.csv as pacsv
    import pyarrow.json as pajson
    import pyarrow.parquet as pq

    st = Storage(uri, storage_options)
    try:
        f = io.BytesIO(st.get_bytes(""))
    except FileNotFoundError:
        raise ImageSourceError(f"table {uri!r} not found (looked at {st.display()})") from None
    low = uri.lower()
    if low.endswith(".parquet"):
        return pq.read_table(f)
    return pacsv.read_csv(f) if low.endswith(".csv") else pajson.read_json(f)


_IMAGE_FIELD_GUESSES = ("image", "img", "image_path", "path", "file", "filename", "file_name", "image_bytes")


def pick_image_field(columns: list[str], image_field: str | None, uri: str) -> str:
    """The column holding the images: the one named, or the first usual name present."""
    if image_field:
        if image_field not in columns:
            close = difflib.get_close_matches(image_field, columns, n=3, cutoff=0.4)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise ImageSourceError(f"image column {image_field!r} not in {uri!r}.{hint} Columns: {columns}")
        return image_field
    guess = next((g for g in _IMAGE_FIELD_GUESSES if g in columns), None)
    if guess is None:
        raise ImageSourceError(f"no image column found in {uri!r} (looked for {list(_IMAGE_FIELD_GUESSES)}); "
                               f"name it with --image-field. Columns: {columns}")
    return guess


def ids_from(data: dict, id_field: str | None, paths: list, uri: str) -> list[str]:
    """Stimulus ids of a table's rows: ``id_field``, else stimulus_id/id, else the paths' stems, else image_NN."""
    if id_field:
        if id_field not in data:
            raise ImageSourceError(f"id column {id_field!r} not in {uri!r}; columns: {sorted(data)}")
        return [str(v) for v in data[id_field]]
    for guess in (STIMULUS_ID, "id"):
        if guess in data:
            return [str(v) for v in data[guess]]
    if paths and all(isinstance(p, str) for p in paths):
        return [posixpath.splitext(posixpath.basename(p))[0] for p in paths]
    return numbered_ids(len(paths))
