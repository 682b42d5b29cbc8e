"""Net2Brain's layout: one ``.npz`` per stimulus (``{Model}_{image}.npz``), keyed by layer name, each array
with a leading batch axis of 1. Rows follow the files sorted by name."""

from __future__ import annotations

import io
import posixpath

import numpy as np

from ingest.imports.source import FeatureImportError, FeatureSource, Layer
from shards.storage import Storage


def load(src: str, stimulus_id: str = "file", storage_options: dict | None = None, **_) -> FeatureSource:
    """``stimulus_id``: ``file`` (the file's stem, ``ResNet18_image_01``) or ``image`` (the image's stem,
    ``image_01``: the model-name prefix all files share is removed)."""
    st = Storage(src, storage_options or {})
    if not st.is_dir():
        raise FeatureImportError(f"Net2Brain features: {src!r} is not a folder (looked at {st.display()})")
    files = [st.rel(p) for p in st.ls() if p.endswith(".npz")]
    if not files:
        raise FeatureImportError(f"Net2Brain features: no .npz files in {st.display()}")
    stems = [posixpath.splitext(posixpath.basename(p))[0] for p in files]
    ids = stems if stimulus_id == "file" else _image_stems(stems)

    def read(path: str) -> dict[str, np.ndarray]:
        with np.load(io.BytesIO(st.get_bytes(path)), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    first = read(files[0])
    layers = {}
    for key, arr in first.items():
        shape = arr.shape[1:] if arr.ndim > 1 and arr.shape[0] == 1 else arr.shape

        def rows(a: int, b: int, key=key, shape=shape) -> np.ndarray:
            out = []
            for p in files[a:b]:
                x = read(p)
                if key not in x:
                    raise FeatureImportError(f"{st.display(p)}: layer {key!r} missing (it is in {files[0]})")
                if x[key].size != int(np.prod(shape)):
                    raise FeatureImportError(f"{st.display(p)}: layer {key!r} has shape {x[key].shape}, "
                                             f"expected {shape}")
                out.append(x[key].reshape(shape))
            return np.stack(out)

        layers[key] = Layer(key, tuple(int(s) for s in shape), arr.dtype.name, rows)
    prov = {"layout": "net2brain", "files": len(files), "first_file": posixpath.basename(files[0]),
            "layers": {k: list(v.shape) for k, v in first.items()}}
    return FeatureSource(ids, layers, {"source_file": [posixpath.basename(p) for p in files]}, prov)


def _image_stems(stems: list[str]) -> list[str]:
    prefixes = {s.split("_", 1)[0] for s in stems}
    if len(prefixes) != 1 or any("_" not in s for s in stems):
        raise FeatureImportError("--stimulus-id image needs files named {Model}_{image}.npz with one model prefix; "
                           f"found prefixes {sorted(prefixes)[:5]}. Use --stimulus-id file.")
    return [s.split("_", 1)[1] for s in stems]
