"""Synthetic verifiable tasks with a character tokenizer.

Every task generates prompts inside jitted code (``sample``), scores completions with a jittable
verifier (``reward``), and gives reference completions for supervised warm-up.  Prompts are
split into train and test *by prompt*: a prompt belongs to the test split when the sum of its
digits/letters is divisible by 5 (for ``digit_sum``, whose answer *is* that sum, the last digit
counts twice), and the generator picks its last symbol to land in the requested split.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

# ---- tokenizer: 32 symbols --------------------------------------------------------------------
SPECIALS = ["<pad>", "<bos>", "<eos>"]
DIGITS = list("0123456789")
LETTERS = list("abcdefghijklmnop")
SYMBOLS = list("+=:")
VOCAB = SPECIALS + DIGITS + LETTERS + SYMBOLS
PAD, BOS, EOS = 0, 1, 2
D0 = len(SPECIALS)               # id of "0"
L0 = D0 + len(DIGITS)            # id of "a"
TOK = {s: i for i, s in enumerate(VOCAB)}


def encode(text: str) -> list[int]:
    return [TOK[c] for c in text]


def decode(ids) -> str:
    out = []
    for i in np.asarray(ids).tolist():
        if i == EOS:
            break
        if i >= len(SPECIALS):
            out.append(VOCAB[i])
    return "".join(out)


def _split_last(key, head_sum, n_choices: int, test: bool, mod: int = 5, weight: int = 1):
    """Pick a last symbol in ``0 .. n_choices-1`` so that ``(head_sum + weight·s) % mod == 0`` iff ``test``."""
    s = jnp.arange(n_choices)
    ok = ((head_sum[:, None] + weight * s[None]) % mod == 0) == test
    return jax.random.categorical(key, jnp.where(ok, 0.0, -jnp.inf))


@dataclass(frozen=True)
class Batch:
    prompts: jax.Array   # [n, P] token ids (BOS first)
    answers: jax.Array   # [n, A] reference completion ids (ending with EOS, PAD after)
    level: jax.Array     # [n] difficulty level (0 where the task has none)


jax.tree_util.register_dataclass(Batch, data_fields=["prompts", "answers", "level"], meta_fields=[])


class Task:
    name = "task"
    separator = TOK["="]   # token before the final answer (likelihood rewards cut the chain of thought there)
    prompt_len = 0
    max_new = 0            # completion budget
    levels: tuple[int, ...] = (0,)
    has_format = False     # answers are digits then EOS: format_answers (random digits) teaches no answer

    def sample(self, key, n: int, test: bool = False) -> Batch:  # pragma: no cover - interface
        raise TypeError(f"{type(self).__name__} must define sample")

    def format_answers(self, key, batch: Batch):
        """The answers' format without their content: random digits where the answer has digits, EOS
        and padding where it has them (the target of ``sft_target=format``)."""
        rnd = jax.random.randint(key, batch.answers.shape, 0, 10) + D0
        is_digit = (batch.answers >= D0) & (batch.answers < D0 + 10)
        return jnp.where(is_digit, rnd, batch.answers)

    def reward(self, completions, mask, batch: Batch):
        """Default verifier: 1 if the completion reproduces the reference answer up to its EOS."""
        A = batch.answers.shape[1]
        c = completions[:, :A]
        needed = batch.answers != PAD
        return jnp.all(jnp.where(needed, c == batch.answers, True), axis=1).astype(jnp.float32)


class Addition(Task):
    """``0123+0456=`` → ``00579<eos>``: fixed-width multi-digit addition."""

    name = "addition"
    has_format = True

    def __init__(self, digits: int = 3):
        self.digits = digits
        self.prompt_len = 1 + 2 * digits + 2
        self.max_new = digits + 2
        self.levels = (0,)

    def sample(self, key, n, test=False):
        k1, k2 = jax.random.split(key)
        d = self.digits
        head = jax.random.randint(k1, (n, 2 * d - 1), 0, 10)
        # held out: digit sum % 5 == 0, but (a + 2b) % 5 == 0 for one digit, where the digit sum is the
        # answer's residue and would hold out every sum ending in 0 or 5 (answers training never rewards)
        last = _split_last(k2, head.sum(1), 10, test, weight=2 if d == 1 else 1)
        digs = jnp.concatenate([head, last[:, None]], 1)
        a, b = digs[:, :d], digs[:, d:]
        pw = 10 ** jnp.arange(d - 1, -1, -1)
        total = (a * pw).sum(1) + (b * pw).sum(1)
        out = (total[:, None] // (10 ** jnp.arange(d, -1, -1))[None]) % 10
        n_ = jnp.full((n, 1), 0)
        prompts = jnp.concatenate([n_ + BOS, a + D0, n_ + TOK["+"], b + D0, n_ + TOK["="]], 1)
        answers = jnp.concatenate([out + D0, n_ + EOS], 1)
        return Batch(prompts, answers, jnp.zeros((n,), jnp.int32))


class CombinationLock(Task):
    """Cold start: ``k:dddd=`` → ``k`` digits, answer digit ``j`` = ``perm_j[d_j]`` for fixed random
    permutations.  An untrained policy over the 32 symbols succeeds with probability ≈ 32^−(k+1) (the
    k digits and EOS); levels k mix in a batch.  With ``independent_maps`` every level has its own
    permutations (level 3's first digit is not level 2's), so a level is learned from its own
    successes only; after a format warm-up (``purejaxrl llm sft sft_target=format``: random digits of
    the right length, then EOS) the policy starts near 10^−k per level."""

    name = "combination_lock"
    has_format = True

    def __init__(self, levels=(1, 2, 3), width: int = 4, seed: int = 1234, independent_maps: bool = False):
        self.levels = tuple(levels)
        if not self.levels or any(not isinstance(k, int) or k < 1 or k > width for k in self.levels):
            raise ValueError(f"levels={list(self.levels)} must be integers in 1..width={width}")
        self.width = width
        self.independent_maps = bool(independent_maps)
        if independent_maps:  # [max level + 1, width, 10]: row k holds level k's permutations
            rng = np.random.default_rng(seed)
            self.perms = jnp.asarray(np.stack([np.stack([rng.permutation(10) for _ in range(width)])
                                               for _ in range(max(self.levels) + 1)]))
        else:
            self.perms = jnp.asarray(np.stack([np.random.default_rng(seed + j).permutation(10) for j in range(width)]))
        self.prompt_len = 1 + 2 + width + 1
        self.max_new = max(self.levels) + 1

    def sample(self, key, n, test=False):
        k0, k1, k2 = jax.random.split(key, 3)
        level = jnp.asarray(self.levels)[jax.random.randint(k0, (n,), 0, len(self.levels))]
        head = jax.random.randint(k1, (n, self.width - 1), 0, 10)
        last = _split_last(k2, head.sum(1) + level, 10, test)
        digs = jnp.concatenate([head, last[:, None]], 1)
        if self.independent_maps:
            ans = self.perms[level[:, None], jnp.arange(self.width)[None], digs]  # [n, width]
        else:
            ans = self.perms[jnp.arange(self.width)[None], digs]  # [n, width]
        K = max(self.levels)
        pos = jnp.arange(K + 1)[None]
        answers = jnp.where(pos < level[:, None], jnp.pad(ans[:, :K], ((0, 0), (0, 1))) + D0, PAD)
        answers = jnp.where(pos == level[:, None], EOS, answers)
        n_ = jnp.full((n, 1), 0)
        prompts = jnp.concatenate([n_ + BOS, level[:, None] + D0, n_ + TOK[":"], digs + D0, n_ + TOK["="]], 1)
        return Batch(prompts, answers, level)


class SortLetters(Task):
    """``dbeac=`` → ``abcde<eos>``; true reward = fraction of positions right (preference data)."""

    name = "sort_letters"

    def __init__(self, n_letters: int = 5):
        self.k = n_letters
        self.prompt_len = 1 + n_letters + 1
        self.max_new = n_letters + 1
        self.levels = (0,)

    def sample(self, key, n, test=False):
        k1, k2 = jax.random.split(key)
        keys = jax.random.split(k1, n)
        letters = jax.vmap(lambda k: jax.random.permutation(k, len(LETTERS))[: self.k])(keys)
        # split by prompt: swap in a letter so the sum lands in the requested split
        s = letters[:, :-1].sum(1)
        used = jnp.zeros((n, len(LETTERS)), bool).at[jnp.arange(n)[:, None], letters[:, :-1]].set(True)
        ok = (((s[:, None] + jnp.arange(len(LETTERS))[None]) % 5 == 0) == test) & ~used
        last = jax.random.categorical(k2, jnp.where(ok, 0.0, -jnp.inf))
        letters = letters.at[:, -1].set(last)
        n_ = jnp.full((n, 1), 0)
        prompts = jnp.concatenate([n_ + BOS, letters + L0, n_ + TOK["="]], 1)
        answers = jnp.concatenate([jnp.sort(letters, axis=1) + L0, n_ + EOS], 1)
        return Batch(prompts, answers, jnp.zeros((n,), jnp.int32))

    def true_reward(self, completions, batch: Batch):
        k = self.k
        return (completions[:, :k] == batch.answers[:, :k]).mean(1).astype(jnp.float32)


class DigitSum(Task):
    """``ddddd:`` → free scratchpad, then ``=`` and the two-digit sum: ``...=23<eos>``.  The
    verifier reads the digits after the last ``=``; likelihood rewards score the reference answer
    after the sampled scratchpad instead."""

    name = "digit_sum"

    def __init__(self, n_digits: int = 5, scratch: int = 6):
        self.n = n_digits
        self.scratch = scratch
        self.prompt_len = 1 + n_digits + 1
        self.max_new = scratch + 4
        self.levels = (0,)

    def sample(self, key, n, test=False):
        k1, k2 = jax.random.split(key)
        head = jax.random.randint(k1, (n, self.n - 1), 0, 10)
        # weight 2 on the last digit: the split must not be a function of the answer (the sum)
        last = _split_last(k2, head.sum(1), 10, test, weight=2)
        digs = jnp.concatenate([head, last[:, None]], 1)
        total = digs.sum(1)
        n_ = jnp.full((n, 1), 0)
        prompts = jnp.concatenate([n_ + BOS, digs + D0, n_ + TOK[":"]], 1)
        answers = jnp.concatenate([n_ + TOK["="], (total // 10)[:, None] + D0, (total % 10)[:, None] + D0, n_ + EOS], 1)
        return Batch(prompts, answers, jnp.zeros((n,), jnp.int32))

    def reward(self, completions, mask, batch):
        """1 if the completion contains ``=`` followed by the right two digits and EOS."""
        T = completions.shape[1]
        is_eq = (completions == TOK["="]) & mask
        last_eq = jnp.where(is_eq.any(1), T - 1 - jnp.argmax(is_eq[:, ::-1], axis=1), -1)
        idx = jnp.clip(last_eq[:, None] + jnp.arange(4)[None], 0, T - 1)
        got = jnp.take_along_axis(completions, idx, 1)
        return ((last_eq >= 0) & jnp.all(got == batch.answers, axis=1)).astype(jnp.float32)


TASKS = {"addition": Addition, "combination_lock": CombinationLock, "sort_letters": SortLetters, "digit_sum": DigitSum}


def make_task(name: str, **kwargs) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid: {', '.join(TASKS)}")
    return TASKS[name](**kwargs)
