"""``actlake sae dashboard``: one pass collects every latent's statistics and examples, a second pass reads the
activations of each example's context tokens, then the static site is written (``site``)."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from analysis.common.stream import stream_rows
from analysis.sae.dashboard.collect import EDGES, LatentCollector, LatentTable, logit_effects, nearest_latents
from analysis.sae.dashboard.site import CSS, Context, LatentPage, bars_svg, index_html, latent_html
from shards.errors import ActlakeError
from shards.records import JsonRecord
from shards.storage import Storage, StorageOptions

log = logging.getLogger("actlake.sae")


class DashboardError(ActlakeError, ValueError):
    """The dashboard cannot be built as asked."""


@dataclass
class SaeDashboardConfig:
    """Build a static site of an SAE's latents over a dataset: index table, a page per latent."""

    sae: str
    """The SAE (an `actlake sae train` output or a SAELens-layout directory)."""
    data: str = ""
    """The dataset to show the latents on (default: the one the SAE's cfg.json names)."""
    out: str = "runs/dashboard"
    """Where the site goes (a folder or s3:// prefix): index.html, latents/N.html, style.css."""
    top: int = 10
    """Top-activating examples per latent."""
    context: int = 8
    """Tokens shown on each side of an example's token."""
    explanations: str = ""
    """A JSON object or JSONL file of explanations by latent id ({"latent": 3, "explanation": "..."} rows)."""
    tokenizer: str = ""
    """Tokenizer for readable tokens (a directory or installed model package; default: the dataset's model's)."""
    batch_size: int = 4096
    """Rows per encoding batch."""
    storage: StorageOptions = field(default_factory=StorageOptions)
    """Storage options for the SAE, the dataset and --out."""


@dataclass(kw_only=True)
class DashboardSummary(JsonRecord):
    out: str
    latents: int
    rows: int
    dead: int
    seconds: float
    bytes: int


def _encode(sae, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return sae.encode(x.float())


def _context_pairs(example_id: np.ndarray, context: int, picks: dict[int, list[tuple[str, int]]]
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(row, latent) pairs whose activation the pages show: every token of each picked row's context."""
    rows, lats = [], []
    n = len(example_id)
    for lat, chosen in picks.items():
        for _label, r in chosen:
            for q in range(max(r - context, 0), min(r + context, n - 1) + 1):
                if example_id[q] == example_id[r]:
                    rows.append(q)
                    lats.append(lat)
    order = np.argsort(np.asarray(rows, dtype=np.int64), kind="stable")
    return np.asarray(rows, dtype=np.int64)[order], np.asarray(lats, dtype=np.int64)[order]


def _pair_values(sae, ds, hook: str, rows: np.ndarray, lats: np.ndarray, batch_size: int) -> dict:
    """{(row, latent): activation} for the pairs, from a second pass over the rows in order."""
    out, start, j = {}, 0, 0
    for batch in stream_rows(ds, hook, batch_size):
        stop = start + len(batch["x"])
        k = np.searchsorted(rows, stop, side="left")
        if k > j:
            z = _encode(sae, batch["x"])
            vals = z[torch.as_tensor(rows[j:k] - start), torch.as_tensor(lats[j:k])].numpy()
            out.update({(int(r), int(la)): float(v) for r, la, v in zip(rows[j:k], lats[j:k], vals, strict=True)})
        j, start = k, stop
    return out


def _explanations(uri: str, storage) -> dict[int, str]:
    if not uri:
        return {}
    parent, _, name = uri.rpartition("/")
    text = Storage(parent or ".", storage).get_bytes(name).decode()
    if name.endswith(".jsonl"):
        return {int(r["latent"]): str(r["explanation"]) for r in map(json.loads, filter(str.strip, text.splitlines()))}
    return {int(k): str(v) for k, v in json.loads(text).items()}


class _Tokens:
    """Token ids as readable text with the dataset's own tokenizer (ids when it does not load offline)."""

    def __init__(self, ds, spec: str = "") -> None:
        from analysis.sae.encode import _tokenizer_for

        self.tok, self.cache = (_tokenizer(spec) if spec else _tokenizer_for(ds)), {}

    def __call__(self, token_id: int) -> str:
        if token_id not in self.cache:
            self.cache[token_id] = self._text(token_id)
        return self.cache[token_id]

    def _text(self, token_id: int) -> str:
        if self.tok is None or token_id < 0:
            return str(token_id)
        raw = self.tok.convert_ids_to_tokens(token_id)
        if raw.startswith("##"):  # a WordPiece continuation joins the previous token
            return raw[2:]
        text = self.tok.convert_tokens_to_string([raw])
        # WordPiece tokens carry no space of their own (byte-level BPE tokens do: "Ġcat" -> " cat")
        return " " + text if hasattr(self.tok, "do_lower_case") and not text[:1].isspace() else text


def _tokenizer(spec: str):
    """A tokenizer from a directory or an installed model package (``--tokenizer``), offline."""
    from transformers import AutoTokenizer

    from shards.modelpaths import resolve_model_path

    return AutoTokenizer.from_pretrained(str(resolve_model_path(spec)), local_files_only=True)


def _open(cfg: SaeDashboardConfig):
    from analysis.sae.io import load_sae
    from shards.reader import open_dataset

    sae = load_sae(cfg.sae, cfg.storage)
    ours = sae.loaded_cfg.get("actlake") or {}
    uri = cfg.data or ours.get("dataset")
    if not uri:
        raise DashboardError(f"the SAE at {cfg.sae} does not name its dataset; pass --data")
    ds = open_dataset(uri, cfg.storage)
    hook = ours.get("hook") or (sae.loaded_cfg.get("metadata") or {}).get("hook_name")
    if hook not in ds.hooks:
        raise DashboardError(f"the SAE was trained on hook {hook!r}, which {ds.storage.display()} does not have "
                             f"({ds.hooks}); pass the dataset it was trained on with --data")
    if ds.hook_spec(hook).numel != sae.d_in:
        raise DashboardError(f"the SAE takes {sae.d_in} values per row, {hook!r} of {ds.storage.display()} has "
                             f"{ds.hook_spec(hook).numel}")
    if "token_id" not in ds.columns:
        raise DashboardError("this first dashboard shows token contexts: the dataset needs a row per token")
    return sae.eval(), ds, hook


def _logits(sae, ds, tokens: _Tokens, n: int = 10):
    from shards.unembed import UNEMBED, Unembed

    if UNEMBED not in ds.manifest.artifacts:
        return None
    ids_up, up, ids_down, down = logit_effects(sae.W_dec, Unembed.from_bytes(ds.read_artifact(UNEMBED, "")), n)
    return ids_up, up, ids_down, down


def run(cfg: SaeDashboardConfig) -> DashboardSummary:
    """Collect, read contexts, write the site."""
    t0 = time.perf_counter()
    sae, ds, hook = _open(cfg)
    out = Storage(cfg.out, cfg.storage)
    out.probe()  # an unwritable --out fails before the passes over the data
    collector = LatentCollector(sae.d_sae, cfg.top)
    for batch in stream_rows(ds, hook, cfg.batch_size):
        collector.add(_encode(sae, batch["x"]))
    table = collector.table()
    meta = ds.metadata_table(["example_id", "token_id"])
    example_id, token_id = meta.column("example_id").to_numpy(), meta.column("token_id").to_numpy()
    picks = {lat: [(f"#{i + 1}", int(r)) for i, r in enumerate(table.top_rows[lat]) if r >= 0]
             + [(f"{band}", r) for band, r in table.quantile_rows(lat)] for lat in range(sae.d_sae)}
    values = _pair_values(sae, ds, hook, *_context_pairs(example_id, cfg.context, picks), cfg.batch_size)
    tokens = _Tokens(ds, cfg.tokenizer)
    pages = _pages(cfg, sae, ds, table, picks, values, example_id, token_id, tokens)
    size = _write(out, cfg, hook, ds, table, pages)
    summary = DashboardSummary(out=out.display(), latents=sae.d_sae, rows=table.rows,
                               dead=int((table.fires == 0).sum()), seconds=round(time.perf_counter() - t0, 2),
                               bytes=size)
    log.info("dashboard: %s", summary.to_json())
    return summary


def _pages(cfg, sae, ds, table: LatentTable, picks, values, example_id, token_id, tokens) -> list[LatentPage]:
    near_ids, near_cos = nearest_latents(sae.W_dec)
    logits = _logits(sae, ds, tokens)
    expl = _explanations(cfg.explanations, cfg.storage)
    pages = []
    for lat in range(sae.d_sae):
        ctxs = []
        for label, r in picks[lat]:
            span = [q for q in range(max(r - cfg.context, 0), min(r + cfg.context, len(example_id) - 1) + 1)
                    if example_id[q] == example_id[r]]
            ctxs.append(Context(label, values[(r, lat)], [tokens(int(token_id[q])) for q in span],
                                [values[(q, lat)] for q in span], span.index(r)))
        n_top = sum(1 for label, _ in picks[lat] if label.startswith("#"))
        page = LatentPage(latent=lat, frequency=float(table.frequency[lat]), max_act=float(table.max_act[lat]),
                          mean_act=float(table.mean_act[lat]), hist=table.hist[lat].tolist(), top=ctxs[:n_top],
                          quantiles=ctxs[n_top:],
                          nearest=list(zip(near_ids[lat].tolist(), near_cos[lat].tolist(), strict=True)),
                          explanation=expl.get(lat, ""))
        if logits is not None:
            ids_up, up, ids_down, down = logits
            page.promoted = [(tokens(int(i)), float(v)) for i, v in zip(ids_up[lat], up[lat], strict=True)]
            page.suppressed = [(tokens(int(i)), float(v)) for i, v in zip(ids_down[lat], down[lat], strict=True)]
        pages.append(page)
    return pages


def _write(out: Storage, cfg, hook: str, ds, table: LatentTable, pages: list[LatentPage]) -> int:
    edges = (f"{EDGES[0]:.0e}", f"{EDGES[-1]:.0e}")
    size = 0
    for p in pages:
        data = latent_html(p, edges).encode()
        out.put_bytes(f"latents/{p.latent}.html", data)
        size += len(data)
    rows = [[p.latent, round(p.frequency, 6), round(p.max_act, 4), round(p.mean_act, 4),
             round(p.frequency * p.mean_act, 6), p.explanation,
             " ".join(t for t, _ in p.promoted[:5]) + " | " + " ".join(
                 sorted({c.tokens[c.own] for c in p.top})[:8])] for p in pages]
    freq = table.frequency
    alive = np.log10(freq[freq > 0]) if (freq > 0).any() else np.zeros(0)
    counts, bins = np.histogram(alive, bins=40) if len(alive) else (np.zeros(1), np.array([0.0, 1.0]))
    density = bars_svg(counts, (f"10^{bins[0]:.1f}", f"10^{bins[-1]:.1f}"))
    notes = (f"SAE {cfg.sae} on hook {hook} of {ds.storage.display()} (dataset {ds.dataset_id}, version "
             f"{ds.version}); {table.rows} rows; {int((freq == 0).sum())} latents never fired")
    index = index_html(f"Latents of {cfg.sae}", ["latent", "frequency", "max", "mean", "l0_share", "explanation",
                                                   "tokens (promoted | top)"], rows, density, notes).encode()
    out.put_bytes("index.html", index)
    out.put_bytes("style.css", CSS.encode())
    return size + len(index) + len(CSS)


CONFIG = SaeDashboardConfig
