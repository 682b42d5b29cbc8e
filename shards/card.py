"""Dataset cards: a ``README.md`` beside ``manifest.json``, written from the manifest when a writer closes.

The layout is the one the Hugging Face Hub reads: YAML front matter (``license``, ``pretty_name``, ``tags``,
``size_categories`` and a ``configs`` entry whose ``data_files`` are the latest version's unit files, so the
Hub's viewer and ``datasets.load_dataset(folder)`` read exactly the committed rows, not replaced files), then
Markdown for people: what made the dataset, its hooks with shapes and statistics, and how to open it with actlake,
pandas, DuckDB, polars, HF ``datasets`` (with a transform that turns the stored bytes into arrays) and Ray Data.
The card is derived data: no version names it, ``verify`` ignores it, and ``actlake card URI`` writes it again.

A card replaces only a card: its front matter opens with ``MARKER`` (cards written before the marker are known by
their ``actlake`` tag and first sentence), so a ``README.md`` of someone's own in the folder is left alone with a
warning, and ``card_destination`` refuses an ``--out`` that is, or lies inside, a dataset's own files. Text taken
from the manifest is shown with its control characters escaped (``shards.printable``) and the recorded command
line is cleaned of secrets again (``shards.invocation.clean_command_line``).
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
from dataclasses import dataclass

import yaml

from shards.errors import ConfigError
from shards.invocation import clean_command_line
from shards.layout import COMMITS_DIR, LOCK, LOG_DIR, MANIFEST
from shards.manifest import Manifest
from shards.printable import printable
from shards.secrets import redact, redact_uri
from shards.storage import Storage

log = logging.getLogger("actlake.card")

CARD = "README.md"
#: above this many units the card's data_files is a glob (the list would weigh megabytes); the glob also
#: matches files replaced by later versions, which the card then says
LIST_UNITS_UP_TO = 2000
#: where a manifest keeps what the card's flags said
CARD_KEY = "card"
#: the first line of every card's front matter: how a card is told from someone's own README.md
MARKER = "# actlake dataset card: written from manifest.json; `actlake card` writes it again"
#: how much of an existing file's beginning tells whether it is a card
_SNIFF_BYTES = 64 << 10


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
        rev = f" (revision `{printable(model.revision)}`)" if model.revision else ""
        arch = f", {printable(model.architecture)}" if model.architecture else ""
        params = f", {model.parameters:,} parameters" if isinstance(model.parameters, int) and model.parameters else ""
        model_line = f"`{printable(model.name)}`{rev}{arch}{params}"
    else:
        model_line = "not recorded"
    corpus = details.get("corpus") or details.get("images") or details.get("source") or {}
    if isinstance(corpus, dict) and corpus:
        src = corpus.get("source") or corpus.get("uri") or corpus.get("path") or "?"
        fp = f", fingerprint `{printable(corpus['fingerprint'])}`" if corpus.get("fingerprint") else ""
        n = f", {corpus['examples']:,} examples" if isinstance(corpus.get("examples"), int) else ""
        corpus_line = f"`{printable(redact_uri(str(src)))}`{n}{fp}"
    else:
        corpus_line = "not recorded"
    return model_line, corpus_line, printable(config.get("modality") or details.get("modality") or "")


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
    if details.get("command_line"):  # cleaned again: one recorded by an older actlake may hold a secret
        return printable(clean_command_line(str(details["command_line"])))
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
        *_hf_recipe(m),
        "**Ray Data**:", "", "```python", "import shards",
        f'ray_ds = shards.open_dataset("{uri}").to_ray(["{hook}"])', "```", "",
    ]


def _hf_recipe(m: Manifest) -> list[str]:
    """The card's Hugging Face ``datasets`` recipe: ``load_dataset`` alone gives each ``binary`` hook as bytes
    (``fixed_size_binary``, bytes again under ``with_format("torch")``), so a transform decodes them with the dtype
    and shape of the hook table; run as written by tests/unit/shards/test_card_hf_recipe.py."""
    first = next(iter(m.hooks), "HOOK")
    lists = [h for h, s in m.hooks.items() if s.encoding == "list"]
    binary = [s for s in m.hooks.values() if s.encoding != "list"]
    hooks = [f"    {json.dumps(h)}: ({json.dumps(s.dtype)}, {list(s.shape)})," for h, s in m.hooks.items()]
    loop = ["def decode(batch):",
            '    """Each hook as a numpy array (rows, *shape) of its dtype; bfloat16 as exact float32."""',
            "    for hook, (dtype, shape) in HOOKS.items():"]
    if lists:  # stored as numbers already: only the dtype and the shape to restore
        loop += [f"        if hook in batch and hook in {json.dumps(sorted(lists))}:  # fixed-size lists",
                 '            batch[hook] = np.asarray(batch[hook], "float32" if dtype == "bfloat16" else dtype)'
                 ".reshape(-1, *shape)"]
    if binary:
        loop += [f"        {'elif' if lists else 'if'} hook in batch:  # fixed-size binary: little-endian values",
                 '            x = np.frombuffer(bytearray(b"".join(batch[hook])), '
                 '"uint16" if dtype == "bfloat16" else dtype)']
        if any(s.dtype == "bfloat16" for s in binary):
            loop += ['            if dtype == "bfloat16":  # numpy has none: a bfloat16 is the high half of a float32',
                     '                x = (x.astype("uint32") << 16).view("float32")']
        loop += ["            batch[hook] = x.reshape(-1, *shape)"]
    return [
        "**Hugging Face `datasets`** (this card's `configs` name the latest version's files). `load_dataset` alone "
        "gives tensors stored as fixed-size binary as bytes, even under `with_format(\"torch\")`; the transform "
        "below makes them arrays of the dtype and shape in the table above (also in each Parquet field's metadata, "
        "`actlake.dtype` and `actlake.shape`):", "", "```python",
        "import datasets, numpy as np", 'd = datasets.load_dataset("<this folder or Hub repo>", split="train")',
        "HOOKS = {  # hook: (dtype, shape of one row)", *hooks, "}", "", *loop, "    return batch", "",
        f"d = d.with_transform(decode)  # decoded as rows are read: d[:8][{json.dumps(first)}] is an array of shape "
        f"{(8, *(m.hooks[first].shape if m.hooks else ()))}", "# torch.utils.data.DataLoader(d, batch_size=...) stacks "
        "the arrays into tensors",
        "```", "",
        "(`shards.open_dataset(URI).to_hf()` instead builds an in-memory `datasets.Dataset` with each hook as "
        "fixed-length lists of numbers, one row flattened: `.with_format(\"numpy\")` gives arrays of shape "
        "(rows, values per row).)", "",
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
    card = redact({**dict(m.provenance.details.get(CARD_KEY) or {}), **(overrides.to_details().get(CARD_KEY, {})
                                                                           if overrides else {})})  # as recorded
    model_line, corpus_line, modality = _made_by(m)
    model_name = printable(m.provenance.model.name) if m.provenance.model else "activations"
    title = f"{model_name} activations ({', '.join(list(m.hooks)[:4])}{', …' if len(m.hooks) > 4 else ''})"
    front = yaml.safe_dump(_front_matter(m, title, card, modality), sort_keys=False, allow_unicode=True)
    derived = m.provenance.derived_from
    lines = [
        "---", MARKER, front.rstrip(), "---", "", f"# {title}", "",
        "An actlake activation dataset: one row per "
        f"{'stimulus' if modality == 'image' else 'token (or pooled example)'} with `example_id`, `position` and "
        "metadata columns, and "
        "one tensor column per hook.", "",
        f"- **Model**: {model_line}", f"- **Corpus**: {corpus_line}",
        f"- **Rows**: {m.num_rows:,} in {len(m.units):,} files ({m.num_bytes:,} bytes)",
        f"- **Version**: {m.version} (format v{m.format_version}), updated {printable(m.updated)}; dataset id "
        f"`{printable(m.dataset_id)}`",
    ]
    if derived is not None:
        lines.append(f"- **Copied from**: `{printable(redact_uri(derived.uri))}` (dataset "
                     f"`{printable(derived.dataset_id)}`, version {printable(derived.version)})")
    if m.provenance.details.get("copy"):
        lines.append(f"- **Selection**: {json.dumps(m.provenance.details['copy'])}")
    licence = printable(card.get("license") or "") or "Not stated (`actlake card URI --card-license ID` sets it)."
    lines += ["", "## Hooks", "", *_hook_table(m), "", "## How it was made", "", "```bash", _command(m), "```", "",
              *_usage(uri, m), "## Licence", "", licence, "", "## Citation", ""]
    lines += (["```", card["citation"], "```"] if card.get("citation") else ["Not stated."])
    if len(m.units) > LIST_UNITS_UP_TO:
        lines += ["", f"Note: with {len(m.units):,} files the card's `data_files` is the glob `data/*.parquet`, which "
                  "also matches unit files that later versions replaced; actlake reads exactly the manifest's."]
    return printable("\n".join(lines) + "\n", keep_newlines=True)  # what the fields above did not escape


def is_card(text: str) -> bool:
    """Whether ``text`` (a file's beginning) is a card actlake wrote: its front matter opens with ``MARKER``, or (a
    card written before the marker) its front matter is tagged ``actlake`` and its body opens as a card's does."""
    if not text.startswith("---\n"):
        return False
    head, sep, body = text[4:].partition("\n---\n")
    if not sep:
        return False
    if head.startswith(MARKER):
        return True
    try:
        meta = yaml.safe_load(head)
    except yaml.YAMLError:
        return False
    tags = meta.get("tags") if isinstance(meta, dict) else None
    return isinstance(tags, list) and "actlake" in tags and "An actlake activation dataset" in body


def card_conflict(storage: Storage, rel: str = CARD) -> str:
    """Why the file ``rel`` of ``storage`` may not be replaced by a card ('' when it is absent or a card)."""
    try:
        head = storage.get_bytes(rel)[:_SNIFF_BYTES]  # a README is small (s3fs refuses some ranged reads on moto)
    except FileNotFoundError:
        return ""
    if is_card(head.decode("utf-8", errors="replace")):
        return ""
    return (f"{storage.display(rel)} is not a dataset card actlake wrote (its front matter lacks the card's "
            "marker) and may be someone's own file: it was left alone")


def write_card(storage: Storage, m: Manifest, overrides: CardOptions | None = None) -> str | None:
    """Render and store the card of ``m`` at ``README.md`` (one PUT); its text. A ``README.md`` that is not a card
    (``card_conflict``) is left alone with a warning saying so, and None is returned."""
    conflict = card_conflict(storage)
    if conflict:
        log.warning("%s. `actlake card %s --out FILE` writes the card elsewhere.", conflict, storage.display())
        return None
    text = render_card(m, storage.display(), overrides)
    storage.put_bytes(CARD, text.encode())
    return text


def _parents(uri: str) -> list[str]:
    """The folders above ``uri`` (a path or an fsspec URI), nearest first, up to the root or the bucket; a local
    path resolved first (``..``, symbolic links), as the file system will resolve it."""
    uri = uri.removeprefix("file://")
    scheme, sep, path = uri.partition("://")
    if not sep:
        path = os.path.realpath(uri)
    parts = [p for p in path.split("/") if p]
    keep = 1 if sep else 0  # a bucket (or a host) is the top of a URI
    joined = ["/".join(parts[:n]) for n in range(len(parts) - 1, keep - 1, -1)]
    return [f"{scheme}://{j}" if sep else "/" + j for j in joined]


def _holds_dataset(storage: Storage) -> bool:
    """A dataset's root: its manifest, or (one not yet or no longer readable) its log or commit records."""
    return any(storage.exists(rel) for rel in (MANIFEST, LOG_DIR, COMMITS_DIR))


def _own_card(where: str, folder: Storage, dataset: Storage | None) -> None:
    """Refuse ``--out FOLDER/README.md`` when FOLDER is a dataset other than ``dataset`` (the one being carded)."""
    from shards.locations import overlap

    if dataset is not None and overlap(folder, dataset) != "same":
        raise ConfigError(f"--out {where} is the card of another dataset, {folder.display()}: a card describes "
                          f"only its own dataset. Run `actlake card {folder.display()}` to renew that card, or give "
                          f"a file outside any dataset (e.g. card.md), or {dataset.display(CARD)}.")


def card_destination(out: Storage, dataset: Storage | None = None) -> None:
    """Refuse, before anything is written, an ``--out`` for a card that would replace a dataset's own file
    (``manifest.json``, anything under ``_log/``, ``_checkpoints/``, ``_commits/``, ``data/``, ``stats/``), a folder,
    or a file that is not a card. The one file of a dataset a card may take is its ``README.md``, if that is one,
    and only the card of that dataset itself (``dataset``, the one being carded): another dataset's README.md
    would then describe files it does not hold (its Hub copy would no longer load)."""
    out.require_writable("writing a card")
    where = out.display()
    if posixpath.basename(out.uri.rstrip("/")) in (MANIFEST, LOCK) or _holds_dataset(out):
        raise ConfigError(f"--out {where} is a dataset's own file or folder: a card never replaces one. Give a "
                          "file outside the dataset (e.g. card.md), or leave --out out to write DATASET/README.md.")
    if out.is_dir(""):
        raise ConfigError(f"--out {where} is a folder: give the card's file, e.g. {out.display(CARD)}")
    parents = _parents(out.uri)
    for parent in parents:
        folder = Storage(parent, out.storage_options)
        if not _holds_dataset(folder):
            continue
        if parent == parents[0] and posixpath.basename(out.uri.rstrip("/")) == CARD:
            _own_card(where, folder, dataset)
            break  # the dataset's own card: replaced below only if it is one
        raise ConfigError(f"--out {where} lies inside the dataset {folder.display()}: a card never replaces a "
                          f"dataset's files. Give a file outside it, or {folder.display(CARD)}.")
    conflict = card_conflict(out, "")
    if conflict:
        raise ConfigError(f"--out {conflict.removesuffix(': it was left alone')}: a card replaces only a card. "
                          "Choose another --out FILE, or --print.")
