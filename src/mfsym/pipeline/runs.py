"""One training job of the grid: a stack of runs sharing (init, N) and a block of seeds.

All teachers × schemes × seeds of the block train together through
:func:`mfsym.engine.training.train_stack` and are recorded in one dataset with coordinates
``teacher``, ``scheme``, ``seed``, ``time`` (the nominal mean-field snapshot times, the
same for every N), ``particle`` and ``coord``:

* ``initial_particles``, ``final_particles`` ``(teacher, scheme, seed, particle, coord)``;
* curves ``(teacher, scheme, seed, time)``: ``train_loss``, ``population_risk``,
  ``rmd_projected`` = RMD(ν_t, (P_E)#ν_t) and ``dist_fixed`` = (mean_i ‖θᵢ − P_E θᵢ‖²)^{1/2};
* ``step`` ``(time)``: the step of each snapshot (mean-field time ``step / N``);
* ``particle_snapshots`` ``(teacher, scheme, seed, time, particle, coord)`` when
  ``training.keep_particle_snapshots`` is set;
* with a baseline scheme (``metrics.baseline``): ``baseline_final_particles``
  ``(teacher, seed, particle, coord)`` and ``baseline_population_risk`` ``(teacher, seed)``
  of a second run of that scheme per (teacher, seed), from the same start but with a random
  stream of its own (tag :data:`BASELINE_STREAM`): the floor of the distance between two
  runs at this N that the between-scheme distances are compared with.

Attributes: ``init``, ``N`` and what ran: ``backend`` (the force kernel after any
fallback, e.g. ``native`` or ``eager (<reason>)``), ``dtype`` (the resolved one, float32
or float64, also under ``training.dtype: auto``), ``device``, ``coupling`` and ``baseline``
(the baseline's scheme, "" for none). The wall
time is not recorded here (it would make every rerun's file differ): the job's log and
its benchmark file under ``benchmarks/`` hold it.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from ..core.teachers import read_teachers
from ..engine import checkpoint as ckpt
from ..engine.run_inputs import BASELINE_STREAM, RunSpec
from ..engine.train_config import snapshot_times
from ..engine.training import StackResult, train_stack
from ..records import lineage
from ..records.results import read_dataset, variable, write_dataset
from ..records.source_hash import source_sha256
from .config import build_group, build_unit, train_config
from .data import read_initial

CURVES = {
    "train_loss": ("training loss (mean minibatch loss over the window)", "1"),
    "population_risk": ("population risk on the fixed evaluation sample", "1"),
    "rmd_projected": ("RMD between the particles and their projection on E^G", "1"),
    "dist_fixed": ("root-mean-square distance of the particles to E^G", "1"),
}


#: The modules a training job starts from (``workflow/scripts/train.py`` imports them);
#: what they import, directly or not, is the code the job runs.
TRAINING_ENTRIES = ("pipeline.runs", "records.joblog")


def training_source_sha256() -> str:
    """SHA-256 of the library source a training job runs: the import closure of
    :data:`TRAINING_ENTRIES` with the kernel sources (:func:`mfsym.records.source_hash.
    import_closure`), names included.

    The train rule passes it as a parameter, so Snakemake's between-workflow output cache
    (which hashes the rule's script, parameters and inputs, not the library) never hands
    out a run file trained by other code, and an edit of the engine reruns the training,
    while an edit of a module training never imports (the W2 solver, the figures, the
    paper, the job-log reader) leaves the run files alone.
    """
    return source_sha256(Path(__file__).resolve().parents[1], TRAINING_ENTRIES)


def stack_runs(
    teachers: Sequence[str], schemes: Sequence[str], seeds: Sequence[int],
    baseline: str | None = None,
) -> list[RunSpec]:
    """The runs of one job, teacher-major then scheme then seed; then, with a ``baseline``
    scheme, its second run per (teacher, seed) on the stream :data:`BASELINE_STREAM`."""
    runs = [RunSpec(t, s, int(sd)) for t, s, sd in itertools.product(teachers, schemes, seeds)]
    if baseline:
        runs += [RunSpec(t, baseline, int(sd), stream=BASELINE_STREAM)
                 for t, sd in itertools.product(teachers, seeds)]
    return runs


def stack_dataset(
    result: StackResult, teachers: Sequence[str], schemes: Sequence[str], seeds: Sequence[int],
    baseline: str | None = None,
) -> xr.Dataset:
    """Reshape a :class:`StackResult` of :func:`stack_runs` into the run dataset."""
    shape = (len(teachers), len(schemes), len(seeds))
    if result.runs != stack_runs(teachers, schemes, seeds, baseline):
        raise ValueError("the stack's runs are not in teacher, scheme, seed order")
    cfg = result.config
    runs_dims = ("teacher", "scheme", "seed")
    main = int(np.prod(shape))
    data = {
        name: variable((*runs_dims, "time"),
                       getattr(result, name)[:main].reshape(*shape, -1), *attrs)
        for name, attrs in CURVES.items()
    }
    if baseline:
        twin = (len(teachers), len(seeds))
        data["baseline_final_particles"] = variable(
            ("teacher", "seed", "particle", "coord"),
            result.final_particles[main:].reshape(*twin, *result.final_particles.shape[1:]),
            f"final particles of a second {baseline} run with a random stream of its own",
        )
        data["baseline_population_risk"] = variable(
            ("teacher", "seed"), result.population_risk[main:, -1].reshape(twin),
            f"population risk of the second {baseline} run",
        )
    for name, arr in (("initial_particles", result.initial_particles[:main]),
                      ("final_particles", result.final_particles[:main])):
        data[name] = variable(
            (*runs_dims, "particle", "coord"), arr.reshape(*shape, *arr.shape[1:]),
            name.replace("_", " "),
        )
    if result.particle_snapshots is not None:
        snaps = result.particle_snapshots[:main]
        data["particle_snapshots"] = variable(
            (*runs_dims, "time", "particle", "coord"), snaps.reshape(*shape, *snaps.shape[1:]),
            "particles at the snapshot times",
        )
    data["step"] = variable(("time",), result.steps, "SGD step of the snapshot")
    n, d = result.final_particles.shape[1:]
    coords = {
        "teacher": list(teachers),
        "scheme": list(schemes),
        "seed": [int(s) for s in seeds],
        "time": xr.Variable(
            "time", snapshot_times(cfg.T, cfg.n_snapshots, cfg.snapshot_spacing),
            {"long_name": "nominal mean-field time (step / N)", "units": "1"},
        ),
        "particle": np.arange(n),
        "coord": np.arange(d),
    }
    attrs = {"init": result.init, "N": int(result.n_particles), "backend": result.backend,
             "dtype": result.dtype, "device": result.device,
             "coupling": cfg.coupling, "baseline": baseline or ""}
    return xr.Dataset(data, coords=coords, attrs=attrs)


def train_block(
    setting: Mapping,
    init: str,
    n_particles: int,
    inputs: Mapping[str, xr.Dataset],
    checkpoint_path=None,
    threads: int | None = None,
) -> xr.Dataset:
    """Train every teacher × scheme × seed of one job and return its run dataset.

    ``setting``: the config sections ``group``, ``unit``, ``training``, the ``schemes``
    list and optionally ``baseline`` (the scheme trained a second time on its own stream,
    None for none); ``inputs``: the ``teachers``, ``initial`` and ``eval`` datasets of
    :mod:`mfsym.pipeline.data`.  The seeds are those of the initial particles, which every run of a
    seed starts from.
    """
    group = build_group(setting["group"], setting["unit"])
    unit = build_unit(setting["group"], setting["unit"])
    teachers = read_teachers(inputs["teachers"])
    initial = inputs["initial"]
    if initial.attrs.get("init") != init or int(initial.attrs.get("N", -1)) != n_particles:
        raise ValueError(
            f"initial particles are for init={initial.attrs.get('init')!r}, "
            f"N={initial.attrs.get('N')}; the job trains init={init!r}, N={n_particles}"
        )
    init_particles = read_initial(initial)
    seeds = sorted(init_particles)
    baseline = setting.get("baseline") or None
    if baseline is not None and baseline not in setting["schemes"]:
        raise ValueError(f"baseline scheme {baseline!r} is not among the schemes "
                         f"{list(setting['schemes'])}")
    runs = stack_runs(list(teachers), setting["schemes"], seeds, baseline)
    result = train_stack(
        group, unit, teachers, runs, int(n_particles), init, train_config(setting["training"]),
        init_particles=init_particles, x_eval=inputs["eval"]["x_eval"].values,
        checkpoint_path=checkpoint_path, threads=threads,
        label=f"init={init} N={n_particles} seeds={seeds}",
    )
    return stack_dataset(result, list(teachers), setting["schemes"], seeds, baseline)


# The part of the configuration that determines each input of a training job.
INPUT_SCOPES = {
    "teachers": lineage.TEACHERS, "initial": lineage.INITIAL, "eval": lineage.EVAL_SAMPLE,
}


def train_job(
    setting: Mapping, init: str, n_particles: int, paths: Mapping[str, str], output,
    config: Mapping, checkpoint_path=None, threads: int | None = None,
) -> None:
    """Read the job's inputs (``paths``: teachers, initial, eval), train, write ``output``
    atomically, then delete the checkpoint (it is kept if anything fails, to resume).

    An input written under another ``config`` where it determines that input is refused
    (:class:`~mfsym.records.lineage.ConfigMismatchError`)."""
    inputs = {key: read_dataset(path, config, INPUT_SCOPES[key]) for key, path in paths.items()}
    ds = train_block(setting, init, n_particles, inputs, checkpoint_path, threads)
    write_dataset(ds, output, config, f"training runs, init={init}, N={n_particles}")
    if checkpoint_path is not None:
        ckpt.remove_checkpoint(checkpoint_path)


def read_runs(path) -> xr.Dataset:
    """A run dataset written by :func:`train_job`."""
    return read_dataset(path)
