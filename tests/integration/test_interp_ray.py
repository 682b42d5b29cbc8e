"""`sae explain` / `sae score` fanned out over real Ray tasks (--workers 2): the same explanations and scores as
in one process, every prompt answered once (counted at the loopback server), the key read by the workers from
their environment and written nowhere."""

from __future__ import annotations

import json

import pytest

from analysis.interp.config import SaeScoreConfig
from analysis.interp.run import explain, score_run
from tests.interp_data import KEY, explain_config, one_token_sae
from tests.interp_server import ChatServer

pytestmark = pytest.mark.integration


def test_explain_and_score_over_ray_workers(ray_local, tmp_path, monkeypatch):
    root, sae, _ = one_token_sae(tmp_path)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)  # ray_local's workers were started before: the key travels by
    with ChatServer(KEY) as server:           # the spec's variable name, read in each worker's own environment
        one = explain(explain_config(root, sae, server, out="one", latents="0:20"))
        n = server.received
        two = explain(explain_config(root, sae, server, out="two", latents="0:20", workers=2))
        assert two.calls == 20 == server.received - n and set(server.answered.values()) == {2}
        read = lambda d: sorted((r["latent"], r["explanation"]) for r in  # noqa: E731
                                map(json.loads, (root / d / "explanations.jsonl").read_text().splitlines()))
        assert read("one") == read("two") and one.explained == 20
        s1 = score_run(SaeScoreConfig(explanations=str(root / "one"), base_url=server.url))
        s2 = score_run(SaeScoreConfig(explanations=str(root / "two"), base_url=server.url, workers=2))
        assert s1.scorers == s2.scorers and s2.calls == s1.calls
    for f in root.rglob("*"):
        assert not f.is_file() or KEY.encode() not in f.read_bytes()
