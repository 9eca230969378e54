"""Reward functions on decoded strings, for ``reward_funcs`` (TRL's signature).

A reward function is ``fn(prompts, completions, answers, **kwargs) -> list[float | None]``: the
decoded prompt of each completion (repeated for its group), the decoded completions (up to their
EOS, special tokens dropped) and the reference answers; ``None`` leaves a completion unscored (it
counts 0 in the weighted sum, as TRL's ``nansum``).  Name one on the command line as
``module:function``, e.g. ``reward_funcs='[verifier,purejaxrl.llm.rewards:digits_only]'
reward_weights='[1.0,0.1]'``.  The functions run on the host (``jax.pure_callback``) inside the
compiled iteration; the task's own ``verifier`` stays on the device.
"""

from __future__ import annotations


def exact_answer(prompts, completions, answers, **kwargs):
    """1 when the completion equals the reference answer as a string (the verifier, on strings)."""
    return [float(c == a) for c, a in zip(completions, answers)]


def digits_only(prompts, completions, answers, **kwargs):
    """The fraction of the completion's characters that are digits (a format reward); ``None`` for
    an empty completion."""
    return [sum(ch.isdigit() for ch in c) / len(c) if c else None for c in completions]
