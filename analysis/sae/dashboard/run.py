"""``actlake sae dashboard``: one pass collects every latent's statistics and examples, a second pass reads the
activations of each example's context tokens, then the static site is written (``site``)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from analysis.common.cost import CostEstimate, scaled
from analysis.common.inputs import DatasetInput, RunSummary, take_inputs
from analysis.common.rundir import refuse_dataset_place
from analysis.common.runstart import RunKind, run_start
from analysis.common.stream import stream_rows
from analysis.sae.dashboard.collect import (
    LatentCollector,
    LatentTable,
    fitted_hist,
    logit_effects,
    nearest_latents,
)
from analysis.sae.dashboard.site import (
    LATENT_HTML,
    PART,
    LatentPage,
    asset,
    bars_svg,
    index_html,
    index_part,
    latent_data,
)
from analysis.sae.dashboard.views import ImageLookup, ImageView, TextView, pair_rows, picks_for, with_packing
from analysis.sae.io import kept_rows, rows_min_position
from shards.columns import EXAMPLE_ID, PATCH_COL, PATCH_ROW, POSITION, STIMULUS_ID, TOKEN_ID
from shards.config import check_positive, nested, take_credentials
from shards.errors import ActlakeError
from shards.records import JsonRecord
from shards.storage import Storage, StorageOptions

log = logging.getLogger("actlake.sae")


#: (dataset, image source URI, storage options) -> a stimulus id's image
ImageOpener = Callable[..., ImageLookup]


class DashboardError(ActlakeError, ValueError):
    """The dashboard cannot be built as asked."""


@dataclass
class SaeDashboardConfig:
    """Build a static site of an SAE's latents over a dataset: index table, a page per latent."""

    sae: str
    """The SAE (an `actlake sae train` output or a SAELens-layout directory)."""
    data: DatasetInput | None = None
    """The dataset to show the latents on (default: the one the SAE's cfg.json names, at the version it was trained
    on; refused if its URI now holds another dataset); URI@vN reads version N, URI alone its latest."""
    out: str = "runs/dashboard"
    """Where the site goes (a folder or s3:// prefix): index.html, latent.html, latents/N.js, index/, thumbs/."""
    top: int = 10
    """Top-activating examples per latent."""
    context: int = 8
    """Tokens shown on each side of an example's token."""
    explanations: str = ""
    """An `actlake sae explain` output (its explanations, and the scores `sae score` wrote under it: index
    columns and latent pages show them), or a JSON object / JSONL file of explanations by latent id
    ({"latent": 3, "explanation": "..."} rows)."""
    tokenizer: str = ""
    """Tokenizer for readable tokens (a directory or installed model package; default: the dataset's model's)."""
    images: str = ""
    """Image datasets: the image source to take thumbnails from (default: the one the dataset's manifest records;
    an imported dataset has none)."""
    batch_size: int = 4096
    """Rows per encoding batch."""
    min_position: int | None = None
    """Show rows at positions >= P only (default: the SAE's own `sae train --min-position`, the rows it was
    trained on, so that attention-sink rows it never saw are not its top examples; 0: every row)."""
    overwrite: bool = False
    """Replace a different dashboard already at --out (only the files it wrote) instead of refusing."""
    storage: StorageOptions = field(default_factory=StorageOptions)
    """Storage options for the SAE, the dataset and --out."""

    def __post_init__(self) -> None:
        self.storage = nested(self.storage, StorageOptions)
        take_credentials(self, "sae", "out", "explanations", "images")
        take_inputs(self)
        check_positive(self, "top", "batch_size")
        if self.context < 0:
            raise DashboardError(f"--context {self.context}: give 0 or more tokens on each side")
        if self.min_position is not None and self.min_position < 0:
            raise DashboardError(f"--min-position cannot be negative, got {self.min_position}")


#: a rerun of a finished dashboard returns it; settings that do not change the site are out of its fingerprint
KIND = RunKind("sae dashboard", frozenset({"out", "overwrite", "storage", "batch_size"}), lock="dashboard output",
               resume_marker=None)


@dataclass(kw_only=True)
class DashboardSummary(RunSummary, JsonRecord):
    """``summary.json`` of the site: ``dataset`` is the one the latents are shown on."""

    out: str
    latents: int
    rows: int
    dead: int
    seconds: float
    bytes: int


def _encode(sae, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return sae.encode(x.float())


def _kept_batches(ds, hook: str, batch_size: int, min_position: int):
    """(batch, rows kept or None) in row order: rows at positions >= ``min_position`` are kept."""
    for batch in stream_rows(ds, hook, batch_size, columns=[POSITION] if min_position else None):
        yield batch, (kept_rows(batch[POSITION], min_position) if min_position else None)


def _pair_values(sae, ds, hook: str, rows: np.ndarray, lats: np.ndarray, batch_size: int,
                 min_position: int = 0, timed: Callable | None = None) -> dict:
    """{(row, latent): activation} for the pairs, from a second pass over the rows in order (0 at rows below
    ``min_position``, which the SAE does not read: an attention sink shown in a context stays unlit); ``timed``
    wraps the batches where this pass is the one timed."""
    out, start, j = {}, 0, 0
    batches = _kept_batches(ds, hook, batch_size, min_position)
    for batch, keep in timed(batches) if timed is not None else batches:
        stop = start + len(batch["x"])
        k = np.searchsorted(rows, stop, side="left")
        if k > j:
            z = _encode(sae, batch["x"])
            if keep is not None:
                z = z * keep[:, None]
            vals = z[torch.as_tensor(rows[j:k] - start), torch.as_tensor(lats[j:k])].numpy()
            out.update({(int(r), int(la)): float(v) for r, la, v in zip(rows[j:k], lats[j:k], vals, strict=True)})
        j, start = k, stop
    return out


@dataclass
class Explained:
    """``--explanations`` as read: text by latent, and `sae score`'s balanced accuracy by latent and scorer."""

    text: dict[int, str] = field(default_factory=dict)
    scores: dict[int, dict[str, float]] = field(default_factory=dict)
    scorers: list[str] = field(default_factory=list)
    folder: Storage | None = None  #: a `sae explain` output: its kept collection pass may serve the dashboard

    def get(self, latent: int, default: str = "") -> str:
        return self.text.get(latent, default)


def _explained(uri: str, storage, sae) -> Explained:
    """``--explanations``: a `sae explain` output of this SAE (with `sae score`'s scores when they are of these
    explanations) or a file of explanations; refused when the output explains another SAE."""
    if not uri:
        return Explained()
    folder = Storage(uri, storage)
    if not folder.exists("explanations.jsonl"):
        return Explained(_explanations(uri, storage))
    from analysis.interp.files import SCORES, SCORES_DIR, explained_by
    from analysis.sae.dashboard.collect import sae_digest

    try:
        rows, scored = explained_by(folder, sae_digest(sae), "--explanations")
    except ValueError as e:
        raise DashboardError(str(e)) from None
    got = Explained({int(r["latent"]): str(r["explanation"]) for r in rows}, folder=folder)
    if scored is None:
        if folder.exists(f"{SCORES_DIR}/summary.json"):
            log.warning("--explanations %s: its scores are of earlier explanations: rerun `actlake sae score` to "
                        "show scores", folder.display())
        return got
    for line in folder.child(SCORES_DIR).get_bytes(SCORES).decode().splitlines():
        r = json.loads(line)
        if r["accuracy"] is not None:
            name = r["scorer"] + ("" if r["explanation"] == "own" else " random")
            got.scores.setdefault(int(r["latent"]), {})[name] = float(r["accuracy"])
    got.scorers = sorted({k for v in got.scores.values() for k in v if " " not in k})
    return got


def _explanations(uri: str, storage) -> dict[int, str]:
    """``--explanations``, read before any pass over the data: a missing or malformed file is refused first."""
    if not uri:
        return {}
    st, name = Storage.for_file(uri, storage)
    try:
        text = st.get_bytes(name).decode()
        if name.endswith(".jsonl"):
            return {int(r["latent"]): str(r["explanation"])
                    for r in map(json.loads, filter(str.strip, text.splitlines()))}
        return {int(k): str(v) for k, v in json.loads(text).items()}
    except FileNotFoundError:
        raise DashboardError(f"--explanations {uri}: no such file") from None
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise DashboardError(f"--explanations {uri}: not a JSON object by latent id nor JSON lines of "
                             f'{{"latent": N, "explanation": "..."}} ({type(e).__name__}: {e})') from None


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


def _check(cfg: SaeDashboardConfig, sae, hook: str | None, ds) -> None:
    """The SAE against the pinned dataset (rows it reads, its hook, its width), before anything is written."""
    from analysis.sae.io import SaeRowsError, require_kept_rows

    try:
        require_kept_rows(ds, rows_min_position(sae, cfg.min_position))
    except SaeRowsError as exc:
        raise DashboardError(str(exc)) from None
    if hook not in ds.hooks:
        raise DashboardError(f"the SAE was trained on hook {hook!r}, which {ds.storage.display()} does not have "
                             f"({ds.hooks}); pass the dataset it was trained on with --data")
    if ds.hook_spec(hook).numel != sae.d_in:
        raise DashboardError(f"the SAE takes {sae.d_in} values per row, {hook!r} of {ds.storage.display()} has "
                             f"{ds.hook_spec(hook).numel}")


def _logits(sae, ds, n: int = 10):
    from shards.unembed import UNEMBED, Unembed

    if UNEMBED not in ds.manifest.artifacts:
        return None
    ids_up, up, ids_down, down = logit_effects(sae.W_dec, Unembed.from_bytes(ds.read_artifact(UNEMBED, "")), n)
    return ids_up, up, ids_down, down


def _writable(cfg: SaeDashboardConfig) -> Storage:
    """The site's folder, written to once now (its stylesheet): an unwritable --out fails before the passes."""
    out = Storage(cfg.out, cfg.storage)
    try:
        out.put_bytes("style.css", asset("style.css").encode())
    except OSError as e:
        raise DashboardError(f"cannot write the dashboard to --out {out.display()} ({e}); choose a folder or "
                             "s3:// prefix you can write to") from None
    return out


def _text_view(cfg: SaeDashboardConfig, ds, open_images) -> TextView:
    meta = ds.metadata_table([EXAMPLE_ID, TOKEN_ID])
    if meta.column(TOKEN_ID).null_count == len(meta):
        raise DashboardError(f"{ds.storage.display()} holds no token rows (token_id is null: rows pooled per "
                             "example, or imported features); a dashboard of text shows tokens in context: extract "
                             "with --pool none")
    return with_packing(TextView(meta.column(EXAMPLE_ID).to_numpy(), meta.column(TOKEN_ID).to_numpy(),
                                 _Tokens(ds, cfg.tokenizer), cfg.context), ds)


def _image_view(cfg: SaeDashboardConfig, ds, open_images) -> ImageView:
    patches = PATCH_ROW in ds.columns
    meta = ds.metadata_table([EXAMPLE_ID, STIMULUS_ID, *([PATCH_ROW, PATCH_COL] if patches else [])])
    sid = meta.column(STIMULUS_ID).to_numpy(zero_copy_only=False)
    source = cfg.images or ((ds.manifest.provenance.details.get("images") or {}).get("source") or "")
    if open_images is None or not source:
        raise DashboardError(f"{ds.storage.display()} records no image source to take thumbnails from (an "
                             "imported dataset); pass --images FOLDER_OR_TABLE with the stimuli")
    lookup = open_images(ds, source, cfg.storage)
    try:
        lookup(str(sid[0]))  # a source without these stimuli fails now, before the passes over the data
    except (KeyError, OSError, ValueError) as e:
        raise DashboardError(f"stimulus {sid[0]!r} cannot be read from {source!r} ({type(e).__name__}: {e}); "
                             "pass --images with the source the dataset was extracted from") from None
    col = (lambda c: meta.column(c).to_numpy()) if patches else (lambda c: None)  # noqa: E731
    return ImageView(meta.column(EXAMPLE_ID).to_numpy(), sid, lookup, col(PATCH_ROW), col(PATCH_COL))


#: how a latent page shows a row, by the column that marks the dataset's kind (the first present wins; every
#: dataset has token_id)
VIEWS = {STIMULUS_ID: _image_view, TOKEN_ID: _text_view}


def run(cfg: SaeDashboardConfig, open_images: ImageOpener | None = None) -> DashboardSummary:
    """Collect, read the shown rows' activations, write the site. ``open_images`` gives the thumbnails of image
    datasets (the CLI passes the image sources of ``ingest``, which ``analysis`` does not import)."""
    from analysis.sae.io import load_sae, sae_source, trained_on

    t0 = time.perf_counter()
    sae = load_sae(cfg.sae, cfg.storage).eval()
    record = trained_on(sae)
    if cfg.data is None and record.data is None:
        raise DashboardError(f"{sae_source(cfg.sae, cfg.storage)} does not name its dataset; pass --data")
    checked: dict = {}

    def check(inputs: dict) -> None:  # every refusal before the site's folder is made
        ds = inputs["data"]
        _check(cfg, sae, record.hook, ds)
        checked["expl"] = _explained(cfg.explanations, cfg.storage, sae)
        checked["view"] = next(make(cfg, ds, open_images) for col, make in VIEWS.items() if col in ds.columns)
        refuse_dataset_place(Storage(cfg.out, cfg.storage))
        _writable(cfg)

    # the SAE's dataset at the version it was trained on, unless --data says otherwise
    with run_start(cfg, KIND, defaults=record.defaults(sae_source(cfg.sae, cfg.storage)), check=check) as run:
        if run.state == "done":
            return DashboardSummary.from_json(run.rundir.summary())
        run.hooks = [record.hook]
        run.begin(cfg)
        summary = _build(cfg, sae, record.hook, run, checked["view"], checked["expl"])
        summary.seconds = round(time.perf_counter() - t0, 2)
        run.rundir.finish(summary.to_json())
    index = Storage(cfg.out, cfg.storage).display("index.html")
    log.info("dashboard of %d latents (%d never fire): open %s", summary.latents, summary.dead,
             index if "://" in index else f"file://{os.path.abspath(index)}")
    return summary


def _build(cfg: SaeDashboardConfig, sae, hook: str, run, view, expl: Explained) -> DashboardSummary:
    """The two passes over the pinned dataset and the site."""
    ds, out = run.ds, Storage(cfg.out, cfg.storage)
    min_position = rows_min_position(sae, cfg.min_position)  # the rows the SAE was trained on, unless overridden
    table = _kept_table(expl, sae, ds, hook, min_position, cfg.top * view.collect_factor)
    clock = _PassClock(ds.num_rows, sae, reused=expl.folder.display() if table is not None else "")
    if table is None:
        collector = LatentCollector(sae.d_sae, cfg.top * view.collect_factor)
        for batch, keep in clock.timed(_kept_batches(ds, hook, cfg.batch_size, min_position)):
            z = _encode(sae, batch["x"])
            with clock.collecting():
                collector.add(z, keep)
        table = collector.table()
    picks = {lat: picks_for(view, table, lat, cfg.top) for lat in range(sae.d_sae)}
    values = _pair_values(sae, ds, hook, *pair_rows(view, picks), cfg.batch_size, min_position,
                          timed=clock.timed if clock.passes == 1 else None)
    cost = clock.record()
    pages = _pages(cfg, sae, ds, table, picks, values, view, expl)
    size = _write(out, cfg, hook, ds, table, pages, view, min_position, expl.scorers)
    return DashboardSummary(**run.recorded(), out=out.display(), latents=sae.d_sae, rows=table.rows,
                            dead=int((table.fires == 0).sum()), seconds=0.0, bytes=size, cost=cost)


class _PassClock:
    """The passes' cost, from their own first rows as they stream (no separate sample: the rows timed are rows
    the pass needs anyway): after one untimed warm-up batch (opening files, first calls), 1/20 of the rows (at
    least 4,000, at most 50,000) are timed, the estimate scaled to every row and logged, and once the passes are
    done ``record`` puts it beside their measured time. The second pass reads and encodes like the first but
    collects nothing, so the time spent collecting is timed apart and left out of its share."""

    def __init__(self, rows: int, sae, reused: str = "") -> None:
        self.rows, self.passes = rows, 1 if reused else 2
        self.want = min(rows, max(4000, min(50_000, rows // 20)))
        self.work = (f"{rows:,} rows × {sae.d_in} → {sae.d_sae:,} latents, {self.passes} pass"
                     + ("es" if self.passes == 2 else f" (the collection pass of {reused} reused)"))
        self.spent_collecting, self.estimate, self.t0 = 0.0, None, time.perf_counter()

    @contextlib.contextmanager
    def collecting(self):
        t = time.perf_counter()
        try:
            yield
        finally:
            self.spent_collecting += time.perf_counter() - t

    def timed(self, batches):
        """``batches`` (``(batch, keep)``) passed through, the first rows timed; the estimate is logged as soon as
        the sample is done (at the end, for a dataset smaller than a sample)."""
        n, t_start, c_start, warm = 0, time.perf_counter(), self.spent_collecting, None
        for item in batches:
            yield item
            n += len(item[0]["x"])
            if warm is None:  # the warm-up batch is done: the sample starts with the next read
                warm = (n, time.perf_counter() - t_start, self.spent_collecting - c_start)
                n, t_start, c_start = 0, time.perf_counter(), self.spent_collecting
            elif self.estimate is None and n >= self.want:
                self._estimate(n, time.perf_counter() - t_start, self.spent_collecting - c_start)
        if self.estimate is None:  # fewer rows than a sample: what was read is the sample (one batch: untimed)
            late = (n, time.perf_counter() - t_start, self.spent_collecting - c_start)
            self._estimate(*(late if n or warm is None else warm))

    def _estimate(self, n: int, seconds: float, collecting: float) -> None:
        per_pass, basis = scaled(seconds, n, self.rows)
        if self.passes == 2:
            # the second pass reads and encodes as the first does, without collecting
            parts = {"collect": per_pass, "contexts": max(seconds - collecting, 0.0) * self.rows / max(n, 1)}
            basis += f"; {collecting:.1f} s of it collecting, which the second pass does not do"
        else:
            parts = {"contexts": per_pass}
            basis = basis.replace("timed sample", "timed sample of that pass", 1)
        self.estimate = CostEstimate(self.work, sum(parts.values()), basis, parts)
        log.info("%s", self.estimate.line())

    def record(self) -> dict:
        """The estimate beside the passes' measured time (``summary.json``'s ``cost``)."""
        seconds = time.perf_counter() - self.t0
        if self.estimate is None:
            return {}
        log.info("the passes took %.0f s (estimated %.0f s)", seconds, self.estimate.seconds)
        return self.estimate.record(seconds)


def _kept_table(expl: Explained, sae, ds, hook: str, min_position: int, n_top: int) -> LatentTable | None:
    """The collection pass `sae explain` kept, when it was made by this SAE over these rows (one pass serves
    both); None otherwise."""
    if expl.folder is None:
        return None
    from analysis.interp.files import read_kept_table, table_info
    from analysis.sae.dashboard.collect import sae_digest

    want = table_info(ds, hook, min_position, n_top, sae_digest(sae), seed=0)
    want.pop("seed")  # any seed: the bin samples of another seed are as uniform
    table = read_kept_table(expl.folder, want)
    if table is not None:
        log.info("dashboard: the collection pass of %s serves this dashboard (same SAE, rows and dataset "
                 "version)", expl.folder.display())
    return table


def _pages(cfg, sae, ds, table: LatentTable, picks, values, view, expl: Explained) -> list[LatentPage]:
    near_ids, near_cos = nearest_latents(sae.W_dec)
    logits = _logits(sae, ds)
    tokens = view.tokens if isinstance(view, TextView) else _Tokens(ds, cfg.tokenizer) if logits is not None else None
    pages = []
    for lat in range(sae.d_sae):
        n_top = sum(1 for label, _ in picks[lat] if label.startswith("#"))
        hist, edges = fitted_hist(table.hist[lat])
        page = LatentPage(latent=lat, frequency=float(table.frequency[lat]), max_act=float(table.max_act[lat]),
                          mean_act=float(table.mean_act[lat]), hist=hist, edges=edges,
                          nearest=list(zip(near_ids[lat].tolist(), near_cos[lat].tolist(), strict=True)),
                          explanation=expl.get(lat, ""), scores=expl.scores.get(lat, {}))
        view.fill(page, picks[lat], values, n_top)
        if logits is not None:
            ids_up, up, ids_down, down = logits
            page.promoted = [(tokens(int(i)), float(v)) for i, v in zip(ids_up[lat], up[lat], strict=True)]
            page.suppressed = [(tokens(int(i)), float(v)) for i, v in zip(ids_down[lat], down[lat], strict=True)]
        pages.append(page)
    return pages


def _write(out: Storage, cfg, hook: str, ds, table: LatentTable, pages: list[LatentPage], view,
           min_position: int = 0, scorers: list[str] | None = None) -> int:
    """Thumbnails, one data file per latent, the index in parts, the shared pages and assets; returns bytes."""
    files: dict[str, bytes] = {}
    size = view.write(out.put_bytes)
    for p in pages:
        data = latent_data(p).encode()
        out.put_bytes(f"latents/{p.latent}.js", data)
        size += len(data)
    scorers = scorers or []
    columns = ["latent", "frequency", "max", "mean", "l0_share", "explanation", *scorers, view.terms_label]
    # a latent's share of the SAE's mean L0: its firing frequency over the sum of all frequencies (summed over
    # latents, the frequencies are the mean number of active latents per row)
    l0 = float(sum(p.frequency for p in pages)) or 1.0
    rows = [[p.latent, round(p.frequency, 6), round(p.max_act, 4), round(p.mean_act, 4),
             round(p.frequency / l0, 6), p.explanation,
             *[round(p.scores[s], 4) if s in p.scores else None for s in scorers], view.terms(p)] for p in pages]
    parts = [rows[i:i + PART] for i in range(0, len(rows), PART)] or [[]]
    for k, part in enumerate(parts):
        files[f"index/part-{k}.js"] = index_part(columns, part).encode()
    freq = table.frequency
    alive = np.log10(freq[freq > 0]) if (freq > 0).any() else np.zeros(0)
    counts, bins = np.histogram(alive, bins=40) if len(alive) else (np.zeros(1), np.array([0.0, 1.0]))
    density = bars_svg(counts, (f"{10 ** bins[0]:.2g}", f"{10 ** bins[-1]:.2g}"),
                       ("firing frequency (fraction of rows, log scale)", "latents"))
    kept = f" at positions >= {min_position} (the rows the SAE reads)" if min_position else ""
    explained = sum(1 for p in pages if p.explanation)
    notes = (f"SAE {cfg.sae} on hook {hook} of {ds.storage.display()} (dataset {ds.dataset_id}, version "
             f"{ds.version}); {table.rows} rows{kept}; {int((freq == 0).sum())} latents never fired"
             + (f"; {explained} explained: sort by explanation or a score, or search, to list them"
                if explained and len(pages) > 1000 else ""))
    files["index.html"] = index_html(f"Latents of {cfg.sae}", columns, len(parts), density, notes).encode()
    files["latent.html"] = LATENT_HTML.encode()
    for name in ("index.js", "latent.js"):  # style.css went first (_writable)
        files[name] = asset(name).encode()
    for name, data in files.items():
        out.put_bytes(name, data)
    return size + sum(map(len, files.values()))


CONFIG = SaeDashboardConfig
