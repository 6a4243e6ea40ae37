"""Teacher clouds and data (PAPER.md §3, §4).

A teacher is a fixed particle cloud ``(K, D)``; the target is ``y = Φ_teacher(x)``, with no
label noise.  Inputs are ``x ~ N(0, σ² I_dx)``.

Three kinds, relative to a group G:

* ``arbitrary``: no symmetry;
* ``WI`` (weakly invariant): the cloud equals its symmetrisation ν^G, so the target is
  G-equivariant;
* ``SI`` (strongly invariant): every particle lies on E^G.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .groups import FiniteGroup

#: Teacher ``kind`` is stored as the variable ``particles_<kind>`` of a teachers dataset.
TEACHER_PREFIX = "particles_"

TEACHER_KINDS = ("arbitrary", "WI", "SI")

#: App. F rows; each row reshaped row-major to a 2×2 matrix and multiplied by 0.5.
_PAPER_ARBITRARY_ROWS = np.array(
    [
        [-1.0, 0.0, 0.0, 0.5],
        [0.5, 1.0, 0.0, 1.0],
        [-0.5, 0.3, 1.0, 0.0],
        [0.0, -1.0, -0.5, 1.0],
        [0.7, -0.7, 0.5, 0.7],
    ]
)
#: App. F SI coordinates in the basis (I/√2, P/√2), multiplied by 0.5.
_PAPER_SI_COORDS = np.array([[1.0, 0.0], [0.5, 1.0], [-0.5, 0.3], [0.0, -1.0], [0.7, 0.7]])
PAPER_TEACHER_SCALE = 0.5


@dataclass(frozen=True, eq=False)
class Teacher:
    """A named teacher cloud; ``particles`` has shape (K, D)."""

    name: str
    particles: np.ndarray

    def __post_init__(self):
        arr = np.asarray(self.particles, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[0] == 0:
            raise ValueError(
                f"teacher {self.name!r}: particles must have shape (K, D), got {arr.shape}"
            )
        object.__setattr__(self, "particles", arr)


def check_kind(kind: str) -> str:
    if kind not in TEACHER_KINDS:
        raise ValueError(f"unknown teacher {kind!r}; allowed: {list(TEACHER_KINDS)}")
    return kind


def _is_c2_on_matrix_unit(group: FiniteGroup) -> bool:
    """True iff G = {I, P} acts alike on X = Y = R² and by ``M_g = g ⊗ g`` on Z = R^{2×2}.

    The App. F coordinates (row-major 2×2 matrices, the basis I/√2, P/√2 of E^G) mean
    something only for this representation; any other one would silently give an "SI"
    teacher off E^G.
    """
    if group.order != 2 or group.dim_x != 2 or group.dim_y != 2 or group.dim_z != 4:
        return False
    # A FiniteGroup of order 2 holds the identity and one other, distinct element; if both
    # act as I or P on X and Y alike, and as g ⊗ g on Z, they are exactly I and P.
    allowed = (np.eye(2), np.array([[0.0, 1.0], [1.0, 0.0]]))
    return all(
        any(np.allclose(gx, m) and np.allclose(gy, m) for m in allowed)
        and np.allclose(gz, np.kron(gy, gx))
        for gx, gy, gz in zip(group.x, group.y, group.z, strict=True)
    )


def paper_teachers(group: FiniteGroup, scale: float = PAPER_TEACHER_SCALE) -> dict[str, Teacher]:
    """The three App. F teachers for C₂ acting on the 2×2 matrix unit (D = 4).

    * arbitrary: ``scale ×`` the five rows, each a row-major 2×2 matrix;
    * WI: those five plus their images ``M_P θ`` (10 particles);
    * SI: ``scale × (a I/√2 + b P/√2)`` for the five (a, b) pairs.
    """
    if not _is_c2_on_matrix_unit(group):
        raise ValueError(
            "the paper's teachers are defined for C₂ = {I, P} acting on X = Y = R² and on "
            "the 2×2 matrix unit by M_g z = g z gᵀ (|G| = 2, D = 4); got group "
            f"{group.name!r} with |G| = {group.order}, D = {group.dim_z} and another action; "
            "use random_teacher for other settings"
        )
    arbitrary = scale * _PAPER_ARBITRARY_ROWS
    basis = np.stack([np.eye(2).ravel(), np.array([[0.0, 1.0], [1.0, 0.0]]).ravel()], axis=1)
    basis /= np.sqrt(2.0)
    si = scale * _PAPER_SI_COORDS @ basis.T
    return {
        "arbitrary": Teacher("arbitrary", arbitrary),
        "WI": Teacher("WI", group.symmetrize(arbitrary)),
        "SI": Teacher("SI", si),
    }


def random_teacher(
    group: FiniteGroup, kind: str, n_particles: int, rng: np.random.Generator, scale: float = 0.5
) -> Teacher:
    """A random teacher of the given kind for any group and unit.

    Draws ``n_particles`` atoms i.i.d. ``N(0, scale² I_D)``; ``WI`` returns their
    symmetrisation (``|G|·n_particles`` atoms) and ``SI`` their projection on E^G.
    """
    check_kind(kind)
    if int(n_particles) != n_particles or n_particles < 1:
        raise ValueError(f"n_particles must be a positive integer, got {n_particles!r}")
    base = scale * rng.standard_normal((int(n_particles), group.dim_z))
    if kind == "WI":
        base = group.symmetrize(base)
    elif kind == "SI":
        base = group.project(base)
    return Teacher(kind, base)


def read_teachers(ds) -> dict[str, Teacher]:
    """``{kind: Teacher}`` from a teachers dataset (variables ``particles_<kind>``)."""
    return {
        name[len(TEACHER_PREFIX):]: Teacher(name[len(TEACHER_PREFIX):], ds[name].values)
        for name in ds.data_vars
        if name.startswith(TEACHER_PREFIX)
    }
