"""Load HuggingFace transformers' Doge models (``DogeForCausalLM``, ``model_type="doge"``).

``model_config_from_doge(hf_config)`` gives the matching ``ModelConfig``; ``load_doge_state_dict``
copies a Doge state dict (name -> array-like; torch tensors work through ``numpy()``) into a
``DecoderLM`` built from it. Supported: the dense-MLP Doge (``is_moe=False``) with the default
RoPE. Doge's selection equals ours (top ``keep_window_size`` of the causal bias row, bias added
to the logits); compare with its eager attention, since its sdpa path leaks future tokens
(transformers issue 48748).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import nnx

from dma_jax.models import DecoderLM, ModelConfig


def model_config_from_doge(hf_config, **overrides) -> ModelConfig:
    """``ModelConfig`` with the shape and options of a transformers ``DogeConfig``."""
    if getattr(hf_config, "is_moe", False):
        raise NotImplementedError("Doge's CDMoE feed-forward is not supported; only is_moe=False")
    rope = getattr(hf_config, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default":
        raise NotImplementedError(f"only default RoPE is supported, got {rope.get('rope_type')!r}")
    if getattr(hf_config, "attention_bias", False) or getattr(hf_config, "mlp_bias", False):
        raise NotImplementedError("Doge with attention_bias or mlp_bias is not supported")
    heads = hf_config.num_attention_heads
    return ModelConfig(**{
        "vocab_size": hf_config.vocab_size,
        "d_model": hf_config.hidden_size,
        "num_layers": hf_config.num_hidden_layers,
        "num_heads": heads,
        "num_kv_heads": hf_config.num_key_value_heads or heads,
        "head_dim": getattr(hf_config, "head_dim", None) or hf_config.hidden_size // heads,
        "mlp_dim": hf_config.intermediate_size,
        "attention": "dma",
        "window": hf_config.keep_window_size,
        "qk_norm": True,
        "rope_base": float(rope.get("rope_theta", 10000.0)),
        "tie_embeddings": bool(hf_config.tie_word_embeddings),
        "norm_eps": hf_config.rms_norm_eps,
        "residual_scale": True,
        "dt_bias": False,
        **overrides,
    })


def load_doge_state_dict(model: DecoderLM, state_dict) -> DecoderLM:
    """Copy a Doge state dict into ``model`` (built from ``model_config_from_doge``); returns it.

    Linear weights are transposed (torch stores (out, in)). Raises KeyError naming a missing
    tensor and ValueError on a shape mismatch.
    """
    array = lambda name: np.asarray(state_dict[name].float().numpy() if hasattr(state_dict[name], "float")
                                    else state_dict[name], np.float32)

    def put(param, name, transpose=False):
        value = array(name)
        value = value.T if transpose else value
        if value.shape != param[...].shape:
            raise ValueError(f"{name}: shape {value.shape} does not fit {param[...].shape}")
        param[...] = jnp.asarray(value, param[...].dtype)

    put(model.embed.embedding, "model.embed_tokens.weight")
    put(model.final_norm.scale, "model.norm.weight")
    if model.lm_head is not None:
        put(model.lm_head.kernel, "lm_head.weight", transpose=True)
    for i, block in enumerate(model.blocks):
        prefix = f"model.layers.{i}."
        attn = block.attn
        for name in ("q_proj", "k_proj", "v_proj", "o_proj", "dt_proj"):
            put(getattr(attn, name).kernel, f"{prefix}self_attn.{name}.weight", transpose=True)
        put(attn.A, f"{prefix}self_attn.A")
        put(attn.q_norm.scale, f"{prefix}self_attn.q_norm.weight")
        put(attn.k_norm.scale, f"{prefix}self_attn.k_norm.weight")
        for name in ("gate_proj", "up_proj", "down_proj"):
            put(getattr(block.mlp, name).kernel, f"{prefix}mlp.{name}.weight", transpose=True)
        put(block.attn_norm.scale, f"{prefix}input_layernorm.weight")
        put(block.mlp_norm.scale, f"{prefix}post_attention_layernorm.weight")
        put(block.attn_residual, f"{prefix}input_residual")
        put(block.mlp_residual, f"{prefix}post_attention_residual")
    return model


def from_doge(hf_model, **overrides) -> DecoderLM:
    """A ``DecoderLM`` with the weights of a transformers ``DogeForCausalLM``."""
    config = model_config_from_doge(hf_model.config, **overrides)
    model = DecoderLM(config, rngs=nnx.Rngs(0))
    return load_doge_state_dict(model, hf_model.state_dict())
