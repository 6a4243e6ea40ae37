"""How far float32 rounding drives FA off E^G at small N: the measurement behind the
precision policy (``training.dtype: auto``, ``mfsym.engine.training``, "Precision").

In exact arithmetic FA's drift is equivariant, so an SI start stays on E^G at every N.  At
small N the step α/N is large and rounding errors off E^G are amplified step after step.
:func:`fa_rounding_drift` trains FA from the SI start of the paper's setting (C₂ swap,
2×2 sigmoid matrix unit, the App. F teachers) at one N for each teacher, once in float32 and
once in float64, and reports the largest RMD² to the projection on E^G of each.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..core.groups import c2_swap
from ..core.teachers import paper_teachers
from ..core.units import make_unit
from ..engine.training import RunSpec, TrainConfig, train_stack

DTYPES = ("float32", "float64")


def fa_rounding_drift(
    training: Mapping, n_particles: int, seeds: Sequence[int] = (0,)
) -> dict[str, float]:
    """Largest RMD²(ν, P_E#ν) of FA over the paper's teachers and ``seeds`` after the
    horizon of ``training`` (a ``training`` section), SI start: ``{dtype: value}``."""
    unit = make_unit("matrix", 2, 2, "sigmoid")
    group = unit.group(c2_swap())
    teachers = paper_teachers(group)
    runs = [RunSpec(t, "FA", int(s)) for t in sorted(teachers) for s in seeds]
    out = {}
    for dtype in DTYPES:
        cfg = TrainConfig.from_dict({**dict(training), "dtype": dtype, "device": "cpu",
                                     "n_snapshots": 2, "checkpoint_every": 0,
                                     "keep_particle_snapshots": False})
        res = train_stack(group, unit, teachers, runs, int(n_particles), "SI", cfg)
        out[dtype] = float((res.rmd_projected[:, -1] ** 2).max())
    return out
