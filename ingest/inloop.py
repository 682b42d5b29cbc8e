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

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from ingest.interventions import Intervention, InterventionError, intervening
from ingest.prefix import PrefixReuse, patched_forwards
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
                           {c.name: [(iv.hook.module, iv.hook.read_input) for iv in c.interventions]
                            for c in self.comparisons})

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
        main = _LogProbs.of(logits.float())
        if self.save_loss or self.comparisons:
            out["loss"] = _masked(*next_token_loss(main.logp, ids, mask), keep)
        for c in self.comparisons:
            other_logits = _compared(model, inputs, c, reuse, lambda o: o.logits,
                                     lambda: head_on_real_tokens(model, mask))
            other = _LogProbs.of(other_logits.float(), full=False)
            out[f"{c.name}_loss"] = _masked(*other.next_token_loss(ids, mask), keep)
            p, q = (other, main) if c.name == "clean" else (main, other)
            out[c.kl_column] = p.kl_to(q)[keep].cpu().numpy().astype(np.float32)
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
            other = _compared(model, inputs, c, reuse, lambda o: o.last_hidden_state)
            cos = F.cosine_similarity(hidden.float(), other.float(), dim=-1)
            out[f"{c.name}_cos"] = cos[keep].cpu().numpy().astype(np.float32)
        return out


def _compared(model, inputs: dict, c: ComparisonPass, reuse: PrefixReuse, pick, head=None) -> torch.Tensor:
    # head: a factory of the context the pass runs in beside the interventions (the LM head on real tokens)
    """Comparison pass ``c``'s output (``pick``: its logits or final hidden states), its blocks before the hook
    replayed from the main pass. The first replayed pass of each comparison is checked against the whole pass
    (and a replay that fails, as a model whose blocks hand state to later blocks beside their outputs, Gemma 3n's
    shared keys and values): if they differ, every pass runs whole from then on, so no model gets other numbers
    from the replay than from the whole pass."""
    def run(replay: bool) -> torch.Tensor:
        with (torch.inference_mode(), intervening(model, c.interventions),
              reuse.replaying(c.name) if replay else nullcontext(), head() if head else nullcontext()):
            return pick(model(**inputs))

    if not reuse.upto.get(c.name):
        return run(False)
    try:
        fast = run(True)
    except Exception as exc:  # noqa: BLE001 - any failure of the replay: the whole pass decides
        reuse.disable(f"replaying the blocks before the hook failed ({type(exc).__name__}: {exc})")
        return run(False)
    if c.name in reuse.verified:
        return fast
    whole = run(False)
    if not torch.allclose(fast, whole, rtol=1e-5, atol=1e-5, equal_nan=True):
        reuse.disable("replaying the blocks before the hook changed the output (a model whose blocks pass state "
                      "to later blocks beside their outputs)")
        return whole
    reuse.verified.add(c.name)
    return fast


@contextmanager
def head_on_real_tokens(model, mask: torch.Tensor, active: bool = True) -> Iterator[None]:
    """Inside the block, the model's LM head (its output embeddings, a Linear) computes the logits of real tokens
    only: padding positions get zeros, which nothing reads (their loss is null, their rows are not kept). Batches
    of unpacked contexts are a third padding on the built-in corpus, and the head is a fifth of SmolLM2's forward
    (49,152 x 576), so this is ~7 % of each of ``sae eval``'s three passes. A no-op when nothing is padded."""
    head = model.get_output_embeddings() if active and hasattr(model, "get_output_embeddings") else None
    if not isinstance(head, torch.nn.Linear) or bool(mask.all()):
        yield
        return
    where = mask.bool()

    def real_only(hidden: torch.Tensor) -> torch.Tensor:
        out = hidden.new_zeros((*hidden.shape[:-1], head.out_features))
        out[where] = F.linear(hidden[where], head.weight, head.bias)
        return out

    with patched_forwards({head: real_only}):
        yield


def next_token_loss(logp: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor,
                    lse: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per position t, -log p(token t+1) under ``logp`` (batch, positions, vocab), and whether token t+1 exists
    (false at each context's last real token and on padding). With ``lse``, ``logp`` holds raw logits and ``lse``
    their log-normaliser per position (no log_softmax over the vocabulary)."""
    ids = ids.to(logp.device)
    loss = torch.zeros(ids.shape, dtype=torch.float32, device=logp.device)
    valid = torch.zeros(ids.shape, dtype=torch.bool, device=logp.device)
    if ids.shape[1] > 1:
        loss[:, :-1] = -logp[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1)
        if lse is not None:
            loss[:, :-1] += lse[:, :-1]
        m = mask.to(logp.device)
        valid[:, :-1] = m[:, :-1] & m[:, 1:]
    return loss, valid


@dataclass
class _LogProbs:
    """A pass's next-token distributions from its logits, computed only as far as needed: a comparison pass keeps
    its logits and log-normaliser (the loss gathers one entry, the KL from the main pass needs no log_softmax of
    its own: measured on SmolLM2, 16 x 64 tokens x 49,152 entries, 0.23 s against 0.47 s per comparison)."""

    logits: torch.Tensor
    lse: torch.Tensor  #: log sum exp of the logits per position
    logp: torch.Tensor | None = None  #: log_softmax (the main pass: its loss and its probabilities)
    _prob: torch.Tensor | None = None

    @classmethod
    def of(cls, logits: torch.Tensor, full: bool = True) -> _LogProbs:
        if full:
            logp = F.log_softmax(logits, dim=-1)
            # the normaliser from one entry (logits - logp is the same at every entry): no second pass
            return cls(logits, logits[..., 0] - logp[..., 0], logp)
        return cls(logits, torch.logsumexp(logits, dim=-1))

    @property
    def prob(self) -> torch.Tensor:
        if self._prob is None:
            self._prob = self.logp.exp() if self.logp is not None else (self.logits - self.lse[..., None]).exp()
        return self._prob

    def next_token_loss(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``next_token_loss`` from the log-probabilities, or from the logits and normaliser when there are none."""
        if self.logp is not None:
            return next_token_loss(self.logp, ids, mask)
        return next_token_loss(self.logits, ids, mask, self.lse)

    def kl_to(self, q: _LogProbs) -> torch.Tensor:
        """KL(self || q) per position: sum p (z_p - z_q) - lse_p + lse_q, the logit differences summed under p as
        one matrix product per position (more accurate than differencing two log_softmaxes: the differences are
        small where the distributions agree)."""
        v = self.logits.shape[-1]
        p, diff = self.prob, self.logits - q.logits
        dot = torch.bmm(p.reshape(-1, 1, v), diff.reshape(-1, v, 1)).reshape(self.lse.shape)
        return (dot - self.lse + q.lse).clamp_min(0.0)


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
