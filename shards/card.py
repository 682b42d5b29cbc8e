"""Dataset cards: a ``README.md`` beside ``manifest.json``, written from the manifest when a writer closes.

The layout is the one the Hugging Face Hub reads: YAML front matter (``license``, ``pretty_name``, ``tags``,
``size_categories`` and a ``configs`` entry whose ``data_files`` are the latest version's unit files, so the
Hub's viewer and ``datasets.load_dataset(folder)`` read exactly the committed rows, not replaced files), then
Markdown for people: what made the dataset, its hooks with shapes and statistics, and how to open it with actlake,
pandas, DuckDB, polars, HF ``datasets`` and Ray Data. The card is derived data: no version names it, ``verify``
ignores it, and ``actlake card URI`` writes it again.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import yaml

from shards.manifest import Manifest
from shards.secrets import redact, redact_uri
from shards.storage import Storage

log = logging.getLogger("actlake.card")

CARD = "README.md"
#: above this many units the card's data_files is a glob (the list would weigh megabytes); the glob also
#: matches files replaced by later versions, which the card then says
LIST_UNITS_UP_TO = 2000
#: where a manifest keeps what the card's flags said
CARD_KEY = "card"


@dataclass
class CardOptions:
    """What a dataset card says that no manifest field knows (recorded in the manifest, shown on the card)."""

    card_license: str = ""
    """The data's licence as the Hugging Face Hub names licences (e.g. cc-by-4.0, mit, other)."""

    card_citation: str = ""
    """How to cite the dataset (BibTeX or a sentence), shown on its card."""

    def to_details(self) -> dict:
        """The manifest provenance section (``details["card"]``); {} when nothing was said."""
        out = {k: v for k, v in (("license", self.card_license), ("citation", self.card_citation)) if v}
        return {CARD_KEY: out} if out else {}


def _size_category(rows: int) -> str:
    """The Hub's size bucket for a row count."""
    edges = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
             (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B")]
    return next((name for edge, name in edges if rows < edge), "n>1B")


def _front_matter(m: Manifest, title: str, card: dict, modality: str) -> dict:
    paths = [u.path for u in m.units] if len(m.units) <= LIST_UNITS_UP_TO else ["data/*.parquet"]
    meta = {"pretty_name": title, "tags": ["actlake", "activations", "interpretability",
                                           *([modality] if modality else [])],
            "size_categories": [_size_category(m.num_rows)],
            "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": paths}]}]}
    if card.get("license"):
        meta = {"license": card["license"], **meta}
    return meta


def _made_by(m: Manifest) -> tuple[str, str, str]:
    """(model line, corpus line, modality) of the card's first paragraph."""
    model = m.provenance.model
    details = m.provenance.details
    config = m.config or {}
    if model is not None:
        rev = f" (revision `{model.revision}`)" if model.revision else ""
        arch = f", {model.architecture}" if model.architecture else ""
        params = f", {model.parameters:,} parameters" if model.parameters else ""
        model_line = f"`{model.name}`{rev}{arch}{params}"
    else:
        model_line = "not recorded"
    corpus = details.get("corpus") or details.get("images") or details.get("source") or {}
    if isinstance(corpus, dict) and corpus:
        src = corpus.get("source") or corpus.get("uri") or corpus.get("path") or "?"
        fp = f", fingerprint `{corpus['fingerprint']}`" if corpus.get("fingerprint") else ""
        n = f", {corpus['examples']:,} examples" if isinstance(corpus.get("examples"), int) else ""
        corpus_line = f"`{redact_uri(str(src))}`{n}{fp}"
    else:
        corpus_line = "not recorded"
    return model_line, corpus_line, str(config.get("modality") or details.get("modality") or "")


def _hook_table(m: Manifest) -> list[str]:
    lines = ["| hook | shape | dtype | encoding | mean ‖x‖ | max \\|x\\| | mean variance |",
             "|---|---|---|---|---|---|---|"]
    for name, spec in m.hooks.items():
        s = m.stats.get(name)
        if s is None or s.nonfinite:
            nums = ["—"] * 3 if s is None else [f"{s.nonfinite:,} non-finite values"] + ["—"] * 2
        else:
            nums = [f"{s.mean_norm:.4g}", f"{s.max_abs:.4g}", f"{s.mean_variance:.4g}"]
        lines.append(f"| `{name}` | {list(spec.shape)} | {spec.dtype} | {spec.encoding} | {' | '.join(nums)} |")
    return lines


def _command(m: Manifest) -> str:
    """The command that made the dataset: the command line recorded at commit time, else the job's settings."""
    details = m.provenance.details
    if details.get("command_line"):
        return str(details["command_line"])
    return "# settings recorded in the manifest's `config`:\n" + json.dumps(redact(m.config or {}), indent=1)[:4000]


def _usage(uri: str, m: Manifest) -> list[str]:
    hook = next(iter(m.hooks), "HOOK")
    spec = m.hooks.get(hook)
    dtype = {"float32": "float32", "bfloat16": "uint16"}.get(spec.dtype if spec else "", "float16")
    files = "data/*.parquet" if len(m.units) > LIST_UNITS_UP_TO else f"{m.units[0].path}" if len(m.units) else ""
    return [
        "## How to open it", "",
        "**actlake** (reads exactly one version and checks what it reads against the manifest):", "", "```python",
        "import shards", f'ds = shards.open_dataset("{uri}")  # version=N for an older one',
        f'for batch in ds.iter_batches("{hook}", batch_size=4096, shuffle=True, seed=0):',
        f'    x = batch["{hook}"]  # float32 torch tensor', "meta = ds.to_pandas()  # the metadata columns",
        "```", "",
        f"**pandas / pyarrow**: tensors are stored as fixed-size binary (`{spec.dtype if spec else ''}` values, "
        "little-endian); decode with numpy:", "", "```python", "import numpy as np, pandas as pd",
        f'df = pd.read_parquet("{files or "data/…parquet"}")',
        _decode_line(hook, spec, dtype), "```", "",
        "**DuckDB** (read the files the card lists: a glob also matches files replaced by later versions):", "",
        "```sql", f"SELECT example_id, count(*) FROM read_parquet('{files or 'data/*.parquet'}') GROUP BY 1;", "```",
        "", "**polars**:", "", "```python", "import polars as pl",
        f'pl.read_parquet("{files or "data/*.parquet"}", columns=["example_id", "position"])', "```", "",
        "**Hugging Face `datasets`** (this card's `configs` name the latest version's files):", "", "```python",
        "import datasets", 'd = datasets.load_dataset("<this folder or Hub repo>", split="train")', "```", "",
        "**Ray Data**:", "", "```python", "import shards",
        f'ray_ds = shards.open_dataset("{uri}").to_ray(["{hook}"])', "```", "",
    ]


def _decode_line(hook: str, spec, dtype: str) -> str:
    if spec is not None and spec.encoding == "list":
        return f'x = np.stack(df["{hook}"].to_numpy())  # stored as fixed-size lists'
    return (f'x = np.frombuffer(b"".join(df["{hook}"]), dtype="{dtype}").reshape(len(df), -1)'
            + ("  # bfloat16: the high 16 bits of float32" if dtype == "uint16" else ""))


def render_card(m: Manifest, uri: str, overrides: CardOptions | None = None) -> str:
    """The card's text for manifest ``m`` of the dataset at ``uri`` (shown without credentials); ``overrides``:
    licence and citation to show instead of the recorded ones."""
    uri = redact_uri(uri)
    card = {**dict(m.provenance.details.get(CARD_KEY) or {}), **(overrides.to_details().get(CARD_KEY, {})
                                                                    if overrides else {})}
    model_line, corpus_line, modality = _made_by(m)
    model_name = m.provenance.model.name if m.provenance.model else "activations"
    title = f"{model_name} activations ({', '.join(list(m.hooks)[:4])}{', …' if len(m.hooks) > 4 else ''})"
    front = yaml.safe_dump(_front_matter(m, title, card, modality), sort_keys=False, allow_unicode=True)
    derived = m.provenance.derived_from
    lines = [
        "---", front.rstrip(), "---", "", f"# {title}", "",
        "An actlake activation dataset: one row per "
        f"{'stimulus' if modality == 'image' else 'token (or pooled example)'} with `example_id`, `position` and "
        "metadata columns, and "
        "one tensor column per hook.", "",
        f"- **Model**: {model_line}", f"- **Corpus**: {corpus_line}",
        f"- **Rows**: {m.num_rows:,} in {len(m.units):,} files ({m.num_bytes:,} bytes)",
        f"- **Version**: {m.version} (format v{m.format_version}), updated {m.updated}; dataset id `{m.dataset_id}`",
    ]
    if derived is not None:
        lines.append(f"- **Copied from**: `{redact_uri(derived.uri)}` (dataset `{derived.dataset_id}`, version "
                     f"{derived.version})")
    if m.provenance.details.get("copy"):
        lines.append(f"- **Selection**: {json.dumps(m.provenance.details['copy'])}")
    lines += ["", "## Hooks", "", *_hook_table(m), "", "## How it was made", "", "```bash", _command(m), "```", "",
              *_usage(uri, m), "## Licence", "", card.get("license") or "Not stated (`actlake card URI --card-license "
              "ID` sets it).", "", "## Citation", ""]
    lines += (["```", card["citation"], "```"] if card.get("citation") else ["Not stated."])
    if len(m.units) > LIST_UNITS_UP_TO:
        lines += ["", f"Note: with {len(m.units):,} files the card's `data_files` is the glob `data/*.parquet`, which "
                  "also matches unit files that later versions replaced; actlake reads exactly the manifest's."]
    return "\n".join(lines) + "\n"


def write_card(storage: Storage, m: Manifest, overrides: CardOptions | None = None) -> str:
    """Render and store the card of ``m`` at ``README.md`` (one PUT); its text."""
    text = render_card(m, storage.display(), overrides)
    storage.put_bytes(CARD, text.encode())
    return text
