"""Configs of ``actlake sae explain`` and ``actlake sae score`` (their flags are generated from them), and the
``--latents`` selection."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

import numpy as np
from simple_parsing import field

from analysis.common.inputs import DatasetInput, take_inputs
from analysis.interp.clients.base import KINDS, ClientSpec
from analysis.interp.files import SCORES_DIR
from analysis.interp.scoring import SCORERS
from shards.config import check_choices, check_positive, nested, split_list, take_credentials
from shards.errors import ConfigError
from shards.storage import StorageOptions

ClientKind = Literal["openai", "transformers"]
assert set(ClientKind.__args__) == set(KINDS)  # one list of client kinds


class InterpConfigError(ConfigError):
    """An explain or score option that cannot be used."""


_TERM = re.compile(r"^(?:(?P<id>[0-9]+)|(?P<a>[0-9]*):(?P<b>[0-9]*)|(?P<kind>top|random):(?P<n>[0-9]+))$")


def check_latents(spec: str) -> None:
    """Refuse a ``--latents`` spec before any work (``3,17``, ``0:8``, ``top:100``, ``random:100``): unreadable
    terms, empty ranges, N of 0, nothing at all."""
    terms = split_list(spec)
    if not terms:
        raise InterpConfigError("--latents is empty: give ids (3,17), a range (0:8), top:N or random:N")
    for term in terms:
        m = _TERM.match(term)
        if not m:
            raise InterpConfigError(f"--latents {spec!r}: {term!r} is not a latent id (3), a range (0:8), the most "
                                    "frequent N (top:100) or a random N (random:100, drawn with --seed)")
        if (m["n"] is not None and int(m["n"]) == 0) or (m["b"] and int(m["a"] or 0) >= int(m["b"])):
            raise InterpConfigError(f"--latents {spec!r}: {term!r} selects no latent")


def select_latents(spec: str, frequency: np.ndarray, seed: int) -> list[int]:
    """The latents a spec names, in order, each once: ids and ranges as given (refused beyond the SAE's width),
    ``top:N`` the N most frequent, ``random:N`` N drawn among the latents that fire (with ``seed``)."""
    d_sae, out = len(frequency), []
    for term in split_list(spec):
        m = _TERM.match(term)
        if m["id"] is not None:
            ids = [int(m["id"])]
        elif m["kind"] == "top":
            ids = np.argsort(-frequency, kind="stable")[:int(m["n"])].tolist()
        elif m["kind"] == "random":
            live = np.flatnonzero(frequency > 0)
            ids = sorted(np.random.default_rng(seed).choice(live, min(int(m["n"]), len(live)), replace=False).tolist())
        else:
            a, b = int(m["a"] or 0), int(m["b"]) if m["b"] else d_sae
            if b > d_sae or a >= d_sae:  # checked before the range is built: 0:300000000 is refused, not listed
                raise InterpConfigError(f"--latents {spec!r}: {term} reaches beyond the SAE's {d_sae} latents")
            ids = list(range(a, b))
        bad = [i for i in ids if i >= d_sae]
        if bad:
            raise InterpConfigError(f"--latents {spec!r}: latent {bad[0]} is beyond the SAE's {d_sae} latents")
        out += ids
    return list(dict.fromkeys(int(i) for i in out))


@dataclass
class ModelFlags:
    """How an explainer or scorer model is reached (the key never: it is read from the environment)."""

    base_url: str = ""
    """An OpenAI-compatible endpoint (default: OPENAI_BASE_URL as the openai client reads it, else OpenAI's)."""
    api_key_env: str = "OPENAI_API_KEY"
    """The environment variable holding the key (read where the requests are made; never written anywhere)."""
    concurrency: int = 8
    """Requests in flight at once per worker (the local transformers model answers one at a time)."""
    max_retries: int = 4
    """Retries of a request on 429, 5xx, timeouts and dropped connections, with exponential backoff."""
    timeout: float = 60.0
    """Seconds to wait for one answer."""
    price_in: float = 0.0
    """USD per million prompt tokens, for the cost in the summary (0: cost not computed)."""
    price_out: float = 0.0
    """USD per million completion tokens."""
    workers: int = 1
    """Ray tasks asking the model side by side (1: in this process)."""
    address: str | None = None
    """Ray cluster address for --workers (default: a local Ray)."""

    def _check_model_flags(self) -> None:
        check_positive(self, "concurrency", "workers")
        if not (math.isfinite(self.timeout) and 0 < self.timeout <= 86_400):
            raise InterpConfigError(f"--timeout {self.timeout}: give the seconds to wait for one answer, above 0 "
                                    "and at most a day (86400)")
        if self.max_retries < 0 or not all(math.isfinite(p) and p >= 0 for p in (self.price_in, self.price_out)):
            raise InterpConfigError("--max-retries, --price-in and --price-out must be finite and not negative")
        if self.base_url:
            if not re.match(r"^https?://[^/\s]+", self.base_url, re.IGNORECASE):
                raise InterpConfigError(f"--base-url {self.base_url!r}: give an http(s):// URL of an "
                                        "OpenAI-compatible endpoint (e.g. http://127.0.0.1:8000/v1)")
            if "@" in self.base_url.split("//", 1)[-1].split("/", 1)[0] or "?" in self.base_url or "#" in self.base_url:
                raise InterpConfigError("--base-url holds credentials or a query string; put the key in the "
                                        "variable --api-key-env names instead (a URL is recorded in run.json and "
                                        "logged)")

    def _check_out(self) -> None:
        if not self.out.strip():
            raise InterpConfigError("--out is empty: name a folder or s3:// prefix for the results")

    def spec(self, kind: str, model: str, flag: str) -> ClientSpec:
        return ClientSpec(kind=kind, model=model, base_url=self.base_url, api_key_env=self.api_key_env,
                          timeout=self.timeout, max_retries=self.max_retries, flag=flag)


#: settings that do not change what is asked of the model or how it is read (out of the run's fingerprint)
NEUTRAL = frozenset({"out", "overwrite", "storage", "batch_size", "base_url", "api_key_env", "concurrency",
                     "max_retries", "timeout", "price_in", "price_out", "workers", "address"})


@dataclass
class SaeExplainConfig(ModelFlags):
    """Ask a language model to explain each selected latent from its contexts (delphi's default explainer)."""

    sae: str = ""
    """The SAE (an `actlake sae train` output or a SAELens-layout directory)."""
    data: DatasetInput | None = field(default=None, metavar="URI[@vN]")
    """The dataset to take contexts from (default: the one the SAE's cfg.json names, at the version it was trained
    on)."""
    latents: str = "random:100"
    """Which latents: ids (3,17), ranges (0:8), the most frequent N (top:100), N drawn among those that fire
    (random:100, with --seed); comma-separated terms combine."""
    out: str = "runs/explain"
    """Where explanations.jsonl, contexts.jsonl, the answer cache (answers/), summary.json and report.html go."""
    explainer: ClientKind = "openai"
    """openai: any OpenAI-compatible chat endpoint; transformers: a local causal LM (an instruct model)."""
    explainer_model: str = ""
    """The model: its name at the endpoint, or a directory / installed model package for transformers."""
    top: int = 10
    """Top-activating contexts shown to the explainer."""
    quantile_examples: int = 5
    """Contexts from the lower activation quantiles shown besides (one per band, lowest first)."""
    held_out: int = 10
    """Activating contexts kept for `sae score` (never shown to the explainer), across the activation range."""
    not_active: int = 10
    """Non-activating contexts kept for `sae score` (random windows where the latent is zero throughout)."""
    context: int = 12
    """Tokens on each side of a context's centre token."""
    threshold: float = 0.3
    """Tokens above this fraction of the context's maximum activation are marked <<like this>>."""
    show_activations: bool = False
    """List the marked tokens' activations (0-10) after each context, as delphi's activations option does."""
    max_tokens: int = 200
    """Tokens the explainer may write."""
    temperature: float = 0.0
    """Sampling temperature (0: greedy)."""
    seed: int = 0
    """Seed of random:N and of the non-activating windows."""
    tokenizer: str = ""
    """Tokenizer for readable tokens (default: the dataset's model's)."""
    batch_size: int = 4096
    """Rows per encoding batch."""
    min_position: int | None = None
    """Contexts centred at positions >= P only (default: the SAE's own --min-position)."""
    overwrite: bool = False
    """Replace a different run at --out instead of refusing."""
    storage: StorageOptions = field(default_factory=StorageOptions)
    """Storage options for the SAE, the dataset and --out."""

    def __post_init__(self) -> None:
        self.storage = nested(self.storage, StorageOptions)
        take_credentials(self, "sae", "out")
        take_inputs(self)
        check_choices(self)
        self._check_model_flags()
        if not self.sae:
            raise InterpConfigError("--sae: name the SAE to explain (an `actlake sae train` output)")
        if not self.explainer_model:
            raise InterpConfigError("--explainer-model: name the explainer (its name at the endpoint, e.g. "
                                    "gpt-4o-mini, or a local instruct model for --explainer transformers)")
        check_positive(self, "top", "held_out", "not_active", "max_tokens", "batch_size")
        if self.context < 1 or self.quantile_examples < 0:
            raise InterpConfigError("--context must be 1 or more and --quantile-examples 0 or more")
        if not 0 <= self.threshold < 1 or not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise InterpConfigError("--threshold is a fraction in [0, 1) and --temperature a finite number >= 0")
        if self.seed < 0:
            raise InterpConfigError(f"--seed {self.seed}: give 0 or more")
        check_latents(self.latents)
        self._check_out()

    def client(self) -> ClientSpec:
        return self.spec(self.explainer, self.explainer_model, "--explainer-model")


@dataclass
class SaeScoreConfig(ModelFlags):
    """Score a `sae explain` run's explanations on held-out contexts (delphi's detection and fuzzing), beside a
    random-explanation baseline scored the same way."""

    explanations: str = ""
    """The `actlake sae explain` output to score (its explanations.jsonl and contexts.jsonl)."""
    out: str = ""
    """Where scores.jsonl, predictions.jsonl, summary.json and report.html go (default: EXPLANATIONS/scores)."""
    scorers: list[str] = field(default_factory=lambda: ["detection", "fuzz"], nargs="*", type=str,
                               metavar="NAME[,NAME...]",
                               help="detection: does the explanation tell activating contexts from others; fuzz: are "
                                    "the marked tokens the ones it describes (activating contexts marked right vs "
                                    "others marked at random). Default: both.")
    client: ClientKind | None = field(default=None, metavar="{openai,transformers}")
    """openai or transformers (default: the explainer's)."""
    model: str = ""
    """The scorer model (default: the explainer model)."""
    per_prompt: int = 5
    """Examples per scorer prompt (delphi's n_examples_shown)."""
    log_prob: bool = False
    """Ask for the answers' log-probabilities: AUROC from P(1) at each answer (delphi's log_prob)."""
    baseline: bool = True
    """Also score each latent with another latent's explanation (the random-explanation baseline)."""
    seed: int = 42
    """Seed of the samples' shuffle and of the baseline's choice of explanations."""
    overwrite: bool = False
    """Replace a different scoring run at --out instead of refusing."""
    storage: StorageOptions = field(default_factory=StorageOptions)
    """Storage options for the explanations and --out."""

    def __post_init__(self) -> None:
        self.storage = nested(self.storage, StorageOptions)
        take_credentials(self, "explanations", "out")
        self.scorers = list(dict.fromkeys(split_list(self.scorers)))  # each scorer once
        check_choices(self)
        self._check_model_flags()
        if not self.explanations:
            raise InterpConfigError("--explanations: name an `actlake sae explain` output")
        bad = [s for s in self.scorers if s not in SCORERS]
        if bad or not self.scorers:
            raise InterpConfigError(f"--scorers {','.join(self.scorers)}: choose from {', '.join(SCORERS)}")
        check_positive(self, "per_prompt")
        if self.seed < 0:
            raise InterpConfigError(f"--seed {self.seed}: give 0 or more")
        if not self.out:
            self.out = self.explanations.rstrip("/") + "/" + SCORES_DIR
        self._check_out()
