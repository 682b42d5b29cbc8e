"""The model in the loop: interventions of the main pass, per-token next-token loss and logits, and comparison
passes (clean, spliced, ablated) run on the same batch, stored as ordinary columns.

Columns (for causal LMs, a row per token):
- ``loss``: cross-entropy of predicting the token at position + 1 (null at a context's last token);
- ``NAME_loss`` for each comparison pass ``NAME`` (``clean_loss`` with ``--compare-clean``);
- ``kl``: KL(clean || intervened) of the next-token distributions (``--compare-clean``); for another pass,
  ``NAME_kl`` = KL(main || NAME) (``sae eval``: KL(clean || spliced));
- ``logit_topI`` / ``token_topI`` (I = 1..K): the K largest logits and their token ids (``--save-logits K``).

Models without an LM head (encoders such as MiniLM) have no next-token loss: there a comparison pass stores
``NAME_cos``, the cosine between the two passes' final hidden states per token.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from ingest.interventions import Intervention, InterventionError, intervening
from ingest.prefix import PrefixReuse
from shards.modelpaths import is_causal_lm_model


@dataclass
class ComparisonPass:
    """A second forward pass on the same batch, with its own interventions (none: the clean model)."""

    name: str  #: column prefix: ``NAME_loss``, ``NAME_kl`` (``clean``: ``clean_loss``, ``kl``)
    interventions: list[Intervention] = field(default_factory=list)

    @property
    def kl_column(self) -> str:
        return "kl" if self.name == "clean" else f"{self.name}_kl"


@dataclass
class ModelInLoop:
    """What a job does to and reads from the model beyond capturing hooks (empty: a plain extraction)."""

    interventions: list[Intervention] = field(default_factory=list)  #: applied in the main pass
    save_loss: bool = False
    logits_k: int = 0
    comparisons: list[ComparisonPass] = field(default_factory=list)
    #: what a comparison pass is measured by: next-token loss and KL (causal LMs), or the cosine of the final
    #: hidden states (models without an LM head)
    measure: Literal["loss", "cosine"] = "loss"

    @property
    def needs_output(self) -> bool:
        """Whether the main pass must run to the logits (no early stop after the last hook)."""
        return self.save_loss or self.logits_k > 0 or bool(self.comparisons)

    def columns(self) -> dict[str, str]:
        """The columns this adds to every row, with their types."""
        if self.measure == "cosine":
            return {f"{c.name}_cos": "float32" for c in self.comparisons}
        out = {"loss": "float32"} if self.save_loss or self.comparisons else {}
        for c in self.comparisons:
            out[f"{c.name}_loss"] = "float32"
            out[c.kl_column] = "float32"
        for i in range(1, self.logits_k + 1):
            out[f"logit_top{i}"], out[f"token_top{i}"] = "float32", "int32"
        return out

    def identity(self) -> dict:
        """The job-identity part: empty for a plain extraction (its identity stays what it was)."""
        out: dict = {}
        if self.interventions:
            out["interventions"] = [iv.identity() for iv in self.interventions]
        if self.comparisons:
            out["comparisons"] = {c.name: [iv.identity() for iv in c.interventions] for c in self.comparisons}
        if self.save_loss or self.logits_k or self.comparisons:
            out["loss"] = {"save_loss": self.save_loss, "logits_k": self.logits_k, "measure": self.measure}
        return out

    def prefix_reuse(self, model) -> PrefixReuse:
        """What the comparison passes may take from the main pass (``ingest/prefix.py``)."""
        return PrefixReuse(model, [iv.hook.module for iv in self.interventions],
                           {c.name: [iv.hook.module for iv in c.interventions] for c in self.comparisons})

    def token_columns(self, model, inputs: dict, output, keep: torch.Tensor,
                      reuse: PrefixReuse | None = None) -> dict[str, np.ndarray]:
        """This batch's extra columns at the kept tokens; ``output``: the main pass's model output; ``reuse``:
        the main pass's recorded blocks, which comparison passes replay instead of recomputing."""
        reuse = reuse or PrefixReuse(model, [], {})
        try:
            if self.measure == "cosine":
                return self._cosine_columns(model, inputs, output.last_hidden_state, keep, reuse)
            return self._loss_columns(model, inputs, output, keep, reuse)
        finally:
            reuse.clear()

    def _loss_columns(self, model, inputs: dict, output, keep: torch.Tensor,
                      reuse: PrefixReuse) -> dict[str, np.ndarray]:
        logits = output.logits
        ids, mask = inputs["input_ids"], inputs["attention_mask"].bool()
        keep = keep.to(logits.device)
        out: dict[str, np.ndarray] = {}
        main_logp = F.log_softmax(logits.float(), dim=-1)
        if self.save_loss or self.comparisons:
            out["loss"] = _masked(*next_token_loss(main_logp, ids, mask), keep)
        for c in self.comparisons:
            with torch.inference_mode(), intervening(model, c.interventions), reuse.replaying(c.name):
                other = F.log_softmax(model(**inputs).logits.float(), dim=-1)
            out[f"{c.name}_loss"] = _masked(*next_token_loss(other, ids, mask), keep)
            p, q = (other, main_logp) if c.name == "clean" else (main_logp, other)
            out[c.kl_column] = kl_div(p, q)[keep].cpu().numpy().astype(np.float32)
        if self.logits_k:
            vals, idx = logits.float().topk(self.logits_k, dim=-1)
            for i in range(self.logits_k):
                out[f"logit_top{i + 1}"] = vals[..., i][keep].cpu().numpy()
                out[f"token_top{i + 1}"] = idx[..., i][keep].to(torch.int32).cpu().numpy()
        return out

    def _cosine_columns(self, model, inputs: dict, hidden: torch.Tensor, keep: torch.Tensor,
                        reuse: PrefixReuse) -> dict[str, np.ndarray]:
        out = {}
        keep = keep.to(hidden.device)
        for c in self.comparisons:
            with torch.inference_mode(), intervening(model, c.interventions), reuse.replaying(c.name):
                other = model(**inputs).last_hidden_state
            cos = F.cosine_similarity(hidden.float(), other.float(), dim=-1)
            out[f"{c.name}_cos"] = cos[keep].cpu().numpy().astype(np.float32)
        return out


def next_token_loss(logp: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per position t, -log p(token t+1) under ``logp`` (batch, positions, vocab), and whether token t+1 exists
    (false at each context's last real token and on padding)."""
    ids = ids.to(logp.device)
    loss = torch.zeros(ids.shape, dtype=torch.float32, device=logp.device)
    valid = torch.zeros(ids.shape, dtype=torch.bool, device=logp.device)
    if ids.shape[1] > 1:
        loss[:, :-1] = -logp[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1)
        m = mask.to(logp.device)
        valid[:, :-1] = m[:, :-1] & m[:, 1:]
    return loss, valid


def kl_div(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per position, in nats, from log-probabilities over the vocabulary."""
    return (logp.exp() * (logp - logq)).sum(-1).clamp_min(0.0)


def _masked(values: torch.Tensor, valid: torch.Tensor, keep: torch.Tensor) -> np.ma.MaskedArray:
    """Kept rows' values, masked (stored as null) where they do not exist."""
    return np.ma.masked_array(values[keep].cpu().numpy(), mask=~valid[keep].cpu().numpy())


def loss_measure(model, model_name: str, wants: list[str], comparing: bool, pool: str, modality: str) -> str:
    """How comparisons are measured ("loss" for causal LMs, "cosine" otherwise), after checking the flags:
    ``wants`` (--save-loss, --save-logits) need a causal LM; all of them a row per token of text."""
    if not wants and not comparing:
        return "loss"
    if modality != "text":
        raise InterventionError(f"{', '.join(wants) or '--compare-clean'}: loss and comparison columns are per "
                                "token of text; images take --intervene alone")
    if pool != "none":
        raise InterventionError(f"{', '.join(wants) or '--compare-clean'} stores a value per token: it needs "
                                f"--pool none, not {pool!r}")
    if is_causal_lm_model(model):
        return "loss"
    if wants:
        verb = "needs" if len(wants) == 1 else "need"
        raise InterventionError(f"{' and '.join(wants)} {verb} a causal language model with an LM head; {model_name!r}"
                                f" ({type(model).__name__}) has none. Drop it (interventions alone work on any model; "
                                "--compare-clean then stores the cosine of the final hidden states)")
    return "cosine"


def concat_columns(parts: dict[str, list]) -> dict[str, np.ndarray]:
    """Per-batch column pieces joined (masked arrays stay masked: their nulls reach the file)."""
    return {name: (np.ma.concatenate(p) if isinstance(p[0], np.ma.MaskedArray) else np.concatenate(p))
            for name, p in parts.items()}
