"""Extraction of a model whose activations overflow float16 or are NaN (issue 24, item 6), on a local Ray. Before:
249 of 332 rows held inf with exit 0, `verify` OK and `info` printing `inf`/`nan`; a NaN model exited 0 too."""

from __future__ import annotations

import json

import numpy as np
import pytest

import shards
from cluster.cli import main

pytestmark = pytest.mark.integration


def _extract(model: str, out, *extra: str) -> int:
    return main(["extract", "--model", f"tests.model_factories:{model}", "--data", "builtin:concepts?n=20",
                 "--hooks", "resid.1", "--pool", "none", "--no-pack", "--unit-size", "10", "--workers", "1",
                 "--out", str(out), *extra])


def test_overflow_in_float16_fails_naming_the_hook_and_float32_does_not(ray_local, tmp_path, capsys):
    assert _extract("overflowing_gpt2", tmp_path / "f16", "--dtype", "float16") == 2
    err = capsys.readouterr().err
    assert "NaN or infinite activations in resid.1" in err and "--dtype bfloat16 or float32" in err
    assert not (tmp_path / "f16" / "manifest.json").exists() or shards.open_dataset(str(tmp_path / "f16")).num_rows == 0
    assert _extract("overflowing_gpt2", tmp_path / "f32", "--dtype", "float32") == 0
    x = shards.open_dataset(str(tmp_path / "f32")).to_numpy("resid.1")
    assert np.isfinite(x).all() and np.abs(x).max() > 65504


def test_a_nan_model_is_written_only_when_allowed_and_counted(ray_local, tmp_path, capsys):
    assert _extract("nan_gpt2", tmp_path / "refused", "--dtype", "float32") == 2
    assert "resid.1" in capsys.readouterr().err
    assert _extract("nan_gpt2", tmp_path / "ds", "--dtype", "float32", "--allow-nonfinite") == 0
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text(),
                          parse_constant=lambda t: pytest.fail(f"manifest.json holds {t}"))
    ds = shards.open_dataset(str(tmp_path / "ds"))
    assert manifest["stats"]["resid.1"]["nonfinite"] == int(np.isnan(ds.to_numpy("resid.1")).sum()) > 0
    capsys.readouterr()
    assert main(["info", str(tmp_path / "ds")]) == 0
    assert "non-finite values (NaN/inf): statistics undefined" in capsys.readouterr().out
    assert shards.verify_dataset(str(tmp_path / "ds")).ok
