"""Update rules for the Learned Policy Gradient agent (``algo=lpg``): what turns a trajectory into the
agent's targets.

An LPG agent (Oh et al. 2020) has a policy π(a|s) and a prediction vector y(s) (a categorical of width
``y_dim``, 8 by default), and minimises, over a rollout,

    L = −mean_t[ log π(a_t|s_t) · π̂_t ] + y_coef · mean_t[ KL(y(s_t) ‖ ŷ_t) ]

where the targets (π̂_t, ŷ_t) come from an update rule reading, per step, the reward r_t, whether the
episode terminated d_t, the probability π(a_t|s_t) of the action taken, and embeddings of y(s_t) and
y(s_{t+1}) (zero after a termination).  Two kinds:

* ``lpg`` — the meta-network: a GRU run backward in time over the rollout (its state zeroed at every
  episode boundary, so nothing flows back from the next episode), the embedding a small MLP of y, a
  linear head for π̂ and a softmax head for ŷ.  ``time_aware`` (TA-LPG, Jackson et al. 2024) adds
  two inputs: training progress n/N and log N (the lifetime in updates).  Its parameters are a
  pytree, traced into the compiled program like a learned PPO objective's (``hp["update_rule"]``).
* ``a2c`` — a hand-written rule with no parameters: the embedding reads y as a value,
  v(y) = Σ_i y_i·b_i on fixed bins b; π̂_t = G_t − v(y(s_t)) with G_t the discounted return of the
  rest of the rollout bootstrapped by v at its end (and at a time limit), and ŷ_t the two-hot encoding
  of G_t on the bins.  Its policy term is A2C's policy-gradient loss exactly (``tests/test_lpg.py``);
  its prediction term is a categorical regression of y onto the return, not A2C's squared error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

KINDS = ("lpg", "a2c")
DEFAULT_SPEC = {"kind": "lpg", "hidden": 256, "y_dim": 8, "embed_hidden": 16, "time_aware": False, "value_bound": 10.0}


@dataclass(frozen=True)
class UpdateRule:
    """A rule's static description (``spec``: kind, sizes, ``time_aware``) and its parameters (a
    pytree of arrays, or None for the hand-written rules)."""

    spec: dict = field(default_factory=lambda: dict(DEFAULT_SPEC))
    params: Any = None

    @property
    def num_inputs(self) -> int:
        return 5 + (2 if self.spec.get("time_aware") else 0)

    def embed(self, params, y):
        """The scalar embedding of prediction vectors ``y [..., y_dim]``."""
        if self.spec["kind"] == "a2c":
            return jnp.sum(y * bins(self.spec), -1)
        h = jax.nn.relu(y @ params["phi_w1"] + params["phi_b1"])
        return (h @ params["phi_w2"] + params["phi_b2"])[..., 0]

    def targets(self, params, x, reset, gamma):
        """``(π̂ [T, B], ŷ [T, B, y_dim])`` from inputs ``x [T, B, num_inputs]`` (columns: r, d, π(a|s),
        e_t, e_{t+1}, [progress, log N]) and ``reset [T, B]`` (the episode ended at step t)."""
        if self.spec["kind"] == "a2c":
            return a2c_targets(self.spec, x, reset, gamma)
        return lpg_targets(params, self.spec, x, reset)


def bins(spec) -> jax.Array:
    return jnp.linspace(-spec["value_bound"], spec["value_bound"], spec["y_dim"])


def two_hot(v, b):
    """Two-hot encoding of scalars ``v`` on sorted bins ``b`` (clipped to their range)."""
    v = jnp.clip(v, b[0], b[-1])
    i = jnp.clip(jnp.searchsorted(b, v, side="right") - 1, 0, b.shape[0] - 2)
    w = (v - b[i]) / (b[i + 1] - b[i])
    return jax.nn.one_hot(i, b.shape[0]) * (1 - w)[..., None] + jax.nn.one_hot(i + 1, b.shape[0]) * w[..., None]


def a2c_targets(spec, x, reset, gamma):
    """π̂_t = G_t − e_t and ŷ_t = two-hot(G_t): ``G_t = r_t + γ (1 − d_t) · (e_{t+1} if the episode was
    cut at t (time limit) or t is the rollout's last step, else G_{t+1})``."""
    r, d, e, e_next = x[..., 0], x[..., 1], x[..., 3], x[..., 4]
    cut = reset & (d < 0.5)  # an episode that ended without terminating: bootstrap from e_{t+1}

    def back(g_next, inp):
        r_t, d_t, en_t, cut_t = inp
        g = r_t + gamma * (1.0 - d_t) * jnp.where(cut_t, en_t, g_next)
        return g, g

    _, g = jax.lax.scan(back, e_next[-1], (r, d, e_next, cut), reverse=True)
    return g - e, two_hot(g, bins(spec))


def gru_cell(p, x, h):
    """A GRU step: ``z, r`` gates, candidate ``n = tanh(W_n x + r ⊙ (U_n h) + b_n)``, ``h' = (1 − z) n + z h``."""
    H = h.shape[-1]
    gx = x @ p["gru_wx"] + p["gru_b"]
    gh = h @ p["gru_wh"]
    z = jax.nn.sigmoid(gx[..., :H] + gh[..., :H])
    r = jax.nn.sigmoid(gx[..., H:2 * H] + gh[..., H:2 * H])
    n = jnp.tanh(gx[..., 2 * H:] + r * gh[..., 2 * H:])
    return (1 - z) * n + z * h


def lpg_targets(params, spec, x, reset):
    """The meta-network: a GRU backward in time (its state zeroed where the episode ended at step t,
    before step t is read), then π̂ = linear(relu(h)) and ŷ = softmax(linear(relu(h)))."""
    H = spec["hidden"]

    def back(h, inp):
        x_t, reset_t = inp
        h = jnp.where(reset_t[..., None], 0.0, h)
        h = gru_cell(params, x_t, h)
        return h, h

    h0 = jnp.zeros(x.shape[1:-1] + (H,), x.dtype)
    _, hs = jax.lax.scan(back, h0, (x, reset), reverse=True)
    a = jax.nn.relu(hs)
    pi_hat = (a @ params["pi_w"] + params["pi_b"])[..., 0]
    y_hat = jax.nn.softmax(a @ params["y_w"] + params["y_b"], -1)
    return pi_hat, y_hat


def init_lpg(key, spec: dict) -> dict:
    """Meta-network parameters: small random weights (every output starts near π̂ = 0, ŷ uniform).

    A time-aware rule starts as the time-blind rule drawn from the same key with zero weights on its two
    time inputs, so LPG and TA-LPG meta-trained from one key start as the same function (random rows
    there would dominate the GRU at the start: log N is 2.3–5.5, the other inputs mostly below 1); ES
    moves those rows from zero."""
    H, Y, E = spec["hidden"], spec["y_dim"], spec["embed_hidden"]
    ks = jax.random.split(key, 5)

    def normal(k, shape, fan_in, scale=1.0):
        return scale * jax.random.normal(k, shape, jnp.float32) / np.sqrt(fan_in)

    wx = normal(ks[2], (5, 3 * H), 5)
    if spec.get("time_aware"):
        wx = jnp.concatenate([wx, jnp.zeros((2, 3 * H), jnp.float32)])
    return {"phi_w1": normal(ks[0], (Y, E), Y), "phi_b1": jnp.zeros(E), "phi_w2": normal(ks[1], (E, 1), E),
            "phi_b2": jnp.zeros(1), "gru_wx": wx, "gru_wh": normal(ks[3], (H, 3 * H), H),
            "gru_b": jnp.zeros(3 * H), "pi_w": normal(ks[4], (H, 1), H, 0.01), "pi_b": jnp.zeros(1),
            "y_w": jnp.zeros((H, Y)), "y_b": jnp.zeros(Y)}


def make_rule(name: str, key=None, **overrides) -> UpdateRule:
    """``a2c``, ``lpg`` or ``ta_lpg`` (a freshly initialised meta-network, the start of meta-training)."""
    if name == "a2c":
        return UpdateRule({**DEFAULT_SPEC, "kind": "a2c", **overrides}, None)
    if name in ("lpg", "ta_lpg"):
        spec = {**DEFAULT_SPEC, "kind": "lpg", "time_aware": name == "ta_lpg", **overrides}
        return UpdateRule(spec, init_lpg(jax.random.PRNGKey(0) if key is None else key, spec))
    raise ValueError(f"unknown update rule {name!r}; valid: a2c, lpg, ta_lpg, learned")


def without_time(rule: UpdateRule, progress: float, lifetime: float) -> UpdateRule:
    """A TA-LPG rule with its time information removed: it reads the fixed inputs ``progress`` (n/N)
    and log ``lifetime`` (N) at every step of every lifetime, whatever the agent's own — the ablation
    that asks whether reading the time is what the rule uses.  Pick values inside the range the rule
    was meta-trained on (inputs it never saw would handicap it): ``fixed_time_inputs`` does.
    The fixed inputs are folded into the GRU's bias and their weights zeroed."""
    if rule.spec.get("kind") != "lpg" or not rule.spec.get("time_aware"):
        raise ValueError(f"without_time applies to a time-aware (ta_lpg) meta-network; this rule has kind="
                         f"{rule.spec.get('kind')!r}, time_aware={bool(rule.spec.get('time_aware'))}")
    params = dict(rule.params)
    wx = jnp.asarray(params["gru_wx"])
    c = jnp.asarray([progress, np.log(lifetime)], wx.dtype)
    params["gru_b"] = jnp.asarray(params["gru_b"]) + c @ wx[5:7]
    params["gru_wx"] = wx.at[5:].set(0.0)
    return UpdateRule({**rule.spec, "ablation": f"time inputs fixed at n/N = {progress:g}, N = {lifetime:g}"}, params)


def fixed_time_inputs(random_lifetime) -> tuple[float, float]:
    """The ablation's fixed inputs for a rule meta-trained on lifetimes log-uniform in ``[lo, hi]``:
    the middle of the lifetime (n/N = 0.5) and the middle of the log-uniform range (N = √(lo·hi))."""
    lo, hi = random_lifetime
    return 0.5, float(np.sqrt(lo * hi))


SPEC_FILE = "rule.json"


def save_rule(rule: UpdateRule, path: str | Path, extra: dict | None = None) -> None:
    """``path/rule.json`` (the spec, with ``extra`` such as the generation it was saved at) and
    ``params.npz``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / SPEC_FILE).write_text(json.dumps({**rule.spec, **(extra or {})}, indent=1))
    if rule.params is not None:
        np.savez(path / "params.npz", **{k: np.asarray(v) for k, v in rule.params.items()})


def load_rule(path: str | Path) -> UpdateRule:
    from purejaxrl.errors import ConfigError

    path = Path(path)
    if not (path / SPEC_FILE).exists():
        raise ConfigError(f"{path} holds no update rule (rule.json): give a directory saved by save_rule")
    saved = json.loads((path / SPEC_FILE).read_text())
    spec = {**DEFAULT_SPEC, **{k: v for k, v in saved.items() if k in DEFAULT_SPEC or k == "kind"}}
    params = None
    if (path / "params.npz").exists():
        with np.load(path / "params.npz") as z:
            params = {k: jnp.asarray(z[k]) for k in z.files}
    return UpdateRule(spec, params)
