"""Configs of ``actlake sae train`` and ``actlake sae encode``; the CLI flags are generated from them.

The architectures' own options (``--l1-coeff``, ``--bandwidth``, ``--prefixes``, ``--auxk-coeff`` ...) come
from the registry: each architecture file declares them, ``SaeOptions`` merges them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from simple_parsing import field, flag

import analysis.sae.saes  # noqa: F401 - registers the architectures
from analysis.common.inputs import DatasetInput, take_inputs
from analysis.sae.registry import ARCHITECTURES, get_architecture, merged_options_class
from analysis.sae.split import SplitGroup
from shards.config import check_choices, check_positive, nested, parse_count, split_list, take_credentials
from shards.errors import ConfigError
from shards.storage import StorageOptions

SaeOptions = merged_options_class()


@dataclass
class SaeTrainConfig:
    """Train sparse autoencoders on hooks of an activation dataset (one process, or Ray Train workers)."""

    data: DatasetInput = field(default=DatasetInput("demo-data/minilm"), metavar="URI[@vN]")
    """Activation dataset URI (local path, s3://..., any fsspec URI); URI@vN trains on version N (default: the
    latest when the run starts; a resumed run keeps the version it started on). Recorded in run.json and the SAE's
    cfg.json, where every tool reading the SAE finds it."""

    hook: list[str] = field(default_factory=lambda: ["resid.3"], nargs="*", metavar="HOOK[,HOOK...]")
    """Hook(s) to train on; several hooks train several SAEs from one pass over the data."""

    target_hook: list[str] = field(default_factory=list, nargs="*", metavar="HOOK[,HOOK...]")
    """Train transcoders: each --hook is read and its --target-hook reconstructed (resid.3 -> mlp.3: an MLP's
    input to its output); one target for every hook, or one per hook in order."""

    skip_connection: bool = field(default=False, action="store_true")
    """Transcoders: add a linear skip connection x @ W_skip (sparsify's skip_connection; starts at 0)."""

    crosscoder: bool = field(default=False, action="store_true")
    """Train one acausal crosscoder over all --hook values: each latent reads and writes every hook (the hooks'
    rows side by side, each normalised on its own), instead of one SAE per hook."""

    crosscoder_data: DatasetInput | None = field(default=None, metavar="URI[@vN]")
    """Model diffing: a second dataset, row-aligned with --data (the same corpus, tokenizer and --context-size
    through another model: fine-tuned vs. base, trained vs. random-init); the crosscoder reads every --hook of
    both (the second's as other:HOOK). Needs --crosscoder. URI@vN reads version N (default: its latest when the run
    starts), recorded in run.json and the SAE's cfg.json."""

    arch: list[str] = field(default_factory=lambda: ["topk"], nargs="*", metavar="ARCH[,ARCH...]",
                            choices=ARCHITECTURES.choices(),
                            help="Architecture(s) (one file each in analysis/sae/saes/): %(choices)s; several train "
                                 "several SAEs.")

    k: list[int] = field(default_factory=lambda: [32], nargs="*", type=str, metavar="K[,K...]")
    """Active latents per row (topk, batchtopk, matryoshka, mp); several values train several SAEs."""

    expansion: list[int] = field(default_factory=lambda: [16], nargs="*", type=str, metavar="X[,X...]")
    """Latents per input dimension (d_sae = expansion x d_in); several values train several SAEs."""

    tokens: str = "5M"
    """Training tokens (rows): 5M, 200k or 5000000; the data is cycled in new shuffled epochs if needed."""

    batch_size: int = 4096
    """Rows per optimiser step (global, split across workers)."""

    lr: float = 0.0
    """Adam learning rate; 0: 2e-3 / sqrt(d_sae / 2^14) (sparsify's Adam rule x10, chosen on held-out prose
    documents; docs/benchmarks.md)."""

    warmup_steps: int = -1
    """Linear learning-rate warm-up steps (-1: a twentieth of the steps, at most 1000)."""

    encoder_init_norm: float = 0.58
    """Norm of each latent's encoder column at the start (decoder rows start at 1 and the encoder as their
    transpose times this; 1.0: the plain transpose). 0.58 ~ nn.Linear's init, as sparsify starts."""

    decay_frac: float = 0.2
    """Fraction of the steps at the end over which the learning rate decays linearly to 0."""

    dead_tokens: str = "auto"
    """A latent that has not fired for this many tokens is dead (auto: min(10M, tokens / 10))."""

    b_dec_init: Literal["geometric_median", "mean", "zeros"] = "geometric_median"
    """Decoder bias initialisation: geometric_median (of a sample), mean (the dataset's stored mean; with
    --min-position, a sample's), zeros."""

    min_position: int = 0
    """Leave out rows at positions below N (1: each context's first token, the attention sink of most causal
    LMs, ~100x the norm of the other rows; 0: every row). Normalisation and b_dec then come from kept rows."""

    normalize: bool = flag(default=True, negative_prefix="--no-")
    """Scale inputs to mean norm sqrt(d) with the dataset's stored statistics (folded into the weights at the end)."""

    seed: int = 0
    """Seed of the initialisation and of the data order."""

    out: str = "runs/sae"
    """Output URI: the final SAE (sae_weights.safetensors, cfg.json) at the top, checkpoints/ below."""

    checkpoint_every: int = 1000
    """Save model, optimiser, step and the reader's cursor every N steps (0: only at the end)."""

    log_every: int = 0
    """Log metrics every N steps (0: adapt to the run, about 100 points: steps / 100, at least every step)."""

    eval_tokens: str = "64k"
    """Rows of the final evaluation (at most; FVU, explained variance, cosine, L2 ratio, L0, densities)."""

    eval_fraction: float = 0.05
    """Hold out this fraction of the examples (whole examples, never single tokens) from training and evaluate on
    them; 0: evaluate on training rows (recorded as such)."""

    eval_group: SplitGroup = "text"
    """How held-out examples are chosen: text (every copy of a repeated text on the same side; datasets without
    token ids fall back to example ids) or example (by example id alone)."""

    workers: int = 1
    """Data-parallel workers (>1: Ray Train TorchTrainer, gloo on CPU, NCCL on GPU)."""

    use_gpu: bool = field(default=False, action="store_true")
    """Train on GPUs (one per worker)."""

    threads: int = 0
    """Torch threads per worker (0: the machine's cores divided among the workers)."""

    overwrite: bool = field(default=False, action="store_true")
    """Replace a different run already at --out instead of refusing."""

    options: SaeOptions = field(default_factory=SaeOptions)
    """The architectures' options."""

    storage: StorageOptions = field(default_factory=StorageOptions)
    """Storage options for --data and --out."""

    address: str | None = None
    """Ray address to join for --workers > 1 (default: start a local Ray)."""

    def __post_init__(self) -> None:
        self.hook, self.arch = split_list(self.hook), split_list(self.arch)
        self.target_hook = split_list(self.target_hook)
        self.k, self.expansion = split_list(self.k, int), split_list(self.expansion, int)
        self.options, self.storage = nested(self.options, SaeOptions), nested(self.storage, StorageOptions)
        take_credentials(self, "out")
        take_inputs(self)
        if self.data is None or not self.data.uri:
            raise ConfigError("--data: name the activation dataset to train on (URI, or URI@vN for version N)")
        check_choices(self)
        check_positive(self, "batch_size", "workers")
        for name in ("hook", "arch", "k", "expansion"):
            if not getattr(self, name):
                raise ConfigError(f"--{name} needs at least one value")
        self.arch = [get_architecture(a).name for a in self.arch]
        self._check_counts()
        self._check_dictionary_kind()
        if self.encoder_init_norm <= 0:
            raise ConfigError(f"--encoder-init-norm must be positive, got {self.encoder_init_norm}")
        if self.min_position < 0:
            raise ConfigError(f"--min-position cannot be negative, got {self.min_position}")
        if self.log_every < 0:
            raise ConfigError(f"--log-every must be positive (or 0 to adapt to the run length), got {self.log_every}")
        if not (self.lr >= 0 and math.isfinite(self.lr)):  # NaN passes a plain `< 0` test
            raise ConfigError(f"--lr must be positive (or 0 for the default schedule's choice), got {self.lr}")
        if self.batch_size % self.workers:
            raise ConfigError(f"--batch-size {self.batch_size} must be divisible by --workers {self.workers}")

    def _check_dictionary_kind(self) -> None:
        """SAE, transcoder or crosscoder: the flags must say one of them, before any data is read."""
        if not 0 <= self.eval_fraction < 1:
            raise ConfigError(f"--eval-fraction must be in [0, 1), got {self.eval_fraction} (e.g. 0.05: 5 % of the "
                              "examples held out)")
        if self.target_hook and len(self.target_hook) not in (1, len(self.hook)):
            raise ConfigError(f"--target-hook takes one hook or one per --hook ({len(self.hook)}); got "
                              f"{self.target_hook}")
        if self.crosscoder and self.target_hook:
            raise ConfigError("--crosscoder and --target-hook cannot be combined: a crosscoder reconstructs the "
                              "hooks it reads; drop one of them")
        if self.crosscoder_data and not self.crosscoder:
            raise ConfigError("--crosscoder-data trains a model-diffing crosscoder: add --crosscoder")
        if self.crosscoder and len(self.hook) < 2 and not self.crosscoder_data:
            raise ConfigError(f"--crosscoder needs at least two hooks (e.g. --hook resid.1,resid.3); got {self.hook}")
        if self.skip_connection and not self.target_hook:
            raise ConfigError("--skip-connection applies to transcoders: add --target-hook")
        for arch in self.arch:
            if (self.target_hook or self.crosscoder) and not get_architecture(arch).sae_class.transcodes:
                what = "a transcoder" if self.target_hook else "a crosscoder"
                raise ConfigError(f"--arch {arch} cannot train {what} (its encoder is its decoder, so input and output "
                                  "must be one space in one unit); use relu, topk, batchtopk, jumprelu or matryoshka")

    def _check_counts(self) -> None:
        """A bad count (``--tokens 5X``) fails here, before any data is read."""
        counts = {"tokens": self.tokens, "eval_tokens": self.eval_tokens}
        if self.dead_tokens != "auto":
            counts["dead_tokens"] = self.dead_tokens
        for name, count in counts.items():
            try:
                value = parse_count(count)
            except ConfigError as exc:
                raise ConfigError(f"--{name.replace('_', '-')}: {exc}") from None
            if value <= 0 and name == "tokens":
                raise ConfigError(f"--tokens must be positive, got {count!r}")

    @property
    def token_count(self) -> int:
        return parse_count(self.tokens)


#: settings that do not change what a run computes: left out of its fingerprint (everything else is in)
RUN_NEUTRAL = frozenset({"out", "overwrite", "checkpoint_every", "log_every", "threads", "address", "storage"})


@dataclass
class SaeEncodeConfig:
    """Run a trained SAE over a dataset: a sparse latent dataset and per-latent top-activating examples."""

    sae: str = "runs/sae"
    """The trained SAE's URI (cfg.json + sae_weights.safetensors)."""

    data: DatasetInput | None = field(default=None, metavar="URI[@vN]")
    """Activation dataset to encode (default: the one the SAE was trained on, at the version it was trained on;
    refused if its URI now holds another dataset); URI@vN reads version N, URI alone its latest. Recorded in the
    output's provenance."""

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

    min_position: int | None = None
    """Encode rows at positions >= P only (default: the SAE's own `sae train --min-position`, the rows it was
    trained on); rows below keep their place with no active latent (ids -1) and are never top examples."""

    dashboard: str = ""
    """Also build the SAE's latent dashboard over --data into this folder or s3:// prefix (actlake sae dashboard)."""

    overwrite: bool = field(default=False, action="store_true")
    """Replace an existing dataset at --out."""

    storage: StorageOptions = field(default_factory=StorageOptions)
    """Storage options for --sae, --data and --out."""

    def __post_init__(self) -> None:
        self.storage = nested(self.storage, StorageOptions)
        take_credentials(self, "sae", "out", "dashboard")
        take_inputs(self)
        check_positive(self, "batch_size", "top_examples")
        if self.top_latents < 0 or self.context < 0:
            raise ConfigError("--top-latents and --context cannot be negative")
        if self.min_position is not None and self.min_position < 0:
            raise ConfigError(f"--min-position cannot be negative, got {self.min_position}")
