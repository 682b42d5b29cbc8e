"""`actlake sae explain` / `sae score` against a real chat-completions server on loopback (tests/interp_server.py):
prompts as specified, answers parsed, failures handled, the key nowhere, each prompt asked once across a kill; on
synthetic data where each latent fires on exactly one token, an explainer naming the marked token scores near 1
and a random explanation near chance; scores equal delphi's own scorers on the same contexts and answers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import shards
from analysis.interp.config import InterpConfigError, SaeExplainConfig, SaeScoreConfig, select_latents
from analysis.interp.contexts import LatentContexts
from analysis.interp.prompts import parse_predictions, parse_probabilities
from analysis.interp.run import InterpError, explain, score_run
from tests.interp_data import KEY, TOK, WORDS, explain_config, one_token_sae
from tests.interp_server import ChatServer


@pytest.fixture(scope="module")
def one_token(tmp_path_factory):
    return one_token_sae(tmp_path_factory.mktemp("interp"))


_explain = explain_config


def test_bad_options_are_refused_when_given():
    for kw, msg in (({"latents": "5:2"}, "selects no latent"), ({"latents": "top:0"}, "selects no latent"),
                    ({"latents": ","}, "empty"), ({"latents": "٣"}, "not a latent id"), ({"out": " "}, "--out"),
                    ({"temperature": float("nan")}, "--temperature"), ({"timeout": float("inf")}, "--timeout"),
                    ({"price_in": float("nan")}, "--price-in"), ({"seed": -1}, "--seed"),
                    ({"base_url": "http://h/v1?api_key=abc"}, "query string"),
                    ({"base_url": "ftp://h/v1"}, "http")):
        with pytest.raises(InterpConfigError, match=msg):
            SaeExplainConfig(sae="s", explainer_model="m", **kw)
    with pytest.raises(InterpConfigError, match="beyond"):
        select_latents("0:300000000", np.ones(24), 0)  # refused before the range is built
    with pytest.raises(InterpConfigError, match="beyond"):
        select_latents("30:", np.ones(24), 0)
    with pytest.raises(InterpConfigError, match="--timeout"):
        SaeExplainConfig(sae="s", explainer_model="m", timeout=1e10)
    assert SaeScoreConfig(explanations="e", scorers=["fuzz,fuzz", "detection"]).scorers == ["fuzz", "detection"]


def test_no_readable_answer_is_no_score():
    from analysis.interp.scoring import Sample, score

    s = score(3, "detection", "own", [Sample("a", True), Sample("b", False)])
    assert s.accuracy is None and s.f1 is None and s.failed == 2


def test_latents_spec():
    f = np.array([0, 0.1, 0.5, 0, 0.2, 0.3])
    assert select_latents("3,0:2,top:2", f, 0) == [3, 0, 1, 2, 5]
    assert set(select_latents("random:3", f, 1)) <= {1, 2, 4, 5}
    with pytest.raises(InterpConfigError, match="random:100"):
        SaeExplainConfig(sae="s", explainer_model="m", latents="first:3")
    with pytest.raises(InterpConfigError, match="--explainer-model"):
        SaeExplainConfig(sae="s")
    with pytest.raises(InterpConfigError, match="credentials"):
        SaeExplainConfig(sae="s", explainer_model="m", base_url="http://u:pw@host/v1")


def test_parsing_of_answers():
    assert parse_predictions("Sure: [1, 0,1]", 3) == [True, False, True]
    assert parse_predictions("[true, false]", 2) == [True, False]
    from analysis.interp.prompts import MalformedAnswerError

    for bad in ("no list", "[1,0]", "[a, b, c]"):
        with pytest.raises(MalformedAnswerError):
            parse_predictions(bad, 3)
    lp = [{"token": "[", "top": []}, {"token": "1", "top": [{"token": "1", "logprob": np.log(0.6)},
                                                             {"token": "0", "logprob": np.log(0.2)}]}]
    assert parse_probabilities(lp, 1) == [pytest.approx(0.75)]
    for bad in (1000.0, float("nan"), None):  # not log-probabilities: no probability, no crash
        assert parse_probabilities([{"token": "1", "top": [{"token": "1", "logprob": bad}]}], 1) is None


def test_explain_then_score_one_token_latents(one_token, monkeypatch):
    root, sae, ds = one_token
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with ChatServer(KEY) as server:
        s = explain(_explain(root, sae, server, price_in=1.0, price_out=2.0))
        assert (s.latents, s.explained, s.skipped, s.failed) == (24, 20, 4, 0)
        assert s.calls == 20 == server.received and s.prompt_tokens > 0
        assert s.cost_usd == pytest.approx((s.prompt_tokens + 2 * s.completion_tokens) / 1e6)
        rows = [json.loads(line) for line in (root / "ex" / "explanations.jsonl").read_text().splitlines()]
        assert {r["latent"]: r["explanation"] for r in rows} == {j: f'the token "{WORDS[j]}"' for j in range(20)}
        assert all(r["model"] == "oracle-1" and len(r["prompt_hash"]) == 32 and r["marked"] for r in rows)
        # the prompt: the contexts with the latent's token marked, every marked token the latent's
        for body in server.bodies:
            prompt = body["messages"][-1]["content"]
            marked = {m.strip() for m in __import__("re").findall(r"<<(.*?)>>", prompt)}
            assert len(set(" ".join(marked).split())) == 1  # adjacent marked tokens share one pair of markers
            assert 11 <= prompt.count("Excerpt") <= 15  # 10 top + up to 5 quantile contexts (one per band)
        ctx = {c["latent"]: LatentContexts.from_json(c) for c in
               map(json.loads, (root / "ex" / "contexts.jsonl").read_text().splitlines())}
        c = ctx[3]
        assert len(c.held_out) == 10 and len(c.not_active) == 10
        shown_rows = {x.row for x in c.shown}
        assert not shown_rows & {x.row for x in c.held_out}  # held out: never shown to the explainer
        assert all(x.max_act == 0 and "tree" not in "".join(x.tokens).split() for x in c.not_active)
        assert all(x.acts[x.tokens.index(" tree")] > 0 for x in c.held_out)
        # activations of the contexts against an independent encoding of the rows
        d = shards.open_dataset(ds)
        x = d.take(np.array([c.held_out[0].row]), dtype="float32")["resid.0"]
        assert max(c.held_out[0].acts) == pytest.approx(float(x[0, 3]) - 0.5, rel=1e-6)

        before = server.received
        sc = score_run(SaeScoreConfig(explanations=str(root / "ex"), base_url=server.url, log_prob=True))
        per = sc.scorers
        for name in ("detection", "fuzz"):
            assert per[name]["own"]["accuracy"] > 0.95 and per[name]["own"]["auroc"] > 0.95
            assert abs(per[name]["random"]["accuracy"] - 0.5) < 0.2
        assert sc.calls == server.received - before == 20 * 2 * 2 * 4  # latents × scorers × own/random × prompts
        html = (root / "ex" / "scores" / "report.html").read_text()
        assert "data:image/png;base64" in html and "detection accuracy" in html
        # a rerun is the finished run; another scorer set asks the explainer nothing
        again = score_run(SaeScoreConfig(explanations=str(root / "ex"), base_url=server.url, log_prob=True))
        assert again.calls == sc.calls and server.received - before == sc.calls
        n = server.received
        only = score_run(SaeScoreConfig(explanations=str(root / "ex"), base_url=server.url, log_prob=True,
                                        scorers=["detection"], out=str(root / "ex" / "scores"), overwrite=True))
        assert only.calls == 0 and only.cached == 20 * 2 * 4 and server.received == n
        assert explain(_explain(root, sae, server)).calls == 20 and server.received == n  # done: returned


def test_failures_are_retried_or_named_and_the_key_is_nowhere(one_token, monkeypatch, capfd, caplog):
    from analysis.interp.clients.base import FatalClientError

    caplog.set_level("DEBUG")  # every log line, openai's and httpx's included
    root, sae, _ = one_token
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(FatalClientError, match="set OPENAI_API_KEY"):  # before any pass over the data
        explain(SaeExplainConfig(sae=sae, out=str(root / "nokey"), explainer_model="gpt-4o-mini", tokenizer=TOK))
    assert not (root / "nokey" / "contexts.jsonl").exists()
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with ChatServer(KEY) as server:
        server.script = ["429", "500", "429"]
        s = explain(_explain(root, sae, server, out="retry", latents="0:3", concurrency=1, max_retries=3))
        assert s.explained == 3 and s.failed == 0 and server.received == 3 + 3  # three retried, three answered
        server.script = ["500"] * 10
        with pytest.raises(InterpError, match=r"got no explanation .*HTTP 500.*rerun the same command"):
            explain(_explain(root, sae, server, out="fail", latents="0:4", concurrency=1, max_retries=1))
        for fate in ("nochoices", "garbage", "badjson"):  # a 200 that is not a chat completion: named
            server.script = [fate]
            with pytest.raises(InterpError, match="malformed answer"):
                explain(_explain(root, sae, server, out=f"bad-{fate}", latents="5", max_retries=0))
        server.script = ["slow"]
        with pytest.raises(InterpError, match="no answer within 0.5 s"):
            explain(_explain(root, sae, server, out="slow", latents="6", max_retries=0, timeout=0.5))
        for fate in ("empty", "markonly"):  # no explanation in the answer: failed, not kept, asked again
            server.script = [fate]
            with pytest.raises(InterpError, match="unusable answer"):
                explain(_explain(root, sae, server, out=f"bad-{fate}", latents="7", max_retries=0))
            assert not list((root / f"bad-{fate}" / "answers").glob("*.json"))
            assert explain(_explain(root, sae, server, out=f"bad-{fate}", latents="7")).explained == 1
        # a rerun asks only what failed
        n = server.received
        assert explain(_explain(root, sae, server, out="fail", latents="0:4", concurrency=1)).calls == 4
        assert server.received == n + 4
        monkeypatch.setenv("OPENAI_API_KEY", KEY[::-1])
        with pytest.raises(FatalClientError, match=r"refused the key \(HTTP 401\): check OPENAI_API_KEY") as e:
            explain(_explain(root, sae, server, out="k401", latents="0:8"))
        assert server.received == n + 4  # refused at the first check (GET /models), before the pass
        assert KEY[::-1] not in str(e.value)
    # the key is in no file the runs wrote, nor in anything printed
    for f in root.rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            assert KEY.encode() not in data and KEY[::-1].encode() not in data, f
    out, err = capfd.readouterr()
    assert KEY not in out + err + caplog.text and KEY[::-1] not in out + err + caplog.text


def test_a_killed_run_resumes_without_asking_again(one_token, tmp_path):
    """SIGKILL of `actlake sae explain` while requests are held at the server; the rerun asks only the latents
    with no answer: every prompt answered exactly once, counted at the server."""
    root, sae, _ = one_token
    out = tmp_path / "killed"
    env = {**os.environ, "OPENAI_API_KEY": KEY}
    with ChatServer(KEY) as server:
        server.hold_after = 7
        cmd = [sys.executable, "-m", "cluster.cli", "sae", "explain", "--sae", sae, "--out", str(out),
               "--explainer-model", "oracle-1", "--base-url", server.url, "--latents", "0:20",
               "--tokenizer", TOK, "--concurrency", "2"]
        proc = subprocess.Popen(cmd, env=env, cwd=Path(__file__).parents[3], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
        try:
            deadline = time.time() + 120
            while time.time() < deadline and len(list((out / "answers").glob("*.json"))) < 7:
                time.sleep(0.1)
            assert len(list((out / "answers").glob("*.json"))) == 7
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        server.hold_after = None
        server.release.set()
        done = subprocess.run(cmd, env=env, cwd=Path(__file__).parents[3], capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr
        summary = json.loads(done.stdout.strip().splitlines()[-1])
        assert (summary["explained"], summary["calls"], summary["cached"]) == (20, 13, 7)
        assert sum(server.answered.values()) == 20 and set(server.answered.values()) == {1}
        assert KEY not in done.stdout + done.stderr


def test_scores_equal_delphis_scorers(one_token, monkeypatch):
    """delphi's DetectionScorer and FuzzingScorer (installed without their vLLM-bound package imports) and its
    result_analysis metrics, on the same held-out contexts with the same oracle answering: the same samples and
    the same accuracy, precision, recall, F1 and AUROC per latent."""
    delphi = pytest.importorskip("tests.delphi_bare").load()
    root, sae, _ = one_token
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with ChatServer(KEY) as server:
        explain(_explain(root, sae, server, out="eq", latents="0:6"))
        score_run(SaeScoreConfig(explanations=str(root / "eq"), base_url=server.url, log_prob=True,
                                 baseline=False))
    ours = {(r["latent"], r["scorer"]): r for r in
            map(json.loads, (root / "eq" / "scores" / "scores.jsonl").read_text().splitlines())}
    expl = {r["latent"]: r["explanation"] for r in
            map(json.loads, (root / "eq" / "explanations.jsonl").read_text().splitlines())}
    for line in (root / "eq" / "contexts.jsonl").read_text().splitlines():
        c = LatentContexts.from_json(json.loads(line))
        if c.latent not in expl:
            continue
        for name in ("detection", "fuzz"):
            ref = delphi.score(name, c, expl[c.latent])
            mine = ours[(c.latent, name)]
            assert sorted(ref["texts"]) == sorted(
                r["text"] for r in map(json.loads, (root / "eq" / "scores" / "predictions.jsonl").read_text()
                                       .splitlines()) if r["latent"] == c.latent and r["scorer"] == name)
            for ours_key, ref_key in (("accuracy", "accuracy"), ("precision", "precision"), ("recall", "recall"),
                                      ("f1", "f1_score"), ("auroc", "auc")):
                assert mine[ours_key] == pytest.approx(ref[ref_key], abs=1e-12), (c.latent, name, ours_key)


def test_dashboard_shows_explanations_and_scores(one_token, monkeypatch, caplog):
    """`sae dashboard --explanations EXPLAIN_DIR`: each latent's explanation and its scores (own and random) in
    the index (a column per scorer, sortable) and on its page; the collection pass `sae explain` kept serves it,
    giving the same pages as the dashboard's own pass."""
    from analysis.sae.dashboard.run import SaeDashboardConfig
    from analysis.sae.dashboard.run import run as dashboard

    root, sae, _ = one_token
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with ChatServer(KEY) as server:
        explain(_explain(root, sae, server, out="dash-ex", latents="0:4"))
        score_run(SaeScoreConfig(explanations=str(root / "dash-ex"), base_url=server.url))
    with caplog.at_level("INFO", logger="actlake.sae"):
        dashboard(SaeDashboardConfig(sae=sae, out=str(root / "site"), explanations=str(root / "dash-ex"), top=3,
                                     context=3, tokenizer=TOK))
    assert "serves this dashboard" in caplog.text
    # explanations of another SAE are refused; scores of earlier explanations are not shown
    from analysis.sae.dashboard.run import DashboardError

    other = one_token_sae(root / "other")[1]
    import torch as _t

    from analysis.sae.io import load_sae, save_sae
    s2 = load_sae(other)
    with _t.no_grad():
        s2.b_dec.add_(0.01)  # the decoder bias too: the encoder subtracts it
    save_sae(s2, other, {"hook": "resid.0", "dataset": str(root / "ds")})
    with pytest.raises(DashboardError, match="explains another SAE"):
        dashboard(SaeDashboardConfig(sae=other, out=str(root / "site-other"), explanations=str(root / "dash-ex"),
                                     tokenizer=TOK))
    dashboard(SaeDashboardConfig(sae=sae, out=str(root / "own-pass"), top=3, context=3, tokenizer=TOK,
                                 explanations=str(root / "dash-ex" / "explanations.jsonl")))
    for lat in range(24):
        a, b = ((root / site / "latents" / f"{lat}.js").read_text() for site in ("site", "own-pass"))
        a, b = (json.loads(t[2:t.rindex(")")]) for t in (a, b))
        a.pop("scores"), b.pop("scores")
        assert a == b, lat
    scores = {(r["latent"], r["scorer"], r["explanation"]): r["accuracy"] for r in
              map(json.loads, (root / "dash-ex" / "scores" / "scores.jsonl").read_text().splitlines())}
    part = (root / "site" / "index" / "part-0.js").read_text()
    cols, rows = json.loads("[" + part[2:part.rindex(")")] + "]")
    assert cols[5:8] == ["explanation", "detection", "fuzz"]
    by = {r[0]: r for r in rows}
    assert by[2][5] == 'the token "sun"' and by[2][6] == pytest.approx(scores[(2, "detection", "own")], abs=1e-4)
    assert by[10][5] == "" and by[10][6] is None  # not explained
    page = (root / "site" / "latents" / "1.js").read_text()
    data = json.loads(page[2:page.rindex(")")])
    assert data["explanation"] == 'the token "dog"'
    assert data["scores"]["fuzz random"] == pytest.approx(scores[(1, "fuzz", "random")], abs=1e-4)


def test_evaluate_summary_holds_the_scores(one_token, monkeypatch):
    from analysis.sae.evals.registry import EvalInputError
    from analysis.sae.evaluate import SaeEvaluateConfig
    from analysis.sae.evaluate import run as evaluate

    root, sae, _ = one_token
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with ChatServer(KEY) as server:
        explain(_explain(root, sae, server, out="ev-ex", latents="0:6"))
        scored = score_run(SaeScoreConfig(explanations=str(root / "ev-ex"), base_url=server.url))
    s = evaluate(SaeEvaluateConfig(sae=sae, suite=["core"], rows="all", out=str(root / "ev"),
                                   explanations=str(root / "ev-ex")))
    got = s.metrics["autointerp"]
    assert got["scorers"] == scored.scorers and got["latents"] == 6 and got["explainer"] == "oracle-1"
    assert json.loads((root / "ev" / "autointerp.json").read_text())["scorers"]["fuzz"]["own"]["accuracy"] > 0.9
    with pytest.raises(EvalInputError, match="sae explain"):
        evaluate(SaeEvaluateConfig(sae=sae, suite=["core"], rows="all", out=str(root / "ev2"),
                                   explanations=str(root / "nowhere")))


def test_local_transformers_explainer(tmp_path):
    """`--explainer transformers` on a random llama saved as a model directory with a chat template: greedy
    answers repeat, usage counts the real tokens, and each answer token's log-probability and top-5 equal an
    independent forward pass over prompt + answer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from analysis.interp.clients.base import ClientSpec, FatalClientError, make_client
    from tests.model_factories import save_tiny_causal_lm

    path = save_tiny_causal_lm(tmp_path / "llama", "llama")
    with pytest.raises(FatalClientError, match="no chat template"):
        make_client(ClientSpec(kind="transformers", model=path))
    tok = AutoTokenizer.from_pretrained(path)
    tok.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"
    tok.save_pretrained(path)
    client = make_client(ClientSpec(kind="transformers", model=path))
    msgs = [{"role": "user", "content": "Excerpt 1: the<< cat>> sat"}]
    a = client.complete(msgs, max_tokens=6, temperature=0.0, logprobs=5)
    assert a == client.complete(msgs, max_tokens=6, temperature=0.0, logprobs=5)
    ids = tok.apply_chat_template(msgs, add_generation_prompt=True, return_dict=True)["input_ids"]
    assert a.prompt_tokens == len(ids) and a.completion_tokens == len(a.logprobs) == 6
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    gen = model.generate(torch.tensor([ids]), max_new_tokens=6, do_sample=False)[0, len(ids):].tolist()
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids + gen])).logits[0].float(), -1)
    for k, t in enumerate(a.logprobs):
        row = logp[len(ids) - 1 + k]
        assert t["logprob"] == pytest.approx(float(row[gen[k]]), abs=1e-4)
        assert t["logprob"] == pytest.approx(float(row.max()), abs=1e-5)  # greedy: the top token
        assert [c["logprob"] for c in t["top"]] == pytest.approx(row.topk(5).values.tolist(), abs=1e-4)


def test_ctrl_c_stops_at_once_with_one_line(one_token, tmp_path):
    """SIGINT while requests hang at the server: exit 130 within seconds (no retries of the requests in flight,
    no traceback), and a rerun finishes asking only what has no answer."""
    root, sae, _ = one_token
    out = tmp_path / "interrupted"
    env = {**os.environ, "OPENAI_API_KEY": KEY}
    with ChatServer(KEY) as server:
        server.hold_after = 3
        cmd = [sys.executable, "-m", "cluster.cli", "sae", "explain", "--sae", sae, "--out", str(out),
               "--explainer-model", "oracle-1", "--base-url", server.url, "--latents", "0:12", "--tokenizer", TOK,
               "--concurrency", "2", "--max-retries", "4"]
        proc = subprocess.Popen(cmd, env=env, cwd=Path(__file__).parents[3], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.time() + 120
            while time.time() < deadline and server.received < 5:
                time.sleep(0.05)
            t0 = time.time()
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=30)
            assert proc.returncode == 130 and time.time() - t0 < 10
            assert "interrupted; rerun the same command" in err and "Traceback" not in err
        finally:
            if proc.poll() is None:
                proc.kill()
        server.hold_after = None
        server.release.set()
        done = subprocess.run(cmd, env=env, cwd=Path(__file__).parents[3], capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr
        assert sum(server.answered.values()) == 12 and set(server.answered.values()) == {1}


def test_dashboard_l0_share_is_a_share(one_token):
    """The index's l0_share column: each latent's share of the mean L0 (its frequency over the sum), summing to 1
    over the latents (it was frequency x mean activation, up to 5 on real SAEs)."""
    from analysis.sae.dashboard.run import SaeDashboardConfig
    from analysis.sae.dashboard.run import run as dashboard

    root, sae, _ = one_token
    dashboard(SaeDashboardConfig(sae=sae, out=str(root / "site-l0"), top=2, context=2, tokenizer=TOK))
    part = (root / "site-l0" / "index" / "part-0.js").read_text()
    cols, rows = json.loads("[" + part[2:part.rindex(")")] + "]")
    share = [r[cols.index("l0_share")] for r in rows]
    freq = np.array([r[cols.index("frequency")] for r in rows])
    assert sum(share) == pytest.approx(1.0, abs=1e-4)
    np.testing.assert_allclose(share, freq / freq.sum(), atol=1e-6)
