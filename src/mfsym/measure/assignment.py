"""Exact optimal assignment on a sparse candidate graph, certified on the full cost matrix.

Problem: the uniform empirical measures μ = (1/n) Σ_i δ_{a_i} (``a (n, D)``) and
ν = (1/m) Σ_j δ_{b_j} (``b (m, D)``) with ``m = r·n`` for an integer r ≥ 1 (the N×N
assignment between two clouds, r = 1, and the N×|G|N transport to a symmetrised cloud,
r = |G|).  Copying every atom of μ r times makes every mass 1/m, and the transport
problem becomes the assignment problem on the ``(m, m)`` cost ``C[k, j] = ‖a_{k // r} − b_j‖²``:

    W₂²(μ, ν) = min over permutations s of (1/m) Σ_k C[k, s(k)]      (Birkhoff).

The solver never approximates.  The candidate set E starts as the ``k·r`` nearest atoms of
ν of every atom of μ and the pairing of atom i with ``i + t·n`` (t < r), which guarantees a
feasible coupling.  The default solver (``solver="simplex"``) works on the transport problem
itself (n rows of mass 1/n, m columns of mass 1/m, no copies); each round

1. solves the transport restricted to E exactly with the network simplex on that sparse
   graph (``ot.emd`` on a sparse cost, in process; used only when it reports optimality),
   which returns the coupling and potentials u (n,), v (m,) with ``u_i + v_j ≤ C[i, j]`` on
   E and equality where mass moves;
2. checks ``u_i + v_j ≤ C[i, j] + tol`` on the *whole* ``(n, m)`` cost matrix, in row blocks.
   If it holds and the coupling's cost U (evaluated on C) is within ``tol`` of
   ``mean u + mean v``, then (u − tol, v) is dual feasible and LP duality gives
   ``U − 2·tol ≤ W₂² ≤ U``: U is returned (tol = 1e-11).  Otherwise the ``GROWTH·r·2^k``
   most violated edges of every violating row join E and round k + 1 starts.

The network simplex does not stall on tied costs, so near-duplicate columns (a cloud near
E^G against its symmetrisation) and near-identity couplings (two schemes trained from a
common start with common random numbers) are certified in one to a few rounds, in a fraction
of a second at N = 5000, where the dense solvers take seconds.

``solver="lapjvsp"`` is the previous sparse solver, kept as an independent cross-check: on
the copied ``(m, m)`` assignment problem, each round

1. rounds the costs of E (every atom of μ copied r times) to integers ``Ĉ = rint(S·C)`` with
   S a power of two small enough that every sum the solver forms is exact in float64, and
   solves the assignment on E exactly with
   ``scipy.sparse.csgraph.min_weight_full_bipartite_matching``
   (LAPJVsp, run by :mod:`mfsym.measure.sparse_matching` in a process that is killed if it
   does not return);
2. computes dual potentials of that matching: with ``d`` the shortest-path distances from a
   source joined to every column by a 0-edge in the residual graph (row → column on the
   unmatched edges of E, cost Ĉ; column → row on the matched ones, cost −Ĉ; no negative
   cycle since the matching is optimal on E), ``v_j = d(col j)/S`` and ``u_k = −d(row k)/S``
   satisfy ``u_k + v_j ≤ Ĉ[k, j]/S`` on E, with equality on the matching (Bellman–Ford,
   vectorised over the edges, in exact integer arithmetic);
3. checks ``u_k + v_j ≤ C[k, j] + g`` on the *whole* cost matrix, in row blocks, with
   ``g = tol + 1/(2S)``.  If it holds, (u − g, v) is dual feasible for C and LP duality
   bounds the gap: the matching's mean cost, evaluated exactly on C, is within ``2g`` of
   W₂² (tol = 1e-11; S ≥ 2^50 / (m · max C), so g ≈ 1e-10 at m = 10⁴ on costs of order 10).
   Otherwise every violating edge joins E and the next round starts.

On the sparse path, when the pairing of copy t of atom i with atom ``i + t·n`` of ν (the
order in which a symmetrised cloud lists the images g·a_i) already costs at most
``2·tol``, that cost is returned: 0 ≤ W₂² ≤ it, so it is W₂² within the certified gap,
with no solve (a cloud on E^G against its symmetrisation).  For r > 1 the own pairing's cost
also picks the solver: below the mean squared nearest-neighbour distance in μ (a cloud near
E^G: its images nearly duplicate its atoms, near-tied costs that stall LAPJVsp) the sparse
simplex certifies in a few rounds and LAPJVsp gives way to the dense network simplex; above
it (images far from their atoms, e.g. a cloud trained from a WI start, nearly invariant in
law: the coupling spreads over many atoms) the dense network simplex answers the simplex
path.

Small problems (``m ≤ DENSE_UP_TO``), transport to more than ``SPARSE_MAX_COPIES`` copies
(r copies of every atom of μ make r identical rows of C; on such heavily tied graphs LAPJVsp
can run for minutes, e.g. on the 32-point SO(2) orbits of the rotation stage), clouds whose
optimal coupling moves mass farther than their atoms are apart (a one-dimensional lower
bound on W₂², :func:`projection_lower_bound`, above the mean squared nearest-neighbour
distance: trained clouds gathered around different points, where the candidate graph grows
round after round), sparse solves that do not finish within :func:`timeout` (all rounds
together), and ``max_rounds`` rounds without a certificate are answered by the dense exact
solver: LAPJV (``scipy.optimize.linear_sum_assignment``) for small square problems, the
network simplex (``ot.emd2``, checked to report optimality) otherwise.

Multiscale.  Before the dense solver answers a problem of n ≥ ``COARSE_FROM`` atoms that
the routing gives it (far-apart clouds, images far from their atoms) or whose
nearest-neighbour rounds of the sparse simplex end without a certificate, and which no
hint from a solved problem certifies, the same problem on a random quarter of the atoms
of μ (and their columns) is solved exactly, by this module, and its potentials,
c-transformed to every column, give the sparse simplex its candidate edges
(:func:`_coarse_hint`): the coupling seen at a coarser resolution, which the certificate
on the whole cost matrix then refines or rejects (the dense solver answering).  As with
every hint, the value does not depend on it; only which exact solver gives it.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import ot
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_array, csr_matrix
from scipy.spatial import cKDTree
from scipy.spatial.distance import cdist

from .sparse_matching import match

#: Candidate neighbours per atom of μ (per copy) in the first round.
NEIGHBOURS = 8
#: Round k of the sparse simplex adds at most GROWTH·r·2^k most violated edges per row (the
#: rounds double their growth: a coupling that needs edges to many atoms is reached in a few).
GROWTH = 8
#: Allowed dual infeasibility, in units of the squared distance: the certified gap.
CERTIFICATE_TOL = 1e-11
#: Rounds of candidate growth before falling back to the dense solver.
MAX_ROUNDS = 12
#: Problems with at most this many columns go straight to the dense solver (fast there;
#: above, the sparse simplex is faster: the metrics of trained N = 500 and 1000 clouds
#: took 1.7-1.9 times as long with 4000 here).
DENSE_UP_TO = 256
#: Largest r = m / n sent to the sparse solver (r tied copies per atom of μ).
SPARSE_MAX_COPIES = 2
#: Dense solve when the one-dimensional lower bound on W₂² exceeds this many times the
#: mean squared nearest-neighbour distance (the clouds' atom spacing).
FAR_APART = 1.0
#: Bound on |integer cost| · m handed to the sparse solver: sums stay exact in float64.
INTEGER_RANGE = 2.0**50
#: Iteration cap of the network simplex's first try (raised tenfold until it is optimal).
SIMPLEX_ITERATIONS = 10_000_000
SIMPLEX_RETRIES = 3
#: The dense network simplex on at least WARM_FROM rows starts from the potentials of the
#: problem on WARM_ROWS of them (on far-apart N = 5000 clouds: 15-30 % faster).
WARM_FROM = 2000
WARM_ROWS = 1000
#: A problem of at least COARSE_FROM atoms of μ bound for the dense solver, with no hint
#: that certifies it, first takes the sparse simplex from the potentials of the problem on
#: 1/COARSE_FACTOR of its atoms (:func:`_coarse_hint`; trained N = 5000 clouds of a WI start,
#: one seed's problems: 122.5 s -> 58.1 s on one core, no dense solve of all atoms).
COARSE_FROM = 2000
COARSE_FACTOR = 4
#: Rows of the full cost matrix checked at once (BLOCK × m floats, 10 MB at m = 10⁴: 1024
#: rows, 80 MB, ran four times slower).
BLOCK = 128


def _warm_potentials(cost: np.ndarray):
    """Dual-feasible potentials (u, v) for the dense network simplex on ``cost (n, m)``:
    the optimal potentials of the problem on WARM_ROWS random rows and as many columns in
    proportion, c-transformed to every column and then every row (so ``u_i + v_j ≤ C[i, j]``
    everywhere); None below WARM_FROM rows or when that small problem is not solved."""
    n, m = cost.shape
    if n < WARM_FROM:
        return None
    rng = np.random.default_rng(0)
    k, km = WARM_ROWS, WARM_ROWS * m // n
    rows = np.sort(rng.choice(n, k, replace=False))
    cols = np.sort(rng.choice(m, km, replace=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        _, log = ot.emd2(np.full(k, 1.0 / k), np.full(km, 1.0 / km), cost[np.ix_(rows, cols)],
                         numItermax=SIMPLEX_ITERATIONS, log=True)
    if log["result_code"] != 1:
        return None
    v = (cost[rows] - np.asarray(log["u"])[:, None]).min(axis=0)
    u = np.concatenate([(cost[s : s + BLOCK] - v).min(axis=1) for s in range(0, n, BLOCK)])
    return u, v


def _network_simplex(cost: np.ndarray) -> tuple[float, np.ndarray]:
    """min over couplings of uniform marginals of Σ C·P by the network simplex (``ot.emd2``,
    started from :func:`_warm_potentials`), and the optimal column potentials v (m,);
    refused unless the solver reports optimality: past its iteration cap it returns a
    feasible, not an optimal, coupling, so the cap is raised tenfold and the solve rerun."""
    n, m = cost.shape
    cap = SIMPLEX_ITERATIONS
    warm = _warm_potentials(cost)
    for _ in range(SIMPLEX_RETRIES):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the cap's warning, checked below
            value, log = ot.emd2(np.full(n, 1.0 / n), np.full(m, 1.0 / m), cost,
                                 numItermax=cap, log=True, potentials_init=warm)
        if log["result_code"] == 1:  # optimal
            return float(value), np.asarray(log["v"], dtype=np.float64)
        if "numItermax" not in str(log["warning"]):
            break
        cap *= 10
    raise RuntimeError(f"the network simplex gave no optimal transport for a {n} x {m} cost "
                       f"matrix (last cap {cap} iterations): {log['warning']}")


def dense_assignment_cost(a: np.ndarray, b: np.ndarray) -> float:
    """W₂² by a dense exact solver: LAPJV for a square problem up to DENSE_UP_TO atoms,
    the network simplex otherwise (on large trained clouds, whose atoms gather in a few
    tight clusters, LAPJV takes minutes where the simplex takes seconds: 47 s against 4 s
    at N = 5000)."""
    return _dense_solve(a, b)[0]


def _dense_solve(a: np.ndarray, b: np.ndarray) -> tuple[float, np.ndarray | None]:
    """:func:`dense_assignment_cost` and, from the network simplex, its column potentials."""
    cost = cdist(a, b, "sqeuclidean")
    n, m = cost.shape
    if n == m and m <= DENSE_UP_TO:
        rows, cols = linear_sum_assignment(cost)
        return float(cost[rows, cols].mean()), None
    return _network_simplex(cost)


def projection_lower_bound(a: np.ndarray, b: np.ndarray) -> float:
    """A lower bound on W₂²(μ, ν): the largest exact one-dimensional W₂² of the projections
    on the coordinate axes and the principal axes of the pooled atoms.

    x ↦ ⟨w, x⟩ is 1-Lipschitz for a unit w, so W₂²(⟨w,·⟩#μ, ⟨w,·⟩#ν) ≤ W₂²(μ, ν); in one
    dimension the optimal coupling is monotone, W₂² = mean_k (sort(⟨w, a⟩ repeated r
    times)_k − sort(⟨w, b⟩)_k)².
    """
    r = b.shape[0] // a.shape[0]
    pooled = np.vstack([a, b])
    _, axes = np.linalg.eigh(np.cov(pooled, rowvar=False).reshape(a.shape[1], a.shape[1]))
    directions = np.vstack([np.eye(a.shape[1]), axes.T])
    pa = np.sort(np.repeat(a @ directions.T, r, axis=0), axis=0)
    pb = np.sort(b @ directions.T, axis=0)
    return float(((pa - pb) ** 2).mean(axis=0).max())


def _initial_edges(a: np.ndarray, b: np.ndarray, r: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Candidate edges (source atom i, column j): k·r nearest columns and i ↦ i + t·n."""
    n, m = a.shape[0], b.shape[0]
    kk = min(k * r, m)
    _, nbr = cKDTree(b).query(a, k=kk)
    nbr = np.asarray(nbr, dtype=np.int64).reshape(n, kk)
    src = np.concatenate([np.repeat(np.arange(n), kk), np.tile(np.arange(n), r)])
    dst = np.concatenate([nbr.ravel(), np.arange(m)])
    return _unique_edges(src, dst, m)


def _unique_edges(src: np.ndarray, dst: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    key = np.unique(src.astype(np.int64) * m + dst)
    return key // m, key % m


def _duals(rows: np.ndarray, cols: np.ndarray, w: np.ndarray, match_col: np.ndarray,
           matched_cost: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Potentials (u per copy-row, v per column) of an optimal sparse matching.

    ``rows, cols, w``: the edges of E (copy-row index, column, cost); ``match_col[k]``: the
    column matched to copy-row k; ``matched_cost[j]``: the cost of the matched edge at j.
    """
    free = match_col[rows] != cols
    fr, fc, fw = rows[free], cols[free], w[free]
    row_of_col = np.empty(m, dtype=np.int64)
    row_of_col[match_col] = np.arange(m)
    d_col = np.zeros(m)
    d_row = np.empty(m)
    if fr.size == 0:  # E is the matching itself: d = 0 on every column
        d_row[row_of_col] = -matched_cost
        return -d_row, d_col
    order = np.argsort(fc, kind="stable")
    fr, fc, fw = fr[order], fc[order], fw[order]
    heads = np.flatnonzero(np.r_[True, fc[1:] != fc[:-1]])
    targets = fc[heads]
    for _ in range(m + 1):
        d_row[row_of_col] = d_col - matched_cost
        best = np.minimum.reduceat(d_row[fr] + fw, heads)
        new = d_col.copy()
        new[targets] = np.minimum(d_col[targets], best)
        if np.all(new >= d_col):  # integer costs: any improvement is ≥ 1
            break
        d_col = new
    else:
        return None  # a negative cycle: the matching is not optimal on E
    d_row[row_of_col] = d_col - matched_cost
    return -d_row, d_col


def mean_nn_sq(a: np.ndarray) -> float:
    """Mean squared distance from each atom of ``a`` to its nearest other atom."""
    d, _ = cKDTree(a).query(a, k=2)
    return float(np.mean(d[:, 1] ** 2))


def timeout(m: int) -> float:
    """Seconds allowed to the sparse matchings of an m × m problem, all rounds together,
    before the dense solver answers (a certified sparse solve on trained N = 5000 clouds
    takes 0.5–9 s; one that stalls would otherwise hold the job for minutes)."""
    return 10.0 + m / 1000.0


def _integer_scale(w: np.ndarray, m: int) -> float:
    """Power of two S with S · max(w) · m ≤ INTEGER_RANGE (and S ≤ 2^40)."""
    top = max(float(w.max()), 1e-300) * m
    return float(2.0 ** min(40, np.floor(np.log2(INTEGER_RANGE / top))))


def _violations(a: np.ndarray, b: np.ndarray, u: np.ndarray, v: np.ndarray, gap: float,
                per_row: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Edges (i, j) of the whole cost matrix with ``‖a_i − b_j‖² − u_i − v_j < −gap``, in
    row blocks: every one, or the ``per_row`` most negative of each row."""
    m = b.shape[0]
    found_src, found_dst = [], []
    for s in range(0, a.shape[0], BLOCK):
        red = cdist(a[s : s + BLOCK], b, "sqeuclidean")
        red -= u[s : s + BLOCK, None]
        red -= v
        if per_row is None or per_row >= m:
            i, j = np.nonzero(red < -gap)
        else:
            rows = np.flatnonzero(red.min(axis=1) < -gap)
            sub = red[rows]
            cols = np.argpartition(sub, per_row, axis=1)[:, :per_row]
            keep = np.take_along_axis(sub, cols, axis=1) < -gap
            i, j = np.repeat(rows, per_row).reshape(-1, per_row)[keep], cols[keep]
        found_src.append(i + s)
        found_dst.append(j)
    return np.concatenate(found_src), np.concatenate(found_dst)


def _sparse_transport(a: np.ndarray, b: np.ndarray, src: np.ndarray, dst: np.ndarray):
    """Optimal transport between the uniform measures on ``a (n, D)`` and ``b (m, D)``
    restricted to the edges ``(src, dst)``, by the network simplex on that graph
    (``ot.emd`` on a sparse cost): (its cost, evaluated on C; potentials u (n,), v (m,)),
    or None unless the solver reports optimality."""
    n, m = a.shape[0], b.shape[0]
    w = ((a[src] - b[dst]) ** 2).sum(axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the cap's warning, checked below
        plan, log = ot.emd(np.full(n, 1.0 / n), np.full(m, 1.0 / m),
                           coo_array((w, (src, dst)), shape=(n, m)),
                           numItermax=SIMPLEX_ITERATIONS, log=True)
    if log["result_code"] != 1:
        return None
    plan = coo_array(plan)
    value = float(plan.data @ ((a[plan.row] - b[plan.col]) ** 2).sum(axis=1))
    return value, np.asarray(log["u"], dtype=np.float64), np.asarray(log["v"], dtype=np.float64)


def _simplex_rounds(a, b, src, dst, r, tol, max_rounds, deadline):
    """The sparse network simplex, certified on the whole cost matrix (module docstring):
    (W₂², column potentials v (m,)), or None when ``max_rounds`` rounds or the time budget
    pass without a certificate."""
    m = b.shape[0]
    for k in range(max_rounds):
        if deadline - time.monotonic() <= 0:
            break
        solved = _sparse_transport(a, b, src, dst)
        if solved is None:
            break
        value, u, v = solved
        bad_src, bad_dst = _violations(a, b, u, v, tol, per_row=GROWTH * r * 2**k)
        if bad_src.size == 0 and value - (u.mean() + v.mean()) <= tol:
            return value, v
        grown = _unique_edges(np.r_[src, bad_src], np.r_[dst, bad_dst], m)
        if grown[0].size == src.size:  # the violations lie on E: rounding, not missing edges
            break
        src, dst = grown
    return None


def _hinted_edges(a: np.ndarray, b: np.ndarray, hint: np.ndarray, per_row: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Candidate edges from the column potentials ``hint (m,)`` of a similar problem: with
    u its c-transform (``u_i = min_j C[i, j] − v_j``), the ``per_row`` smallest reduced
    costs ``C[i, j] − u_i − v_j`` of every row, and i ↦ i + t·n (a feasible coupling).
    Near-optimal potentials are tight on the optimal coupling (complementary slackness),
    so its edges are among these."""
    n, m = a.shape[0], b.shape[0]
    k = min(per_row, m - 1)
    src, dst = [np.tile(np.arange(n), m // n)], [np.arange(m)]
    for s in range(0, n, BLOCK):
        red = cdist(a[s : s + BLOCK], b, "sqeuclidean")
        red -= hint
        cols = np.argpartition(red, k, axis=1)[:, :k]  # the shift by u_i keeps the order
        src.append(np.repeat(np.arange(s, s + red.shape[0]), k))
        dst.append(cols.ravel())
    return _unique_edges(np.concatenate(src), np.concatenate(dst), m)


def _lapjvsp_rounds(a, b, src, dst, r, tol, max_rounds, deadline) -> float | None:
    """The integer LAPJVsp matching of the copied problem, certified on the whole cost
    matrix (module docstring); None without a certificate."""
    n, m = a.shape[0], b.shape[0]
    for _ in range(max_rounds):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        w = ((a[src] - b[dst]) ** 2).sum(axis=1)
        scale = _integer_scale(w, m)
        rows = (src[None, :] * r + np.arange(r)[:, None]).ravel()
        cols, ws = np.tile(dst, r), np.tile(np.rint(w * scale), r)
        # +1: explicit zero costs (an atom and its own copy) must stay edges of the graph;
        # every perfect matching has m edges, so the optimum does not move.
        graph = csr_matrix((ws + 1.0, (rows, cols)), shape=(m, m))
        match_col = match(graph.data, graph.indices, graph.indptr, m, left)
        if match_col is None:
            break
        row_of_col = np.empty(m, dtype=np.int64)
        row_of_col[match_col] = np.arange(m)
        matched_cost = ((a[row_of_col // r] - b) ** 2).sum(axis=1)
        duals = _duals(rows, cols, ws, match_col, np.rint(matched_cost * scale), m)
        if duals is None:
            break
        u, v = duals[0] / scale, duals[1] / scale
        bad_src, bad_dst = _violations(a, b, u.reshape(n, r).max(axis=1), v,
                                       tol + 0.5 / scale)
        if bad_src.size == 0:
            return float(matched_cost.mean())
        src, dst = _unique_edges(np.r_[src, bad_src], np.r_[dst, bad_dst], m)
    return None


#: Solvers of the sparse path: the network simplex on the transport problem (default) and
#: LAPJVsp on the copied assignment problem (the previous default, kept as a cross-check).
SPARSE_SOLVERS = ("simplex", "lapjvsp")


def assignment_cost(a, b, neighbours: int = NEIGHBOURS, tol: float = CERTIFICATE_TOL,
                    max_rounds: int = MAX_ROUNDS, solver: str = "simplex") -> float:
    """W₂² between the uniform measures on the rows of ``a (n, D)`` and ``b (r·n, D)``.

    Exact (certified to ``tol``, see the module docstring); ``b`` must have a whole
    multiple of ``n`` rows; ``solver``: one of :data:`SPARSE_SOLVERS`.
    """
    return assignment_solve(a, b, neighbours=neighbours, tol=tol, max_rounds=max_rounds,
                            solver=solver)[0]


#: Candidate edges per copy of an atom of μ from a hint (:func:`assignment_solve`).
HINTED = 48


def assignment_solve(a, b, hint=None, neighbours: int = NEIGHBOURS,
                     tol: float = CERTIFICATE_TOL, max_rounds: int = MAX_ROUNDS,
                     solver: str = "simplex") -> tuple[float, np.ndarray | None]:
    """:func:`assignment_cost`, and optimal column potentials v (one per row of ``b``) when
    the solver that answered gives them (the network simplex, dense or sparse), else None.

    ``hint``: such potentials of a similar problem (clouds near these atom by atom, e.g.
    two schemes trained from one start with common random numbers).  Where the routing
    would give the problem to the dense solver, the sparse simplex is first tried on the
    :data:`HINTED` smallest reduced costs of every row under the hint
    (:func:`_hinted_edges`), certified on the whole cost matrix like every sparse solve
    (on trained N = 5000 clouds: about 2 s against 12 s).  A hint changes which exact
    solver answers, never the guarantee: the value is W₂² within the certified gap.
    """
    if solver not in SPARSE_SOLVERS:
        raise ValueError(f"solver must be one of {SPARSE_SOLVERS}, got {solver!r}")
    a = np.ascontiguousarray(a, dtype=np.float64)
    b = np.ascontiguousarray(b, dtype=np.float64)
    n, m = a.shape[0], b.shape[0]
    if m % n:
        raise ValueError(f"b must hold a whole multiple of a's {n} atoms, got {m}")
    if hint is not None:
        hint = np.asarray(hint, dtype=np.float64)
        if hint.shape != (m,) or not np.all(np.isfinite(hint)):
            raise ValueError(f"hint must hold {m} finite column potentials, got shape "
                             f"{hint.shape}")
    r = m // n
    if m <= max(DENSE_UP_TO, 2 * neighbours * r) or r > SPARSE_MAX_COPIES:
        return _dense_solve(a, b)
    # The coupling a_i -> b_{i + t n} (t < r) costs U >= W2^2 >= 0: when U is within the
    # certified tolerance, U is W2^2 to that tolerance (e.g. a cloud on E^G against its
    # symmetrisation, whose near-tied costs would stall the sparse matcher).
    own = float(((np.tile(a, (r, 1)) - b) ** 2).sum(axis=1).mean())
    if own <= 2.0 * tol:
        return own, None
    spacing = mean_nn_sq(a)
    if r > 1 and (own < spacing) == (solver == "lapjvsp"):
        # LAPJVsp: images closer to their own atom than atoms to each other are near-
        # duplicate columns, near-tied costs that stall it. The sparse simplex certifies just
        # those in a few rounds; images farther away (a cloud whose law is nearly invariant,
        # trained from a WI start) need edges to many atoms, round after round, and the dense
        # simplex is faster (trained N = 5000: 8 s against 13 s)
        return _hinted_or_dense(a, b, hint, r, tol, max_rounds)
    if projection_lower_bound(a, b) > FAR_APART * max(spacing, mean_nn_sq(b)):
        # the optimal coupling moves mass farther than the atoms are apart (clouds that
        # gathered around different points): nearest-neighbour candidates cannot certify it
        # and round after round adds edges; the network simplex answers in seconds
        return _hinted_or_dense(a, b, hint, r, tol, max_rounds)
    deadline = time.monotonic() + timeout(m)
    src, dst = _initial_edges(a, b, r, neighbours)
    if solver == "simplex":
        solved = _simplex_rounds(a, b, src, dst, r, tol, max_rounds, deadline)
        return _hinted_or_dense(a, b, hint, r, tol, max_rounds) if solved is None else solved
    value = _lapjvsp_rounds(a, b, src, dst, r, tol, max_rounds, deadline)
    return _dense_solve(a, b) if value is None else (value, None)


def _coarse_hint(a: np.ndarray, b: np.ndarray) -> np.ndarray | None:
    """Column potentials ``(m,)`` of ``a (n, D)`` against ``b (r·n, D)`` from a coarser
    problem: k = n // COARSE_FACTOR atoms of μ drawn at random (a fixed seed: the same
    atoms on every run) against their columns ``i + t·n`` (t < r: the images of an atom in a
    symmetrised cloud, the same atom of the other scheme in a pair), solved exactly by
    :func:`assignment_solve` (coarsened again while k ≥ COARSE_FROM).  Its optimal
    potentials v' reach every column through two c-transforms,

        u_i = min_{j'} C[i, j'] − v'_{j'}  (i sampled),   v_j = min_i C[i, j] − u_i,

    which is what the coarse problem's coupling says about the fine one: the candidate
    edges :func:`_hinted_edges` takes from it.  None below COARSE_FROM atoms, or when the
    coarse solve gives no potentials."""
    n, m = a.shape[0], b.shape[0]
    if n < COARSE_FROM:
        return None
    r, k = m // n, n // COARSE_FACTOR
    rows = np.sort(np.random.default_rng(0).choice(n, k, replace=False))
    cols = (rows[None, :] + n * np.arange(r)[:, None]).ravel()
    _, v_coarse = assignment_solve(a[rows], b[cols])
    if v_coarse is None:
        return None
    v, b_coarse = np.full(m, np.inf), b[cols]
    for s in range(0, k, BLOCK):
        block = a[rows[s : s + BLOCK]]
        u = (cdist(block, b_coarse, "sqeuclidean") - v_coarse).min(axis=1)
        np.minimum(v, (cdist(block, b, "sqeuclidean") - u[:, None]).min(axis=0), out=v)
    return v


def _hints(a, b, hint):
    """The potentials to draw candidate edges from, in turn: the given hint (if any), then
    the coarser problem's (:func:`_coarse_hint`, computed only when asked for)."""
    if hint is not None:
        yield hint
    coarse = _coarse_hint(a, b)
    if coarse is not None:
        yield coarse


def _hinted_or_dense(a, b, hint, r, tol, max_rounds):
    """The sparse simplex from a hint's candidate edges, then (no hint, or no certificate
    from it) from a coarser problem's (:func:`_coarse_hint`), else (no certificate within
    :func:`timeout`) the dense solver."""
    for edges_from in _hints(a, b, hint):
        src, dst = _hinted_edges(a, b, edges_from, HINTED * r)
        deadline = time.monotonic() + timeout(b.shape[0])
        solved = _simplex_rounds(a, b, src, dst, r, tol, max_rounds, deadline)
        if solved is not None:
            return solved
    return _dense_solve(a, b)
