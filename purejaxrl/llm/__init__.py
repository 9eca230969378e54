"""Token-level LLM post-training on small JAX transformers: model, sampler, losses."""
