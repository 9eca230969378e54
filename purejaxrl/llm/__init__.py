"""Token-level LLM post-training losses on small JAX transformers."""
