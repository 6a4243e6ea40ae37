"""FA over K-point subgroups of a compact group (PAPER.md §11): FA_K against K.

For each initialisation, K and seed, FA_K (feature averaging over the K-point subgroup
G_K: C_K, or D_K for O(2)) trains through the one engine from the seed's start, and its
final cloud ν_K is measured by

* ``rmd_projected`` = RMD(ν_K, (P_E)#ν_K) (closed form): G_K fixes exactly E^G for K ≥ 2,
  so from an SI start it stays at rounding; K = 1 of SO(2) is vanilla;
* ``model_distance``: FA_K's model against the true group average of the same cloud,
  ``‖Φ̂_K − Φ̂_G‖ / ‖Φ̂_G‖`` (RMS over a fixed input sample, :mod:`mfsym.measure.equivariance`),
  with ``Φ̂_G`` estimated by the ``reference_points``-point subgroup;
* ``population_risk``: the FA_K model's Monte-Carlo risk at the end of training.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr

from ..core.compact import CompactGroup
from ..core.teachers import Teacher
from ..core.units import Unit
from ..engine.run_inputs import evaluation_inputs
from ..engine.training import RunSpec, TrainConfig, train_stack
from ..measure.equivariance import group_average, relative_distance
from ..measure.transport import rmd_to_projected
from ..records.results import variable

QUANTITIES = {
    "rmd_projected": "RMD between FA_K's final particles and their projection on E^G",
    "model_distance": "relative RMS distance of FA_K's model to the true group average",
    "population_risk": "population risk of FA_K's model",
}


def _model_distance(unit, cloud, x, quad, ref) -> float:
    return relative_distance(group_average(unit, cloud, x, quad, quad),
                             group_average(unit, cloud, x, ref, ref))


def fa_quadrature_study(
    compact: CompactGroup, unit: Unit, teacher: Teacher, points: Sequence[int],
    reference_points: int, n_particles: int, seeds: Sequence[int], inits: Sequence[str],
    training: TrainConfig, n_eval: int, threads: int | None = None,
) -> xr.Dataset:
    """The study's dataset: the module's quantities over ``(init, K, seed)``."""
    points, seeds = [int(k) for k in points], [int(s) for s in seeds]
    if int(reference_points) <= max(points):
        raise ValueError(f"reference_points = {reference_points!r} must exceed the largest K "
                         f"({max(points)}) to stand for the true group average")
    x = evaluation_inputs(int(n_eval), compact.xy.dim, training.input_std, training.eval_seed)
    ref = compact.xy.quadrature_xy(int(reference_points)).x
    p_e = compact.reynolds()
    out = {name: np.zeros((len(inits), len(points), len(seeds))) for name in QUANTITIES}
    for i, init in enumerate(inits):
        for j, k in enumerate(points):
            group = compact.quadrature(k)
            res = train_stack(
                group, unit, {teacher.name: teacher},
                [RunSpec(teacher.name, "FA", s) for s in seeds], int(n_particles), init,
                training, threads=threads, label=f"FA_K study {init} K={k}",
            )
            for s, cloud in enumerate(res.final_particles):
                out["rmd_projected"][i, j, s] = rmd_to_projected(cloud, p_e)
                out["model_distance"][i, j, s] = _model_distance(unit, cloud, x, group.x, ref)
                out["population_risk"][i, j, s] = res.population_risk[s, -1]
    dims = ("init", "K", "seed")
    data = {name: variable(dims, out[name], long_name) for name, long_name in QUANTITIES.items()}
    coords = {"init": list(inits), "K": points, "seed": seeds}
    attrs = {"group": compact.name, "N": int(n_particles), "teacher": teacher.name,
             "reference_points": int(reference_points), "n_eval": int(n_eval)}
    return xr.Dataset(data, coords=coords, attrs=attrs)
