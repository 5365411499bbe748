"""Our DecoderLM reproduces a randomly initialised transformers Doge model's logits.

In the slow tier (31 s a case on a fresh clone; torch, transformers and Triton together took a
fresh setup from 61 to 113 s, and CI keeps only Triton):
``DMA_INTEROP_TESTS=1 bash setup.sh && .venv/bin/python -m pytest -q -m slow -n 4`` runs them."""

import numpy as np
import pytest

pytestmark = pytest.mark.slow

torch = pytest.importorskip("torch", reason="torch is a test-only extra (DMA_INTEROP_TESTS=1 bash setup.sh installs it)")
transformers = pytest.importorskip("transformers", reason="transformers is a test-only extra (DMA_INTEROP_TESTS=1 bash setup.sh installs it)")

import jax.numpy as jnp  # noqa: E402

from dma_jax.interop.doge import from_doge  # noqa: E402


@pytest.mark.parametrize("tie", [False, True], ids=["untied", "tied"])
def test_logits_match_doge_eager_beyond_the_window(tie):
    config = transformers.DogeConfig(
        vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, keep_window_size=8, tie_word_embeddings=tie, is_moe=False,
    )
    torch.manual_seed(0)
    hf = transformers.DogeForCausalLM(config).eval()
    hf.config._attn_implementation = "eager"
    with torch.no_grad():  # a bias that varies by key and head, and residual scales away from 1
        for layer in hf.model.layers:
            layer.self_attn.A.copy_(torch.tensor([1.3, -0.7]))
            layer.self_attn.dt_proj.weight.mul_(30.0)
            layer.input_residual.uniform_(0.5, 1.5)
            layer.post_attention_residual.uniform_(0.5, 1.5)
            layer.input_layernorm.weight.uniform_(0.5, 1.5)
    tokens = np.random.default_rng(0).integers(0, 128, (2, 40))  # 40 > keep_window_size = 8
    with torch.no_grad():
        want = hf(torch.tensor(tokens)).logits.numpy()
    ours = from_doge(hf)
    got = np.asarray(ours(jnp.asarray(tokens, jnp.int32)))
    np.testing.assert_allclose(got, want, atol=2e-4, rtol=1e-4)
