"""The Snakemake pipeline: DAGs of the shipped configs, a bad config stopping it before any
job, and a tiny end-to-end run (results, figures, nothing to redo, targeted reruns).

Every run happens in a copy of the workflow in a temporary folder.  The end-to-end checks
read a run of the default target (the second of ``conftest.default_target_runs``, on the
``pipeline_sandbox.SMALL_STUDIES`` configuration), of which the grid is a part, and make
their reruns in its folder.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from pipeline_sandbox import library_env

from mfsym.pipeline.config import grid_of
from mfsym.records.results import read_dataset

REPO = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((REPO / "config.yaml").read_text())
PAPER = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
FIGURES = ["fig_rmd_si_init", "fig_rmd_wi_init", "fig_particles_arbitrary", "fig_particles_wi",
           "fig_particles_si", "fig_loss_curves"]
#: what the workflow reads when it is parsed or run; results and build outputs are not copied
WORKFLOW_FILES = ["Snakefile", "workflow", "config.yaml", "config", "profiles", "paper"]
IGNORE = shutil.ignore_patterns("output", "build", "*.pdf", "__pycache__", "results")


def copy_workflow(dest: Path, with_library: bool = False) -> Path:
    """Copy the workflow (and, optionally, the library under dest/src) to ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=IGNORE)
        elif src.exists():
            shutil.copy2(src, dest / name)
    if with_library:
        shutil.copytree(REPO / "src" / "mfsym", dest / "src" / "mfsym", ignore=IGNORE)
    return dest


def smk(cwd: Path, *args: str, env=None, check=True, timeout=1800) -> str:
    """Run snakemake in ``cwd``; return stdout + stderr (raise with them if it fails)."""
    res = subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=cwd, env=env,
                         capture_output=True, text=True, timeout=timeout, check=False)
    out = res.stdout + res.stderr
    if check and res.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({res.returncode}):\n{out}")
    if not check and res.returncode == 0:
        raise AssertionError(f"snakemake {' '.join(args)} succeeded but should not:\n{out}")
    return out


def job_counts(output: str) -> dict[str, int]:
    """The ``Job stats`` table of a (dry) run: rule → number of jobs."""
    table = output.split("Job stats:")[1].split("Reasons:")[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\S+)\s+(\d+)$", table, re.M)}


def grid_counts(cfg: dict) -> dict[str, int]:
    """Jobs of ``snakemake grid``: data, training, metrics, summary and its figures."""
    jobs = len(grid_of(cfg).jobs())
    return {"teachers": 1, "eval_sample": 1, "initial_particles": jobs, "train": jobs,
            "metrics": jobs, "summary": 1, **{name: 1 for name in FIGURES}}


def expected_counts(cfg: dict) -> dict[str, int]:
    """Jobs of the grid and of the rotation stage."""
    rot = cfg["rotation"]
    rot_jobs = len(rot["inits"]) * len(rot["n_particles"])
    rotation = {"rotation_train": rot_jobs, "rotation_metrics": rot_jobs, "rotation_summary": 1,
                "rotation_quadrature": 1, "fig_fa_quadrature": 1,
                **{f"fig_rmd_{rot['group']['name'].lower()}_{i.lower()}_init": 1
                   for i in rot["inits"]}}
    return {**grid_counts(cfg), **rotation}


# ---- dry runs ---------------------------------------------------------------------------
@pytest.mark.parametrize("configfile", [None, "config/paper.yaml"], ids=["default", "paper"])
def test_dry_run_builds_the_expected_dag(tmp_path, configfile):
    wf = copy_workflow(tmp_path)
    extra = ["--configfile", configfile] if configfile else []
    counts = job_counts(smk(wf, "-n", "--quiet", "rules", *extra))
    cfg = PAPER if configfile else CONFIG
    want = expected_counts(cfg)
    assert {rule: counts.get(rule) for rule in want} == want
    if configfile:
        assert want["train"] == 2 * 7 * 2  # both inits × 7 N × 10 seeds in blocks of 5


def bad_configs() -> dict[str, tuple[dict, list[str]]]:
    """name → (config, fragments the error must contain)."""
    cases = {}

    def case(name, edit, *fragments):
        cfg = copy.deepcopy(CONFIG)
        edit(cfg)
        cases[name] = (cfg, list(fragments))

    case("scheme", lambda c: c.update(schemes=["vanilla", "DAA"]),
         "schemes[1] = 'DAA' is not allowed", "allowed values: vanilla, DA, DA-orbit, FA, EA")
    case("n", lambda c: c.update(n_particles=[10, 0]),
         "n_particles[1] = 0 is too small; it must be ≥ 1")
    case("empty", lambda c: c.update(seeds=[]), "seeds = [] is empty")
    case("alpha", lambda c: c["training"].update(alpha=-50.0),
         "training.alpha = -50.0 is too small; it must be > 0")
    case("typo", lambda c: c["metrics"].update(pairz=[]), "unknown key 'metrics.pairz'",
         "allowed keys under 'metrics': baseline, pairs")
    case("cross", lambda c: c["figures"].update(particles_seed=42),
         "figures.particles_seed = 42 is not in the grid")
    return cases


@pytest.mark.slow
def test_bad_config_stops_before_any_job(tmp_path):
    wf = copy_workflow(tmp_path / "wf")
    for name, (cfg, fragments) in bad_configs().items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        out = smk(wf, "--cores", "1", "--configfile", str(path), check=False)
        for fragment in fragments:
            assert fragment in out, f"{name}: {fragment!r} not in\n{out}"
        assert not (wf / "results").exists()


# ---- end to end -------------------------------------------------------------------------
def tiny_config() -> dict:
    """A tiny grid (the failing-job test's; the end-to-end checks read a shared run)."""
    cfg = copy.deepcopy(CONFIG)
    cfg.update(n_particles=[5, 10], seeds=[0, 1], seeds_per_job=2)
    cfg["training"].update(T=2.0, n_eval=256, n_snapshots=5, checkpoint_every=0)
    cfg["figures"].update(dpi=40)
    return cfg


@pytest.mark.slow
@pytest.mark.xdist_group("default_target")
def test_tiny_pipeline_end_to_end(default_target_runs, second_default_target_run, tmp_path):
    """The checks of one finished run (shared with the reproducibility test, so parallel
    workers never repeat it), then reruns in its folder.

    The run has a private copy of the library, so that editing a figure module there does
    not touch the installed package.
    """
    wf, cfg = second_default_target_run, default_target_runs.config
    check_logs(wf, cfg, default_target_runs.log(wf).read_text())
    check_summary(wf, cfg)
    check_files(wf)
    env = library_env(wf)
    check_grid_dag(wf, env, cfg)
    check_report(wf, env, tmp_path / "report.zip")
    check_reruns(wf, env, cfg)


def check_summary(wf: Path, cfg: dict) -> None:
    ds = read_dataset(wf / "results" / "summary.nc")
    assert cfg["n_particles"] == [6, 12] and cfg["training"]["n_snapshots"] == 4
    assert dict(ds.sizes) == {"init": 2, "N": 2, "teacher": 3, "scheme": len(cfg["schemes"]),
                              "seed": 2, "pair": len(cfg["metrics"]["pairs"]), "time": 4}
    assert list(ds["scheme"].values) == cfg["schemes"]
    assert list(ds["pair"].values) == cfg["metrics"]["pairs"]
    for name in ("rmd_projected", "rmd_symmetrized", "population_risk"):
        assert ds[name].dims == ("init", "N", "teacher", "scheme", "seed")
    assert ds["rmd_between"].dims == ("init", "N", "teacher", "pair", "seed")
    assert ds["risk_curve"].dims == ("init", "N", "teacher", "scheme", "seed", "time")
    for var in ds.data_vars.values():
        assert var.attrs["long_name"]
        if var.dtype.kind == "f":
            assert "units" in var.attrs and np.isfinite(var.values).all(), var.name
    # what trained each cell: the configuration's kernel choice, after any fallback
    asked = cfg["training"]["dtype"]
    allowed = {"float32", "float64"} if asked == "auto" else {asked}
    assert set(map(str, np.unique(ds["training_dtype"].values))) <= allowed
    assert all(str(b) for b in ds["training_backend"].values.ravel())
    assert ds.attrs["Conventions"].startswith("CF")
    assert yaml.safe_load(ds.attrs["config_json"])["n_particles"] == [6, 12]
    assert len(ds.attrs["config_sha256"]) == 64
    assert "torch==" in ds.attrs["package_versions"] and ds.attrs["git_commit"]
    si = ds.sel(init="SI")
    # EA is built on E^G: exactly SI; free training with the arbitrary teacher leaves E^G
    assert float(si["rmd_projected"].sel(scheme="EA").max()) < 1e-5
    assert float(si["rmd_projected"].sel(scheme="vanilla", teacher="arbitrary").min()) > 0.05
    check_rmd_between_independently(wf, ds)


def check_rmd_between_independently(wf: Path, summary) -> None:
    """Every RMD between two schemes in ``summary.nc`` (SI start, smallest N) equals the one
    recomputed from the run file's final clouds with POT's network simplex, an exact
    solver independent of the pipeline's assignment: RMD² = W₂² / (2E‖a‖² + 2E‖b‖²)."""
    import ot

    n = int(summary["N"].values[0])
    runs = read_dataset(next((wf / "results" / "runs" / "SI" / f"N{n}").glob("*.nc")))
    final = runs["final_particles"]
    uniform = np.full(n, 1.0 / n)
    for pair in summary["pair"].values:
        a_name, b_name = str(pair).split("-")
        for teacher in runs["teacher"].values:
            for seed in runs["seed"].values:
                a = final.sel(teacher=teacher, scheme=a_name, seed=seed).values
                b = final.sel(teacher=teacher, scheme=b_name, seed=seed).values
                cost = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
                w2 = ot.emd2(uniform, uniform, cost)
                m2 = 2 * (a**2).sum(1).mean() + 2 * (b**2).sum(1).mean()
                got = float(summary["rmd_between"].sel(init="SI", N=n, teacher=teacher,
                                                       pair=pair, seed=seed))
                assert np.isclose(got, np.sqrt(w2 / m2), rtol=1e-6, atol=1e-9), (
                    pair, teacher, seed, got, np.sqrt(w2 / m2))


def check_files(wf: Path) -> None:
    for name in FIGURES:
        for ext in ("pdf", "png"):
            path = wf / "results" / "figures" / f"{name}.{ext}"
            assert path.stat().st_size > 1000, path
    # a cached rule may not have a benchmark file: training's time is in its log
    assert list((wf / "results" / "benchmarks" / "metrics").rglob("*.tsv"))
    assert all(re.search(r"done train .* in [0-9.]+ s", p.read_text())
               for p in (wf / "results" / "logs" / "train").rglob("*.log"))
    assert list((wf / "results" / "runs").rglob("*.nc"))
    assert not list((wf / "results").rglob("*.tmp"))
    assert not list((wf / "results").rglob("*.npz"))  # checkpoints are gone after success


def check_logs(wf: Path, cfg: dict, run_log: str) -> None:
    """One log per job that ran (the target rule ``all`` has none), each holding what its
    job did, start to end; the grid's rules ran the jobs ``snakemake grid`` needs."""
    logs = sorted(p for p in (wf / "results" / "logs").rglob("*") if p.is_file())
    finished = re.findall(r"^Finished jobid: \d+ \(Rule: (\w+)\)$", run_log, re.M)
    ran = [rule for rule in finished if rule != "all"]
    assert len(ran) == len(finished) - 1, finished
    assert len(logs) == len(ran), [str(p.relative_to(wf)) for p in logs]
    grid = grid_counts(cfg)
    assert {rule: ran.count(rule) for rule in grid} == grid
    for path in logs:
        text = path.read_text()
        lines = text.splitlines()
        assert lines, f"{path} is empty"
        assert " start " in lines[0] and "(mfsym " in lines[0], (path, lines[0])
        assert re.search(r" done \S+.* in [0-9.]+ s$", lines[-1]), (path, lines[-1])
        assert "Traceback" not in text, (path, text)


def check_grid_dag(wf: Path, env, cfg: dict) -> None:
    """From scratch, ``snakemake grid`` runs exactly the grid's jobs."""
    out = smk(wf, "grid", "-n", "--forceall", "--quiet", "rules", env=env)
    counts = {k: v for k, v in job_counts(out).items() if k not in ("grid", "total")}
    assert counts == grid_counts(cfg), counts


def check_report(wf: Path, env, path: Path) -> None:
    smk(wf, "grid", "--report", str(path), env=env)
    names = zipfile.ZipFile(path).namelist()
    for name in FIGURES:
        assert any(n.endswith(f"{name}.png") for n in names), names


def check_reruns(wf: Path, env, cfg: dict) -> None:
    assert "Nothing to be done" in smk(wf, "--cores", "2", "grid", env=env)
    # editing a plotting module reruns only the figures drawn by it
    module = wf / "src" / "mfsym" / "figures" / "rmd.py"
    module.write_text(module.read_text() + "\n# edited\n")
    assert set(planned(wf, env, cfg, lambda c: None)) == {"fig_rmd_si_init", "fig_rmd_wi_init"}
    smk(wf, "--cores", "2", "grid", env=env)
    # a figure setting reruns the figures only; a training hyperparameter the whole chain
    assert set(planned(wf, env, cfg, lambda c: c["figures"].update(dpi=41))) == set(FIGURES)
    counts = planned(wf, env, cfg, lambda c: c["training"].update(alpha=40.0))
    assert counts["train"] == 2 * 2 and counts["metrics"] == 4 and counts["summary"] == 1
    assert "teachers" not in counts and "initial_particles" not in counts


@pytest.mark.slow
def test_a_failing_job_writes_its_traceback_to_its_log(tmp_path):
    """A figure job whose input is not a dataset fails, and its log says where and why."""
    wf = copy_workflow(tmp_path / "wf")
    (wf / "config.yaml").write_text(yaml.safe_dump(tiny_config(), sort_keys=False))
    (wf / "results").mkdir()
    (wf / "results" / "heuristic.nc").write_text("not a netCDF file\n")
    out = smk(wf, "results/figures/fig_heuristic.pdf", "--cores", "1",
              "--allowed-rules", "fig_heuristic", check=False)  # heuristic.nc is a source
    assert "Error in rule fig_heuristic" in out, out[-3000:]
    log = (wf / "results" / "logs" / "figures" / "fig_heuristic.log").read_text()
    assert re.search(r"^\S+ \S+ INFO \S+: start fig_heuristic \(mfsym ", log, re.M), log
    assert "inputs: results/heuristic.nc" in log
    assert re.search(r"ERROR \S+: failed fig_heuristic after [0-9.]+ s$", log, re.M), log
    assert "Traceback (most recent call last):" in log
    assert re.search(r'figures/heuristic\.py", line \d+, in heuristic_job$', log, re.M), log
    assert re.match(r"[\w.]+: .*heuristic\.nc", log.splitlines()[-1]), log  # what was raised
    assert " done " not in log
    assert not list((wf / "results" / "figures").glob("fig_heuristic.*"))


def planned(wf: Path, env, cfg: dict, edit) -> dict[str, int]:
    """Jobs a dry run plans after ``edit`` of the run's config (its keys sorted, which
    alone must change nothing), the target rule left out."""
    cfg = copy.deepcopy(cfg)
    edit(cfg)
    path = wf / "edited.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = smk(wf, "grid", "-n", "--quiet", "rules", "--configfile", str(path), env=env)
    counts = job_counts(out)
    return {k: v for k, v in counts.items() if k not in ("grid", "total")}
