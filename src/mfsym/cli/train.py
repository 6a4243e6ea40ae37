"""``mfsym train``: one run (teacher × scheme × seed at N particles) of a configuration.

The configuration is ``--base`` (the full default configuration) overridden key by key by
``--config`` (a study's file, e.g. ``config/examples/d4.yaml``), as ``snakemake
--configfile`` does; it is checked against the schema and across keys before training.
The run is the one the grid's training job would train for these values (same initial
particles, samples and evaluation inputs); its file is the run dataset of the results
schema (:func:`mfsym.pipeline.runs.stack_dataset`) with its checksum and provenance.

At the end the command prints, for the final cloud ν, RMD(ν, P_E#ν) (distance from the
strongly invariant laws) and RMD(ν, ν^G) (from the weakly invariant ones).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path

from ..core.schemes import INITS, SCHEME_VARIANTS

#: The teachers a run may use (mfsym.core.teachers.TEACHER_KINDS, not imported here so that
#: ``--help`` does not load torch).
TEACHERS = ("arbitrary", "WI", "SI")
HELP = "train one setting of a configuration and write its run file"


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer ≥ 1")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer ≥ 0")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="the study's configuration file (overrides "
                   "--base key by key), e.g. config/examples/d4.yaml")
    p.add_argument("--base", type=Path, default=Path("config.yaml"),
                   help="the full configuration the study's file overrides (default: "
                   "config.yaml)")
    p.add_argument("--schema", type=Path,
                   default=Path("workflow/schemas/config.schema.yaml"),
                   help="the configuration's JSON schema (default: %(default)s)")
    p.add_argument("--n", type=_positive, required=True, help="number of particles N")
    p.add_argument("--scheme", required=True, choices=list(SCHEME_VARIANTS),
                   help="training scheme")
    p.add_argument("--seed", type=_seed, default=0, help="seed (default: 0)")
    p.add_argument("--init", choices=list(INITS), default="SI",
                   help="initialisation (default: SI)")
    p.add_argument("--teacher", choices=list(TEACHERS), default="WI",
                   help="teacher (default: WI)")
    p.add_argument("--T", type=float, default=None,
                   help="mean-field time horizon (default: training.T of the configuration)")
    p.add_argument("--out", type=Path, default=None,
                   help="run file to write (default: <results_dir>/cli/<group>-<unit>_N<N>_"
                   "<init>_<teacher>_<scheme>_s<seed>.nc)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def configuration(args: argparse.Namespace) -> dict:
    """The checked configuration of the command: base, study file, ``--T``."""
    from ..pipeline.config import (
        check_config,
        check_semantics,
        coerce_types,
        load_schema,
        overlay,
        read_config_file,
    )

    for what, path in (("--base", args.base), ("--schema", args.schema),
                       ("--config", args.config)):
        if path is not None and not path.is_file():
            raise FileNotFoundError(f"{what} {str(path)!r}: no such file (run from the "
                                    "repository root, or give the path)")
    config = read_config_file(args.base)
    if args.config is not None:
        config = overlay(config, read_config_file(args.config))
    if args.T is not None:
        config = overlay(config, {"training": {"T": args.T}})
    schema = load_schema(args.schema)
    config = coerce_types(config, schema)
    check_config(config, schema)
    check_semantics(config)
    return config


def default_out(config: Mapping, args: argparse.Namespace, group_name: str) -> Path:
    name = (f"{group_name}-{config['unit']['name']}_N{args.n}_{args.init}_{args.teacher}_"
            f"{args.scheme}_s{args.seed}.nc")
    return Path(config["results_dir"]) / "cli" / name


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..engine.training import RunSpec, train_stack
    from ..measure.transport import rmd_to_projected, rmd_to_symmetrized
    from ..pipeline.config import build_group, build_teachers, build_unit, train_config
    from ..pipeline.runs import stack_dataset
    from ..records.results import write_dataset

    config = configuration(args)
    group = build_group(config["group"], config["unit"])
    unit = build_unit(config["group"], config["unit"])
    teachers = build_teachers(group, [args.teacher], config["data"])
    cfg = train_config(config["training"])
    out = args.out or default_out(config, args, group.name)
    print(f"group {group.name}: |G| = {group.order}, D = {group.dim_z}, dim E^G = "
          f"{group.dim_fixed}; {unit.name} unit ({unit.activation.name}); N = {args.n}, "
          f"{args.scheme}, {args.init} start, {args.teacher} teacher, seed {args.seed}")
    bar = tqdm(total=cfg.total_steps(args.n), unit="step", disable=args.quiet,
               file=sys.stderr, dynamic_ncols=True)

    def progress(step: int, total: int, latest: Mapping) -> None:
        bar.update(step - bar.n)
        if latest:
            bar.set_postfix(loss=f"{latest['loss']:.4g}", dist_EG=f"{latest['dist']:.3g}",
                            refresh=False)

    try:
        result = train_stack(group, unit, teachers, [RunSpec(args.teacher, args.scheme,
                                                             args.seed)],
                             args.n, args.init, cfg, progress=progress)
    finally:
        bar.close()
    final = result.final_particles[0]
    print(f"RMD(nu, P_E#nu) = {rmd_to_projected(final, group.reynolds()):.4g}   "
          f"RMD(nu, nu^G) = {rmd_to_symmetrized(final, group):.4g}   "
          f"population risk = {result.population_risk[0, -1]:.4g}   "
          f"({result.wall_time_s:.1f} s, {result.dtype}, {result.backend})")
    ds = stack_dataset(result, [args.teacher], [args.scheme], [args.seed])
    ds.attrs.update(group=group.name, unit=unit.name, N=int(args.n), init=args.init)
    write_dataset(ds, out, config, f"mfsym train: {group.name}-{unit.name}, N = {args.n}, "
                  f"{args.scheme}, {args.init} start, {args.teacher} teacher, seed "
                  f"{args.seed}")
    print(f"wrote {out}")
    return 0
