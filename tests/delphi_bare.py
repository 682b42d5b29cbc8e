"""delphi's own scorer and metric code (``eai-delphi``, installed with ``--no-deps``: its package imports pull in
vLLM, which does not install here) loaded module by module: the packages ``delphi``, ``delphi.clients``,
``delphi.latents``, ``delphi.scorers`` are registered bare (their ``__init__`` files not run), so
``delphi.scorers.classifier.detection`` and ``fuzz`` and ``delphi.log.result_analysis`` import exactly as shipped.
``score`` drives them with the loopback server's oracle (tests/interp_server.py) as their client."""

from __future__ import annotations

import importlib.util
import logging
import sys
import types
from pathlib import Path
from types import SimpleNamespace


class _Bare:
    def __init__(self) -> None:
        spec = importlib.util.find_spec("delphi")
        if spec is None:
            raise ImportError("eai-delphi is not installed (make setup installs it with --no-deps)")
        root = Path(spec.submodule_search_locations[0])
        for name in ("delphi", "delphi.clients", "delphi.latents", "delphi.scorers", "delphi.scorers.classifier",
                     "delphi.log"):
            if name in sys.modules and getattr(sys.modules[name], "_bare", False):
                continue
            mod = types.ModuleType(name)
            mod.__path__ = [str(root.joinpath(*name.split(".")[1:]))]
            mod._bare = True
            if name == "delphi":
                mod.logger = logging.getLogger("delphi")
            sys.modules[name] = mod
        from delphi.clients.client import Client, Response
        from delphi.latents.latents import ActivatingExample, Latent, LatentRecord, NonActivatingExample

        # what delphi/latents/__init__.py re-exports of latents.py (the rest of it needs vLLM-bound caches)
        for cls in (ActivatingExample, Latent, LatentRecord, NonActivatingExample):
            setattr(sys.modules["delphi.latents"], cls.__name__, cls)
        from delphi.log import result_analysis
        from delphi.scorers.classifier import sample
        from delphi.scorers.classifier.detection import DetectionScorer
        from delphi.scorers.classifier.fuzz import FuzzingScorer

        self.ra, self.sample = result_analysis, sample
        self.classes = {"detection": DetectionScorer, "fuzz": FuzzingScorer}
        self.types = (ActivatingExample, NonActivatingExample, Latent, LatentRecord)

        class OracleClient(Client):
            async def generate(self, prompt, **kwargs):
                from tests.interp_server import logprob_content, oracle

                text, preds = oracle(prompt)
                lp = None
                if kwargs.get("logprobs"):
                    lp = [SimpleNamespace(token=t["token"], logprob=t["logprob"],
                                          top_logprobs=[SimpleNamespace(**c) for c in t["top_logprobs"]])
                          for t in logprob_content(text, preds)]
                return Response(text=text, logprobs=lp)

        self.client = OracleClient("oracle-1")

    def score(self, name: str, ctx, explanation: str) -> dict:
        """delphi's metrics of one latent under one scorer, and the sample texts it built."""
        import pandas as pd
        import torch

        act, non, latent_cls, record_cls = self.types
        test = [act(tokens=torch.zeros(len(c.tokens), dtype=torch.long), activations=torch.tensor(c.acts),
                    str_tokens=list(c.tokens), quantile=1) for c in ctx.held_out]
        quiet = [non(tokens=torch.zeros(len(c.tokens), dtype=torch.long), activations=torch.tensor(c.acts),
                     str_tokens=list(c.tokens), distance=-1.0) for c in ctx.not_active]
        record = record_cls(latent_cls("resid.0", ctx.latent))
        record.test, record.not_active, record.explanation = test, quiet, explanation
        scorer = self.classes[name](self.client, n_examples_shown=5, log_prob=True)
        texts = [s.text for s in scorer._prepare(record)]
        result = scorer.call_sync(record)
        df = pd.DataFrame([{"activating": o.activating, "prediction": o.prediction, "probability": o.probability}
                           for o in result.score])
        metrics = self.ra.compute_classification_metrics(self.ra.compute_confusion(df))
        return {**metrics, "auc": self.ra.compute_auc(df), "texts": texts}


def load() -> _Bare:
    return _Bare()
