"""`actlake extract --zoo` against the bare forward passes of the same models (the baseline: one process, each
model loaded once, the images preprocessed and run in batches of 32 with no hooks and nothing written).

    python tests/benchmarks/bench_zoo.py --make-models /work/bench/real --zoo /work/bench/real/zoo.yaml \
        --data ../shared/data/net2brain78/stimuli --out /tmp/zoo-bench --parallel 1 0

``--make-models DIR`` first writes the zoo of docs/results/zoo-2026-12-03.yaml there: EfficientNet-Lite0
pretrained and untrained, a random ViT-Base/16 and a random ConvNeXt-T (transformers' default configs, 224 px).
``--parallel``: the zoo end to end once per --zoo-parallel value (1: one model after another, as before issue 39;
0: as many as the CPUs hold).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

from ingest.config import ExtractConfig
from ingest.image_sources import load_image_source
from ingest.models import image_size, load_model
from ingest.preprocess import Preprocessor, resolve_preprocess


def bare_seconds(entry: dict, data: str) -> tuple[float, float]:
    """(load seconds, forward seconds) of one model over every image, in this process."""
    cfg = ExtractConfig(model=entry["model"], data=data, hooks=[entry.get("hooks", "x")],
                        resize=str(entry.get("resize", "auto")), crop=str(entry.get("crop", "auto")))
    t0 = time.perf_counter()
    loaded = load_model(cfg.model)
    t1 = time.perf_counter()
    model_dir = loaded.path if Path(loaded.path).is_dir() else None
    d = loaded.preprocess
    resize = str(d.get("resize", cfg.resize)) if cfg.resize == "auto" else cfg.resize
    crop = str(d.get("crop", cfg.crop)) if cfg.crop == "auto" else cfg.crop
    spec = resolve_preprocess(model_dir, "auto", resize, crop, d.get("mean"), d.get("std"), "bicubic",
                              image_size(loaded.model))
    src = load_image_source(data)
    pre = Preprocessor(spec).expecting(src.image(0).size)
    positional = getattr(loaded.model, "_actlake_call", None) == "positional"
    with torch.inference_mode():
        for a in range(0, len(src), 32):
            idx = range(a, min(a + 32, len(src)))
            px = pre([src.image(i) for i in idx], [src.ids[i] for i in idx])
            loaded.model(px) if positional else loaded.model(pixel_values=px)
    return t1 - t0, time.perf_counter() - t1


def make_models(folder: Path) -> None:
    """The benchmark's zoo file and its two random transformers models (default configs, seeded) in ``folder``."""
    from transformers import ConvNextConfig, ConvNextModel, ViTConfig, ViTModel
    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    if not (folder / "vit-random").exists():
        ViTModel(ViTConfig(), add_pooling_layer=False).eval().save_pretrained(folder / "vit-random")
        ViTImageProcessorPil(size={"height": 224, "width": 224}).save_pretrained(folder / "vit-random")
    if not (folder / "convnext-random").exists():
        ConvNextModel(ConvNextConfig()).eval().save_pretrained(folder / "convnext-random")
    lite = "ingest.model_zoo.efficientnet_lite0"
    models = [{"name": "lite0", "model": f"{lite}:load", "hooks": "block.*,_conv_head", "pool": "spatial_mean"},
              {"name": "lite0-untrained", "model": f"{lite}:load_untrained", "hooks": "block.*,_conv_head",
               "pool": "spatial_mean"},
              {"name": "vit-random", "model": str(folder / "vit-random"), "hooks": "resid.*", "pool": "cls"},
              {"name": "convnext-random", "model": str(folder / "convnext-random"), "hooks": "stage.*",
               "pool": "spatial_mean", "resize": "224"}]
    (folder / "zoo.yaml").write_text(yaml.safe_dump({"models": models}, sort_keys=False))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--zoo", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--make-models", default="")
    ap.add_argument("--parallel", type=int, nargs="+", default=[0])
    args = ap.parse_args()
    if args.make_models:
        make_models(Path(args.make_models))
    models = yaml.safe_load(Path(args.zoo).read_text())["models"]
    load = fwd = 0.0
    for m in models:
        a, b = bare_seconds(m, args.data)
        load, fwd = load + a, fwd + b
    rows = []
    for parallel in args.parallel:
        shutil.rmtree(args.out, ignore_errors=True)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "cluster.cli", "extract", "--zoo", args.zoo, "--data", args.data,
                        "--out", args.out, "--dtype", "float32", "--unit-size", "26", "--zoo-parallel",
                        str(parallel)], check=True, capture_output=True)
        zoo = time.perf_counter() - t0
        state = json.loads(Path(args.out, "zoo.json").read_text())
        run = sum(v["summary"]["run_seconds"] for v in state.values())
        startup = sum(v["summary"]["startup_seconds"] for v in state.values())  # actor start + model load
        row = {"models": len(models), "zoo_parallel": parallel, "bare_load_s": round(load, 1),
               "bare_forward_s": round(fwd, 1), "zoo_total_s": round(zoo, 1), "zoo_run_s": round(run, 1),
               "zoo_startup_s": round(startup, 1), "ratio_total": round(zoo / (load + fwd), 2),
               "date": time.strftime("%Y-%m-%d")}
        if parallel == 1:  # one model at a time: its run time less its startup is the extraction proper
            row["ratio_steady_vs_forward"] = round((run - startup) / fwd, 2)
        rows.append(row)
        print(json.dumps(row), flush=True)

if __name__ == "__main__":
    main()
