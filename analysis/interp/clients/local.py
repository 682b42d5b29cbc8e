"""``--explainer transformers``: a causal LM on this machine (a directory or an installed model package, GGUF
included), through its chat template; greedy at temperature 0; log-probabilities from the generation's scores."""

from __future__ import annotations

import threading

from analysis.interp.clients.base import Answer, ClientError, ClientSpec, FatalClientError, register


@register("transformers")
class LocalChat:
    """One model per process; calls are serialised (one generation at a time uses every core already)."""

    def __init__(self, spec: ClientSpec, key=None) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from shards.modelpaths import ModelLoadError, gguf_file, resolve_model_path

        try:
            path = resolve_model_path(spec.model)
        except ModelLoadError as e:
            raise FatalClientError(f"{spec.flag} {spec.model!r}: {e}") from None
        kw = {"local_files_only": True, **({"gguf_file": g} if (g := gguf_file(path)) else {})}
        try:
            self.tok = AutoTokenizer.from_pretrained(str(path), **kw)
            self.model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32, **kw).eval()
        except (OSError, ValueError) as e:
            raise FatalClientError(f"{spec.flag} {spec.model!r} does not load as a causal LM offline "
                                   f"({type(e).__name__}: {str(e)[:200]})") from None
        if self.tok.chat_template is None:
            raise FatalClientError(f"{spec.flag} {spec.model!r} has no chat template: use an instruct model")
        self.lock = threading.Lock()
        self.torch = torch

    def check(self) -> None:
        """Loaded already: nothing to check."""

    def complete(self, messages: list[dict[str, str]], *, max_tokens: int, temperature: float,
                 logprobs: int = 0) -> Answer:
        torch = self.torch
        ids = self.tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True)["input_ids"]
        with self.lock, torch.no_grad():
            try:
                out = self.model.generate(ids, max_new_tokens=max_tokens, do_sample=temperature > 0,
                                          temperature=temperature if temperature > 0 else None, top_p=None,
                                          top_k=None, output_scores=bool(logprobs), return_dict_in_generate=True,
                                          pad_token_id=self.tok.pad_token_id or self.tok.eos_token_id)
            except RuntimeError as e:
                raise ClientError(f"generation failed ({str(e)[:200]})") from None
        new = out.sequences[0, ids.shape[1]:]
        text = self.tok.decode(new, skip_special_tokens=True)
        lp = None
        if logprobs:
            lp = []
            for tid, scores in zip(new.tolist(), out.scores, strict=False):
                logp = torch.log_softmax(scores[0].float(), dim=-1)
                top = logp.topk(logprobs)
                lp.append({"token": self.tok.decode([tid]), "logprob": float(logp[tid]),
                           "top": [{"token": self.tok.decode([int(i)]), "logprob": float(v)}
                                   for v, i in zip(top.values, top.indices, strict=True)]})
        return Answer(text, lp, int(ids.shape[1]), int(len(new)))
