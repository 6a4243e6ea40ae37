"""Exact optimal-transport distances between empirical measures (PAPER.md §5).

All measures are uniform empirical measures on R^D, given by their atoms ``(n, D)``.

* ``w2_squared(a, b)``: exact W₂² — when one size is a whole multiple r of the other (the
  N×N assignment, the N×|G|N transport to a symmetrised cloud), the assignment problem
  after copying each atom of the smaller cloud r times, solved on a sparse candidate graph
  and certified optimal on the full cost matrix by LP duality
  (:mod:`mfsym.measure.assignment`); otherwise the network simplex (``ot.emd2``) on uniform
  weights.  Never an entropic approximation.
* ``rmd2(μ, ν) = W₂²(μ, ν) / (M₂(μ) + M₂(ν))`` with ``M₂(μ) = 2 E_μ‖z‖²``; since
  ``‖a − b‖² ≤ 2‖a‖² + 2‖b‖²`` it lies in [0, 1].  ``rmd = sqrt(rmd2)``.
* ``w2_squared_to_projection(ν, P)``: for an orthogonal projector P, the map ``z ↦ P z`` is
  the gradient of the convex function ``½ zᵀ P z``, hence (Brenier) an optimal coupling
  between ν and ``P#ν``: ``W₂²(ν, P#ν) = E_ν ‖z − P z‖²`` exactly.
"""

from __future__ import annotations

import numpy as np
import ot
from scipy.spatial.distance import cdist

from .assignment import assignment_solve


def _atoms(name: str, arr) -> np.ndarray:
    a = np.asarray(arr, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty cloud of shape (n, D), got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains non-finite coordinates")
    # every cost is a squared distance ‖x − y‖² ≤ 4·D·max|coordinate|², finite in float64
    limit = float(np.sqrt(np.finfo(np.float64).max / (4.0 * max(a.shape[1], 1))))
    largest = float(np.abs(a).max()) if a.size else 0.0
    if largest >= limit:
        raise ValueError(f"{name} has a coordinate of size {largest:.3g}: squared distances "
                         f"between such points overflow float64 (allowed: below {limit:.3g})")
    return a


def w2_squared(a, b) -> float:
    """Exact W₂² between the uniform empirical measures on the rows of ``a`` and ``b``."""
    return w2_squared_solve(a, b)[0]


def w2_squared_solve(a, b, hint=None) -> tuple[float, np.ndarray | None]:
    """:func:`w2_squared` and, when the solver gives them, optimal potentials on the atoms
    of the larger cloud (of ``b`` when both have as many); ``hint``: such potentials of a
    similar problem (:func:`mfsym.measure.assignment.assignment_solve`)."""
    a, b = _atoms("a", a), _atoms("b", b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"clouds live in different spaces: D={a.shape[1]} vs D={b.shape[1]}")
    if a.shape[0] > b.shape[0]:
        a, b = b, a
    if b.shape[0] % a.shape[0] == 0:
        value, v = assignment_solve(a, b, hint=hint)
        return max(value, 0.0), v
    cost = cdist(a, b, "sqeuclidean")
    wa = np.full(a.shape[0], 1.0 / a.shape[0])
    wb = np.full(b.shape[0], 1.0 / b.shape[0])
    return float(max(ot.emd2(wa, wb, cost, numItermax=10_000_000), 0.0)), None


def second_moment(a) -> float:
    """M₂(μ) = 2 E_μ‖z‖² (the normalisation of RMD)."""
    a = _atoms("cloud", a)
    return float(2.0 * (a**2).sum(axis=1).mean())


def _ratio(w2: float, m2: float) -> float:
    if m2 == 0.0:
        return 0.0
    return float(min(max(w2 / m2, 0.0), 1.0))


def rmd2(a, b) -> float:
    """RMD²(μ, ν) = W₂²(μ, ν) / (M₂(μ) + M₂(ν)) ∈ [0, 1] (0 when both sit at the origin)."""
    return _ratio(w2_squared(a, b), second_moment(a) + second_moment(b))


def rmd(a, b) -> float:
    """RMD(μ, ν) = sqrt(RMD²(μ, ν))."""
    return float(np.sqrt(rmd2(a, b)))


def rmd_solve(a, b, hint=None) -> tuple[float, np.ndarray | None]:
    """:func:`rmd` and the potentials of :func:`w2_squared_solve` (``hint``: as there)."""
    w2, v = w2_squared_solve(a, b, hint)
    return float(np.sqrt(_ratio(w2, second_moment(a) + second_moment(b)))), v


#: Tolerance on ``max|P − Pᵀ|`` and ``max|P² − P|`` for a matrix accepted as a projector.
PROJECTOR_ATOL = 1e-6


def _projector(projector, dim: int) -> np.ndarray:
    """Check that ``projector`` is an orthogonal projector on R^dim (P = Pᵀ = P², (D, D)).

    The closed form below holds only for such P, so anything else is refused.
    """
    p = np.asarray(projector, dtype=np.float64)
    if p.shape != (dim, dim):
        raise ValueError(f"projector must have shape ({dim}, {dim}), got {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError("projector contains non-finite entries")
    asym, idem = np.abs(p - p.T).max(), np.abs(p @ p - p).max()
    if max(asym, idem) > PROJECTOR_ATOL:
        raise ValueError(
            f"projector is not an orthogonal projector: max|P − Pᵀ| = {asym:.3g}, "
            f"max|P² − P| = {idem:.3g} (allowed ≤ {PROJECTOR_ATOL})"
        )
    return p


def w2_squared_to_projection(cloud, projector) -> float:
    """Closed form ``W₂²(ν, P#ν) = mean_i ‖z_i − P z_i‖²`` for an orthogonal projector P."""
    a = _atoms("cloud", cloud)
    p = _projector(projector, a.shape[1])
    resid = a - a @ p.T
    return float((resid**2).sum(axis=1).mean())


def rmd_to_projected(cloud, projector) -> float:
    """RMD(ν, P#ν) by the closed form (the distance of ν from laws supported on range P)."""
    a = _atoms("cloud", cloud)
    p = _projector(projector, a.shape[1])
    m2 = second_moment(a) + second_moment(a @ p.T)
    return float(np.sqrt(_ratio(w2_squared_to_projection(a, p), m2)))


def rmd_to_symmetrized(cloud, group) -> float:
    """RMD(ν, ν^G): distance from the weakly invariant law closest in this sense.

    ν has N atoms and ν^G has |G|·N: an exact assignment after copying each atom |G| times.
    """
    a = _atoms("cloud", cloud)
    return rmd(a, group.symmetrize(a))
