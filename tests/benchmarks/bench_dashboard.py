"""`actlake sae dashboard` at scale: build time, site size and time to render in headless chromium, for a
synthetic token dataset (random activations, 24-token examples) and a random TopK SAE, at several sizes.

    python tests/benchmarks/bench_dashboard.py --rows 50000,200000 --latents 4096,16384 --out /tmp/dash-bench
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import time
from pathlib import Path

import numpy as np

import shards
from analysis.sae.dashboard.run import SaeDashboardConfig
from analysis.sae.dashboard.run import run as dashboard
from analysis.sae.io import save_sae
from analysis.sae.registry import create_sae

D = 128


def dataset(uri: str, rows: int) -> str:
    if Path(uri, "manifest.json").exists():
        return uri
    rng = np.random.default_rng(0)
    unit = 50_000
    with shards.create_dataset(uri, {"resid.1": {"shape": [D], "dtype": "float16"}}) as w:
        for u in range(0, rows, unit):
            n = min(unit, rows - u)
            ids = np.arange(u, u + n)
            w.write_unit(u // unit, {"example_id": ids // 24, "position": (ids % 24).astype(np.int32),
                                     "token_id": rng.integers(0, 30000, n).astype(np.int32),
                                     "resid.1": rng.standard_normal((n, D)).astype(np.float16)})
    return uri


def render_seconds(url: str, mark: str = "") -> tuple[float, float | None]:
    """(wall seconds of ``chromium --dump-dom`` until the load event, browser start included; the page's own
    ``performance.now()`` at its first draw, read from ``body[data-MARK]``: milliseconds since navigation)."""
    t0 = time.perf_counter()
    p = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", url],
                       capture_output=True, check=True, timeout=300, text=True)
    wall = time.perf_counter() - t0
    found = re.search(rf'data-{mark}="([0-9.]+)"', p.stdout) if mark else None
    return wall, float(found.group(1)) if found else None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", default="50000,200000")
    ap.add_argument("--latents", default="4096,16384")
    ap.add_argument("--out", required=True)
    ap.add_argument("--batch-size", type=int, default=2048)
    args = ap.parse_args()
    blank = Path(args.out, "blank.html")
    blank.parent.mkdir(parents=True, exist_ok=True)
    blank.write_text("<!doctype html><title>blank</title>")
    for rows in map(int, args.rows.split(",")):
        ds = dataset(f"{args.out}/ds-{rows}", rows)
        for d_sae in map(int, args.latents.split(",")):
            sae = create_sae("topk", d_in=D, d_sae=d_sae, k=32, seed=0)
            save_sae(sae, f"{args.out}/sae-{d_sae}", {"hook": "resid.1", "dataset": ds})
            site = f"{args.out}/site-{rows}-{d_sae}"
            s = dashboard(SaeDashboardConfig(sae=f"{args.out}/sae-{d_sae}", out=site, batch_size=args.batch_size))
            # what the first paint of each page loads: the page, its script and its first data file
            index = sum(Path(site, f).stat().st_size for f in ("index.html", "index.js", "index/part-0.js"))
            page = sum(Path(site, f).stat().st_size for f in ("latent.html", "latent.js", "latents/0.js"))
            row = {"rows": rows, "latents": d_sae, "build_s": s.seconds, "site_mb": round(s.bytes / 1e6, 1),
                   "index_first_kb": round(index / 1e3, 1), "latent_page_kb": round(page / 1e3, 1),
                   "index_all_kb": round(sum(f.stat().st_size for f in Path(site, "index").iterdir()) / 1e3, 1),
                   "blank_render_s": round(render_seconds(f"file://{blank}")[0], 2)}  # baseline: browser start
            (row["index_loaded_s"], row["index_first_draw_ms"]) = render_seconds(f"file://{site}/index.html",
                                                                                 "first-draw")
            (row["latent_loaded_s"], row["latent_drawn_ms"]) = render_seconds(f"file://{site}/latent.html?l=0",
                                                                               "drawn")
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
