"""``actlake probe`` on the concepts demo (``make demo``: MiniLM, 36,148 token rows, hooks embed, resid.0-5): the
estimate it logs before any hook runs beside the time it took, with and without a control task, on one hook and
on all seven; and scikit-learn's grouped 5-fold ``LogisticRegression`` with an inner search over C on the same
rows and folds as the baseline.

    python tests/benchmarks/bench_probe_concepts.py [--data demo-data/minilm] [--runs one,one-type,all,all-type]
        [--one-hook resid.0] [--sklearn-hooks resid.0] [--json out.jsonl]

A run is ``one`` (``--one-hook`` only) or ``all`` (``embed,resid.*``), then ``-type`` or ``-shuffle`` for the
control; each goes through ``analysis.probe.run.run`` with the command's defaults into a fresh folder, in this
process, one after the other. Recorded per run: the estimate and the measured time from ``summary.json``'s
``cost``, the seconds the estimate itself took (between the plan's log line and the estimate's), the machine's
load average before and after (other jobs share the cores), the torch threads each hook ran with, and per hook
the accuracy, control accuracy and selectivity.

scikit-learn (the baseline): for each outer fold of the probe's own plan (the same rows, folds and labels), a
``GridSearchCV`` over C = 1/(g x n_train) for actlake's grid g = 1e-4 ... 1e-1 with 3 inner ``GroupKFold`` folds
on the training folds (groups: the examples), refitted on the training folds and scored on the held-out fold;
features standardised with the dataset's statistics as actlake does; BLAS threads limited to the threads actlake's
hook ran with. Its time is set against the ``one`` run's measured time for the same hook.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
ALL_HOOKS = ["embed", "resid.*"]


class _Lines(logging.Handler):
    """Keeps the probe's log lines with their times."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[tuple[float, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.created, record.getMessage()))


def _estimate_seconds(lines: list[tuple[float, str]]) -> float | None:
    """Seconds between the plan's line (``N items (...) in 5 folds``) and the estimate's (``will compute``)."""
    planned = next((t for t, m in lines if " folds by " in m and "items (" in m), None)
    said = next((t for t, m in lines if m.startswith("will compute")), None)
    return None if planned is None or said is None else round(said - planned, 2)


def run_probe(data: str, name: str, one_hook: str, out: str) -> dict:
    """One ``actlake probe`` run as ``name`` says (``one``/``all``, ``-type``/``-shuffle``), timed end to end."""
    from analysis.probe.config import ProbeConfig
    from analysis.probe.run import run

    hooks = [one_hook] if name.startswith("one") else ALL_HOOKS
    control = name.split("-")[1] if "-" in name else "none"
    shutil.rmtree(out, ignore_errors=True)
    handler, log = _Lines(), logging.getLogger("actlake.probe")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    try:
        s = run(ProbeConfig(data=data, hooks=hooks, label="label", control=control, out=out))
    finally:
        log.removeHandler(handler)
    wall = time.perf_counter() - t0
    threads = {h: json.loads((Path(out) / "hooks" / f"{h}.json").read_text())["solver"].get("threads")
               for h in s.hooks}
    seconds = {h: json.loads((Path(out) / "hooks" / f"{h}.json").read_text())["seconds"] for h in s.hooks}
    return {"run": name, "hooks": len(s.hooks), "control": control, "estimated_seconds": s.cost["estimated_seconds"],
            "measured_seconds": s.cost["seconds"], "wall_seconds": round(wall, 2),
            "ratio_measured_to_estimate": round(s.cost["seconds"] / s.cost["estimated_seconds"], 2),
            "estimate_took_seconds": _estimate_seconds(handler.lines), "work": s.cost["work"],
            "basis": s.cost["basis"], "load_before": round(load_before, 2),
            "load_after": round(os.getloadavg()[0], 2), "threads": threads, "hook_seconds": seconds,
            "accuracy": {h: round(v["mean"], 4) for h, v in s.hooks.items()},
            "control_accuracy": {h: v["control_mean"] and round(v["control_mean"], 4) for h, v in s.hooks.items()},
            "selectivity": {h: v["selectivity"] and round(v["selectivity"], 4) for h, v in s.hooks.items()},
            "reg": {h: v["reg"] for h, v in s.hooks.items()}, "notes": s.notes}


def _standardized(ds, hook: str, rows: np.ndarray) -> np.ndarray:
    st = ds.stats(hook)
    x = ds.to_numpy(hook, dtype="float32")[rows]
    std = np.where(st.std > 1e-12, st.std, 1.0).astype(np.float32)  # as actlake: a constant dim stays unscaled
    return (x - st.mean.astype(np.float32)) / std


def run_sklearn(data: str, hook: str, threads: int) -> dict:
    """The grouped 5-fold probe with an inner search over C, by scikit-learn, on the probe plan's rows and folds."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, GroupKFold
    from threadpoolctl import threadpool_limits

    import shards
    from analysis.probe.config import ProbeConfig
    from analysis.probe.targets import plan_probe

    ds = shards.open_dataset(data)
    plan = plan_probe(ProbeConfig(data=data, hooks=[hook], label="label", out=tempfile.mkdtemp()), ds)
    x, y = _standardized(ds, hook, plan.rows), plan.y
    scores, picked, t0 = [], [], time.perf_counter()
    with threadpool_limits(limits=threads), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for f in range(plan.folds):
            tr, te = plan.fold != f, plan.fold == f
            n_train = int(tr.sum())
            grid = {"C": [1.0 / (g * n_train) for g in (1e-4, 1e-3, 1e-2, 1e-1)]}
            search = GridSearchCV(LogisticRegression(max_iter=1000), grid, cv=GroupKFold(3), n_jobs=1)
            search.fit(x[tr], y[tr], groups=plan.groups[tr])
            scores.append(float(search.score(x[te], y[te])))
            picked.append(1.0 / search.best_params_["C"] / n_train)
    return {"run": "sklearn", "hook": hook, "seconds": round(time.perf_counter() - t0, 2), "threads": threads,
            "accuracy": round(float(np.mean(scores)), 4), "fold_accuracy": [round(s, 4) for s in scores],
            "reg_per_item": picked, "fits": plan.folds * (3 * 4 + 1), "load_after": round(os.getloadavg()[0], 2)}


def _table(records: list[dict]) -> str:
    lines = ["| run | hooks | control | estimate | measured | measured / estimate | estimate took | load |",
             "|---|---|---|---|---|---|---|---|"]
    for r in records:
        if r["run"] != "sklearn":
            lines.append(f"| {r['run']} | {r['hooks']} | {r['control']} | {r['estimated_seconds']:.0f} s | "
                         f"{r['measured_seconds']:.0f} s | {r['ratio_measured_to_estimate']:.2f} | "
                         f"{r['estimate_took_seconds']} s | {r['load_before']:.1f} → {r['load_after']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT / "demo-data" / "minilm"))
    p.add_argument("--runs", default="one,one-type,all,all-type")
    p.add_argument("--one-hook", default="resid.0")
    p.add_argument("--sklearn-hooks", default="resid.0", help="hooks scikit-learn probes (comma-separated; '' none)")
    p.add_argument("--out", default=None, help="folder for the runs' outputs (default: a temporary one)")
    p.add_argument("--json", default=None, help="append every record to this JSON-lines file")
    a = p.parse_args()
    if not (Path(a.data) / "manifest.json").exists():
        sys.exit(f"no dataset at {a.data}: run `make demo` first")
    out = a.out or tempfile.mkdtemp(prefix="bench-probe-concepts-")
    records = []
    for name in a.runs.split(","):
        rec = run_probe(a.data, name, a.one_hook, f"{out}/{name}")
        records.append({"bench": "probe-concepts", "date": time.strftime("%Y-%m-%d"), "cores": os.cpu_count(), **rec})
        print(json.dumps(records[-1]), flush=True)
    for hook in filter(None, a.sklearn_hooks.split(",")):
        used = next((r["threads"].get(hook) for r in records if hook in r["threads"]), None) or 1
        records.append({"bench": "probe-concepts", "date": time.strftime("%Y-%m-%d"), "cores": os.cpu_count(),
                        **run_sklearn(a.data, hook, used)})
        print(json.dumps(records[-1]), flush=True)
    print(_table(records))
    if a.json:
        with open(a.json, "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)


if __name__ == "__main__":
    main()
