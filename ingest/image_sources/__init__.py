"""Image sources by kind, one module each; a new kind is a module with a ``SOURCE`` and a line here.

Every source gives images in a fixed order, each with a ``stimulus_id`` and its metadata (see the
modules for their order and ids: they join activations to brain data).
"""

from __future__ import annotations

from ingest.image_sources import arrays, folder, hf, table
from ingest.image_sources.base import (
    IMAGE_EXTENSIONS,
    ImageDecodeError,
    ImageSource,
    ImageSourceError,
    SourceKind,
    SourceOptions,
)
from shards.storage import Storage, StorageOptions, as_fsspec_options

#: checked in this order: the first kind that matches the URI reads it
SOURCES: dict[str, SourceKind] = {s.name: s for s in (arrays.SOURCE, table.SOURCE, hf.SOURCE, folder.SOURCE)}


def is_image_source(uri: str, storage_options: StorageOptions | dict | None = None) -> bool:
    """Whether ``uri`` is unambiguously images (used to pick the modality automatically)."""
    if uri.lower().rstrip("/").endswith(IMAGE_EXTENSIONS):
        return True
    try:
        st = Storage(uri, storage_options)
        return any(kind.matches(uri, st) and kind.detects(uri, st) for kind in SOURCES.values())
    except Exception:  # noqa: BLE001 - not reachable here: let the corpus loader report it
        return False


def load_image_source(uri: str, image_field: str | None = None, id_field: str | None = None,
                      fields: list[str] | None = None, metadata: str | None = None,
                      storage_options: StorageOptions | dict | None = None) -> ImageSource:
    """Open an image source; checks that it holds images with unique ids and the metadata ``fields`` asked for.

    Example::

        src = load_image_source("../shared/data/net2brain78/stimuli")
        src.ids[:2], src.image(0).size   # (['image_01', 'image_02'], (W, H))
    """
    so = as_fsspec_options(storage_options)
    st = Storage(uri, so)
    kind = next((k for k in SOURCES.values() if k.matches(uri, st)), None)
    if kind is None:
        if not st.exists(""):
            raise ImageSourceError(f"image source {uri!r} not found (looked at {st.display()})")
        raise ImageSourceError(f"image source {uri!r} is a file of an unknown kind; give a folder of images, "
                               f"a table ({', '.join(table.TABLE_FORMATS)}), a saved HF dataset, or .npz/.mat")
    src = kind.load(uri, st, SourceOptions(image_field, id_field, metadata, so))
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


__all__ = ["SOURCES", "ImageDecodeError", "ImageSource", "ImageSourceError", "is_image_source",
           "load_image_source"]
