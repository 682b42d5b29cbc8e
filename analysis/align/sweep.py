"""``actlake align rsa|encode|cka|knn --data 'PREFIX/*'``: one run per dataset the pattern matches (model–brain)
or per pair of them (model–model), each an ordinary run in ``OUT/NAME`` (resumable, with its own report), then
one table and one plot over all: ``sweep.parquet`` (every run's rows with a ``dataset`` column), ``sweep_best``
(the best layer per model and target, with its relative depth) and ``sweep.png`` — the Net2Brain /
platonic-representation comparison of a model zoo."""

from __future__ import annotations

import dataclasses
import fnmatch
import io
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from analysis.common.plots import pyplot
from analysis.common.report_files import REPORT, write_report
from analysis.common.results import Results, run_pages
from shards.errors import ActlakeError
from shards.layout import MANIFEST
from shards.progress import Progress
from shards.records import JsonRecord
from shards.storage import Storage

log = logging.getLogger("actlake.align")
PATTERN_CHARS = "*?["


class SweepError(ActlakeError, ValueError):
    """The pattern matches no dataset, or the sweep is asked for something it cannot do."""


@dataclass(kw_only=True)
class SweepSummary(JsonRecord):
    pattern: str
    command: str
    datasets: list[str]
    runs: list[str]
    best: list[dict] = field(default_factory=list)  #: per model (pair) and target: best hook, depth, score
    out: str = ""


def is_pattern(uri: str | None) -> bool:
    return bool(uri) and any(c in uri.rsplit("/", 1)[-1] for c in PATTERN_CHARS)


def matching_datasets(pattern: str, storage) -> dict[str, str]:
    """{name: uri} of the datasets (folders holding a manifest) whose name matches the pattern's last part."""
    parent, _, leaf = pattern.rstrip("/").rpartition("/")
    st = Storage(parent or ".", storage)
    names = sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in st.ls(""))
    found = {n: f"{parent}/{n}" if parent else n for n in names
             if fnmatch.fnmatchcase(n, leaf) and st.exists(f"{n}/{MANIFEST}")}
    if not found:
        raise SweepError(f"--data {str(pattern)!r} matches no dataset (no folder under {st.display()} named like "
                         f"{leaf!r} holds a {MANIFEST}); list them with `actlake ls {parent or '.'}`")
    return found


def _depths(hooks: list[str]) -> dict[str, float]:
    """Each hook's relative depth in its model (0 first, 1 last), so models of different depths share an axis."""
    return {h: i / max(len(hooks) - 1, 1) for i, h in enumerate(hooks)}


def _rows(out: Results, run_dir: str, hooks_column: str = "hook") -> pa.Table:
    t = pq.read_table(io.BytesIO(out.storage.get_bytes(f"{run_dir}/results.parquet")))
    hooks = list(dict.fromkeys(t.column(hooks_column).to_pylist()))
    return t.append_column("depth", pa.array([_depths(hooks)[h] for h in t.column(hooks_column).to_pylist()]))


def sweep_brain(cfg, run_one: Callable, command: str, group: tuple[str, ...]) -> SweepSummary:
    """Model–brain: ``run_one`` on each matching dataset into ``OUT/NAME``; the best hook per dataset and
    ``group`` (the target: an ROI or RDM set) by the mean score (RSA: the rows over all subjects)."""
    found = matching_datasets(cfg.data, cfg.storage)
    out = Results(cfg.out, cfg.storage)
    parts = []
    _announce(command, [f"{name} × {_hooks(cfg)}" for name in found])
    with Progress(len(found), "run", f"{command} sweep", log) as progress:
        for name, uri in found.items():
            log.info("%s sweep: %s (%d of %d)", command, uri, len(parts) + 1, len(found))
            with run_pages(cfg.run_plots):
                run_one(dataclasses.replace(cfg, data=uri, out=out.display(name)))
            t = _rows(out, name)
            parts.append(t.append_column("dataset", pa.array([name] * len(t))))
            progress.update()
    table = pa.concat_tables(parts, promote_options="permissive")
    out.table("sweep.parquet", table)
    best = _best(table, group)
    out.table("sweep_best.parquet", pa.Table.from_pylist(best))
    first = next(iter(found))  # fixed model RDMs (RSA --baselines) score the same in every run
    baselines = (pq.read_table(io.BytesIO(out.storage.get_bytes(f"{first}/baselines.parquet"))).to_pandas()
                 if out.storage.exists(f"{first}/baselines.parquet") else None)
    _plot(out, table, group, command, baselines)
    summary = SweepSummary(pattern=cfg.data, command=command, datasets=list(found), runs=list(found), best=best,
                           out=out.display())
    _page(out, summary)
    return summary


def _best(table: pa.Table, group: tuple[str, ...]) -> list[dict]:
    df = table.to_pandas()
    if "subject" in df.columns:
        df = df[df.subject == "all"] if (df.subject == "all").any() else df
    keys = ["dataset", *group]
    mean = df.groupby([*keys, "hook", "depth"], sort=False).score.mean().reset_index()
    picks = mean.loc[mean.groupby(keys, sort=False).score.idxmax()]
    return [{k: (float(v) if isinstance(v, np.floating) else v) for k, v in r.items()}
            for r in picks.to_dict("records")]


def _plot(out: Results, table: pa.Table, group: tuple[str, ...], command: str, baselines=None) -> None:
    df = table.to_pandas()
    if "subject" in df.columns and (df.subject == "all").any():
        df = df[df.subject == "all"]
    targets = sorted(df[group[0]].unique()) if group else [None]
    plt = pyplot()
    fig, axes = plt.subplots(1, len(targets), figsize=(7.6 * len(targets), 4), squeeze=False)
    for ax, target in zip(axes[0], targets, strict=True):
        part = df if target is None else df[df[group[0]] == target]
        for name, d in part.groupby("dataset", sort=True):
            curve = d.groupby(["depth", "hook"], sort=True).score.mean().reset_index().sort_values("depth")
            line, = ax.plot(curve.depth, curve.score, "o-", ms=3, label=name)
            top = curve.loc[curve.score.idxmax()]
            ax.plot([top.depth], [top.score], "*", ms=12, color=line.get_color())
        if "noise_ceiling_low" in part.columns and part.noise_ceiling_low.notna().any():
            ax.axhspan(part.noise_ceiling_low.max(), part.noise_ceiling_high.max(), color="0.85", label="noise ceiling")
        if baselines is not None and target is not None:
            for k, b in enumerate(baselines[baselines.target == target].itertuples()):
                ax.axhline(b.score, ls=(0, (4, 2)), lw=1, color=f"C{(k + 4) % 10}",
                           label=f"baseline {b.baseline.split(':', 1)[-1]}")
        ax.set_xlabel("relative depth (hook index / last)")
        ax.set_ylabel("score")
        ax.set_title(str(target) if target is not None else command)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the curves, never over them
    fig.suptitle(f"{command} over {df.dataset.nunique()} datasets (★ best layer)")
    fig.tight_layout()
    out.figure("sweep.png", fig)


def sweep_pairs(cfg, run_one: Callable, command: str) -> SweepSummary:
    """Model–model: ``run_one`` on every pair of matching datasets (``--data`` × ``--data2``, the same hooks
    on both sides unless ``--hooks2``), into ``OUT/A__B``; the best-matching hook pair per pair of datasets."""
    if cfg.data2:
        raise SweepError("a pattern in --data already compares every pair of the datasets it matches; leave out "
                         "--data2")
    found = matching_datasets(cfg.data, cfg.storage)
    if len(found) < 2:
        raise SweepError(f"--data {cfg.data!r} matches one dataset; a model–model sweep needs two or more")
    out = Results(cfg.out, cfg.storage)
    parts, runs = [], []
    pairs = list(itertools.combinations(found.items(), 2))
    _announce(command, [f"{a} × {b} ({_hooks(cfg)} each)" for (a, _), (b, _) in pairs])
    with Progress(len(pairs), "run", f"{command} sweep", log) as progress:
        for (a, ua), (b, ub) in pairs:
            name = f"{a}__{b}"
            with run_pages(cfg.run_plots):
                run_one(dataclasses.replace(cfg, data=ua, data2=ub, hooks2=cfg.hooks2 or cfg.hooks,
                                            out=out.display(name)))
            t = pq.read_table(io.BytesIO(out.storage.get_bytes(f"{name}/results.parquet")))
            t = t.append_column("dataset", pa.array([a] * len(t)))
            parts.append(t.append_column("dataset2", pa.array([b] * len(t))))
            runs.append(name)
            progress.update()
    table = pa.concat_tables(parts, promote_options="permissive")
    out.table("sweep.parquet", table)
    df = table.to_pandas()
    picks = df.loc[df.groupby(["dataset", "dataset2", "method"], sort=False).score.idxmax()]
    best = [{k: (float(v) if isinstance(v, np.floating) else v) for k, v in r.items()}
            for r in picks[["dataset", "dataset2", "method", "hook", "hook2", "score"]].to_dict("records")]
    out.table("sweep_best.parquet", pa.Table.from_pylist(best))
    _matrix(out, list(found), best, command)
    summary = SweepSummary(pattern=cfg.data, command=command, datasets=list(found), runs=runs, best=best,
                           out=out.display())
    _page(out, summary)
    return summary


def _hooks(cfg) -> str:
    hooks = getattr(cfg, "hooks", None) or []
    return f"hooks {','.join(hooks) if isinstance(hooks, list) else hooks}" if hooks else "every hook"


def _announce(command: str, runs: list[str]) -> None:
    """What the sweep will compute, before its first run; its progress (with an ETA) then follows the runs done.
    The runs themselves do not time a sample first (RSA and CKA have no estimate of their own yet)."""
    shown = "; ".join(runs[:6]) + (f"; … {len(runs) - 6} more" if len(runs) > 6 else "")
    log.info("will compute %d run%s of `%s`: %s", len(runs), "" if len(runs) == 1 else "s", command, shown)


def _page(out: Results, summary: SweepSummary) -> None:
    """The sweep's one report.html: its table, best layers and plot, and every run's files linked (each run's
    own page too with --run-plots)."""
    # a run's own page exists when it was drawn (--run-plots when the run was made: a finished run is not redone)
    runs = [f"{r}/{f}" for r in summary.runs for f in ("summary.json", "results.parquet", "run.json", REPORT)
            if f != REPORT or out.storage.exists(f"{r}/{REPORT}")]
    write_report(out.storage, f"{summary.command} sweep", summary.to_json(),
                 ["sweep.parquet", "sweep_best.parquet", "sweep.png", *runs])


def _matrix(out: Results, names: list[str], best: list[dict], command: str) -> None:
    methods = sorted({b["method"] for b in best})
    plt = pyplot()
    fig, axes = plt.subplots(1, len(methods), figsize=(1.2 * len(names) + 3.5, 1.0 * len(names) + 2.5) if
                             len(methods) == 1 else (4.5 * len(methods), 4), squeeze=False)
    idx = {n: i for i, n in enumerate(names)}
    for ax, method in zip(axes[0], methods, strict=True):
        m = np.full((len(names), len(names)), np.nan)
        for b in (b for b in best if b["method"] == method):
            m[idx[b["dataset"]], idx[b["dataset2"]]] = m[idx[b["dataset2"]], idx[b["dataset"]]] = b["score"]
        im = ax.imshow(m, vmin=np.nanmin(m) if np.isfinite(m).any() else 0, cmap="viridis")
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(len(names)), names, fontsize=8)
        for i, j in itertools.product(range(len(names)), repeat=2):
            if np.isfinite(m[i, j]):
                ax.text(j, i, f"{m[i, j]:.3f}", ha="center", va="center", fontsize=8, color="w")
        ax.set_title(f"{method}: best hook pair")
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.suptitle(command)
    fig.tight_layout()
    out.figure("sweep.png", fig)
