"""Configs of ``actlake sae train`` and ``actlake sae encode``; the CLI flags are generated from them."""

from __future__ import annotations

import re
from dataclasses import dataclass

from simple_parsing import field, flag


def parse_count(value: str | int) -> int:
    """``5M`` -> 5000000, ``200k`` -> 200000, ``1.5B``, or a plain integer."""
    if isinstance(value, int):
        return value
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKmMbBgG]?)\s*", str(value).replace("_", ""))
    if not m:
        raise ValueError(f"{value!r} is not a count: use e.g. 5000000, 5M, 200k or 1.5B")
    mult = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9}[m.group(2).lower()]
    return int(round(float(m.group(1)) * mult))


def parse_list(value: str | int | list, kind=str) -> list:
    if isinstance(value, (list, tuple)):
        return [kind(v) for v in value]
    return [kind(v.strip()) for v in str(value).split(",") if v.strip()]


@dataclass
class SaeTrainConfig:
    """Train sparse autoencoders on hooks of an activation dataset (one process, or Ray Train workers)."""

    data: str = "demo-data/minilm"
    """Activation dataset URI (local path, s3://..., any fsspec URI)."""

    hook: str = "resid.3"
    """Hook(s) to train on; comma-separated hooks train several SAEs from one pass over the data."""

    arch: str = "topk"
    """Architecture(s): relu (L1), topk, batchtopk, jumprelu, matryoshka, mp; comma-separated for several."""

    k: str = "32"
    """Active latents per row (topk, batchtopk, matryoshka, mp); comma-separated for several SAEs."""

    expansion: str = "16"
    """Latents per input dimension (d_sae = expansion x d_in); comma-separated for several SAEs."""

    tokens: str = "5M"
    """Training tokens (rows): 5M, 200k or 5000000; the data is cycled in new shuffled epochs if needed."""

    batch_size: int = 4096
    """Rows per optimiser step (global, split across workers)."""

    lr: float = 0.0
    """Adam learning rate; 0: 2e-4 / sqrt(d_sae / 2^14), scaled with the number of latents as sparsify does."""

    warmup_steps: int = -1
    """Linear learning-rate warm-up steps (-1: a twentieth of the steps, at most 1000)."""

    decay_frac: float = 0.2
    """Fraction of the steps at the end over which the learning rate decays linearly to 0."""

    l1_coeff: float = 1.0
    """relu: weight of the L1 penalty (on latents times decoder norms, inputs at mean norm sqrt(d))."""

    l0_coeff: float = 1.0
    """jumprelu: weight of the L0 penalty."""

    bandwidth: float = 0.05
    """jumprelu: width of the straight-through kernel (inputs at mean norm sqrt(d))."""

    threshold_init: float = 0.1
    """jumprelu: initial threshold."""

    prefixes: list[int] = field(default_factory=list, nargs="*")
    """matryoshka: nested dictionary sizes (default d_sae/16, /8, /4, /2, d_sae)."""

    auxk_coeff: float = 1 / 32
    """Weight of the AuxK loss (dead latents reconstruct the error), for k-sparse architectures."""

    k_aux: int = 0
    """Dead latents used by AuxK (0: d_in / 2)."""

    dead_tokens: str = "auto"
    """A latent that has not fired for this many tokens is dead (auto: min(10M, tokens / 10))."""

    b_dec_init: str = "geometric_median"
    """Decoder bias initialisation: geometric_median (of a sample), mean (the dataset's stored mean), zeros."""

    normalize: bool = flag(default=True, negative_prefix="--no-")
    """Scale inputs to mean norm sqrt(d) with the dataset's stored statistics (folded into the weights at the end)."""

    seed: int = 0
    """Seed of the initialisation and of the data order."""

    out: str = "runs/sae"
    """Output URI: the final SAE (sae_weights.safetensors, cfg.json) at the top, checkpoints/ below."""

    checkpoint_every: int = 1000
    """Save model, optimiser, step and the reader's cursor every N steps (0: only at the end)."""

    log_every: int = 100
    """Log metrics every N steps."""

    eval_tokens: str = "64k"
    """Rows of the final evaluation (FVU, L0, firing frequencies)."""

    workers: int = 1
    """Data-parallel workers (>1: Ray Train TorchTrainer, gloo on CPU, NCCL on GPU)."""

    use_gpu: bool = field(default=False, action="store_true")
    """Train on GPUs (one per worker)."""

    threads: int = 0
    """Torch threads per worker (0: the machine's cores divided among the workers)."""

    overwrite: bool = field(default=False, action="store_true")
    """Replace a different run already at --out instead of refusing."""

    endpoint_url: str | None = None
    """S3-compatible endpoint for --data and --out (default: AWS_ENDPOINT_URL or AWS)."""

    address: str | None = None
    """Ray address to join for --workers > 1 (default: start a local Ray)."""

    def storage_options(self) -> dict:
        return {"endpoint_url": self.endpoint_url} if self.endpoint_url else {}


@dataclass
class SaeEncodeConfig:
    """Run a trained SAE over a dataset: a sparse latent dataset and per-latent top-activating examples."""

    sae: str = "runs/sae"
    """The trained SAE's URI (cfg.json + sae_weights.safetensors)."""

    data: str = "demo-data/minilm"
    """Activation dataset URI to encode."""

    hook: str = ""
    """Hook to encode (default: the one the SAE was trained on)."""

    out: str = "runs/sae-latents"
    """Output URI: a dataset of the top latents per row, and top_examples.parquet."""

    top_latents: int = 0
    """Latents kept per row (0: the SAE's k, or 64 for non-k-sparse SAEs)."""

    top_examples: int = 20
    """Top-activating rows kept per latent."""

    context: int = 8
    """Text: tokens of context on each side of a top-activating token."""

    batch_size: int = 4096
    """Rows per encoding batch."""

    overwrite: bool = field(default=False, action="store_true")
    """Replace an existing dataset at --out."""

    endpoint_url: str | None = None
    """S3-compatible endpoint (default: AWS_ENDPOINT_URL or AWS)."""

    def storage_options(self) -> dict:
        return {"endpoint_url": self.endpoint_url} if self.endpoint_url else {}
