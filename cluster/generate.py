"""``actlake generate``: continuations with and without interventions side by side, seeded (steering demos).

It builds the interventions as ``actlake extract`` does (``analysis.interventions``) and applies them with
``ingest.interventions.intervening`` around transformers' ``generate``; every forward of the generation (the
prompt, then each new token) goes through them."""

from __future__ import annotations

import html
import json
import logging
from dataclasses import dataclass

from simple_parsing import field

from ingest.config import flat_specs
from shards.config import check_positive, nested, split_list, take_credentials
from shards.errors import ConfigError
from shards.records import JsonRecord
from shards.storage import StorageOptions

log = logging.getLogger("actlake.generate")


@dataclass
class GenerateConfig:
    """Continue prompts with a causal LM, clean and with --intervene, side by side."""

    model: str
    """A causal LM: local directory, installed package shipping weights, or 'package.module:function'."""

    prompts: str
    """A .txt file (a prompt per line) or .jsonl file (field prompt or text)."""

    intervene: list[str] = field(default_factory=list, action="append", metavar="HOOK:KIND[:key=value,...]")
    """Interventions (as for `actlake extract`), e.g. 'resid.6:add:direction=runs/probe#animal,scale=8'."""

    max_new_tokens: int = 24
    """Tokens generated per prompt."""

    sample: bool = field(default=False, action="store_true")
    """Sample (with --temperature) instead of greedy decoding."""

    temperature: float = 1.0
    """Sampling temperature (with --sample)."""

    seeds: list[int] = field(default_factory=lambda: [0], nargs="*", type=str, metavar="SEED[,SEED...]")
    """Seeds: each prompt is continued once per seed, clean and intervened with the same seed."""

    match: list[str] = field(default_factory=list, nargs="*", metavar="WORD[,WORD...]")
    """Words whose share in the continuations is counted, clean vs intervened (the steering effect)."""

    batch_size: int = 16
    """Prompts per generate call."""

    model_dtype: str = "float32"
    """Dtype the model runs in."""

    force: bool = field(default=False, action="store_true")
    """Use an SAE or direction made for another hook, or an SAE trained on another model (warned), instead of
    refusing."""

    out: str = "runs/generate"
    """Output URI: generations.jsonl, generations.md, generations.html, summary.json."""

    storage: StorageOptions = field(default_factory=StorageOptions)
    """Storage options for sources and --out."""

    def __post_init__(self) -> None:
        self.intervene = flat_specs(self.intervene)
        self.seeds, self.match = split_list(self.seeds, int), [w.lower() for w in split_list(self.match)]
        self.storage = nested(self.storage, StorageOptions)
        take_credentials(self, "prompts", "out")
        check_positive(self, "max_new_tokens", "batch_size")
        if not self.intervene:
            raise ConfigError("generate compares continuations with and without an intervention: add --intervene")
        if not self.seeds:
            raise ConfigError("--seeds: give at least one seed")


@dataclass(kw_only=True)
class GenerateSummary(JsonRecord):
    prompts: int
    seeds: list[int]
    interventions: list[dict]
    match: list[str]
    #: per seed: share of continuations naming a --match word, clean and intervened
    match_share: dict[str, dict[str, float]]
    out: str


def read_prompts(uri: str, storage) -> list[str]:
    """Prompts from a .txt (a line each) or .jsonl (prompt/text field) file."""
    from shards.storage import Storage

    st, name = Storage.for_file(uri, storage)
    text = st.get_bytes(name).decode()
    if name.endswith(".jsonl"):
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        prompts = [r.get("prompt", r.get("text")) for r in rows]
    else:
        prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts or any(not isinstance(p, str) for p in prompts):
        raise ConfigError(f"--prompts {uri}: no prompts, or a JSONL row without a prompt/text string field")
    return prompts


def _continue(loaded, prompts: list[str], cfg: GenerateConfig, seed: int) -> list[str]:
    import torch

    tok = loaded.tokenizer
    # sampling from the whole tempered distribution: no top-k/top-p a model's generation config may carry
    how = {"do_sample": True, "temperature": cfg.temperature, "top_k": 0, "top_p": 1.0} if cfg.sample else {
        "do_sample": False}
    out = []
    for b in range(0, len(prompts), cfg.batch_size):
        enc = tok(prompts[b:b + cfg.batch_size], return_tensors="pt", padding=True)
        torch.manual_seed(seed)
        with torch.inference_mode():
            ids = loaded.model.generate(**enc, max_new_tokens=cfg.max_new_tokens, pad_token_id=tok.pad_token_id,
                                        **how)
        out += tok.batch_decode(ids[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return out


def _load(cfg: GenerateConfig):
    from ingest.models import load_model
    from shards.modelpaths import is_causal_lm_model

    loaded = load_model(cfg.model, cfg.model_dtype, device="cpu")
    if not is_causal_lm_model(loaded.model) or loaded.tokenizer is None:
        raise ConfigError(f"generate needs a causal LM with a tokenizer; {cfg.model!r} is not one")
    tok = loaded.tokenizer
    tok.padding_side = "left"  # generation continues from the last token of each row
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return loaded


def run(cfg: GenerateConfig) -> GenerateSummary:
    """Continue every prompt per seed, clean and intervened; write the table and the match shares."""
    from analysis.interventions import build
    from ingest.interventions import check_interventions, intervening, resolve_interventions

    prompts = read_prompts(cfg.prompts, cfg.storage)
    check_interventions(cfg.intervene, build, cfg.storage)  # bad options or sources: before the model loads
    loaded = _load(cfg)
    probe = dict(loaded.tokenizer(["shape probe"], return_tensors="pt"))
    ivs = resolve_interventions(loaded.model, cfg.intervene, probe, build, cfg.storage, cfg.force,
                                model_info=loaded.info())
    rows, shares = [], {}
    for seed in cfg.seeds:
        clean = _continue(loaded, prompts, cfg, seed)
        with intervening(loaded.model, ivs):
            steered = _continue(loaded, prompts, cfg, seed)
        rows += [{"prompt_id": i, "seed": seed, "prompt": p, "clean": c, "intervened": s}
                 for i, (p, c, s) in enumerate(zip(prompts, clean, steered, strict=True))]
        if cfg.match:
            shares[str(seed)] = {"clean": _share(clean, cfg.match), "intervened": _share(steered, cfg.match)}
        log.info("seed %d: %d prompts continued%s", seed, len(prompts), f", match share {shares[str(seed)]}"
                 if cfg.match else "")
    return _write(cfg, rows, ivs, shares, len(prompts))


def _share(texts: list[str], words: list[str]) -> float:
    import re

    pattern = re.compile(r"\b(" + "|".join(map(re.escape, words)) + r")\b", re.IGNORECASE)
    return sum(bool(pattern.search(t)) for t in texts) / len(texts)


def _write(cfg: GenerateConfig, rows: list[dict], ivs, shares: dict, n: int) -> GenerateSummary:
    from shards.storage import Storage

    st = Storage(cfg.out, cfg.storage)
    st.put_bytes("generations.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode())
    spec = "; ".join(cfg.intervene)
    md = [f"# Continuations: clean vs `{spec}`", "", "| seed | prompt | clean | intervened |", "|---|---|---|---|"]
    md += [f"| {r['seed']} | {_cell(r['prompt'])} | {_cell(r['clean'])} | {_cell(r['intervened'])} |" for r in rows]
    st.put_bytes("generations.md", ("\n".join(md) + "\n").encode())
    cells = "".join(f"<tr><td>{r['seed']}</td><td>{html.escape(r['prompt'])}</td><td>{html.escape(r['clean'])}</td>"
                    f"<td>{html.escape(r['intervened'])}</td></tr>" for r in rows)
    st.put_bytes("generations.html", (f"<!doctype html><meta charset='utf-8'><title>actlake generate</title>"
                                      f"<h1>clean vs <code>{html.escape(spec)}</code></h1><table border=1>"
                                      f"<tr><th>seed</th><th>prompt</th><th>clean</th><th>intervened</th></tr>"
                                      f"{cells}</table>").encode())
    summary = GenerateSummary(prompts=n, seeds=cfg.seeds, interventions=[iv.identity() for iv in ivs],
                              match=cfg.match, match_share=shares, out=st.display())
    st.put_bytes("summary.json", json.dumps(summary.to_json(), indent=1).encode())
    return summary


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
