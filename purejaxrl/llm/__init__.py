"""Token-level LLM post-training losses on small JAX transformers."""

from purejaxrl import keep_heap as _keep_heap

_keep_heap()
