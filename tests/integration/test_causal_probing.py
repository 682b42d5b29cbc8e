"""Causal probing end to end on MiniLM (real weights) and the built-in labelled corpus: probe the concept at
layer i, erase the probe's directions at layer i during extraction, probe again. At layer i a linear probe falls
to chance (the class means are made equal there, which is what linear guardedness needs); later layers show how
much the model rebuilds (for MiniLM: all of it, two layers on). tests/benchmarks/bench_causal_probe.py runs
the same at full size for docs/probing.md."""

from __future__ import annotations

import pytest

import shards
from analysis.probe.config import ProbeConfig
from analysis.probe.run import run as probe
from cluster.extract_command import cmd_extract
from ingest.config import ExtractConfig

pytestmark = pytest.mark.integration


def erase_and_probe(tmp, layer: int, n: int, hooks: list[str]) -> tuple[dict, dict, float]:
    """(accuracy by hook before, after erasing at resid.``layer``, chance)."""
    common = dict(data=f"builtin:concepts?n={n}", hooks=hooks, pool="mean", dtype="float32", unit_size=max(n // 4, 1))
    cmd_extract(ExtractConfig(**common, out=f"{tmp}/clean"))
    before = probe(ProbeConfig(data=f"{tmp}/clean", hooks=hooks, label="label", out=f"{tmp}/probe-clean"))
    erase = f"resid.{layer}:ablate:direction={tmp}/probe-clean#diffmean"
    cmd_extract(ExtractConfig(**common, out=f"{tmp}/erased", intervene=[erase]))
    after = probe(ProbeConfig(data=f"{tmp}/erased", hooks=hooks, label="label", out=f"{tmp}/probe-erased"))
    labels = shards.open_dataset(f"{tmp}/clean").metadata_table(["label"]).column("label").to_pylist()
    chance = max(map(labels.count, set(labels))) / len(labels)
    return ({h: v["mean"] for h, v in before.hooks.items()}, {h: v["mean"] for h, v in after.hooks.items()}, chance)


def test_erasing_the_probe_direction_drops_the_probe_to_chance_at_that_layer(ray_local, tmp_path):
    hooks = ["resid.0", "resid.2", "resid.4"]
    before, after, chance = erase_and_probe(str(tmp_path), 2, 300, hooks)
    assert before["resid.2"] > 0.9  # the concept is linearly readable before
    assert after["resid.2"] < chance + 0.1  # erased: chance
    assert after["resid.0"] == pytest.approx(before["resid.0"], abs=1e-9)  # upstream: unchanged, same numbers
    # downstream the concept comes back: erasing the pooled class-mean directions at one layer leaves each token's
    # word identity, from which later layers rebuild it (docs/probing.md, "Causal probing")
    assert after["resid.4"] > chance + 0.3
