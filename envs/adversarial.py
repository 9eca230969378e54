"""Two players in one env: a protagonist and an adversary that pushes it with bounded forces.

:class:`ForceAdversary` takes the action ``[a_P | a_A]``.  On DeepMind Control tasks (MJX) the
adversary's ``a_A ∈ [−1, 1]^{2k}`` is a planar force (x, z) on each of ``k`` named bodies, written
to MuJoCo's ``xfrc_applied`` before the physics step, each component clipped separately as the
reference does: ``F_b = max_force · clip(a_b, −1, 1)`` (so a push may reach ``√2 · max_force``).  Elsewhere (envs without
``xfrc_applied``) the adversary perturbs the action: the env receives ``a_P + max_force · a_A``.
The reward is the protagonist's; the adversary's is its negative.
"""

from __future__ import annotations

import jax.numpy as jnp

from envs.core import Box
from envs.wrappers import Wrapper

# bodies the adversary pushes, per DM Control domain (the QARL paper's: hopper foot, walker feet,
# cheetah torso and feet; cartpole: the pole)
BODIES = {"cartpole": ("pole_1",), "hopper": ("foot",), "walker": ("right_foot", "left_foot"),
          "cheetah": ("torso", "bfoot", "ffoot")}


class ForceAdversary(Wrapper):
    def __init__(self, env, max_force: float = 1.0, bodies: tuple[str, ...] | None = None):
        super().__init__(env)
        if not isinstance(max_force, (int, float)) or isinstance(max_force, bool) or not 0 <= max_force < float("inf"):
            raise ValueError(f"max_force={max_force!r} must be a finite number >= 0")
        self.max_force = float(max_force)
        self.protagonist_dim = int(env.action_space.shape[0])
        base = env.unwrapped
        self.mode = "force" if hasattr(base, "playground") else "action"
        if self.mode == "force":
            domain = base.task.split("_")[0]
            names = tuple(bodies) if bodies else BODIES.get(domain)
            if not names:
                raise ValueError(f"no default adversary bodies for {env.name}; set algo.adversary.bodies=[...]")
            model = base.playground.mj_model
            try:
                self.body_ids = jnp.array([model.body(n).id for n in names], jnp.int32)
            except KeyError as e:
                valid = [model.body(i).name for i in range(model.nbody)]
                raise ValueError(f"{env.name} has no body {e}; valid: {', '.join(valid)}") from e
            self.bodies = names
            self.adversary_dim = 2 * len(names)
        else:
            self.bodies = ()
            self.adversary_dim = self.protagonist_dim
        sp = env.action_space
        self._space = Box(min(sp.low, -1.0), max(sp.high, 1.0), (self.protagonist_dim + self.adversary_dim,))

    @property
    def action_space(self):
        return self._space

    def forces(self, a_adv):
        """``[k, 2]`` planar forces of the adversary's action (each component within ±``max_force``)."""
        return self.max_force * jnp.clip(a_adv, -1.0, 1.0).reshape(a_adv.shape[:-1] + (-1, 2))

    def within_budget(self, a_adv, fraction):
        """The adversary action clipped to a smaller budget, ``clip(a_A, −fraction, fraction)`` per
        component (the force-budget curriculum, as the reference clips the push; not a rescaling):
        the push the env applies is then at most ``fraction · max_force`` per component."""
        return jnp.clip(a_adv, -fraction, fraction)

    def step(self, key, state, action):
        a_p, a_adv = action[..., : self.protagonist_dim], action[..., self.protagonist_dim:]
        if self.mode == "action":
            sp = self.env.action_space
            return self.env.step(key, state, jnp.clip(a_p + self.max_force * jnp.clip(a_adv, -1, 1), sp.low, sp.high))
        f = self.forces(a_adv)
        data = state.inner.data
        xfrc = jnp.zeros_like(data.xfrc_applied)
        xfrc = xfrc.at[self.body_ids, 0].set(f[..., 0]).at[self.body_ids, 2].set(f[..., 1])
        state = state.replace(inner=state.inner.replace(data=data.replace(xfrc_applied=xfrc)))
        return self.env.step(key, state, a_p)
