"""Image extraction throughput against the bare forward pass of the same model, measured in one run.

    python tests/benchmarks/bench_extract_images.py [--copies 4] [--arch vit-s16]

Stimuli: the 78 Net2Brain JPEGs (400x400) copied ``--copies`` times. Model: a random-initialised
ViT-S/16 at 224 px (hidden 384, 12 blocks; the architecture of DINO/DeiT-S) saved with a ViT image
processor. Overhead ratio = extraction images/s (1 actor with every core; hooks resid.0-11, CLS pool,
float16, to local disk; JPEG decoding and preprocessing included; timed from actor start to the last
commit, model loading included; "steady" leaves out actor start and model loading)
÷ bare forward images/s (same model, same preprocessed pixels, same
batch size and threads, no hooks, no decoding, no writing).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from ingest.config import ExtractConfig  # noqa: E402
from ingest.driver import run_extraction  # noqa: E402
from ingest.image_sources import load_image_source  # noqa: E402
from ingest.models import load_model  # noqa: E402
from ingest.preprocess import build_preprocessor  # noqa: E402
from tests.shared_data import DATA  # noqa: E402

STIMULI = DATA / "net2brain78" / "stimuli"
ARCHS = {
    "vit-s16": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536),
    "vit-ti16": dict(hidden_size=192, num_hidden_layers=12, num_attention_heads=3, intermediate_size=768),
}


def record(**kw) -> dict:
    kw["date"] = time.strftime("%Y-%m-%d")
    print(json.dumps(kw), flush=True)
    return kw


def make_model(path: Path, arch: str) -> str:
    from transformers import ViTConfig, ViTModel
    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

    torch.manual_seed(0)
    ViTModel(ViTConfig(image_size=224, patch_size=16, **ARCHS[arch]), add_pooling_layer=False).save_pretrained(path)
    ViTImageProcessorPil(size={"height": 224, "width": 224}).save_pretrained(path)
    return str(path)


def make_stimuli(path: Path, copies: int) -> str:
    path.mkdir(parents=True, exist_ok=True)
    for c in range(copies):
        for f in sorted(STIMULI.glob("*.jpg")):
            dst = path / f"c{c}_{f.name}"
            if not dst.exists():
                shutil.copy(f, dst)
    return str(path)


def bare_forward(model_dir: str, data: str, batch: int, threads: int) -> tuple[float, float]:
    """Images/s of the forward pass alone on preprocessed pixels; and of decoding + preprocessing alone."""
    torch.set_num_threads(threads)
    m = load_model(model_dir, "float32", "cpu")
    src = load_image_source(data)
    pre = build_preprocessor(model_dir)
    t = time.perf_counter()
    batches = [pre([src.image(i) for i in range(b, min(b + batch, len(src)))], [])
               for b in range(0, len(src), batch)]
    decode_rate = len(src) / (time.perf_counter() - t)
    t = time.perf_counter()
    with torch.inference_mode():
        for px in batches:
            m.model(pixel_values=px)
    return len(src) / (time.perf_counter() - t), decode_rate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--copies", type=int, default=4)
    p.add_argument("--arch", default="vit-s16", choices=sorted(ARCHS))
    p.add_argument("--dir", default="bench-data")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    cores = os.cpu_count() or 2
    work = Path(args.dir)
    model_dir = make_model(work / f"model-{args.arch}", args.arch)
    data = make_stimuli(work / f"stimuli-x{args.copies}", args.copies)
    batch = 16
    results = []
    fwd, dec = bare_forward(model_dir, data, batch, cores)
    results.append(record(bench="image-bare-forward", arch=args.arch, threads=cores, images_per_s=round(fwd, 2),
                          decode_preprocess_images_per_s=round(dec, 1)))
    import ray

    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        out = str(work / f"extract-images-{args.arch}")
        shutil.rmtree(out, ignore_errors=True)
        s = run_extraction(ExtractConfig(model=model_dir, data=data, hooks="resid.*", out=out, workers=1,
                                         threads_per_worker=cores, batch_size=batch, unit_size=64))
        rate = s.count / s.run_seconds
        steady = s.count / (s.run_seconds - s.startup_seconds)
        results.append(record(bench="image-extract", arch=args.arch, workers=1, threads_per_worker=cores,
                              images=s.count, run_seconds=s.run_seconds,
                              startup_seconds=s.startup_seconds, images_per_s=round(rate, 2),
                              overhead_ratio=round(rate / fwd, 3), steady_images_per_s=round(steady, 2),
                              steady_overhead_ratio=round(steady / fwd, 3)))
    finally:
        ray.shutdown()
    if args.json:
        with open(args.json, "a") as f:
            for r in results:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
