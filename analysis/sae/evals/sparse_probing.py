"""``sparse_probing``: can a handful of latents tell a label's classes apart (SAEBench's sparse probing)?

Items are examples: each example's rows (positions >= 1 when the dataset has them: the first token is an
attention sink / [CLS] in most models) are mean-pooled, for the raw activations and for the SAE's latents (encoded
row by row, then pooled, as SAEBench pools). For each label column and each of its most frequent classes, a
balanced one-vs-rest task (every positive, as many seeded negatives) is scored by 5-fold cross-validation grouped
by text (copies of a text never straddle train and test; ``actlake probe``'s grouping). In each fold the top-k
latents by mean difference (positive minus negative, on the training fold only) feed a logistic probe
(scikit-learn, standardised features) for k = 1, 2, 5, 10, 20; the same probe on the raw pooled activations is
the baseline.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from analysis.sae.evals.registry import EvalInputError, EvalInputs, EvalMetric, EvalOutcome, register
from analysis.sae.split import example_texts
from shards.columns import EXAMPLE_ID, POSITION
from shards.schema import FIXED_COLUMNS

KS = (1, 2, 5, 10, 20)
FOLDS = 5
MAX_CLASSES = 8  #: per label column, the most frequent classes
MIN_POSITIVES = 20
MAX_EXAMPLES = 4000


def label_columns(meta: pa.Table, wanted: list[str]) -> list[str]:
    """``wanted``, or every metadata column that is constant within an example and has 2 .. n/5 classes."""
    if wanted:
        missing = [c for c in wanted if c not in meta.column_names]
        if missing:
            raise EvalInputError(f"--labels {missing}: no such metadata column; the dataset has "
                                 f"{[c for c in meta.column_names if c not in FIXED_COLUMNS]}")
        return wanted
    out, ids = [], meta.column(EXAMPLE_ID).to_numpy()
    n_ex = len(np.unique(ids))
    for name in meta.column_names:
        if name in FIXED_COLUMNS:
            continue
        col = meta.column(name)
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type) or pa.types.is_integer(col.type)
                or pa.types.is_boolean(col.type)):
            continue
        pairs = pa.table({"e": ids, "v": col}).group_by("e").aggregate([("v", "count_distinct")])
        classes = len(col.unique())
        if pairs.column("v_count_distinct").to_numpy().max(initial=0) <= 1 and 2 <= classes <= max(2, n_ex // 5):
            out.append(name)
    return out


def pooled(inputs: EvalInputs, examples: np.ndarray, batch_size: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """(raw, latent) mean over each example's rows, in ``examples``' order."""
    meta = inputs.meta
    ids = meta.column(EXAMPLE_ID).to_numpy()
    pos = meta.column(POSITION).fill_null(-1).to_numpy()
    mask = np.isin(ids, examples)
    if inputs.min_position:  # the rows the SAE reads
        mask &= pos >= inputs.min_position
    elif (pos[mask] >= 1).any():  # token rows: each example's first token (BOS, attention sink) left out
        mask &= pos >= 1
    rows = np.nonzero(mask)[0]
    slot = np.searchsorted(examples, ids[rows])
    sum_x, sum_z = None, torch.zeros((len(examples), inputs.sae.d_sae), dtype=torch.float64)
    count = np.bincount(slot, minlength=len(examples))
    with torch.no_grad():
        for i in range(0, len(rows), batch_size):
            x = inputs.read(rows[i:i + batch_size], [])["x"]
            s = torch.from_numpy(slot[i:i + batch_size])
            if sum_x is None:
                sum_x = torch.zeros((len(examples), x.shape[1]), dtype=torch.float64)
            sum_x.index_add_(0, s, x.double())
            sum_z.index_add_(0, s, inputs.sae.encode(x).double())
    sum_x, sum_z = sum_x.numpy(), sum_z.numpy()
    c = np.maximum(count, 1)[:, None]
    return sum_x / c, sum_z / c


def fold_scores(xr: np.ndarray, z: np.ndarray, y: np.ndarray, groups: np.ndarray, seed: int
                ) -> tuple[dict[int, float], float]:
    """Mean test accuracy over grouped, stratified folds: per k of the top-k-latent probe, and of the raw probe."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def probe(a_tr, y_tr, a_te, y_te) -> float:
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        return float(model.fit(a_tr, y_tr).score(a_te, y_te))

    acc: dict[int, list[float]] = {k: [] for k in KS}
    raw = []
    for tr, te in StratifiedGroupKFold(FOLDS, shuffle=True, random_state=seed).split(xr, y, groups):
        diff = z[tr][y[tr] == 1].mean(0) - z[tr][y[tr] == 0].mean(0)
        order = np.argsort(-diff, kind="stable")
        for k in KS:
            top = order[:k]
            acc[k].append(probe(z[tr][:, top], y[tr], z[te][:, top], y[te]))
        raw.append(probe(xr[tr], y[tr], xr[te], y[te]))
    return {k: float(np.mean(v)) for k, v in acc.items()}, float(np.mean(raw))


def tasks(meta: pa.Table, columns: list[str], examples: np.ndarray, seed: int) -> list[tuple[str, str, np.ndarray]]:
    """(column, class, balanced item indices into ``examples`` with the positives first) per task."""
    first = np.unique(meta.column(EXAMPLE_ID).to_numpy(), return_index=True)[1]
    rng = np.random.default_rng(seed)
    out = []
    for col in columns:
        values = np.asarray(meta.column(col).take(pa.array(first)).to_pylist(), dtype=object)
        names, counts = np.unique(values.astype(str), return_counts=True)
        for cls in names[np.argsort(-counts, kind="stable")][:MAX_CLASSES]:
            pos = np.nonzero(values.astype(str) == cls)[0]
            neg = np.nonzero(values.astype(str) != cls)[0]
            if len(pos) < MIN_POSITIVES or len(neg) < MIN_POSITIVES:
                continue
            n = min(len(pos), len(neg))
            out.append((col, str(cls), np.concatenate([rng.choice(pos, n, replace=False),
                                                         rng.choice(neg, n, replace=False)])))
    return out


def chosen_examples(inputs: EvalInputs) -> tuple[np.ndarray, pa.Table]:
    """The examples it probes (at most ``MAX_EXAMPLES``, a seeded sample) and their rows of the metadata."""
    meta = inputs.meta
    examples = np.unique(meta.column(EXAMPLE_ID).to_numpy())
    if len(examples) > MAX_EXAMPLES:
        examples = np.sort(np.random.default_rng(inputs.seed).choice(examples, MAX_EXAMPLES, replace=False))
    return examples, meta.filter(pa.array(np.isin(meta.column(EXAMPLE_ID).to_numpy(), examples)))


def run(inputs: EvalInputs) -> EvalOutcome:
    meta = inputs.meta
    columns = label_columns(meta, inputs.labels)
    if not columns:
        raise EvalInputError("sparse_probing needs a label: a metadata column constant within each example with 2 or "
                             "more classes (name it with --labels); this dataset has none")
    examples, sub = chosen_examples(inputs)
    examples, texts = example_texts(sub)
    groups = np.unique([*texts], return_inverse=True)[1] if texts is not None else np.arange(len(examples))
    inputs.progress(f"sparse probing: pooling {len(examples)} examples")
    xr, z = pooled(inputs, examples)
    rows = []
    for col, cls, items in tasks(sub, columns, examples, inputs.seed):
        y = np.zeros(len(items), dtype=np.int64)
        y[: len(items) // 2] = 1
        acc, raw = fold_scores(xr[items], z[items], y, groups[items], inputs.seed)
        rows += [{"label": col, "class": cls, "k": k, "accuracy": a, "raw_accuracy": raw, "items": len(items)}
                 for k, a in acc.items()]
    if not rows:
        raise EvalInputError(f"no class of {columns} has {MIN_POSITIVES} examples on both sides; sparse probing needs "
                             "more examples per class")
    table = pa.Table.from_pylist(rows)
    by_k = {str(k): float(np.mean([r["accuracy"] for r in rows if r["k"] == k])) for k in KS}
    raw_mean = float(np.mean([r["raw_accuracy"] for r in rows if r["k"] == KS[0]]))
    summary = {"labels": columns, "tasks": len(rows) // len(KS), "examples": len(examples),
               "accuracy_by_k": by_k, "raw_accuracy": raw_mean}
    return EvalOutcome(summary=summary, tables={"sparse_probing.parquet": table},
                       figures={"sparse_probing.png": _figure(by_k, raw_mean, inputs.hook)})


def _figure(by_k: dict[str, float], raw: float, hook: str):
    from analysis.common.plots import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ks = [int(k) for k in by_k]
    ax.plot(ks, list(by_k.values()), marker="o", label="top-k latents")
    ax.axhline(raw, color="k", linestyle="--", label="raw activations")
    ax.axhline(0.5, color="grey", linestyle=":", label="chance")
    ax.set_xscale("log")
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("latents in the probe (k)")
    ax.set_ylabel("balanced test accuracy")
    ax.set_title(f"{hook}: sparse probing")
    ax.legend(frameon=False)
    fig.tight_layout()
    return fig


def _missing(inputs: EvalInputs) -> str | None:
    return None if inputs.labels or label_columns(inputs.meta, []) else "no label column"


def _size(inputs: EvalInputs) -> int:
    """Its work: the items of every task (balanced examples of a class against the rest), each fitted at every k
    in every fold — on a small sample fewer classes have enough examples, so this, not the rows, is what grows."""
    meta = inputs.meta
    columns = label_columns(meta, inputs.labels)
    examples, sub = chosen_examples(inputs)
    return sum(len(items) for _c, _k, items in tasks(sub, columns, examples, inputs.seed))


register(EvalMetric("sparse_probing", run, "top-k latents (by mean difference) in a logistic probe per label class, "
                                           "k = 1..20, vs. the same probe on the raw activations",
                    order=20, missing=_missing, size=_size))
