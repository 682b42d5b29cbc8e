"""What a probe job predicts, decided once on the driver: which rows (or pooled examples) are items, their labels,
groups, folds and control targets. Every hook's task receives this plan and only reads its own hook."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from analysis.common.join import join_rows
from analysis.common.tables import read_table
from shards.columns import EXAMPLE_ID, POSITION, TOKEN_ID
from shards.errors import ActlakeError
from shards.reader import Dataset

if TYPE_CHECKING:
    from analysis.probe.config import ProbeConfig

log = logging.getLogger("actlake.probe")
MAX_INT_CLASSES = 50  #: an integer label with at most this many values is classified under --task auto


class ProbeInputError(ActlakeError, ValueError):
    """The labels, groups or folds do not allow the probe as asked."""


@dataclass(kw_only=True)
class ProbePlan:
    """Items and targets of one probe job (small: a few numbers per item)."""

    task: Literal["classify", "regress"]
    label: str
    rows: np.ndarray  #: dataset rows read, sorted
    item_of_row: np.ndarray  #: for each of ``rows`` the item it belongs to
    n_items: int
    pool: str
    y: np.ndarray  #: (n_items,) class ids or values
    groups: np.ndarray  #: (n_items,) group ids (no group spans two folds)
    fold: np.ndarray  #: (n_items,) outer fold
    folds: int
    classes: list[str] = field(default_factory=list)
    control: np.ndarray | None = None  #: (n_items,) control targets
    search: np.ndarray | None = None  #: (n_items,) bool: the regularisation search's subsample
    notes: list[str] = field(default_factory=list)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def targets(self) -> np.ndarray:
        cols = [self.y] if self.control is None else [self.y, self.control]
        return np.stack(cols, 1)


def _labels(cfg: ProbeConfig, ds: Dataset, meta: pa.Table) -> pa.Array:
    """One label per dataset row (null where none), from the dataset's column or the joined table."""
    if not cfg.labels:
        return meta.column(cfg.label).combine_chunks()
    table = read_table(cfg.labels, cfg.storage)
    on = cfg.on_columns
    missing_cols = [c for c in [*on, cfg.label] if c not in table.column_names]
    if missing_cols:
        raise ProbeInputError(f"the labels table {cfg.labels} lacks {missing_cols}; it has {table.column_names}")
    not_in_ds = [c for c in on if c not in ds.columns]
    if not_in_ds:
        raise ProbeInputError(f"--on {','.join(on)}: the dataset has no column {not_in_ds} (it has {ds.columns})")
    idx = join_rows(meta.select(on), table, on)
    absent = idx < 0
    if absent.any() and not cfg.allow_missing_labels:
        keys = meta.select(on).filter(pa.array(absent))
        unique = keys.group_by(on).aggregate([])
        some = unique.slice(0, 5).to_pylist()
        raise ProbeInputError(f"the labels table {cfg.labels} has no row for {unique.num_rows} of the dataset's "
                              f"{on} keys ({int(absent.sum())} of {len(idx)} rows), e.g. {some}. Add them, or pass "
                              "--allow-missing-labels to probe only the labelled rows.")
    values = table.column(cfg.label).combine_chunks().take(pa.array(np.where(absent, 0, idx)))
    return pc.if_else(pa.array(absent), pa.nulls(len(idx), values.type), values)


def _task(cfg: ProbeConfig, values: pa.Array) -> Literal["classify", "regress"]:
    t = values.type
    categorical = pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_boolean(t) or \
        pa.types.is_dictionary(t)
    if cfg.task == "regress":
        if categorical:
            raise ProbeInputError(f"--task regress: label {cfg.label!r} is a {t} column, not numbers; use --task "
                                  "classify (or auto)")
        return "regress"
    if cfg.task == "classify" or categorical:
        return "classify"
    if pa.types.is_integer(t) and len(pc.unique(values)) <= MAX_INT_CLASSES:
        return "classify"
    return "regress"


def _items(cfg: ProbeConfig, meta: pa.Table, keep: np.ndarray, labels: np.ndarray, token_rows: bool
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows read, item of each row, representative row of each item) for the pooling mode."""
    rows = np.nonzero(keep)[0]
    if cfg.pool == "none" or not token_rows:
        return rows, np.arange(len(rows)), rows
    ex = meta.column(EXAMPLE_ID).to_numpy()[rows]
    pos = meta.column(POSITION).to_numpy()[rows]
    uniq, item = np.unique(ex, return_inverse=True)
    lab = labels[rows]
    first_label = np.empty(len(uniq), dtype=lab.dtype)
    first_label[item] = lab
    if (lab != first_label[item]).any():
        raise ProbeInputError(f"--pool {cfg.pool}: label {cfg.label!r} differs between tokens of one example; pooling "
                              "needs one label per example (token-level labels: --pool none)")
    order = np.lexsort((pos, item))  # rows by (item, position)
    bounds = np.searchsorted(item[order], np.arange(len(uniq)))
    ends = np.append(bounds[1:], len(order))
    rep = rows[order[bounds]] if cfg.pool in ("first", "mean") else rows[order[ends - 1]]
    if cfg.pool == "mean":
        return rows, item, rep
    return rep, np.arange(len(rep)), rep


def _check_class_counts(cfg: ProbeConfig, classes: list[str], y: np.ndarray, notes: list[str]) -> None:
    """Every class smaller than ``--folds``: refused (scikit-learn's stratified splitter cannot deal them and
    raised a bare ValueError). Some classes smaller: noted, as those classes miss some folds' test sets, and a
    class of one item is never in the training folds of the fold that tests it."""
    counts = np.bincount(y, minlength=len(classes))
    small = [i for i in np.argsort(counts, kind="stable") if counts[i] < cfg.folds]
    if not small:
        return
    least = small[0]
    shown = ", ".join(f"{classes[i]!r} {int(counts[i])}" for i in small[:8]) + (", ..." if len(small) > 8 else "")
    if len(small) == len(classes):
        largest = int(counts.max())
        fix = (f"Lower --folds to at most {largest}, or probe more examples of each class." if largest >= 2 else
               "Every class has a single item, too few to both train and test on (--folds is at least 2): probe "
               "more examples of each class, or a label whose classes several items share (a number: --task "
               "regress).")
        raise ProbeInputError(
            f"label {cfg.label!r} has fewer items per class than --folds {cfg.folds}: its smallest class "
            f"{classes[least]!r} has {int(counts[least])} item(s) (classes: {shown}), so no stratified split into "
            f"{cfg.folds} folds exists. {fix}")
    notes.append(f"class(es) with fewer items than --folds {cfg.folds}: {shown}; they are missing from some "
                 "folds' test sets")


def _folds(cfg: ProbeConfig, task: str, y: np.ndarray, groups: np.ndarray, group_col: str) -> np.ndarray:
    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

    n_groups = len(np.unique(groups))
    if n_groups < cfg.folds:
        fix = (f"Lower --folds to at most {n_groups}, or group by a finer column (--group-by)." if n_groups >= 2 else
               "A probe needs at least 2 groups (--folds is at least 2): group by a finer column (--group-by), or "
               "probe more examples.")
        raise ProbeInputError(f"only {n_groups} distinct {group_col} value(s) for --folds {cfg.folds}: a group "
                              f"is never split across folds. {fix}")
    splitter = (StratifiedGroupKFold(cfg.folds, shuffle=True, random_state=cfg.seed) if task == "classify"
                else GroupKFold(cfg.folds, shuffle=True, random_state=cfg.seed))
    fold = np.full(len(y), -1, dtype=np.int64)
    import warnings

    with warnings.catch_warnings():  # "least populated class has fewer members than n_splits": stratify as possible
        warnings.simplefilter("ignore", UserWarning)
        for f, (_, test) in enumerate(splitter.split(np.zeros(len(y)), y, groups)):
            fold[test] = f
    return fold


def _control(cfg: ProbeConfig, plan: ProbePlan, token_ids: np.ndarray | None) -> np.ndarray | None:
    """Hewitt & Liang's control tasks: ``type`` gives each token type a fixed label drawn from the label
    distribution; ``shuffle`` gives each group another group's label (or permutes the items' labels when
    the label varies within groups)."""
    rng = np.random.default_rng([cfg.seed, 7919])
    if cfg.control == "none":
        return None
    y = plan.y
    if cfg.control == "type":
        if token_ids is None or (token_ids < 0).all():
            raise ProbeInputError("--control type needs token rows with token ids (text, --pool none); use "
                                  "--control shuffle for pooled rows or images")
        types, inverse = np.unique(token_ids, return_inverse=True)
        draw = rng.choice(y, size=len(types), replace=True)  # the label distribution, one draw per type
        return draw[inverse]
    g_uniq, g_inv = np.unique(plan.groups, return_inverse=True)
    per_group = np.empty(len(g_uniq), dtype=y.dtype)
    per_group[g_inv] = y
    if (per_group[g_inv] == y).all():
        return per_group[rng.permutation(len(g_uniq))][g_inv]
    return y[rng.permutation(len(y))]


def type_control_note(plan: ProbePlan, token_ids: np.ndarray, dims: int | None) -> str | None:
    """Why ``--control type`` cannot be selective on these items, or None. With no more token types than the
    hooks have dims, and the types of the test folds seen in training, a linear probe can give every type its own
    label (one direction per type) at any layer that still tells its token, and every layer does: the control
    scores ~1 and selectivity is below 0 everywhere, however the label is encoded. Hewitt & Liang's control
    presumes a vocabulary far larger than a probe can memorise (tens of thousands of types)."""
    if dims is None:
        return None
    types, type_of = np.unique(token_ids, return_inverse=True)
    pairs = np.unique(np.stack([type_of, plan.fold]), axis=1)
    seen = float((np.bincount(pairs[0], minlength=len(types)) >= 2)[type_of].mean())
    if len(types) > dims or seen < 0.9:
        return None
    per_group = len(np.unique(np.stack([plan.groups, plan.y]), axis=1)[0]) == len(np.unique(plan.groups))
    fix = ("the label is one per group, so use --control shuffle (each group gets another group's label: what a "
           "probe scores with the label distribution alone)" if per_group else
           "probe a corpus with many more token types than dims, or use --control shuffle")
    return (f"--control type cannot be selective here: the {plan.n_items:,} items hold {len(types)} token types, "
            f"no more than the hooks' {dims} dims, and {seen:.0%} of test items have a type seen in training, so "
            "a linear probe gives each type its own label at every layer (control accuracy ~1, selectivity < 0 "
            f"whatever the layers encode); {fix}")


def _sample_groups(groups: np.ndarray, cap: int, seed: int) -> np.ndarray:
    """A bool mask of whole groups, taken in a seeded order while at most ``cap`` items are covered."""
    uniq, inv, counts = np.unique(groups, return_inverse=True, return_counts=True)
    order = np.random.default_rng(seed).permutation(len(uniq))
    take = np.zeros(len(uniq), dtype=bool)
    take[order[np.cumsum(counts[order]) <= cap]] = True
    if not take.any():
        take[order[0]] = True
    return take[inv]


def _read_meta(cfg: ProbeConfig, ds: Dataset, group_col: str) -> pa.Table:
    """The id, group and label columns of every row (the label joined from --labels where given)."""
    if group_col not in ds.columns:
        raise ProbeInputError(f"--group-by {group_col!r} is not a column of {ds.storage.display()} ({ds.columns})")
    wanted = [EXAMPLE_ID, POSITION, TOKEN_ID, group_col]
    if not cfg.labels:
        if cfg.label not in ds.columns:
            raise ProbeInputError(f"label column {cfg.label!r} is not in {ds.storage.display()}; its columns are "
                                  f"{ds.columns}. Pass --label COLUMN, or --labels FILE --on example_id to join a "
                                  "table of labels.")
        wanted.append(cfg.label)
    else:
        wanted += [c for c in cfg.on_columns if c in ds.columns]
    return ds.metadata_table(list(dict.fromkeys(wanted)))


def _row_labels(cfg: ProbeConfig, task: str, values: pa.Array, notes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Each row's label (floats to regress, strings to classify) and which rows have one."""
    keep = ~np.asarray(values.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    if task == "regress":
        labels = values.cast(pa.float64()).to_numpy(zero_copy_only=False)
        keep &= np.isfinite(labels)
    else:
        if pa.types.is_floating(values.type):  # a NaN label is no label, never a class "nan"
            keep &= np.isfinite(values.fill_null(0.0).to_numpy(zero_copy_only=False))
        labels = np.asarray(values.cast(pa.string()).fill_null("").to_numpy(zero_copy_only=False), dtype=object)
    if not keep.any():
        raise ProbeInputError(f"label {cfg.label!r} is null for every row")
    if (~keep).any():
        notes.append(f"{int((~keep).sum())} rows without a label are left out")
    return labels, keep


def _targets(cfg: ProbeConfig, task: str, item_labels: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Classes and class ids (classify), or the values (regress), of the items."""
    if task != "classify":
        return [], item_labels.astype(np.float64)
    classes, y = np.unique(item_labels.astype(str), return_inverse=True)
    if len(classes) < 2:
        raise ProbeInputError(f"label {cfg.label!r} has a single class ({classes[0]!r}) in the rows probed: "
                              "nothing to classify")
    return [str(c) for c in classes], y.astype(np.int64)


def plan_probe(cfg: ProbeConfig, ds: Dataset, dims: int | None = None) -> ProbePlan:
    """Read the labels (and ids) once, check them, and decide items, task, folds and controls (``dims``: the
    fewest dims of the hooks to probe, which decides whether ``--control type`` can be memorised)."""
    group_col = cfg.group_column(ds.columns)
    meta = _read_meta(cfg, ds, group_col)
    values = _labels(cfg, ds, meta)
    task = _task(cfg, values)
    notes = [f"task {task}" + (f" (--task auto: label {cfg.label!r} is {values.type})" if cfg.task == "auto" else "")]
    labels, keep = _row_labels(cfg, task, values, notes)
    token_rows = bool((meta.column(POSITION).to_numpy() >= 0).any())
    rows, item_of_row, rep = _items(cfg, meta, keep, labels, token_rows)
    groups_raw = meta.column(group_col).to_numpy(zero_copy_only=False)[rep]
    _, groups = np.unique(groups_raw, return_inverse=True)
    item_labels = labels[rep]
    if cfg.max_rows and len(rep) > cfg.max_rows:
        sel = _sample_groups(groups, cfg.max_rows, cfg.seed)
        notes.append(f"--max-rows {cfg.max_rows}: {int(sel.sum())} of {len(rep)} items (whole groups, seeded)")
        new_index = np.cumsum(sel) - 1
        row_sel = sel[item_of_row]
        rows, item_of_row = rows[row_sel], new_index[item_of_row[row_sel]]
        rep, groups, item_labels = rep[sel], groups[sel], item_labels[sel]
    classes, y = _targets(cfg, task, item_labels)
    if task == "classify":
        _check_class_counts(cfg, classes, y, notes)
    fold = _folds(cfg, task, y, groups, group_col)
    plan = ProbePlan(task=task, label=cfg.label, rows=rows, item_of_row=item_of_row.astype(np.int64), n_items=len(rep),
                     pool=cfg.pool if token_rows else "none", y=y, groups=groups.astype(np.int64), fold=fold,
                     folds=cfg.folds, classes=classes, notes=notes)
    tokens = meta.column(TOKEN_ID).to_numpy(zero_copy_only=False)[rep] if plan.pool == "none" and token_rows \
        else None
    plan.control = _control(cfg, plan, tokens)
    note = type_control_note(plan, tokens, dims) if cfg.control == "type" and plan.task == "classify" else None
    if note:
        notes.append(note)  # logged with the plan's other notes
    if cfg.reg_search_rows and plan.n_items > cfg.reg_search_rows:
        plan.search = _sample_groups(groups, cfg.reg_search_rows, cfg.seed + 1)
    return plan
