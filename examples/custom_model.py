"""A language model of one's own around DynamicMaskAttention, that trains and generates.

    python examples/custom_model.py

``dma_jax.generate`` works with any NNX model that has ``prefill`` and ``decode``
(``dma_jax.decoding.CachedLM``). Every attention layer of ``dma_jax.nn`` decodes with a cache of
its own (``prefill``, ``extend``, ``decode``: ``dma_jax.nn.CachedAttention``), so a model builds
both methods from its layers in a few lines, as ``TinyLM`` does below. The script trains it for a
few steps to copy a pattern, then generates; about 30 s on a 2-core CPU.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from dma_jax import generate
from dma_jax.nn import DynamicMaskAttention


class TinyLM(nnx.Module):
    """Embedding, one pre-norm DMA block (attention and an MLP), a final norm and a tied head."""

    def __init__(self, vocab: int = 64, d_model: int = 32, window: int = 8, *, rngs: nnx.Rngs):
        self.embed = nnx.Embed(vocab, d_model, rngs=rngs)
        self.norm1, self.norm2, self.norm3 = (nnx.RMSNorm(d_model, rngs=rngs) for _ in range(3))
        self.attn = DynamicMaskAttention(d_model, num_heads=4, num_kv_heads=2, head_dim=8, window=window,
                                         implementation="xla", rngs=rngs)
        self.up, self.down = nnx.Linear(d_model, 4 * d_model, rngs=rngs), nnx.Linear(4 * d_model, d_model, rngs=rngs)

    def _mlp(self, x):
        return x + self.down(jax.nn.gelu(self.up(self.norm2(x))))

    def _head(self, x):
        return self.embed.attend(self.norm3(x)).astype(jnp.float32)

    def __call__(self, tokens):  # (B, T) -> logits (B, T, vocab)
        x = self.embed(tokens)
        return self._head(self._mlp(x + self.attn(self.norm1(x))))

    # What dma_jax.generate needs (CachedLM): the same computation, through the layer's cache.
    def prefill(self, tokens, lengths, max_len, chunk=None):
        chunk = tokens.shape[1] if chunk is None else min(chunk, tokens.shape[1])
        x = self.embed(tokens[:, :chunk])
        attended, cache = self.attn.prefill(self.norm1(x), lengths=jnp.minimum(lengths, chunk), max_len=max_len,
                                            chunk=chunk)
        logits = [self._head(self._mlp(x + attended))]
        for start in range(chunk, tokens.shape[1], chunk):  # the rest of a long prompt, a chunk at a time
            piece = tokens[:, start : start + chunk]
            positions = jnp.broadcast_to(start + jnp.arange(piece.shape[1]), piece.shape)
            x = self.embed(piece)
            attended, cache = self.attn.extend(self.norm1(x), positions=positions, cache=cache, lengths=lengths)
            logits.append(self._head(self._mlp(x + attended)))
        return jnp.concatenate(logits, axis=1), cache

    def decode(self, tokens, positions, cache):
        x = self.embed(tokens[:, None])
        attended, cache = self.attn.decode(self.norm1(x), positions=positions, cache=cache)
        return self._head(self._mlp(x + attended))[:, 0], cache


def train(model: TinyLM, steps: int = 60, seq_len: int = 24, batch: int = 16, seed: int = 0) -> list[float]:
    """Next-token training on sequences that repeat a random 4-token pattern; returns the losses."""
    optimizer = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, tokens):
        def loss_fn(model):
            logits = model(tokens[:, :-1])
            return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    losses = []
    for key in jax.random.split(jax.random.key(seed), steps):
        pattern = jax.random.randint(key, (batch, 4), 0, 64)
        losses.append(float(step(model, optimizer, jnp.tile(pattern, (1, (seq_len + 1) // 4 + 1))[:, : seq_len + 1])))
    return losses


def main() -> None:
    model = TinyLM(rngs=nnx.Rngs(0))
    losses = train(model)
    print(f"loss {losses[0]:.2f} -> {losses[-1]:.2f} after {len(losses)} steps")
    prompts = jnp.array([[5, 9, 2, 7, 5, 9, 2, 7], [1, 3, 3, 8, 1, 3, 3, 8]])
    print("prompts  ", prompts.tolist())
    print("generated", generate(model, prompts, max_new_tokens=8).tolist())


if __name__ == "__main__":
    main()
