"""Finite groups acting orthogonally on inputs X, outputs Y and unit parameters Z.

A group G of order ``|G|`` is given by three orthogonal representations, stacked as
arrays of matrices with a common element order:

* ``x``: shape ``(|G|, dx, dx)``, the action on inputs ``x ∈ R^dx``;
* ``y``: shape ``(|G|, dy, dy)``, the action on outputs ``y ∈ R^dy``;
* ``z``: shape ``(|G|, D, D)``, the action ``M_g`` on a unit's flattened parameters.

Element ``k`` of the group is the triple ``(x[k], y[k], z[k])``.  The set must be closed
under the (componentwise) product, contain the identity and consist of orthogonal
matrices; :class:`FiniteGroup` checks all three and raises :class:`GroupError` naming the
failing element otherwise.

From the Z-representation come the objects of the paper (PAPER.md §2):

* the Reynolds projector ``P_E = (1/|G|) Σ_g M_g`` (orthogonal projection onto E^G),
* an orthonormal basis of ``E^G = {z : M_g z = z ∀g}``,
* the symmetrised cloud ``ν^G = (1/|G|) Σ_g (M_g)#ν`` (``|G|·N`` atoms),
* the projected cloud ``(P_E)#ν``.

Clouds are arrays of shape ``(..., N, D)``; every function here broadcasts over leading
axes and works on NumPy arrays (float64 math).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

#: Tolerance for orthogonality / closure checks of user-given matrices.
GROUP_ATOL = 1e-9


class GroupError(ValueError):
    """A set of matrices is not a valid finite orthogonal group representation."""


def _as_stack(name: str, mats) -> np.ndarray:
    arr = np.asarray(mats, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[1] != arr.shape[2] or arr.shape[0] == 0:
        raise GroupError(
            f"{name}-representation must have shape (|G|, d, d) with |G| ≥ 1, got {arr.shape}"
        )
    if not np.all(np.isfinite(arr)):
        raise GroupError(f"{name}-representation contains non-finite entries")
    return arr


def _block_diag_stack(*stacks: np.ndarray) -> np.ndarray:
    """Stack of block-diagonal matrices ``diag(a_k, b_k, ...)``, shape (|G|, Σd, Σd)."""
    order = stacks[0].shape[0]
    total = sum(s.shape[1] for s in stacks)
    out = np.zeros((order, total, total))
    offset = 0
    for s in stacks:
        d = s.shape[1]
        out[:, offset : offset + d, offset : offset + d] = s
        offset += d
    return out


@dataclass(frozen=True, eq=False)
class FiniteGroup:
    """A finite group given by orthogonal matrices on X, Y and Z (see module docstring)."""

    name: str
    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    _joint: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        x = _as_stack("X", self.x)
        y = _as_stack("Y", self.y)
        z = _as_stack("Z", self.z)
        if not (x.shape[0] == y.shape[0] == z.shape[0]):
            raise GroupError(
                f"representations list different numbers of elements: "
                f"X has {x.shape[0]}, Y has {y.shape[0]}, Z has {z.shape[0]}"
            )
        joint = _block_diag_stack(x, y, z)
        order, dim = joint.shape[0], joint.shape[1]
        eye = np.eye(dim)
        for k in range(order):
            err = np.abs(joint[k].T @ joint[k] - eye).max()
            if err > GROUP_ATOL:
                raise GroupError(
                    f"group {self.name!r}: element {k} is not orthogonal "
                    f"(max |MᵀM − I| = {err:.3g} > {GROUP_ATOL})"
                )
        if not np.any(np.abs(joint - eye).reshape(order, -1).max(axis=1) <= GROUP_ATOL):
            raise GroupError(f"group {self.name!r}: the identity is not among the elements")
        flat = joint.reshape(order, -1)
        for i, j in itertools.product(range(order), repeat=2):
            prod = (joint[i] @ joint[j]).reshape(-1)
            if np.abs(flat - prod).max(axis=1).min() > GROUP_ATOL:
                raise GroupError(
                    f"group {self.name!r}: not closed under multiplication — the product of "
                    f"elements {i} and {j} is not in the set"
                )
        dists = np.abs(flat[:, None, :] - flat[None, :, :]).max(axis=2)
        dup = np.argwhere(np.triu(dists <= GROUP_ATOL, k=1))
        if len(dup):
            i, j = dup[0]
            raise GroupError(f"group {self.name!r}: elements {i} and {j} are equal")
        for attr, arr in (("x", x), ("y", y), ("z", z), ("_joint", joint)):
            arr.setflags(write=False)
            object.__setattr__(self, attr, arr)

    # ---- basic facts -------------------------------------------------------------------
    @property
    def order(self) -> int:
        """|G|."""
        return int(self.x.shape[0])

    @property
    def dim_x(self) -> int:
        return int(self.x.shape[1])

    @property
    def dim_y(self) -> int:
        return int(self.y.shape[1])

    @property
    def dim_z(self) -> int:
        """D, the dimension of the flattened unit parameter space Z."""
        return int(self.z.shape[1])

    def identity_index(self) -> int:
        eye = np.eye(self._joint.shape[1])
        return int(np.argmin(np.abs(self._joint - eye).reshape(self.order, -1).max(axis=1)))

    def inverse_indices(self) -> np.ndarray:
        """Index of g⁻¹ for each g (g⁻¹ = gᵀ for orthogonal representations)."""
        flat = self._joint.reshape(self.order, -1)
        inv = np.transpose(self._joint, (0, 2, 1)).reshape(self.order, -1)
        return np.abs(inv[:, None, :] - flat[None, :, :]).max(axis=2).argmin(axis=1)

    # ---- the invariant subspace E^G ----------------------------------------------------
    def reynolds(self) -> np.ndarray:
        """Orthogonal projector onto E^G, ``P_E = (1/|G|) Σ_g M_g``, shape (D, D).

        For an orthogonal representation the group average is symmetric and idempotent.
        The exact symmetric part is returned to remove rounding asymmetry.
        """
        p = self.z.mean(axis=0)
        return 0.5 * (p + p.T)

    def fixed_basis(self) -> np.ndarray:
        """Orthonormal basis of E^G as columns, shape (D, dim E^G)."""
        vals, vecs = np.linalg.eigh(self.reynolds())
        basis = vecs[:, vals > 0.5]
        return basis

    @property
    def dim_fixed(self) -> int:
        """dim E^G = trace(P_E)."""
        return int(round(np.trace(self.reynolds())))

    # ---- actions on clouds -------------------------------------------------------------
    def _cloud(self, cloud) -> np.ndarray:
        """The cloud as an array, checked to have shape (..., N, D) with D = dim_z."""
        arr = np.asarray(cloud)
        if arr.ndim < 2 or arr.shape[-1] != self.dim_z:
            raise ValueError(
                f"group {self.name!r}: a cloud must have shape (..., N, D) with "
                f"D = {self.dim_z}, got {arr.shape}"
            )
        return arr

    def act(self, cloud: np.ndarray, g: int) -> np.ndarray:
        """``(M_g)#ν``: apply M_g to every atom; cloud shape (..., N, D)."""
        return self._cloud(cloud) @ self.z[g].T

    def symmetrize(self, cloud: np.ndarray) -> np.ndarray:
        """Atoms of ``ν^G``: shape (..., |G|·N, D), element-major (all of g₀ν, then g₁ν…)."""
        cloud = self._cloud(cloud)
        images = np.einsum("gij,...nj->...gni", self.z, cloud)
        return images.reshape(*cloud.shape[:-2], self.order * cloud.shape[-2], cloud.shape[-1])

    def project(self, cloud: np.ndarray) -> np.ndarray:
        """Atoms of ``(P_E)#ν``: every atom mapped to its orthogonal projection on E^G."""
        return self._cloud(cloud) @ self.reynolds()

    def distance_to_fixed(self, cloud: np.ndarray) -> np.ndarray:
        """Root-mean-square distance of the atoms to E^G, ``(mean_i ‖z_i − P_E z_i‖²)^{1/2}``."""
        cloud = np.asarray(cloud)
        resid = cloud - self.project(cloud)
        return np.sqrt((resid**2).sum(-1).mean(-1))


# ---- standard groups acting on X and Y ----------------------------------------------------
@dataclass(frozen=True)
class GroupXY:
    """A finite group given by its orthogonal action on inputs and outputs only.

    A unit (``mfsym.core.units``) turns it into a :class:`FiniteGroup` by supplying the action
    on Z; see :meth:`mfsym.core.units.Unit.group`.
    """

    name: str
    x: np.ndarray
    y: np.ndarray


def permutation_matrix(perm: Sequence[int]) -> np.ndarray:
    """Matrix P with ``(P v)_{perm[i]} = v_i`` (moves coordinate i to position perm[i])."""
    d = len(perm)
    if sorted(perm) != list(range(d)):
        raise GroupError(f"{list(perm)} is not a permutation of 0..{d - 1}")
    mat = np.zeros((d, d))
    mat[list(perm), list(range(d))] = 1.0
    return mat


def permutation_group(name: str, perms: Sequence[Sequence[int]]) -> GroupXY:
    """The permutation representation of ``perms`` on R^d, acting alike on X and Y."""
    mats = np.stack([permutation_matrix(p) for p in perms])
    return GroupXY(name, mats, mats.copy())


def cyclic_group(d: int) -> GroupXY:
    """C_d acting on R^d by cyclic shifts of the coordinates."""
    if int(d) != d or d < 1:
        raise GroupError(f"cyclic group needs an integer d ≥ 1, got {d!r}")
    d = int(d)
    perms = [[(i + k) % d for i in range(d)] for k in range(d)]
    return permutation_group(f"C{d}", perms)


def symmetric_group(d: int) -> GroupXY:
    """S_d acting on R^d by all coordinate permutations (d! elements)."""
    if int(d) != d or d < 1:
        raise GroupError(f"symmetric group needs an integer d ≥ 1, got {d!r}")
    d = int(d)
    return permutation_group(f"S{d}", [list(p) for p in itertools.permutations(range(d))])


def c2_swap() -> GroupXY:
    """The paper's group: C₂ = {I, P} on R², P swapping the two coordinates."""
    g = cyclic_group(2)
    return GroupXY("C2", g.x, g.y)


#: Named groups a configuration may ask for: name → constructor(d).
GROUPS = {
    "C2": lambda d=2: c2_swap(),
    "cyclic": cyclic_group,
    "symmetric": symmetric_group,
}


def group_xy(name: str, dim: int = 2) -> GroupXY:
    """Look up a named group; raises ``ValueError`` naming the allowed values."""
    if name not in GROUPS:
        raise ValueError(f"unknown group {name!r}; allowed: {sorted(GROUPS)}")
    if name == "C2" and dim != 2:
        raise ValueError(f"group 'C2' acts on R², got dim={dim}; use 'cyclic' for C_d on R^d")
    return GROUPS[name](dim)
