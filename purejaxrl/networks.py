"""Networks: LayerNorm Q-networks (PQN) and actor-critics (PPO), MLP or MinAtar conv torso."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from envs.wrappers import running_moments

ACTIVATIONS = {"relu": nn.relu, "tanh": nn.tanh, "gelu": nn.gelu, "silu": nn.silu}


@struct.dataclass
class ObsNorm:
    """Running observation statistics (PPO's ``normalize_obs``, SAC's ``normalize_observations``):
    ``(obs − mean) / sqrt(var + 1e-8)``, the moments merged batch by batch."""

    mean: jax.Array
    var: jax.Array
    count: jax.Array

    @staticmethod
    def empty(shape) -> ObsNorm:
        return ObsNorm(jnp.zeros(shape), jnp.ones(shape), jnp.float32(1e-4))

    def __call__(self, obs):
        return (obs - self.mean) / jnp.sqrt(self.var + 1e-8)

    def update(self, obs) -> ObsNorm:
        """Merge a batch of observations (any leading axes)."""
        flat = obs.reshape((-1,) + self.mean.shape)
        return ObsNorm(*running_moments(self.mean, self.var, self.count, flat))


@dataclass(frozen=True)
class NetworkSpec:
    """Resolved network configuration (``conf/network``)."""

    kind: str  # "mlp" or "minatar_conv"
    hidden_size: int
    num_layers: int
    layer_norm: bool
    activation: str
    conv_channels: int = 16
    conv_padding: str = "SAME"  # "VALID" in the reference PQN MinAtar network
    kernel_init: str = "lecun_normal"  # or "he_normal" (reference PQN MinAtar torso)
    input_scale: float = 1.0  # observations are multiplied by this first (reference PQN MinAtar: 1/255)
    obs_ndim: int = 1  # rank of one observation: an MLP flattens that many trailing axes


KERNEL_INITS = {"lecun_normal": nn.initializers.lecun_normal(), "he_normal": nn.initializers.he_normal()}


def _orthonormal_columns(a):
    """``Q`` of the QR decomposition of ``a [m, n]`` (m >= n) with ``diag(R) > 0``, by modified
    Gram–Schmidt in plain array ops (twice, for float32 accuracy)."""
    n = a.shape[1]

    def body(j, q):
        col = q[:, j]
        earlier = (jnp.arange(n) < j).astype(a.dtype)
        for _ in range(2):  # re-orthogonalise once: "twice is enough"
            col = col - q @ ((q.T @ col) * earlier)
        return q.at[:, j].set(col / jnp.linalg.norm(col))

    return jax.lax.fori_loop(0, n, body, a)


def orthogonal(scale: float = 1.0):
    """Orthogonal kernel initializer, the same matrices as ``flax.linen.initializers.orthogonal``
    (same normal draw, QR with a positive diagonal) without LAPACK.

    XLA:CPU runs LAPACK's QR as a custom call that, when batched (vmapped seeds) and run beside
    another such call, splits its batch over the intra-op thread pool and waits for the pieces;
    with every pool thread inside such a wait, nothing runs them and the program never finishes
    (seen as an occasional stall at the start of a multi-seed PPO run on 2 cores).  Plain array
    ops cannot wait on the pool, so this initializer cannot stall.
    """

    def init(key, shape, dtype=jnp.float32):
        rows, cols = int(np.prod(shape[:-1])), shape[-1]
        matrix_shape = (cols, rows) if rows < cols else (rows, cols)
        q = _orthonormal_columns(jax.random.normal(key, matrix_shape, dtype))
        if rows < cols:
            q = q.T
        return (scale * q).reshape(shape).astype(dtype)

    return init


class PatchConv(nn.Module):
    """A stride-1 2-D convolution computed as one matrix product over its input patches.  The same
    function and parameters as ``nn.Conv`` (``kernel`` ``[kh, kw, C, F]``, ``bias`` ``[F]``, the same
    initialisers), but its gradient is a plain matrix product: XLA's CPU backward of a small
    convolution's kernel is much slower than this on MinAtar's 10 × 10 planes."""

    features: int
    kernel_size: tuple[int, int] = (3, 3)
    padding: str = "SAME"
    kernel_init: Callable = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x):
        kh, kw = self.kernel_size
        c = x.shape[-1]
        kernel = self.param("kernel", self.kernel_init, (kh, kw, c, self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        if self.padding == "SAME":
            pad = [(0, 0)] * (x.ndim - 3) + [((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2), (0, 0)]
            x = jnp.pad(x, pad)
        elif self.padding != "VALID":
            raise ValueError(f"padding={self.padding!r} must be SAME or VALID")
        h, w = x.shape[-3] - kh + 1, x.shape[-2] - kw + 1
        patches = jnp.stack([x[..., i:i + h, j:j + w, :] for i in range(kh) for j in range(kw)], axis=-2)
        return patches.reshape(patches.shape[:-2] + (kh * kw * c,)) @ kernel.reshape(kh * kw * c, self.features) + bias


class Torso(nn.Module):
    spec: NetworkSpec
    orthogonal: bool = False

    def _dense(self, features, scale=np.sqrt(2)):
        if self.orthogonal:
            return nn.Dense(features, kernel_init=orthogonal(scale), bias_init=nn.initializers.zeros)
        return nn.Dense(features, kernel_init=KERNEL_INITS[self.spec.kernel_init])

    @nn.compact
    def __call__(self, x):
        act = ACTIVATIONS[self.spec.activation]
        if self.spec.input_scale != 1.0:
            x = x * self.spec.input_scale
        if self.spec.kind == "minatar_conv":
            x = PatchConv(self.spec.conv_channels, (3, 3), padding=self.spec.conv_padding,  # nn.Conv's function
                          kernel_init=KERNEL_INITS[self.spec.kernel_init], name="Conv_0")(x)
            if self.spec.layer_norm:
                x = nn.LayerNorm()(x)
            x = act(x)
            x = x.reshape(x.shape[:-3] + (-1,))
            layers = 1
        else:  # flatten the observation's own axes (e.g. Catch's 10 x 5 board), keep the batch axes
            x = x.reshape(x.shape[: x.ndim - self.spec.obs_ndim] + (-1,))
            layers = self.spec.num_layers
        for _ in range(layers):
            x = self._dense(self.spec.hidden_size)(x)
            if self.spec.layer_norm:
                x = nn.LayerNorm()(x)
            x = act(x)
        return x


class QNetwork(nn.Module):
    """``Q(s, ·)``: torso of ``[Dense → LayerNorm → act] × L`` (or the MinAtar conv net), linear head."""

    spec: NetworkSpec
    num_actions: int

    @nn.compact
    def __call__(self, obs):
        return nn.Dense(self.num_actions)(Torso(self.spec)(obs))


class ActorCritic(nn.Module):
    """Separate actor and critic torsos (orthogonal init).  Discrete: logits; continuous: Gaussian
    mean with a state-independent learned log-std."""

    spec: NetworkSpec
    action_dim: int
    discrete: bool

    @nn.compact
    def __call__(self, obs):
        h = Torso(self.spec, orthogonal=True)(obs)
        out = nn.Dense(self.action_dim, kernel_init=orthogonal(0.01), bias_init=nn.initializers.zeros)(h)
        value = Torso(self.spec, orthogonal=True)(obs)
        value = nn.Dense(1, kernel_init=orthogonal(1.0), bias_init=nn.initializers.zeros)(value)
        log_std = None if self.discrete else self.param("log_std", nn.initializers.zeros, (self.action_dim,))
        return out, log_std, value[..., 0]


# ---- action distributions (small, explicit, traced-friendly) ----

def categorical_log_prob(logits, actions):
    logp = jax.nn.log_softmax(logits)
    return jnp.take_along_axis(logp, actions[..., None].astype(jnp.int32), axis=-1)[..., 0]


def categorical_entropy(logits):
    logp = jax.nn.log_softmax(logits)
    return -jnp.sum(jnp.exp(logp) * logp, axis=-1)


def gaussian_log_prob(mean, log_std, actions):
    z = (actions - mean) * jnp.exp(-log_std)
    return jnp.sum(-0.5 * z**2 - log_std - 0.5 * jnp.log(2 * jnp.pi), axis=-1)


def gaussian_entropy(mean, log_std):
    return jnp.sum(jnp.broadcast_to(log_std + 0.5 * jnp.log(2 * jnp.pi * jnp.e), mean.shape), axis=-1)


def resolve_spec(network_cfg: dict, defaults: dict, obs_shape: Sequence[int]) -> NetworkSpec:
    """Fill ``null`` fields of the network config with the algorithm's defaults; ``kind: auto``
    picks the MinAtar conv net for image observations and an MLP otherwise."""
    merged = {k: (v if v is not None else defaults.get(k)) for k, v in network_cfg.items()}
    merged["obs_ndim"] = len(obs_shape)
    if merged.get("kind", "auto") == "auto":
        merged["kind"] = "minatar_conv" if len(obs_shape) == 3 else "mlp"
    if merged["kind"] == "minatar_conv":
        merged.setdefault("hidden_size", 128)
        if network_cfg.get("hidden_size") is None:
            merged["hidden_size"] = 128
    return NetworkSpec(**{k: merged[k] for k in NetworkSpec.__dataclass_fields__ if merged.get(k) is not None})
