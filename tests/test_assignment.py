"""The certified sparse assignment against independent exact solvers.

The network simplex of POT (``ot.emd2``, an LP solver on the transport polytope), LAPJV
(``scipy.optimize.linear_sum_assignment``) and a brute force over permutations serve as
references; both sparse solvers (the sparse network simplex and LAPJVsp) are forced through
several rounds of candidate growth with ``neighbours=1`` and far-apart clouds.
"""

from itertools import permutations

import numpy as np
import ot
import pytest
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

import mfsym.measure.assignment as assignment
from mfsym.measure.assignment import assignment_cost


@pytest.fixture(autouse=True)
def sparse_path_for_small_problems(monkeypatch):
    """The sizes here are below the dense cut-off: force the sparse, certified path (for
    any number of copies, and for clouds far apart)."""
    monkeypatch.setattr(assignment, "DENSE_UP_TO", 0)
    monkeypatch.setattr(assignment, "SPARSE_MAX_COPIES", 64)
    monkeypatch.setattr(assignment, "FAR_APART", np.inf)


@pytest.fixture
def no_sparse_matcher(monkeypatch):
    """Fail the test if either sparse solver is called."""
    def no_sparse(*args, **kwargs):
        raise AssertionError("a sparse solver was called")

    monkeypatch.setattr(assignment, "match", no_sparse)
    monkeypatch.setattr(assignment, "_sparse_transport", no_sparse)


@pytest.fixture
def no_dense_solver(monkeypatch):
    """Fail the test if the dense solver answers: the sparse path must certify."""
    def no_dense(*args, **kwargs):
        raise AssertionError("the dense solver was called")

    monkeypatch.setattr(assignment, "_dense_solve", no_dense)


SOLVERS = pytest.mark.parametrize("solver", assignment.SPARSE_SOLVERS)


def emd_w2(a, b):
    cost = cdist(a, b, "sqeuclidean")
    return ot.emd2(np.full(len(a), 1 / len(a)), np.full(len(b), 1 / len(b)), cost,
                   numItermax=10_000_000)


@SOLVERS
@pytest.mark.parametrize("shift", [0.0, 3.0])
@pytest.mark.parametrize("neighbours", [1, 4])
def test_square_matches_network_simplex(shift, neighbours, solver):
    rng = np.random.default_rng(1)
    a = rng.standard_normal((300, 4))
    b = a[rng.permutation(300)] + 0.3 * rng.standard_normal((300, 4)) + shift
    got = assignment_cost(a, b, neighbours=neighbours, solver=solver)
    np.testing.assert_allclose(got, emd_w2(a, b), rtol=1e-12, atol=1e-12)


@SOLVERS
@pytest.mark.parametrize("copies", [2, 3])
def test_multiple_matches_network_simplex(copies, solver):
    """N against r·N atoms: the symmetrised-cloud problem (and a 3-fold one)."""
    rng = np.random.default_rng(2)
    a = 0.5 * rng.standard_normal((200, 4))
    b = np.concatenate([a[:, ::-1] * (k + 1) for k in range(copies)])
    np.testing.assert_allclose(assignment_cost(a, b, neighbours=2, solver=solver), emd_w2(a, b),
                               rtol=1e-12, atol=1e-12)


@SOLVERS
def test_small_case_equals_brute_force_over_permutations(solver):
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((7, 3)), rng.standard_normal((7, 3))
    cost = cdist(a, b, "sqeuclidean")
    best = min(cost[range(7), list(p)].mean() for p in permutations(range(7)))
    np.testing.assert_allclose(assignment_cost(a, b, neighbours=1, solver=solver), best,
                               rtol=1e-12)


def test_exact_duplicates_cost_zero():
    """An invariant cloud against its symmetrisation: every atom has a zero-cost twin."""
    rng = np.random.default_rng(4)
    a = rng.standard_normal((400, 2))
    a = np.concatenate([a, a], axis=1)  # swap-invariant rows (x, y, x, y) ↦ itself
    assert assignment_cost(a, np.concatenate([a, a[:, [2, 3, 0, 1]]])) == 0.0


def far_apart_clouds():
    rng = np.random.default_rng(5)
    a = rng.standard_normal((250, 2))
    b = np.concatenate([rng.standard_normal((125, 2)) - 4, rng.standard_normal((125, 2)) + 4])
    return a, b


def test_candidate_growth_rounds_are_needed(monkeypatch, no_dense_solver):
    """Far-apart clouds defeat the first candidate graph: the certificate must add edges."""
    calls, allowed = [], []
    real = assignment.match

    def counting(data, indices, indptr, m, timeout):
        calls.append(data.size)
        allowed.append(timeout)
        return real(data, indices, indptr, m, timeout)

    monkeypatch.setattr(assignment, "match", counting)
    a, b = far_apart_clouds()
    np.testing.assert_allclose(assignment_cost(a, b, neighbours=1, solver="lapjvsp"),
                               emd_w2(a, b), rtol=1e-12, atol=1e-12)
    assert len(calls) >= 2 and calls[-1] > calls[0]
    # the rounds share one time budget: each matching is allowed what the earlier ones left
    assert allowed[0] <= assignment.timeout(250) and np.all(np.diff(allowed) < 0)


def test_sparse_simplex_grows_its_graph_until_certified(monkeypatch, no_dense_solver):
    """The sparse network simplex on the first graph is not optimal on the full matrix:
    rounds add the violated edges until the potentials are feasible everywhere."""
    edges = []
    real = assignment._sparse_transport

    def counting(a, b, src, dst):
        edges.append(src.size)
        return real(a, b, src, dst)

    monkeypatch.setattr(assignment, "_sparse_transport", counting)
    a, b = far_apart_clouds()
    np.testing.assert_allclose(assignment_cost(a, b, neighbours=1), emd_w2(a, b),
                               rtol=1e-12, atol=1e-12)
    assert len(edges) >= 2 and np.all(np.diff(edges) > 0)


@SOLVERS
def test_falls_back_to_dense_when_rounds_run_out(solver):
    rng = np.random.default_rng(6)
    a, b = rng.standard_normal((120, 2)), rng.standard_normal((120, 2)) + 5
    got = assignment_cost(a, b, neighbours=1, max_rounds=0, solver=solver)
    np.testing.assert_allclose(got, emd_w2(a, b), rtol=1e-12)


def test_sizes_must_be_whole_multiples():
    with pytest.raises(ValueError, match="whole multiple of a's 3 atoms, got 7"):
        assignment_cost(np.zeros((3, 2)), np.zeros((7, 2)))


@SOLVERS
def test_sparse_solver_that_does_not_return_falls_back_to_dense(monkeypatch, solver):
    """A killed (or failed) sparse matching, or a sparse simplex that reports no optimum, is
    answered by the dense exact solver."""
    monkeypatch.setattr(assignment, "match", lambda *args: None)
    monkeypatch.setattr(assignment, "_sparse_transport", lambda *args: None)
    rng = np.random.default_rng(7)
    a, b = rng.standard_normal((150, 3)), rng.standard_normal((300, 3))
    np.testing.assert_allclose(assignment_cost(a, b, solver=solver), emd_w2(a, b), rtol=1e-12)


def test_sparse_matching_process_is_killed_past_its_timeout():
    from mfsym.measure.sparse_matching import match

    # A 1 ms allowance cannot cover starting an interpreter: the child is killed.
    eye = np.arange(4)
    assert match(np.ones(4), eye, np.arange(5), 4, timeout=1e-3) is None
    np.testing.assert_array_equal(match(np.ones(4), eye, np.arange(5), 4, timeout=60), eye)


@SOLVERS
def test_tied_candidate_graph_is_solved_or_answered_densely(solver):
    """Rounded coordinates give many tied costs, where the sparse solver can stall."""
    rng = np.random.default_rng(8)
    a = np.round(rng.standard_normal((295, 2)), 1)
    b = np.round(rng.standard_normal((295, 2)), 1)
    np.testing.assert_allclose(assignment_cost(a, b, neighbours=2, solver=solver), emd_w2(a, b),
                               rtol=1e-12, atol=1e-12)


def test_many_copies_go_to_the_network_simplex_without_the_sparse_solver(
        monkeypatch, no_sparse_matcher):
    """r > SPARSE_MAX_COPIES (an SO(2) orbit of 8 points per atom): tied rows, dense solve."""
    monkeypatch.setattr(assignment, "SPARSE_MAX_COPIES", 2)
    rng = np.random.default_rng(5)
    a = rng.standard_normal((60, 3))
    angles = 2 * np.pi * np.arange(8) / 8
    b = np.concatenate([a * np.array([np.cos(t), np.sin(t), 1.0]) for t in angles])
    np.testing.assert_allclose(assignment_cost(a, b), emd_w2(a, b), rtol=1e-12, atol=1e-12)


def test_cloud_on_eg_against_its_symmetrisation_needs_no_matching(no_sparse_matcher):
    """Near-tied costs (a cloud within 1e-7 of E^G and its swap images): the own-orbit
    pairing already costs less than the tolerance, and it is returned without a matching."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((400, 2))
    a = np.c_[x[:, 0], x[:, 1], x[:, 1], x[:, 0]] + 1e-7 * rng.standard_normal((400, 4))
    b = np.concatenate([a, a[:, ::-1]])
    got = assignment_cost(a, b)
    want = emd_w2(a, b)
    assert 0 <= want <= got <= want + 2 * assignment.CERTIFICATE_TOL


def near_eg_cloud_and_images(seed=7, n=400, off=1e-3):
    """A cloud ``off`` away from E^G of the coordinate swap, and its symmetrisation."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 2))
    a = np.c_[x[:, 0], x[:, 1], x[:, 1], x[:, 0]] + off * rng.standard_normal((n, 4))
    return a, np.concatenate([a, a[:, ::-1]])


def test_cloud_near_eg_goes_to_the_network_simplex(monkeypatch, no_sparse_matcher):
    """Images nearer their own atoms than atoms to each other (a cloud 1e-3 off E^G):
    near-duplicate columns, answered by the dense network simplex, not LAPJVsp."""
    monkeypatch.setattr(assignment, "SPARSE_MAX_COPIES", 2)
    a, b = near_eg_cloud_and_images()
    np.testing.assert_allclose(assignment_cost(a, b, solver="lapjvsp"), emd_w2(a, b),
                               rtol=1e-12, atol=1e-15)


def test_cloud_near_eg_is_certified_by_the_sparse_simplex(monkeypatch, no_dense_solver):
    """The same near-tied problem on the sparse network simplex, which does not stall."""
    monkeypatch.setattr(assignment, "SPARSE_MAX_COPIES", 2)
    for off in (1e-2, 1e-3, 1e-5):
        a, b = near_eg_cloud_and_images(off=off)
        np.testing.assert_allclose(assignment_cost(a, b), emd_w2(a, b), rtol=1e-12,
                                   atol=1e-15)


def test_images_farther_than_the_spacing_go_to_the_dense_simplex(monkeypatch,
                                                                   no_sparse_matcher):
    """A cloud invariant in law but far from E^G against its symmetrisation: the coupling
    spreads over many atoms, the dense simplex answers (the sparse one is never tried)."""
    monkeypatch.setattr(assignment, "SPARSE_MAX_COPIES", 2)
    a, b = near_eg_cloud_and_images(off=0.5)
    np.testing.assert_allclose(assignment_cost(a, b), emd_w2(a, b), rtol=1e-12)


def clustered_cloud(rng, n, centres=5, width=0.02):
    """Atoms gathered in a few tight clusters (as trained clouds of the arbitrary teacher)."""
    where = 0.5 * rng.standard_normal((centres, 4))
    return where[rng.integers(0, centres, n)] + width * rng.standard_normal((n, 4))


def lsa_w2(a, b):
    cost = cdist(a, b, "sqeuclidean")
    rows, cols = linear_sum_assignment(cost)
    return cost[rows, cols].mean()


@pytest.mark.parametrize("noise", [0.0, 1e-6, 1e-3, 3e-2])
def test_near_identity_pairs_match_lapjv(noise, no_dense_solver):
    """Two schemes from a common start with common random numbers end close: the identity
    coupling is optimal or nearly so; the certified value is LAPJV's (and the simplex's)."""
    rng = np.random.default_rng(13)
    a = clustered_cloud(rng, 600)
    b = a + noise * rng.standard_normal(a.shape)
    got = assignment_cost(a, b)
    np.testing.assert_allclose(got, lsa_w2(a, b), rtol=1e-12, atol=1e-16)
    np.testing.assert_allclose(got, emd_w2(a, b), rtol=1e-12, atol=1e-16)


def test_permuted_copy_and_duplicate_atoms_cost_zero(no_dense_solver):
    """Zero-cost edges must stay in the sparse graph; duplicated atoms make ties."""
    rng = np.random.default_rng(14)
    a = np.repeat(clustered_cloud(rng, 150), 4, axis=0)  # every atom four times
    assert assignment_cost(a, a[rng.permutation(len(a))]) == 0.0


def test_degenerate_clouds_match_lapjv():
    """All atoms at one point, or on one line, against a spread cloud (and ties)."""
    rng = np.random.default_rng(15)
    spread = rng.standard_normal((300, 4))
    line = np.outer(np.round(rng.standard_normal(300), 1), [1.0, -1.0, 0.5, 0.0])
    for a in (np.zeros((300, 4)), line):
        np.testing.assert_allclose(assignment_cost(a, spread), lsa_w2(a, spread), rtol=1e-12)
        np.testing.assert_allclose(assignment_cost(spread, a), lsa_w2(spread, a), rtol=1e-12)


@pytest.mark.parametrize("off", [0.3, 1e-2, 1e-4])
def test_clustered_cloud_to_its_symmetrisation_matches_network_simplex(off):
    """The N×2N problem of the metrics job on a clustered cloud off or near E^G."""
    rng = np.random.default_rng(16)
    a = clustered_cloud(rng, 400)
    a = a @ np.diag([1.0, 1.0, off, off])  # (u1, u2, w1, w2): w = 0 is E^G-like
    b = np.concatenate([a, a * np.array([1.0, 1.0, -1.0, -1.0])])
    np.testing.assert_allclose(assignment_cost(a, b), emd_w2(a, b), rtol=1e-12, atol=1e-16)


def test_spent_time_budget_goes_to_the_dense_solver(monkeypatch, no_sparse_matcher):
    monkeypatch.setattr(assignment, "timeout", lambda m: 0.0)
    rng = np.random.default_rng(9)
    a, b = rng.standard_normal((150, 3)), rng.standard_normal((150, 3))
    np.testing.assert_allclose(assignment_cost(a, b), emd_w2(a, b), rtol=1e-12)


@pytest.mark.parametrize("copies", [1, 2])
def test_projection_lower_bound_is_a_lower_bound_and_exact_on_a_line(copies):
    rng = np.random.default_rng(10)
    a = rng.standard_normal((120, 3))
    b = np.concatenate([rng.standard_normal((120, 3)) * (k + 1) + k for k in range(copies)])
    assert assignment.projection_lower_bound(a, b) <= emd_w2(a, b) + 1e-12
    # atoms on one line through the origin: W2 is the one-dimensional W2 along it
    u = np.array([[1.0, 2.0, -2.0]]) / 3.0
    la, lb = rng.standard_normal((120, 1)) * u, (rng.standard_normal((120 * copies, 1)) + 1) * u
    np.testing.assert_allclose(assignment.projection_lower_bound(la, lb), emd_w2(la, lb),
                               rtol=1e-9)


def _far_apart_pair(width=0.05):
    """Two N = 400 clouds gathered around different points: the routing's dense case."""
    rng = np.random.default_rng(11)
    centres = np.array([[0.0, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, -1]])
    a = centres[rng.integers(0, 2, 400)] + width * rng.standard_normal((400, 4))
    b = centres[rng.integers(1, 3, 400)] + width * rng.standard_normal((400, 4))
    return a, b


def test_far_apart_clouds_go_to_the_network_simplex(monkeypatch, no_sparse_matcher):
    """Clouds gathered around different points (as trained clouds of two schemes can be):
    the coupling moves mass far beyond the atoms' spacing, no candidate rounds are tried."""
    monkeypatch.setattr(assignment, "FAR_APART", 1.0)
    a, b = _far_apart_pair(width=0.01)
    np.testing.assert_allclose(assignment_cost(a, b), emd_w2(a, b), rtol=1e-12)


def test_network_simplex_is_rerun_past_its_iteration_cap(monkeypatch):
    """Past its cap the simplex returns a feasible, not an optimal, coupling: never used."""
    rng = np.random.default_rng(12)
    a, b = rng.standard_normal((80, 2)), rng.standard_normal((160, 2))
    monkeypatch.setattr(assignment, "SIMPLEX_ITERATIONS", 3)
    monkeypatch.setattr(assignment, "SIMPLEX_RETRIES", 1)
    with pytest.raises(RuntimeError, match="no optimal transport for a 80 x 160 cost"):
        assignment.dense_assignment_cost(a, b)
    monkeypatch.setattr(assignment, "SIMPLEX_RETRIES", 6)
    np.testing.assert_allclose(assignment.dense_assignment_cost(a, b), emd_w2(a, b),
                               rtol=1e-12)


@pytest.mark.parametrize("copies", [1, 2])
def test_warm_started_dense_simplex_is_exact_and_its_potentials_feasible(monkeypatch, copies):
    """The dense network simplex starts from potentials of a subsampled problem: they are
    dual feasible on the whole matrix, and the optimum does not depend on them."""
    monkeypatch.setattr(assignment, "WARM_FROM", 100)
    monkeypatch.setattr(assignment, "WARM_ROWS", 40)
    rng = np.random.default_rng(17)
    a = clustered_cloud(rng, 300)
    b = np.concatenate([clustered_cloud(rng, 300) + 0.3 for _ in range(copies)])
    cost = cdist(a, b, "sqeuclidean")
    u, v = assignment._warm_potentials(cost)
    assert np.all(u[:, None] + v[None, :] <= cost + 1e-12)
    np.testing.assert_allclose(assignment.dense_assignment_cost(a, b), emd_w2(a, b),
                               rtol=1e-12)
    if copies == 1:
        np.testing.assert_allclose(assignment.dense_assignment_cost(a, b), lsa_w2(a, b),
                                   rtol=1e-12)


def _two_solves(seed, far):
    """Two similar problems (the second's clouds moved by 1e-4 atom by atom), clouds of
    N = 300 in R⁴ gathered around points ``far`` apart (far: the routing's dense cases)."""
    rng = np.random.default_rng(seed)
    centres = far * rng.normal(size=(6, 4))
    a = centres[rng.integers(0, 6, 300)] + 0.1 * rng.normal(size=(300, 4))
    b = centres[rng.integers(0, 6, 300)][::-1] + 0.1 * rng.normal(size=(300, 4)) + far
    move = 1e-4 * rng.normal(size=(2, 300, 4))
    return (a, b), (a + move[0], b + move[1])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_hint_from_a_similar_problem_is_certified_without_the_dense_solver(
        monkeypatch, seed):
    """Far-apart clouds go to the dense solver; with the column potentials of a similar
    problem the sparse simplex certifies instead, to the network simplex's value, and
    returns potentials that are optimal (checked from their c-transform)."""
    monkeypatch.setattr(assignment, "FAR_APART", 1.0)
    (a0, b0), (a1, b1) = _two_solves(seed, far=1.0)
    first, v0 = assignment.assignment_solve(a0, b0)  # dense: the network simplex
    np.testing.assert_allclose(first, emd_w2(a0, b0), rtol=1e-12)
    calls = []
    monkeypatch.setattr(assignment, "_dense_solve", lambda *args: calls.append(1))
    value, v1 = assignment.assignment_solve(a1, b1, hint=v0)
    assert calls == []
    np.testing.assert_allclose(value, emd_w2(a1, b1), rtol=1e-12, atol=1e-12)
    cost = cdist(a1, b1, "sqeuclidean")
    u1 = (cost - v1).min(axis=1)  # dual feasible by construction
    assert abs(u1.mean() + v1.mean() - value) <= 2 * assignment.CERTIFICATE_TOL


def test_a_useless_hint_still_gives_the_exact_value(monkeypatch):
    monkeypatch.setattr(assignment, "FAR_APART", 1.0)
    (a, b), _ = _two_solves(5, far=1.0)
    bad = np.random.default_rng(0).normal(scale=5.0, size=len(b))
    value, _ = assignment.assignment_solve(a, b, hint=bad)
    np.testing.assert_allclose(value, emd_w2(a, b), rtol=1e-12, atol=1e-12)


def test_a_hint_of_the_wrong_size_is_refused():
    a, b = np.zeros((3, 2)), np.ones((6, 2))
    with pytest.raises(ValueError, match="hint must hold 6 finite column potentials"):
        assignment.assignment_solve(a, b, hint=np.zeros(3))


def _dense_sizes(monkeypatch):
    """Record the number of atoms of μ of every dense solve (the solver still answers)."""
    sizes, dense = [], assignment._dense_solve

    def recording(a, b):
        sizes.append(len(a))
        return dense(a, b)

    monkeypatch.setattr(assignment, "_dense_solve", recording)
    return sizes


@pytest.mark.parametrize("case", ["far-apart pair", "images farther than the spacing"])
def test_a_dense_case_is_certified_from_a_coarser_problem(monkeypatch, case):
    """Above COARSE_FROM atoms a problem routed to the dense solver with no hint is solved
    on a quarter of its atoms first (densely: 100 < COARSE_FROM), and the sparse simplex
    from those potentials certifies the whole problem: the network simplex's value, and no
    dense solve of all 400 atoms."""
    monkeypatch.setattr(assignment, "FAR_APART", 1.0)
    monkeypatch.setattr(assignment, "SPARSE_MAX_COPIES", 2)
    monkeypatch.setattr(assignment, "COARSE_FROM", 200)
    a, b = _far_apart_pair() if case == "far-apart pair" else near_eg_cloud_and_images(off=0.5)
    sizes = _dense_sizes(monkeypatch)
    value, v = assignment.assignment_solve(a, b)
    assert sizes == [100]
    np.testing.assert_allclose(value, emd_w2(a, b), rtol=1e-12, atol=1e-14)
    u = (cdist(a, b, "sqeuclidean") - v).min(axis=1)  # dual feasible by construction
    assert abs(u.mean() + v.mean() - value) <= 2 * assignment.CERTIFICATE_TOL


def test_coarse_problems_nest_and_small_ones_stay_dense(monkeypatch):
    """COARSE_FROM = 100: 400 atoms are hinted from 100, those from 25 (solved densely);
    below COARSE_FROM no coarse problem is formed and the dense solver answers."""
    monkeypatch.setattr(assignment, "FAR_APART", 1.0)
    monkeypatch.setattr(assignment, "COARSE_FROM", 100)
    a, b = _far_apart_pair()
    sizes = _dense_sizes(monkeypatch)
    np.testing.assert_allclose(assignment_cost(a, b), emd_w2(a, b), rtol=1e-12, atol=1e-14)
    assert sizes == [25]
    monkeypatch.setattr(assignment, "COARSE_FROM", 401)
    sizes.clear()
    np.testing.assert_allclose(assignment_cost(a, b), emd_w2(a, b), rtol=1e-12, atol=1e-14)
    assert sizes == [400]


def test_sparse_rounds_without_a_certificate_try_the_coarse_problem_before_the_dense(
        monkeypatch):
    """The nearest-neighbour rounds of a problem fail to certify (forced here): the sparse
    simplex from a coarser problem's potentials answers, to the network simplex's value,
    before any dense solve of the whole problem."""
    monkeypatch.setattr(assignment, "COARSE_FROM", 200)
    rounds, failed = assignment._simplex_rounds, []

    def first_fails(a, *args):
        if len(a) == 400 and not failed:
            failed.append(1)
            return None
        return rounds(a, *args)

    coarse, hinted = assignment._coarse_hint, []
    monkeypatch.setattr(assignment, "_simplex_rounds", first_fails)
    monkeypatch.setattr(assignment, "_coarse_hint",
                        lambda a, b: hinted.append(len(a)) or coarse(a, b))
    a, b = _far_apart_pair()
    sizes = _dense_sizes(monkeypatch)
    np.testing.assert_allclose(assignment_cost(a, b), emd_w2(a, b), rtol=1e-12, atol=1e-14)
    assert failed == [1] and hinted[0] == 400 and 400 not in sizes
