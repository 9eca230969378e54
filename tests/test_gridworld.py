"""The LPG grid worlds by hand: moves and walls, collecting, termination and truncation, respawns, the
tabular observation, the named levels and the random families (vmapped over levels)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs.gridworld import DOWN, FAMILIES, LEFT, NAMED, RIGHT, STAY, UP, GridWorld, Level, named_level, next_cell, sample_level
from envs.registry import list_envs, make


def level3(walls=(), obj=((5, 1.0, 0.0, 0.0),), start=4, max_steps=100):
    """A 3×3 level (cells 0..8, row-major), objects as (cell, reward, p_terminate, p_respawn), one type each."""
    n = len(obj)
    w = np.zeros(9, bool)
    w[list(walls)] = True
    return Level(size=jnp.int32(3), walls=jnp.asarray(w), start=jnp.int32(start),
                 obj_type=jnp.arange(n, dtype=jnp.int32), obj_cell=jnp.asarray([o[0] for o in obj], jnp.int32),
                 reward=jnp.asarray([o[1] for o in obj], jnp.float32),
                 p_terminate=jnp.asarray([o[2] for o in obj], jnp.float32),
                 p_respawn=jnp.asarray([o[3] for o in obj], jnp.float32), max_steps=jnp.int32(max_steps))


def test_moves_edges_and_walls():
    lv = level3()
    assert [int(next_cell(lv, 4, a)) for a in (UP, DOWN, LEFT, RIGHT, STAY)] == [1, 7, 3, 5, 4]
    assert [int(next_cell(lv, 0, a)) for a in (UP, LEFT)] == [0, 0]  # off the grid: stays
    assert [int(next_cell(lv, 8, a)) for a in (DOWN, RIGHT)] == [8, 8]
    assert int(next_cell(level3(walls=(1,)), 4, UP)) == 4  # into a wall: stays


def _steps(env, lv, actions, key=0):
    obs, s = env.reset_to(lv)
    out = []
    for i, a in enumerate(actions):
        obs, s, r, term, trunc, info = env.step(jax.random.PRNGKey(key + i), s, jnp.int32(a))
        out.append((obs, s, float(r), bool(term), bool(trunc), info))
    return out


def test_collecting_pays_once_and_the_object_is_gone():
    env = GridWorld("sparse")  # any env object: the level is in the state
    lv = level3(obj=((5, 1.0, 0.0, 0.0), (3, -0.5, 0.0, 0.0)))
    rows = _steps(env, lv, [RIGHT, LEFT, RIGHT, LEFT, LEFT])
    assert [r[2] for r in rows] == [1.0, 0.0, 0.0, 0.0, -0.5]
    assert not any(r[3] or r[4] for r in rows)
    np.testing.assert_array_equal(rows[0][1].present, [False, True])
    np.testing.assert_array_equal(rows[-1][1].present, [False, False])


def test_termination_resets_to_the_level_start_and_reports_the_final_observation():
    env = GridWorld("sparse")
    lv = level3(obj=((5, 1.0, 1.0, 0.0),))
    (obs, s, r, term, trunc, info), = _steps(env, lv, [RIGHT])
    assert r == 1.0 and term and not trunc
    assert int(s.cell) == 4 and bool(s.present[0]) and int(s.time) == 0  # reset, same level
    n = env.family.max_size ** 2
    assert int(jnp.argmax(info["final_observation"])) == 5  # on the object's cell, no object present (bits 0)
    assert int(jnp.argmax(obs)) == 4 + n * 1  # the reset: start cell, object 0 present


def test_truncation_after_max_steps():
    env = GridWorld("sparse")
    rows = _steps(env, level3(max_steps=3), [STAY, STAY, STAY, STAY])
    assert [(r[3], r[4]) for r in rows] == [(False, False), (False, False), (False, True), (False, False)]
    assert [int(r[1].time) for r in rows] == [1, 2, 0, 1]


def test_respawn_brings_a_collected_object_back_but_not_under_the_agent():
    env = GridWorld("sparse")
    rows = _steps(env, level3(obj=((5, 1.0, 0.0, 1.0),)), [RIGHT, STAY, LEFT, RIGHT])
    assert [bool(r[1].present[0]) for r in rows] == [False, False, True, False]  # back once the agent left
    assert [r[2] for r in rows] == [1.0, 0.0, 0.0, 1.0]


def test_observation_is_one_hot_of_cell_and_present_objects():
    env = GridWorld("dense")
    obs, s = env.reset(jax.random.PRNGKey(0))
    n = 11 * 11
    assert obs.shape == (n * 16,) and float(obs.sum()) == 1.0
    assert int(jnp.argmax(obs)) == int(s.cell) + n * 15  # all four objects present
    s2 = s.replace(present=jnp.asarray([True, False, True, False]))
    assert int(jnp.argmax(env.observation(s2))) == int(s.cell) + n * (1 + 4)


@pytest.mark.parametrize("name", list(NAMED))
def test_named_levels_follow_their_table(name):
    size, types, props, walls, max_steps = NAMED[name]
    lv, fam = named_level(name)
    assert int(lv.size) == size and int(lv.max_steps) == max_steps and int(lv.walls.sum()) == len(walls)
    np.testing.assert_array_equal(lv.obj_type, types)
    np.testing.assert_allclose(lv.reward, [props[t][0] for t in sorted(props)])
    cells = [int(lv.start), *map(int, lv.obj_cell)]
    assert len(set(cells)) == len(cells) and not any(bool(lv.walls[c]) for c in cells)
    lv2, _ = named_level(name)
    np.testing.assert_array_equal(lv.obj_cell, lv2.obj_cell)  # a fixed layout


@pytest.mark.parametrize("fam", list(FAMILIES))
def test_random_levels_are_valid_members_of_their_family(fam):
    f = FAMILIES[fam]
    lvs = jax.vmap(lambda k: sample_level(k, f))(jax.random.split(jax.random.PRNGKey(0), 256))
    size = np.asarray(lvs.size)
    assert size.min() >= f.sizes[0] and size.max() <= f.sizes[1] and len(set(size)) > 1
    n_obj = (np.asarray(lvs.obj_type) >= 0).sum(1)
    assert n_obj.min() >= f.objects[0] and n_obj.max() <= f.objects[1]
    steps = np.asarray(lvs.max_steps)
    assert steps.min() >= f.max_steps[0] and steps.max() <= f.max_steps[1]
    r = np.asarray(lvs.reward)
    assert (r[:, 0] > 0).all() and (np.abs(r) <= 1).all()
    for i in range(64):
        cells = [int(lvs.start[i])] + [int(c) for c, t in zip(lvs.obj_cell[i], lvs.obj_type[i]) if t >= 0]
        assert len(set(cells)) == len(cells)
        assert all(c < size[i] ** 2 and not bool(lvs.walls[i][c]) for c in cells)
        assert not np.asarray(lvs.walls[i])[size[i] ** 2:].any()


def test_one_program_steps_many_levels():
    env = GridWorld("all")
    keys = jax.random.split(jax.random.PRNGKey(1), 32)
    obs, s = jax.vmap(env.reset)(keys)
    step = jax.jit(jax.vmap(env.step))
    acts = jnp.full((32,), RIGHT)
    for i in range(5):
        obs, s, r, term, trunc, _ = step(jax.random.split(jax.random.PRNGKey(i), 32), s, acts)
    assert obs.shape == (32, 10 * 10 * 32) and np.allclose(obs.sum(1), 1.0)
    assert len(set(np.asarray(s.level.size).tolist())) > 1  # each agent on its own level, kept across steps


def test_registered_names():
    assert {f"gridworld_{n}" for n in [*NAMED, *FAMILIES]} <= set(list_envs())
    assert make("gridworld_long").max_episode_steps == 1000
    with pytest.raises(ValueError, match="valid: gridworld_dense"):
        make("gridworld_huge")
