"""Shared fixtures: the paper's setting (C₂ on R², matrix unit) and larger groups.

Under pytest-xdist (``PYTEST_XDIST_WORKER`` set) every worker uses one torch thread, so
``pytest -n 2`` on two cores does not oversubscribe them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

from mfsym.core.groups import FiniteGroup, GroupXY, c2_swap, cyclic_group, symmetric_group
from mfsym.core.units import Unit, make_unit

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)

try:
    from hypothesis import HealthCheck, settings
except ImportError:  # a bare machine (benchmarks/gpu_check.sh) runs only tests that need none
    pass
else:
    # No deadline: a test must never fail because a machine is slow or busy.
    settings.register_profile(
        "mfsym", deadline=None, max_examples=50, suppress_health_check=[HealthCheck.too_slow]
    )
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "mfsym"))


#: xdist groups of slow tests, longest first (the default target is run twice at once)
LONG_GROUPS = ("default_target", "faults_interrupt", "faults_finished")


def pytest_collection_modifyitems(config, items):
    """Long tests first: under ``pytest -n 2`` (``--dist loadgroup``, pyproject.toml) each
    test, or each ``xdist_group`` of tests, goes to the next free worker in this order, so
    the end-to-end runs start at once on both workers and the many short tests even out
    the end.  The groups of :data:`LONG_GROUPS` come first, then the other ``slow`` tests,
    each list in collection order."""
    def rank(item) -> tuple[int, int]:
        if item.get_closest_marker("slow") is None:
            return (2, 0)
        group = item.get_closest_marker("xdist_group")
        if group is None:
            return (1, 0)
        name = group.args[0] if group.args else group.kwargs.get("name", "default")
        return (0, LONG_GROUPS.index(name) if name in LONG_GROUPS else len(LONG_GROUPS))

    items.sort(key=rank)


@dataclass(frozen=True)
class Setting:
    """A unit together with the full group it induces from a group on X and Y."""

    unit: Unit
    gxy: GroupXY
    group: FiniteGroup

    @property
    def label(self) -> str:
        return f"{self.gxy.name}-{self.unit.name}-{self.unit.activation.name}"


def make_setting(gxy: GroupXY, unit: str, activation: str = "sigmoid") -> Setting:
    dim = gxy.x.shape[1]
    u = make_unit(unit, dim, dim, activation)
    return Setting(u, gxy, u.group(gxy))


def rotation_group(k: int) -> GroupXY:
    """C_k acting on X = Y = R² by rotations of angle 2πj/k (not permutations for k > 2)."""
    angles = 2 * np.pi * np.arange(k) / k
    c, s = np.cos(angles), np.sin(angles)
    mats = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)
    return GroupXY(f"R{k}", mats, mats.copy())


#: (group on X and Y, unit) pairs every group-level property is checked on.
GROUP_SETTINGS = {
    "C2-matrix": (c2_swap, "matrix"),
    "C2-uv": (c2_swap, "uv"),
    "C3-matrix": (lambda: cyclic_group(3), "matrix"),
    "C3-uv": (lambda: cyclic_group(3), "uv"),
    "S3-matrix": (lambda: symmetric_group(3), "matrix"),
    "S3-uv": (lambda: symmetric_group(3), "uv"),
    "R3-uv": (lambda: rotation_group(3), "uv"),
}


@pytest.fixture(scope="session")
def c2_matrix() -> Setting:
    """The paper's setting: C₂ = {I, P} on R², σ*(x, z) = sigmoid(z x), M_g z = g z gᵀ."""
    return make_setting(c2_swap(), "matrix", "sigmoid")


@pytest.fixture(scope="session")
def s3_uv() -> Setting:
    """S₃ permuting the coordinates of R³, uv unit with tanh."""
    return make_setting(symmetric_group(3), "uv", "tanh")


@pytest.fixture(scope="session")
def c3_matrix() -> Setting:
    """C₃ shifting the coordinates of R³, 3×3 matrix unit with sigmoid."""
    return make_setting(cyclic_group(3), "matrix", "sigmoid")


@pytest.fixture(scope="session", params=sorted(GROUP_SETTINGS))
def any_setting(request) -> Setting:
    """Each entry of GROUP_SETTINGS in turn."""
    gxy, unit = GROUP_SETTINGS[request.param]
    return make_setting(gxy(), unit, "tanh")


def same_atoms(a: np.ndarray, b: np.ndarray, atol: float = 1e-12) -> bool:
    """True iff the uniform empirical measures on the rows of a and b are equal (up to atol).

    Sort-free: an optimal matching of the atoms (independent of mfsym.measure.transport) must pair
    every atom with one at distance ≤ atol.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return False
    cost = cdist(a, b, "chebyshev")
    rows, cols = linear_sum_assignment(cost)
    return bool(cost[rows, cols].max() <= atol)


def sorted_atoms(a: np.ndarray) -> np.ndarray:
    """Rows of a in lexicographic order (the canonical form of an exact empirical measure)."""
    a = np.asarray(a)
    return a[np.lexsort(a.T[::-1])]


# ---- the default target, run twice from scratch ------------------------------------------
@pytest.fixture(scope="session")
def default_target_runs(tmp_path_factory, request):
    """The two runs of ``pipeline_sandbox.DefaultTargetRuns``, the first with the manuscript
    where LaTeX is installed.  Each run that a collected test asks for (through the two
    fixtures below) starts here, so that both share the machine instead of following each
    other.  Tests using them carry ``xdist_group("default_target")``: one worker runs them
    all, on one pair of runs."""
    from pipeline_sandbox import DefaultTargetRuns

    from mfsym.paper.build import missing_latex_programs

    runs = DefaultTargetRuns(tmp_path_factory.mktemp("default_target"),
                             with_paper=not missing_latex_programs())
    asked = {name for item in request.session.items for name in item.fixturenames}
    runs.start(*(folder for folder, name in ((runs.first, "default_target_run"),
                                             (runs.second, "second_default_target_run"))
                 if name in asked))
    try:
        yield runs
    finally:
        runs.stop()


@pytest.fixture(scope="session")
def default_target_run(default_target_runs):
    """The folder of the first run, finished (with paper/ms.pdf where LaTeX is installed);
    read only."""
    return default_target_runs.result(default_target_runs.first)


@pytest.fixture(scope="session")
def second_default_target_run(default_target_runs):
    """The folder of the second run, finished.  Only ``test_pipeline.py`` reruns jobs
    there, after ``default_target_runs.digests`` recorded what the run wrote."""
    return default_target_runs.result(default_target_runs.second)
