"""Extraction jobs with bad input fail before any work starts, with a clear message, writing nothing."""

from __future__ import annotations

import json

import pytest

from ingest.config import ExtractConfig
from ingest.corpus import CorpusError
from ingest.driver import plan_extraction as plan
from ingest.models import ModelLoadError
from shards.errors import ConfigError, UnknownHookError
from shards.storage import StorageOptions


def cfg(tmp_path, **kw) -> ExtractConfig:
    return ExtractConfig(**{"data": "builtin:concepts?n=20", "out": str(tmp_path / "out"), **kw})


def test_missing_model_path_says_where_it_looked(tmp_path):
    with pytest.raises(ModelLoadError, match=r"model '/nope/model' not found; looked at: /nope/model"):
        plan(cfg(tmp_path, model="/nope/model"))
    with pytest.raises(ModelLoadError, match="not installed"):
        plan(cfg(tmp_path, model="no_such_model_pkg"))
    assert not (tmp_path / "out").exists()


def test_unknown_hook_lists_nearest_names(tmp_path):
    with pytest.raises(UnknownHookError, match=r"unknown hook 'resid\.7'\. Did you mean 'resid\.[0-6]'"):
        plan(cfg(tmp_path, hooks="embed,resid.7"))
    with pytest.raises(UnknownHookError, match="matches nothing"):
        plan(cfg(tmp_path, hooks="layers.*"))


def test_empty_corpus_and_missing_field(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(CorpusError):
        plan(cfg(tmp_path, data=str(empty)))
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(json.dumps({"body": f"sentence {i}", "y": i}) for i in range(5)))
    with pytest.raises(CorpusError, match=r"no field\(s\) \['text'\]; its fields are \['body', 'y'\]"):
        plan(cfg(tmp_path, data=str(data)))
    with pytest.raises(CorpusError, match="does not exist"):
        plan(cfg(tmp_path, data=str(tmp_path / "missing.jsonl")))
    p = plan(cfg(tmp_path, data=str(data), text_field="body"))
    assert p.num_examples == 5 and p.columns == {"y": "int64"} and p.hook_specs["resid.0"].shape == (384,)
    assert p.modality == "text" and p.config.pool == "none" and p.hooks[1].module == "encoder.layer.0"


def test_context_size_above_model_maximum(tmp_path):
    with pytest.raises(ConfigError, match="exceeds the model's maximum of 512"):
        plan(cfg(tmp_path, context_size=1024))


def test_inconsistent_options(tmp_path):
    with pytest.raises(ConfigError, match="--no-pack"):
        plan(cfg(tmp_path, pack=True, pool="mean"))
    with pytest.raises(ConfigError, match="--pool"):
        plan(cfg(tmp_path, pool="max"))
    with pytest.raises(ConfigError, match=r"--dtype 'float64': use one of float16, bfloat16, float32"):
        cfg(tmp_path, dtype="float64")
    with pytest.raises(ConfigError, match="--batch-size must be positive"):
        cfg(tmp_path, batch_size=0)
    assert not (tmp_path / "out").exists()


def test_unreachable_s3_endpoint_fails_fast(tmp_path, monkeypatch):
    import socket
    import time

    from shards.errors import StorageError

    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    t = time.time()
    with pytest.raises(StorageError, match=r"s3://bucket/acts/manifest.json.*Could not connect"):
        plan(cfg(tmp_path, out="s3://bucket/acts", storage=StorageOptions(endpoint_url=f"http://127.0.0.1:{port}")))
    assert time.time() - t < 30
