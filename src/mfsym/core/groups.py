"""Finite groups acting orthogonally on inputs X, outputs Y and unit parameters Z.

A group G of order ``|G|`` is given by three orthogonal representations, stacked as
arrays of matrices with a common element order:

* ``x``: shape ``(|G|, dx, dx)``, the action on inputs ``x ∈ R^dx``;
* ``y``: shape ``(|G|, dy, dy)``, the action on outputs ``y ∈ R^dy``;
* ``z``: shape ``(|G|, D, D)``, the action ``M_g`` on a unit's flattened parameters.

Element ``k`` of the group is the triple ``(x[k], y[k], z[k])``.  The set must be closed
under the (componentwise) product, contain the identity and consist of orthogonal
matrices; :class:`FiniteGroup` checks all three and raises :class:`GroupError` naming the
failing element otherwise.  A group knows which unit's action on Z it carries
(``built_for``), so that a unit with another action is refused (:meth:`FiniteGroup.check_unit`).

Groups from generators.  :func:`generate` takes generators ``(a_k, b_k)`` (orthogonal, on X
and Y) and computes the closure ``G = ⟨(a_k, b_k)⟩`` by breadth-first search: starting from
the identity, every element found is multiplied on the left by every generator until no
new element appears.  The search stops, refusing the input, as soon as it finds more
than ``max_order`` elements, so an infinite group (a rotation by an irrational multiple of
π) or a huge one is refused without enumerating it.  The elements are put in a canonical
order (:func:`canonical_order`), so a group does not depend on how it was generated.  The
named groups (C2, cyclic C_d, symmetric S_d) are presets of generators over this path.

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
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

#: Tolerance for orthogonality / closure checks of user-given matrices.
GROUP_ATOL = 1e-9
#: Default bound on |G| when a group is generated (the configuration's ``group.max_order``).
MAX_ORDER = 10_000
#: Decimals of the entries that identify an element while a closure is searched.
KEY_DECIMALS = 8


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
    #: Indices of elements that generate the group; when given, closure is checked as
    #: "closed under left multiplication by each generator, every element reached from the
    #: identity" (|G|·k products instead of the |G|² of the full table).
    generators: tuple[int, ...] = ()
    #: What identifies the unit whose action on Z ``z`` is (``Unit.z_key``), or None.
    built_for: tuple | None = None

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
        if self.generators:
            self._check_generated(joint)
        else:
            self._check_table(joint)
        dists = np.abs(flat[:, None, :] - flat[None, :, :]).max(axis=2) if order <= 512 else None
        dup = (np.argwhere(np.triu(dists <= GROUP_ATOL, k=1)) if dists is not None
               else _duplicates(flat))
        if len(dup):
            i, j = dup[0]
            raise GroupError(f"group {self.name!r}: elements {i} and {j} are equal")
        for attr, arr in (("x", x), ("y", y), ("z", z), ("_joint", joint)):
            arr.setflags(write=False)
            object.__setattr__(self, attr, arr)

    def _check_table(self, joint: np.ndarray) -> None:
        """Every product g_i g_j is an element (the full multiplication table)."""
        order = joint.shape[0]
        flat = joint.reshape(order, -1)
        for i, j in itertools.product(range(order), repeat=2):
            prod = (joint[i] @ joint[j]).reshape(-1)
            if np.abs(flat - prod).max(axis=1).min() > GROUP_ATOL:
                raise GroupError(
                    f"group {self.name!r}: not closed under multiplication — the product of "
                    f"elements {i} and {j} is not in the set"
                )

    def _check_generated(self, joint: np.ndarray) -> None:
        """Closure given generators s_1..s_k: s_k g is an element for every k and g, and
        every element is a word in the generators (reached from the identity).  Then the
        set is exactly the group ⟨s_1..s_k⟩, hence closed under every product."""
        order = joint.shape[0]
        flat = joint.reshape(order, -1)
        index = {_key(row): i for i, row in enumerate(flat)}
        reached = np.zeros(order, bool)
        for k in self.generators:
            if not 0 <= k < order:
                raise GroupError(f"group {self.name!r}: generator index {k} is not an element")
            prods = np.einsum("ij,gjk->gik", joint[k], joint).reshape(order, -1)
            for i, prod in enumerate(prods):
                j = index.get(_key(prod))
                if j is None:
                    j = int(np.abs(flat - prod).max(axis=1).argmin())
                    if np.abs(flat[j] - prod).max() > GROUP_ATOL:
                        raise GroupError(
                            f"group {self.name!r}: not closed under multiplication — the "
                            f"product of generator {k} and element {i} is not in the set")
        queue = deque([self.identity_index_of(joint)])
        reached[queue[0]] = True
        while queue:
            i = queue.popleft()
            for k in self.generators:
                j = index.get(_key((joint[k] @ joint[i]).reshape(-1)))
                if j is not None and not reached[j]:
                    reached[j] = True
                    queue.append(j)
        if not reached.all():
            raise GroupError(f"group {self.name!r}: element {int(np.argmin(reached))} is not "
                             f"a product of the generators {list(self.generators)}")

    @staticmethod
    def identity_index_of(joint: np.ndarray) -> int:
        eye = np.eye(joint.shape[1])
        return int(np.argmin(np.abs(joint - eye).reshape(joint.shape[0], -1).max(axis=1)))

    def check_unit(self, unit) -> None:
        """Refuse a unit whose action on Z is not the one this group was built for.

        Two units may share D (the matrix and the uv unit on R²: D = 4) while acting on Z
        differently (g_y ⊗ g_x against diag(g_x, g_y)); E^G, P_E and every scheme would then
        be those of the wrong action.  A group built without a unit (``built_for`` None)
        is taken as it is.
        """
        key = getattr(unit, "z_key", None)
        if self.built_for is None or key is None or key == self.built_for:
            return
        raise ValueError(
            f"group {self.name!r} was built for the unit {_describe_key(self.built_for)} "
            f"(its action on Z), but it is used with the unit {_describe_key(key)}; build "
            f"the group with that unit: unit.group(...)")

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
        return self.identity_index_of(self._joint)

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


# ---- groups acting on X and Y, from generators --------------------------------------------
def _key(row: np.ndarray) -> bytes:
    """Bytes identifying a flattened element up to rounding (entries to KEY_DECIMALS)."""
    return (np.round(row, KEY_DECIMALS) + 0.0).tobytes()


def _duplicates(flat: np.ndarray) -> np.ndarray:
    """Pairs (i, j), i < j, of rows equal up to rounding, as an (m, 2) array."""
    seen: dict[bytes, int] = {}
    out = []
    for j, row in enumerate(flat):
        i = seen.setdefault(_key(row), j)
        if i != j:
            out.append((i, j))
    return np.asarray(out, dtype=int).reshape(-1, 2)


def _describe_key(key: tuple) -> str:
    name, dx, dy, *extra = key
    more = "".join(f", {e}" for e in extra)
    return f"'{name}' (R^{dx} → R^{dy}{more})"


@dataclass(frozen=True)
class GroupXY:
    """A finite group given by its orthogonal action on inputs and outputs only.

    A unit (``mfsym.core.units``) turns it into a :class:`FiniteGroup` by supplying the action
    on Z; see :meth:`mfsym.core.units.Unit.group`.  ``generators``: indices of elements that
    generate the group (empty: not recorded).
    """

    name: str
    x: np.ndarray
    y: np.ndarray
    generators: tuple[int, ...] = ()


def canonical_order(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Indices sorting the elements ``(x[k], y[k])`` into the canonical order.

    The key of an element is ``(−vec_col(x), −vec_col(y))`` (columns stacked, entries negated,
    rounded to KEY_DECIMALS), compared lexicographically.  The identity comes first (its
    first column e₁ has the largest possible first entry), and for permutation matrices
    ``P`` with ``P e_i = e_{π(i)}`` the order is the lexicographic order of ``(π(0), π(1), …)``
    — the order of ``itertools.permutations``.
    """
    keys = np.concatenate([np.transpose(x, (0, 2, 1)).reshape(len(x), -1),
                           np.transpose(y, (0, 2, 1)).reshape(len(y), -1)], axis=1)
    keys = -np.round(keys, KEY_DECIMALS) + 0.0
    return np.lexsort(keys.T[::-1])


def _orthogonal_generator(name: str, k: int, side: str, mat, dim: int) -> np.ndarray:
    arr = np.asarray(mat, dtype=np.float64)
    if arr.shape != (dim, dim):
        raise GroupError(f"group {name!r}: generator {k} on {side} must be a {dim}×{dim} "
                         f"matrix, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise GroupError(f"group {name!r}: generator {k} on {side} has non-finite entries")
    err = np.abs(arr.T @ arr - np.eye(dim)).max()
    if err > GROUP_ATOL:
        raise GroupError(
            f"group {name!r}: generator {k} on {side} is not orthogonal (max |gᵀg − I| = "
            f"{err:.3g} > {GROUP_ATOL}); allowed: orthogonal matrices (gᵀg = I), e.g. "
            f"permutations, sign changes, rotations by 2π/m")
    return arr


def generate(name: str, gens_x: Sequence, gens_y: Sequence | None = None, dim: int | None = None,
             max_order: int = MAX_ORDER) -> GroupXY:
    """The group generated by ``(gens_x[k], gens_y[k])`` acting on X and Y (module docstring).

    ``gens_y`` None: each generator acts alike on X and Y.  ``dim``: the dimension of X = Y
    (needed when there is no generator: the trivial group).  Raises :class:`GroupError`
    naming a non-orthogonal generator, or the product that makes the closure exceed
    ``max_order`` elements.
    """
    if isinstance(max_order, bool) or int(max_order) != max_order or max_order < 1:
        raise GroupError(f"max_order must be an integer ≥ 1, got {max_order!r}")
    gens_y = gens_x if gens_y is None else gens_y
    if len(gens_x) != len(gens_y):
        raise GroupError(f"group {name!r}: {len(gens_x)} generators on X but "
                         f"{len(gens_y)} on Y")
    if dim is None:
        if not len(gens_x):
            raise GroupError(f"group {name!r}: no generators and no dimension given")
        dim = len(gens_x[0])
    gx = [_orthogonal_generator(name, k, "X", g, dim) for k, g in enumerate(gens_x)]
    gy = [_orthogonal_generator(name, k, "Y", g, dim) for k, g in enumerate(gens_y)]
    eye = np.eye(dim)
    xs, ys = [eye], [eye.copy()]
    index = {_key(np.concatenate([eye.ravel(), eye.ravel()])): 0}
    queue = deque([0])
    while queue:
        i = queue.popleft()
        for k, (a, b) in enumerate(zip(gx, gy, strict=True)):
            px, py = a @ xs[i], b @ ys[i]
            key = _key(np.concatenate([px.ravel(), py.ravel()]))
            if key in index:
                continue
            if len(xs) >= max_order:
                raise GroupError(
                    f"group {name!r}: the generators do not close within max_order = "
                    f"{max_order} elements (generator {k} times element {i} is element "
                    f"{len(xs) + 1}); allowed: generators of a finite group of order ≤ "
                    f"{max_order} (raise group.max_order for a larger finite group; a rotation "
                    f"by an irrational multiple of π generates an infinite group)")
            index[key] = len(xs)
            xs.append(px)
            ys.append(py)
            queue.append(len(xs) - 1)
    x, y = np.stack(xs), np.stack(ys)
    perm = canonical_order(x, y)
    where = np.argsort(perm)
    gen_idx = []
    for a, b in zip(gx, gy, strict=True):
        j = int(where[index[_key(np.concatenate([a.ravel(), b.ravel()]))]])
        if j not in gen_idx:
            gen_idx.append(j)
    return GroupXY(name, x[perm], y[perm], tuple(gen_idx))


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


def _dimension(kind: str, d) -> int:
    if isinstance(d, bool) or int(d) != d or d < 1:
        raise GroupError(f"{kind} group needs an integer d ≥ 1, got {d!r}")
    return int(d)


def cyclic_group(d: int, max_order: int = MAX_ORDER) -> GroupXY:
    """C_d acting on R^d by cyclic shifts of the coordinates: generated by the shift
    i ↦ i + 1 (mod d); element k (canonical order) is the shift by k."""
    d = _dimension("cyclic", d)
    shift = permutation_matrix([(i + 1) % d for i in range(d)])
    return generate(f"C{d}", [shift], dim=d, max_order=max_order)


def symmetric_group(d: int, max_order: int = MAX_ORDER) -> GroupXY:
    """S_d acting on R^d by all coordinate permutations (d! elements): generated by the
    transposition (0 1) and the cycle i ↦ i + 1 (mod d), in the lexicographic order of
    the permutations.  The order d! is compared with ``max_order`` before any element is
    enumerated."""
    d = _dimension("symmetric", d)
    order = math.factorial(d)
    if order > max_order:
        raise GroupError(
            f"group 'symmetric' on R^{d} has order {d}! = {order}, above max_order = "
            f"{max_order}; allowed: order ≤ max_order (dim ≤ {_largest_factorial(max_order)} "
            f"at this limit, or raise group.max_order)")
    gens = [] if d == 1 else [
        permutation_matrix([1, 0, *range(2, d)]),
        permutation_matrix([(i + 1) % d for i in range(d)]),
    ]
    return generate(f"S{d}", gens, dim=d, max_order=max_order)


def _largest_factorial(limit: int) -> int:
    d = 1
    while math.factorial(d + 1) <= limit:
        d += 1
    return d


def c2_swap() -> GroupXY:
    """The paper's group: C₂ = {I, P} on R², P swapping the two coordinates."""
    g = cyclic_group(2)
    return GroupXY("C2", g.x, g.y, g.generators)


#: Named groups a configuration may ask for: name → constructor(d, max_order).
GROUPS = {
    "C2": lambda d=2, max_order=MAX_ORDER: c2_swap(),
    "cyclic": cyclic_group,
    "symmetric": symmetric_group,
}


def group_xy(name: str, dim: int = 2, max_order: int = MAX_ORDER) -> GroupXY:
    """Look up a named group; raises ``ValueError`` naming the allowed values."""
    if name not in GROUPS:
        raise ValueError(f"unknown group {name!r}; allowed: {sorted(GROUPS)}")
    if name == "C2" and dim != 2:
        raise ValueError(f"group 'C2' acts on R², got dim={dim}; use 'cyclic' for C_d on R^d")
    return GROUPS[name](dim, max_order)
