"""Groups from generators: closure, canonical order, presets, order bound, unit tag.

Every expected value is a hand count or an independent construction: the orders of D4,
S_d and C_d, dim E^G as orbits of index pairs, the element lists of the presets from
itertools, digests of the presets' arrays computed from the code before the presets became
generator lists (tests/data/preset_groups_main.json), and a short training of each preset
against the same training of its group enumerated element by element (itertools).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from mfsym.core.groups import (
    GroupError,
    GroupXY,
    canonical_order,
    cyclic_group,
    generate,
    group_xy,
    permutation_matrix,
    symmetric_group,
)
from mfsym.core.teachers import random_teacher
from mfsym.core.units import make_unit
from mfsym.engine.training import RunSpec, TrainConfig, train_stack
from mfsym.pipeline.config import ConfigError, build_group

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "data" / "preset_groups_main.json"
UV = {"name": "uv", "activation": "sigmoid"}
MATRIX = {"name": "matrix", "activation": "sigmoid"}
ROT90 = [[0, -1], [1, 0]]


def sha(a) -> str:
    return hashlib.sha256(np.ascontiguousarray(np.asarray(a, np.float64)).tobytes()).hexdigest()


def generated(dim, gens, **extra) -> dict:
    return {"name": "generated", "dim": dim, "generators": [{"x": g} for g in gens], **extra}


# ---- presets: the same bytes as before ------------------------------------------------------
def enumerated(name: str, d: int) -> GroupXY:
    """The preset ``name`` on R^d as it was built before presets were generated: its
    permutation matrices listed from itertools (S_d: every permutation in itertools'
    order; C_d: the shifts by 0, …, d − 1; C2: the identity and the swap), no generators."""
    if name == "symmetric":
        perms = list(itertools.permutations(range(d)))
    else:
        perms = [[(i + k) % d for i in range(d)] for k in range(d)]
    x = np.stack([permutation_matrix(p) for p in perms])
    return GroupXY(name, x, x.copy())


def short_training(g, unit) -> dict:
    teacher = random_teacher(g, "WI", 3, np.random.default_rng(0), 0.5)
    cfg = TrainConfig.from_dict({"T": 0.5, "n_snapshots": 2, "n_eval": 64, "dtype": "float64",
                                 "checkpoint_every": 0, "backend": "native-v1"})
    res = train_stack(g, unit, {"WI": teacher},
                      [RunSpec("WI", s, 0) for s in ("vanilla", "DA", "FA", "EA")], 10, "WI",
                      cfg)
    return {"final_particles": sha(res.final_particles),
            "rmd_projected": sha(res.rmd_projected)}


@pytest.mark.parametrize("key", sorted(json.loads(FIXTURE.read_text())))
def test_presets_are_bit_identical_to_the_enumerated_groups(key):
    """The presets' arrays and P_E hash as they did when C_d and S_d were enumerated
    element by element (itertools) instead of generated; and a short training of each
    preset that the fixture lists with one gives the bits of the same training of the
    enumerated group, in this process.  (The fixture's training digests were recorded on
    one machine; the kernels are built with -march=native, so training bits are compared
    within a machine, never across machines.)"""
    want = json.loads(FIXTURE.read_text())[key]
    name, dim, uname = key.split("-")
    unit = make_unit(uname, int(dim), int(dim), "sigmoid")
    g = unit.group(group_xy(name, int(dim)))
    got = {"order": g.order, "x": sha(g.x), "y": sha(g.y), "z": sha(g.z),
           "reynolds": sha(g.reynolds())}
    assert got == {k: want[k] for k in got}
    if "final_particles" in want:
        old = unit.group(enumerated(name, int(dim)))
        assert sha(old.x) == want["x"] and sha(old.z) == want["z"]
        assert short_training(g, unit) == short_training(old, unit)


@pytest.mark.parametrize("d", [1, 2, 3, 4])
def test_presets_list_the_permutations_in_itertools_order(d):
    perms = list(itertools.permutations(range(d)))
    assert np.array_equal(symmetric_group(d).x, np.stack([permutation_matrix(p) for p in perms]))
    shifts = [[(i + k) % d for i in range(d)] for k in range(d)]
    assert np.array_equal(cyclic_group(d).x, np.stack([permutation_matrix(p) for p in shifts]))


def test_canonical_order_does_not_depend_on_the_generators():
    a = generate("S3", [permutation_matrix([1, 0, 2]), permutation_matrix([1, 2, 0])])
    b = generate("S3", [permutation_matrix([0, 2, 1]), permutation_matrix([2, 0, 1])])
    assert np.array_equal(a.x, b.x) and a.x.shape[0] == 6
    assert np.array_equal(canonical_order(a.x, a.y), np.arange(6))


# ---- generated groups: orders and E^G by hand -------------------------------------------------
def test_dihedral_group_of_the_square():
    """⟨90° rotation, coordinate swap⟩ = D4: 8 elements, 4 rotations (det 1) and 4
    reflections (det −1, each an involution); no nonzero fixed vector, so with the uv unit
    E^G = {0}; with the linear matrix unit E^G = commutant of D4 on R² = scalars, dim 1."""
    g = build_group(generated(2, [ROT90, [1, 0]]), UV)
    dets = np.round(np.linalg.det(g.x)).astype(int)
    assert g.order == 8 and sorted(dets) == [-1] * 4 + [1] * 4
    refl = g.x[dets == -1]
    assert np.allclose(refl @ refl, np.eye(2))
    assert g.dim_fixed == 0
    lin = build_group(generated(2, [ROT90, [1, 0]]), {"name": "matrix", "activation": "linear"})
    assert lin.dim_fixed == 1


@pytest.mark.parametrize("gens,order,dim_fixed", [
    ([[1, 0, 2]], 2, 5),            # orbits of the swap on {0,1,2}²: 00~11, 01~10, 02~12, 20~21, 22
    ([[1, 2, 0]], 3, 3),            # C3: 9 pairs in orbits of 3
    ([[1, 0, 2], [1, 2, 0]], 6, 2),  # S3: orbits {ii}, {i≠j}
])
def test_permutation_groups_with_the_matrix_unit(gens, order, dim_fixed):
    g = build_group(generated(3, gens), MATRIX)
    assert (g.order, g.dim_fixed) == (order, dim_fixed)


def test_sign_group_with_an_odd_activation():
    """{±I} on R³: M_{−I} = (−I)⊗(−I) = I for the matrix unit (E^G = Z, dim 9); for the uv
    unit M_{−I} = −I (E^G = {0})."""
    minus = (-np.eye(3)).tolist()
    assert build_group(generated(3, [minus]), {"name": "matrix", "activation": "tanh"}
                       ).dim_fixed == 9
    assert build_group(generated(3, [minus]), {"name": "uv", "activation": "tanh"}).dim_fixed == 0


def test_different_actions_on_x_and_y():
    """Swap on X, identity on Y, uv unit: E^G = {u₀ = u₁} × R², dim 1 + 2."""
    cfg = {"name": "generated", "dim": 2, "generators": [{"x": [1, 0], "y": [0, 1]}]}
    g = build_group(cfg, UV)
    assert g.order == 2 and g.dim_fixed == 3


# ---- refusals --------------------------------------------------------------------------------
@pytest.mark.parametrize("cfg,unit,message", [
    (generated(2, [ROT90, [[1, 0.5], [0, 1]]]), UV,
     r"generator 1 on X is not orthogonal .*allowed: orthogonal matrices"),
    (generated(2, [[[math.cos(1), -math.sin(1)], [math.sin(1), math.cos(1)]]]), UV,
     r"do not close within max_order = 10000 elements"),
    (generated(4, [[1, 0, 2, 3], [1, 2, 3, 0]], max_order=23), UV,
     r"do not close within max_order = 23 elements \(generator \d times element \d+ is "
     r"element 24\)"),
    (generated(2, [ROT90]), MATRIX,
     r"'sigmoid' is equivariant only when G acts on Y by permutation matrices; generator 0"),
    (generated(3, [(-np.eye(3)).tolist()]), MATRIX, r"generator 0 of group 'generated'"),
    (generated(3, [[0, 0, 1]]), UV, r"group.generators\[0\].x = \[0, 0, 1\] is not a permutation"),
    (generated(3, [[[0, 1], [1, 0]]]), UV, r"group.generators\[0\].x has shape \(2, 2\)"),
    ({"name": "generated", "dim": 2}, UV, r"group.generators is missing"),
    ({"name": "C2", "dim": 2, "generators": [{"x": [1, 0]}]}, UV,
     r"group.generators = .* applies only to the group 'generated'"),
])
def test_invalid_groups_are_refused_naming_the_generator(cfg, unit, message):
    with pytest.raises(ConfigError, match=message):
        build_group(cfg, unit)


def test_a_group_of_order_max_order_is_accepted():
    g = build_group(generated(4, [[1, 0, 2, 3], [1, 2, 3, 0]], max_order=24), UV)
    assert g.order == math.factorial(4)


# ---- the two faults --------------------------------------------------------------------------
def test_symmetric_order_is_bounded_before_enumeration():
    """S_9 (9! = 362880 elements) and S_40 are refused by their order, under a 1 GB address
    space cap and within seconds: nothing is enumerated before the bound is checked."""
    code = textwrap.dedent("""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
        from mfsym.pipeline.config import ConfigError, build_group
        for dim in (9, 40):
            try:
                build_group({"name": "symmetric", "dim": dim},
                            {"name": "uv", "activation": "sigmoid"})
            except ConfigError as err:
                print(err)
            else:
                sys.exit(f"dim {dim} accepted")
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin"})
    assert res.returncode == 0, res.stderr[-2000:]
    lines = res.stdout.splitlines()
    assert "order 9! = 362880, above max_order = 10000" in lines[0]
    assert f"order 40! = {math.factorial(40)}, above max_order = 10000" in lines[1]
    with pytest.raises(ConfigError, match=r"order 4! = 24, above max_order = 23"):
        build_group({"name": "symmetric", "dim": 4, "max_order": 23}, UV)
    assert build_group({"name": "symmetric", "dim": 4, "max_order": 24}, UV).order == 24


def test_group_built_for_other_unit_is_refused():
    """C2 built for the matrix unit on R² (D = 4) and used with the uv unit (also D = 4):
    M_g = P ⊗ P there, diag(P, P) here, so the E^G would be the wrong one; refused."""
    matrix = make_unit("matrix", 2, 2, "sigmoid")
    uv = make_unit("uv", 2, 2, "sigmoid")
    g = matrix.group(group_xy("C2", 2))
    assert g.dim_z == uv.dim_z == 4
    teacher = random_teacher(uv.group(group_xy("C2", 2)), "SI", 3, np.random.default_rng(0),
                             0.5)
    cfg = TrainConfig.from_dict({"T": 0.5, "n_snapshots": 2, "n_eval": 16,
                                 "checkpoint_every": 0})
    with pytest.raises(ValueError, match=r"built for the unit 'matrix' .* used with the unit "
                                         r"'uv'"):
        train_stack(g, uv, {"SI": teacher}, [RunSpec("SI", "EA", 0)], 10, "SI", cfg)
    with pytest.raises(ValueError, match="built for the unit 'matrix'"):
        g.check_unit(uv)
    g.check_unit(matrix)


def test_identity_first_and_generators_recorded():
    g = generate("D4", [np.array(ROT90, float), permutation_matrix([1, 0])])
    assert np.array_equal(g.x[0], np.eye(2))
    assert [np.array_equal(g.x[k], m) for k, m in
            zip(g.generators, [np.array(ROT90, float), permutation_matrix([1, 0])],
                strict=True)] == [True, True]
    with pytest.raises(GroupError, match="max_order must be an integer"):
        generate("x", [np.eye(2)], max_order=0)
