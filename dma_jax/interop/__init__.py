"""Converters from other implementations' checkpoints to ``dma_jax.models.DecoderLM``."""
