"""`actlake sae dashboard` pages on a packed text dataset (``extract --pack``: examples back to back in contexts,
rows carrying context_id) made so that each (example, context) stretch of rows is one word: a window shown around
a token holds that word only, and the SAE's latent j fires on word j. Checked: windows stop at example and
packed-context boundaries (the dashboard's and `sae explain`'s), every activation quantile band is listed (an
empty one saying so), histogram axes fitted to the data and labelled, and the tokens column without a bare `|`
when the dataset stores no unembedding."""

from __future__ import annotations

import json
import re
import subprocess

import numpy as np
import pytest
import torch

import shards
from analysis.sae.dashboard.run import SaeDashboardConfig
from analysis.sae.dashboard.run import run as dashboard
from analysis.sae.io import save_sae
from analysis.sae.registry import create_sae
from tests.interp_data import TOK, WORDS

CONTEXT_LEN = 16
RARE = 20  #: the latent of a feature planted on 3 rows only


def _packed_rows(rng) -> dict[str, np.ndarray]:
    """Examples of 3..20 tokens packed into contexts of 16 (one split over two contexts where it overflows);
    each (example, context) stretch gets a word unlike its neighbour's."""
    ex, pos, ctx, cpos = [], [], [], []
    c, p = 0, 0
    for e in range(60):
        for j in range(int(rng.integers(3, 21))):
            if p == CONTEXT_LEN:
                c, p = c + 1, 0
            ex.append(e), pos.append(j), ctx.append(c), cpos.append(p)
            p += 1
    ex, ctx = np.array(ex), np.array(ctx)
    start = np.r_[True, (ex[1:] != ex[:-1]) | (ctx[1:] != ctx[:-1])]
    stretch = np.cumsum(start) - 1
    word = (stretch * 7) % len(WORDS)  # neighbouring stretches differ (7 is prime to 20)
    return {"example_id": ex, "position": np.array(pos), "context_id": ctx,
            "context_position": np.array(cpos, dtype=np.int32), "word": word, "stretch": stretch}


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    from transformers import AutoTokenizer

    from shards.modelpaths import resolve_model_path

    root = tmp_path_factory.mktemp("packed")
    tok = AutoTokenizer.from_pretrained(str(resolve_model_path(TOK)), local_files_only=True)
    ids = np.array([tok.convert_tokens_to_ids(w) for w in WORDS])
    rng = np.random.default_rng(0)
    cols = _packed_rows(rng)
    n = len(cols["word"])
    x = np.zeros((n, len(WORDS) + 1), dtype=np.float32)
    x[np.arange(n), cols["word"]] = 1 + rng.random(n).astype(np.float32)  # activation 0.5..1.5 after the bias
    rare = np.array([5, n // 2, n - 3])
    x[rare, len(WORDS)] = [1.0, 1.5, 2.5]
    ds = str(root / "ds")
    with shards.create_dataset(ds, {"resid.0": {"shape": [len(WORDS) + 1], "dtype": "float32"}}) as w:
        half = n // 2  # two units: the stretch across them must be cut like any other
        for u, sl in enumerate((slice(0, half), slice(half, n))):
            w.write_unit(u, {"example_id": cols["example_id"][sl], "position": cols["position"][sl],
                             "token_id": ids[cols["word"][sl]], "context_id": cols["context_id"][sl],
                             "context_position": cols["context_position"][sl], "resid.0": x[sl]})
    sae = create_sae("relu", d_in=len(WORDS) + 1, d_sae=24, seed=0)
    with torch.no_grad():
        sae.W_enc.zero_()
        sae.W_enc[:, :RARE + 1] = torch.eye(RARE + 1)
        sae.b_enc.fill_(-0.5)
        sae.b_enc[RARE + 1:] = -5.0  # never fire
        sae.b_dec.zero_()
    save_sae(sae, str(root / "sae"), {"hook": "resid.0", "dataset": ds})
    dashboard(SaeDashboardConfig(sae=str(root / "sae"), out=str(root / "site"), top=6, context=5, tokenizer=TOK))
    return root, cols, x, rare


def _page(root, lat: int) -> dict:
    text = (root / "site" / "latents" / f"{lat}.js").read_text()
    return json.loads(text[2:text.rindex(")")])


def test_windows_stop_at_example_and_packed_context_boundaries(packed):
    """Every window shown is one (example, context) stretch's rows: one word, the row's own stretch, and as long
    as the stretch allows within 5 tokens each side (before: windows ran into the neighbouring example or the
    previous context, whose tokens the model never saw with this one)."""
    root, cols, _, _ = packed
    lengths = np.bincount(cols["stretch"])
    for lat in range(len(WORDS)):
        page = _page(root, lat)
        for label, _act, own, tokens, _values in page["top"] + page["quantiles"]:
            if not tokens:
                continue
            assert len(set(tokens)) == 1 and tokens[0].strip() == WORDS[lat], (lat, label, tokens)
            assert len(tokens) <= 11 and own < len(tokens)
    # each window against its row, found by its activation (random gains: one row has it)
    stretch, x = cols["stretch"], packed[2]
    for lat in (0, 7, 13):
        for label, act, own, tokens, _values in _page(root, lat)["top"] + _page(root, lat)["quantiles"]:
            r = int(np.argmin(np.abs(x[:, lat] - 0.5 - act)))
            assert x[r, lat] - 0.5 == pytest.approx(act, rel=1e-4), (lat, label)
            span = [q for q in range(r - 5, r + 6) if 0 <= q < len(stretch) and stretch[q] == stretch[r]]
            assert (len(tokens), own) == (len(span), span.index(r)), (lat, label)
    assert lengths.min() < 5  # short stretches exist: windows were cut


def test_sae_explain_contexts_stop_at_the_same_boundaries(packed):
    """`sae explain`'s contexts (``analysis.interp.contexts``, the dashboard's view built without context ids as
    `sae explain` builds it): each context one stretch."""
    from analysis.interp.contexts import ContextPlan, collect
    from analysis.sae.dashboard.collect import LatentCollector
    from analysis.sae.dashboard.run import _encode, _kept_batches, _Tokens
    from analysis.sae.dashboard.views import TextView
    from analysis.sae.io import load_sae

    root, cols, _, _ = packed
    ds = shards.open_dataset(str(root / "ds"))
    sae = load_sae(str(root / "sae"))
    plan = ContextPlan(top=4, quantiles=3, held_out=4, not_active=2, context=6)
    collector = LatentCollector(sae.d_sae, plan.n_top)
    for batch, keep in _kept_batches(ds, "resid.0", 256, 0):
        collector.add(_encode(sae, batch["x"]), keep)
    meta = ds.metadata_table(["example_id", "token_id"])
    view = TextView(meta.column("example_id").to_numpy(), meta.column("token_id").to_numpy(), _Tokens(ds, TOK), 6)
    got = collect(sae, ds, "resid.0", [0, 3, 9], plan, view, collector.table(), batch_size=256)
    stretch = cols["stretch"]
    for c in got:
        for ctx in c.shown + c.held_out:
            assert len(set(ctx.tokens)) == 1 and ctx.tokens[0].strip() == WORDS[c.latent], (c.latent, ctx.tokens)
            assert len(ctx.tokens) == int(np.sum(np.abs(np.flatnonzero(stretch == stretch[ctx.row]) - ctx.row) <= 6))


def test_every_quantile_band_is_listed(packed):
    """Five bands on every firing latent's page, in rising activation (its values span two histogram bins: before,
    two rows at most); the latent active on 3 rows lists 40-60 % and 80-100 % as empty."""
    root, _, x, rare = packed
    for lat in range(len(WORDS)):
        q = _page(root, lat)["quantiles"]
        assert [c[0] for c in q] == ["0-20 %", "20-40 %", "40-60 %", "60-80 %", "80-100 %"], lat
        acts = [c[1] for c in q]
        assert acts == sorted(acts) and all(a > 0 for a in acts) and len(set(acts)) == 5, lat
    q = _page(root, RARE)["quantiles"]
    assert [c[0] for c in q] == ["0-20 %", "20-40 %", "40-60 % (empty)", "60-80 %", "80-100 % (empty)"]
    assert [c[1] for c in q] == pytest.approx([0.5, 1.0, 0.0, 2.0, 0.0]) and q[2][3] == [] and q[4][3] == []
    assert _page(root, 23)["quantiles"] == []  # never fires: no band


def test_histograms_fit_the_data_and_name_their_axes(packed, chromium):
    """A latent's activation histogram spans its own values' bins, not 1e-4..1e4 (where two bins of 48 filled a
    sliver); both histograms name their axes with units; the tokens column shows a dash, not a bare `|`, where
    the dataset stores no unembedding."""
    root, cols, x, _ = packed
    page = _page(root, 3)
    acts = x[cols["word"] == 3, 3] - 0.5
    lo, hi = (float(e) for e in page["edges"])
    assert lo <= acts.min() and hi >= acts.max() and hi / lo < 10
    assert len(page["hist"]) == 4 and page["hist"][0] > 0 and page["hist"][-1] > 0  # (0.46, 2.15]: 4 bins
    assert sum(page["hist"]) == len(acts)
    index = (root / "site" / "index.html").read_text()
    assert "firing frequency (fraction of rows, log scale)" in index and ">latents<" in index
    part = (root / "site" / "index" / "part-0.js").read_text()
    columns, rows = json.loads("[" + part[2:part.rindex(")")] + "]")
    terms = {r[0]: r[columns.index("tokens (promoted | top)")] for r in rows}
    assert terms[3].startswith("— | ") and terms[3].split() == ["—", "|", WORDS[3]] and terms[23] == "— | "
    dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
                          f"file://{root}/site/latent.html?l={RARE}"], capture_output=True, text=True, timeout=120,
                         check=True).stdout
    assert "activation (raw units, log scale)" in dom and ">active rows<" in dom
    assert len(re.findall(r"no active value in this band", dom)) == 2
