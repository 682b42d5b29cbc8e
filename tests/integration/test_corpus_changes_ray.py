"""A corpus that changes under a job, on a real local Ray with real files: workers that read another corpus than
the plan stop the job at once naming it (no replacement actors); an unchanged command rerun after its corpus
changed is refused naming the corpus and what changed; `sae eval` refuses held-out examples of a changed corpus
and decides `overlaps_training` by the texts, not by the corpus' name."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

import shards
from analysis.sae.io import save_sae
from analysis.sae.registry import create_sae
from cluster.cli import main
from cluster.extract_command import cmd_extract
from cluster.sae_eval import SaeEvalConfig
from cluster.sae_eval import run as sae_eval
from ingest.config import ExtractConfig
from ingest.corpus import CorpusChangedError
from ingest.driver import extract_units, open_output, plan_extraction
from shards.errors import ConfigError
from shards.manifest import CommitInfo

pytestmark = pytest.mark.integration
GPT2 = "tests.model_factories:tiny_gpt2"
NOUNS = ["river", "lantern", "teacher", "harbour", "orchard", "violin", "glacier", "market", "pilot", "meadow"]
VERBS = ["watched", "painted", "followed", "described", "remembered", "carried", "repaired", "visited"]
#: distinct texts: every one differs from every other, so overlaps are exactly the ones a test plants
TEXTS = [f"On a {d} morning the {a} {VERBS[i % 8]} the {b} beyond the hill."
         for i, (d, a, b) in enumerate((d, a, b) for d in ("quiet", "cold", "bright") for a in NOUNS for b in NOUNS
                                       if a != b)]


def _write(path: Path, texts: list[str]) -> None:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))


def test_a_corpus_that_changes_after_planning_stops_the_job_naming_it(ray_local, tmp_path):
    """Regression: a folder corpus written to during planning gave each worker another corpus; the actors' check
    killed them and the driver replaced them, again and again, instead of failing."""
    corpus = tmp_path / "corpus.jsonl"
    _write(corpus, TEXTS[:40])
    cfg = ExtractConfig(model=GPT2, data=str(corpus), hooks=["resid.1"], out=str(tmp_path / "acts"), unit_size=10,
                        workers=2, max_retries=3)
    plan = plan_extraction(cfg)
    assert plan.num_examples == 40
    _write(corpus, TEXTS[:60])  # more files arrive after the plan
    writer = open_output(plan, CommitInfo("extract", "extract"))
    t0 = time.perf_counter()
    try:
        with pytest.raises(CorpusChangedError) as err:
            extract_units(plan, writer, plan.units())
    finally:
        writer.abort(remove_if_empty=True)
    msg = str(err.value)
    assert f"corpus {str(corpus)!r} changed while the job ran" in msg
    assert "it held 40 examples when planned and holds 60 now" in msg and "content fingerprint" in msg
    assert time.perf_counter() - t0 < 120
    assert not (tmp_path / "acts" / "manifest.json").exists()  # nothing committed from a corpus never planned


def test_a_rerun_after_its_corpus_changed_is_refused_naming_the_corpus(ray_local, tmp_path, capsys):
    corpus, out = tmp_path / "corpus.jsonl", tmp_path / "acts"
    _write(corpus, TEXTS[:20])
    args = ["extract", "--model", GPT2, "--data", str(corpus), "--hooks", "resid.1", "--workers", "1",
            "--out", str(out)]
    assert main(args) == 0
    before = shards.open_dataset(str(out)).version
    _write(corpus, TEXTS[:30])
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"its corpus {str(corpus)!r} changed since that dataset was made (20 -> 30 examples, content " \
           "fingerprint" in err
    assert "--overwrite" in err and "other settings differ" not in err
    assert shards.open_dataset(str(out)).version == before  # nothing was written


@pytest.fixture(scope="module")
def trained(ray_local, tmp_path_factory):
    """A dataset of tiny GPT-2's resid.1 over the first 40 of a 100-text corpus, and an SAE that names it."""
    root = tmp_path_factory.mktemp("eval-overlap")
    _write(root / "corpus.jsonl", TEXTS[:100])
    ds = str(root / "ds")
    cmd_extract(ExtractConfig(model=GPT2, data=str(root / "corpus.jsonl"), hooks=["resid.1"], dtype="float32",
                              max_examples=40, out=ds))
    sae = create_sae("topk", d_in=64, d_sae=256, k=16, seed=1)
    with torch.no_grad():
        sae.b_dec.copy_(torch.as_tensor(shards.open_dataset(ds).stats("resid.1").mean).float())
    save_sae(sae, str(root / "sae"), {"hook": "resid.1", "dataset": ds,
                                      "dataset_id": shards.open_dataset(ds).dataset_id})
    return root


def test_overlap_with_training_is_decided_by_the_texts(trained, tmp_path):
    """Regression: `--corpus X` was reported unseen from its name alone, though X began with training texts."""
    other = tmp_path / "other.jsonl"
    _write(other, TEXTS[30:40] + TEXTS[150:160])  # ten of the SAE's training texts first, then ten unseen
    s = sae_eval(SaeEvalConfig(sae=str(trained / "sae"), corpus=str(other), examples=16, out=str(tmp_path / "e")))
    assert s.example_ids == [0, 16] and s.overlaps_training is True and s.training_overlap == 10
    on_disk = json.loads((tmp_path / "e" / "eval.json").read_text())
    assert on_disk["overlaps_training"] is True and on_disk["training_overlap"] == 10


def test_heldout_examples_of_a_changed_corpus_are_refused(trained, tmp_path):
    """Regression: held-out examples were picked by index in today's corpus, so examples the SAE trained on were
    called held out once the corpus had changed."""
    corpus = trained / "corpus.jsonl"
    original = corpus.read_bytes()
    _write(corpus, TEXTS[1:101])  # one text fewer at the front: every index now names the next text
    try:
        with pytest.raises(ConfigError) as err:
            sae_eval(SaeEvalConfig(sae=str(trained / "sae"), examples=8, out=str(tmp_path / "e")))
    finally:
        corpus.write_bytes(original)
    msg = str(err.value)
    assert f"made from corpus {str(corpus)!r}, which is not that corpus any more" in msg
    assert "recorded content fingerprint" in msg and "--force" in msg
    assert not (tmp_path / "e" / "rows" / "manifest.json").exists()  # refused before any work
    s = sae_eval(SaeEvalConfig(sae=str(trained / "sae"), examples=8, out=str(tmp_path / "ok")))
    assert s.example_ids == [40, 48] and s.overlaps_training is False and s.training_overlap == 0
