"""Bad configurations are refused before any job, naming the key, the value and what is
allowed; command-line values reach the checks with their schema types; the folders the
pipeline wipes or fills are never the checkout's own."""

from __future__ import annotations

import copy
import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml
from pipeline_sandbox import repo_config, sandbox, snakemake
from snakemake.cli import parse_config

from mfsym.paper import build
from mfsym.pipeline.config import (
    ConfigError,
    check_all,
    coerce_types,
    load_schema,
    read_config_file,
)
from mfsym.pipeline.output_folders import SOURCE_FOLDERS, path_problems
from mfsym.pipeline.study_checks import STUDY_CHECKS

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = load_schema(ROOT / "workflow" / "schemas" / "config.schema.yaml")


@pytest.fixture()
def config() -> dict:
    return copy.deepcopy(repo_config())


def refusal(config: dict, root=ROOT) -> str:
    with pytest.raises(ConfigError) as err:
        check_all(config, SCHEMA, root, checks=STUDY_CHECKS)
    return str(err.value)


def set_key(config: dict, dotted: str, value) -> None:
    """Set ``a.b[1].c`` in ``config``."""
    parts = [int(p) if p.isdigit() else p for p in re.findall(r"[^.\[\]]+", dotted)]
    node = config
    for part in parts[:-1]:
        node = node.setdefault(part, {}) if isinstance(part, str) else node[part]
    node[parts[-1]] = value


# ---------------------------------------------------------------------------------------
# every section: bad values refused, with the key, the value and what is allowed
# ---------------------------------------------------------------------------------------
#: (key set, bad value, key named in the message, what is allowed)
BAD = [
    ("results_dir", ".", "results_dir", "a folder of its own"),
    ("results_dir", "/", "results_dir", "not the repository root or a folder above it"),
    ("results_dir", "src", "results_dir", "not a source folder"),
    ("results_dir", "../..", "results_dir", "not the repository root"),
    ("results_dir", "workflow/out", "results_dir", "not a source folder"),
    ("results_dir", "", "results_dir", "at least 1 character"),
    ("paper.build_dir", ".", "paper.build_dir", "a staging folder of its own"),
    ("paper.build_dir", "src", "paper.build_dir", "not a source folder"),
    ("paper.build_dir", "paper", "paper.build_dir", "not a source folder"),
    ("paper.build_dir", "results", "paper.build_dir", "not results_dir"),
    ("paper.build_dir", "results/staging", "paper.build_dir", "not results_dir"),
    ("paper.build_dir", "config", "paper.build_dir", "a staging folder of its own"),
    ("paper.build_dir", "tests", "paper.build_dir", "a staging folder of its own"),
    ("paper.build_dir", "..", "paper.build_dir", "not the repository root"),
    ("paper.digits", 0, "paper.digits", "≥ 1"),
    ("paper.criteria.rounding_ratio_tol", 0.5, "paper.criteria.rounding_ratio_tol", "≥ 1"),
    ("saddle.delta", 0, "saddle.delta", "> 0"),
    ("saddle.n_particles", [20], "saddle.n_particles", "at least 2 value"),
    ("saddle.seeds", [0], "saddle.seeds", "at least 2 value"),
    ("paper.latex_timeout_s", -5, "paper.latex_timeout_s", "> 0"),
    ("paper.criteria.angle_max_deg", 120, "paper.criteria.angle_max_deg", "≤ 90"),
    ("paper.criteria.decay_slope_max", 0.5, "paper.criteria.decay_slope_max", "≤ 0"),
    ("group.name", "C3", "group.name", "C2, cyclic, symmetric"),
    ("group.dim", 0, "group.dim", "≥ 1"),
    ("group.dim", "two", "group.dim", "expected integer"),
    ("unit.name", "conv", "unit.name", "matrix, uv"),
    ("unit.activation", "softmax", "unit.activation", "sigmoid, tanh, relu"),
    ("teachers", [], "teachers", "at least 1 value"),
    ("schemes", ["vanilla", "DAA"], "schemes[1]", "vanilla, DA, DA-orbit, FA, EA"),
    ("inits", ["XI"], "inits[0]", "SI, WI"),
    ("n_particles", [10, 0], "n_particles[1]", "≥ 1"),
    ("n_particles", "many", "n_particles", "expected array"),
    ("n_particles", [10, 10**8], "n_particles[1]", "at most 33554432 (N ≤ 8388608 here)"),
    ("seeds", [-1], "seeds[0]", "≥ 0"),
    ("seeds_per_job", 0, "seeds_per_job", "≥ 1"),
    ("data.teacher_source", "book", "data.teacher_source", "auto, paper, random"),
    ("data.teacher_particles", 0, "data.teacher_particles", "≥ 1"),
    ("data.teacher_scale", 0, "data.teacher_scale", "> 0"),
    ("data.teacher_seed", -3, "data.teacher_seed", "≥ 0"),
    ("training.alpha", -1.0, "training.alpha", "> 0"),
    ("training.T", "abc", "training.T", "expected number"),
    ("training.T", 0.05, "training.T", "T ≥ 1/N"),  # N = 10: no SGD step at all
    ("deep.seeds", [], "deep.seeds", "at least 1 value"),
    ("deep.mlp.n_particles", [8, 0], "deep.mlp.n_particles[1]", "≥ 1"),
    ("rotation.n_particles", [20, 0], "rotation.n_particles[1]", "≥ 1"),
    ("rotation.group.quadrature_points", 0, "rotation.group.quadrature_points", "≥ 1"),
    ("training.batch_size", 2.5, "training.batch_size", "expected integer"),
    ("training.dtype", "float16", "training.dtype", "float32, float64"),
    ("training.device", "gpu", "training.device", "auto|cpu|cuda"),
    ("training.n_snapshots", 1, "training.n_snapshots", "≥ 2"),
    ("training.keep_particle_snapshots", "maybe", "training.keep_particle_snapshots",
     "expected boolean"),
    ("training.backend", "fortran", "training.backend", "auto"),
    ("metrics.pairs", ["vanilla-XX"], "metrics.pairs[0]", "vanilla|DA|DA-orbit|FA|EA"),
    ("figures.dpi", 0, "figures.dpi", "≥ 1"),
    ("figures.context", "book", "figures.context", "paper, notebook, talk, poster"),
    ("figures.quantity", "RMD3", "figures.quantity", "RMD, RMD2"),
    ("figures.particles_N", 7, "figures.particles_N", "from n_particles"),
    ("figures.particles_seed", 99, "figures.particles_seed", "from seeds"),
    ("figures.log_floor", 0, "figures.log_floor", "> 0"),
    ("resources.train.threads", 0, "resources.train.threads", "≥ 1"),
    ("resources.metrics.mem_mb", -5, "resources.metrics.mem_mb", "≥ 1"),
    ("resources.figures.runtime", "long", "resources.figures.runtime", "expected integer"),
    ("resources.train.gpus", -1, "resources.train.gpus", "≥ 0"),
    ("heuristic.N", 0, "heuristic.N", "≥ 1"),
    ("heuristic.thresholds", 1.5, "heuristic.thresholds", "≤ 1"),
    ("heuristic.tolerance", 0, "heuristic.tolerance", "> 0"),
    ("heuristic.criterion", "median", "heuristic.criterion", "relative_singular_value"),
    ("heuristic.max_steps", 0, "heuristic.max_steps", "≥ 1"),
    ("heuristic.settings[0].name", "C2 matrix", "heuristic.settings[0].name", "A-Za-z0-9_-"),
    ("heuristic.settings[0].teacher", "arbitrary", "heuristic.settings[0].teacher", "WI, SI"),
    ("heuristic.training.T", -4.0, "heuristic.training.T", "> 0"),
    ("noether.n_particles", 0, "noether.n_particles", "≥ 1"),
    ("noether.device", "tpu", "noether.device", "auto|cpu|cuda"),
    ("noether.group", "D4", "noether.group", "C2, cyclic, symmetric"),
    ("noether.drift.langevin_betas", [1e-3], "noether.drift.langevin_betas",
     "at least 2 value"),
    ("noether.drift.etas", [0.01], "noether.drift.etas", "at least 2 value"),
    ("noether.drift.unit", "matrix", "noether.drift.unit", "uv"),
    ("noether.invariance.n_snapshots", 1, "noether.invariance.n_snapshots", "≥ 2"),
    ("noether.attraction.mode", "batch", "noether.attraction.mode", "online, full_batch"),
    ("noether.balance.etas", [0.01], "noether.balance.etas", "at least 2 value"),
    ("noether.balance.resnet_depth", 1, "noether.balance.resnet_depth", "≥ 2"),
    ("noether.momentum.activation", "relu", "noether.momentum.activation", "sigmoid, tanh"),
    ("noether.momentum.shown_points", 5, "noether.momentum.shown_points", "one of orbit_points"),
    ("noether.tangent.n_particles", [16, 33], "noether.tangent.n_particles", "even numbers"),
    ("noether.tangent.paired_start", "yes", "noether.tangent.paired_start", "expected boolean"),
]


def test_the_table_covers_every_section():
    sections = {key.split(".")[0].split("[")[0] for key, *_ in BAD}
    assert sections >= set(repo_config()), set(repo_config()) - sections
    assert len(BAD) >= 40


@pytest.mark.parametrize(("key", "value", "named", "allowed"), BAD)
def test_bad_value_is_refused_naming_key_value_and_allowed(config, key, value, named, allowed):
    set_key(config, key, value)
    msg = refusal(config)
    line = next((ln for ln in msg.splitlines() if ln.strip().startswith(named)), None)
    assert line is not None, msg
    index = re.search(r"\[(\d+)\]$", named)
    shown = value[int(index.group(1))] if index and isinstance(value, list) else value
    assert f"{named} = {shown!r}" in line, line
    assert allowed in line, line


# ---------------------------------------------------------------------------------------
# output folders: checked in a throwaway repository, never the real checkout
# ---------------------------------------------------------------------------------------
@pytest.fixture()
def fake_repo(tmp_path) -> Path:
    """A git repository with the checkout's layout and a tracked file outside it."""
    repo = tmp_path / "repo"
    for rel in ("src/mfsym/__init__.py", "paper/ms.tex", "workflow/rules/a.smk",
                "config/paper.yaml", "tests/test_a.py", "docs/notes.md", "Snakefile"):
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text("x\n")
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "add", "."], check=True)
    return repo


@pytest.mark.parametrize("value", [".", "..", "/", "src", "paper", "workflow", "config",
                                   "tests", "src/mfsym", "docs", "results", "results/tex"])
def test_build_dir_refused_in_a_fake_repo(config, fake_repo, value):
    config["results_dir"] = "results"
    config["paper"]["build_dir"] = value
    problems = path_problems(config, SCHEMA, fake_repo)
    assert len(problems) == 1 and problems[0].startswith(f"paper.build_dir = {value!r} ")
    assert "allowed: a staging folder of its own" in problems[0]


@pytest.mark.parametrize("value", [".", "..", "/", "src", "paper/output", "docs", "tests/out",
                                   "~/../src/zz", "~", "~/results"])
def test_results_dir_refused_in_a_fake_repo(config, fake_repo, value):
    config["results_dir"] = value
    config["paper"]["build_dir"] = "staging"
    problems = path_problems(config, SCHEMA, fake_repo)
    assert problems and problems[0].startswith(f"results_dir = {value!r} ")
    assert "allowed: a folder of its own" in problems[0]


@pytest.mark.parametrize("key", ["results_dir", "paper.build_dir"])
def test_a_folder_starting_with_a_tilde_is_refused_not_expanded(config, fake_repo, key):
    """Snakemake takes '~/../src/zz' literally (a folder named '~' in the working folder):
    results landed inside the checkout's src/ while the check had expanded '~'."""
    config["results_dir"], config["paper"]["build_dir"] = "results", "staging"
    section, _, name = key.rpartition(".")
    (config[section] if section else config)[name] = "~/../src/zz"
    problems = path_problems(config, SCHEMA, fake_repo)
    assert len(problems) == 1 and problems[0].startswith(f"{key} = '~/../src/zz' starts with")
    assert "does not expand" in problems[0]


def test_dedicated_folders_pass_in_a_fake_repo(config, fake_repo, tmp_path):
    for results, staging in (("results", "paper/build"), ("out/r", "out/b"),
                             (str(tmp_path / "elsewhere"), "../staging")):
        config["results_dir"], config["paper"]["build_dir"] = results, staging
        assert path_problems(config, SCHEMA, fake_repo) == []
    assert set(SOURCE_FOLDERS) >= {"src", "paper", "workflow", "config", "tests"}


def test_build_dir_made_by_the_builder_passes_a_foreign_one_does_not(config, fake_repo):
    staging = fake_repo / "paper" / "build"
    staging.mkdir()
    (staging / "stale.aux").write_text("old")
    config["results_dir"] = "results"
    config["paper"]["build_dir"] = "paper/build"
    [problem] = path_problems(config, SCHEMA, fake_repo)
    assert "did not create" in problem and build.STAGING_MARKER in problem
    (staging / build.STAGING_MARKER).write_text("")
    assert path_problems(config, SCHEMA, fake_repo) == []


def test_builder_never_wipes_a_folder_without_its_marker(tmp_path):
    tex = tmp_path / "ms.tex"
    tex.write_text("\\documentclass{article}\n")
    precious = tmp_path / "checkout"
    (precious / "src").mkdir(parents=True)
    (precious / "src" / "code.py").write_text("keep me")
    with pytest.raises(build.UnsafeBuildDir, match="refusing to wipe"):
        build._stage(precious, tex, [], [])
    assert (precious / "src" / "code.py").read_text() == "keep me"
    # a folder the builder made is emptied of stale files and marked again
    staging = tmp_path / "staging"
    build._stage(staging, tex, [], [])
    assert (staging / build.STAGING_MARKER).is_file() and (staging / "ms.tex").is_file()
    (staging / "stale.aux").write_text("old")
    build._stage(staging, tex, [], [])
    assert not (staging / "stale.aux").exists() and (staging / "ms.tex").is_file()
    assert build.staging_refusal(tex) == "is a file, not a folder"


# ---------------------------------------------------------------------------------------
# values from --config arrive as strings: read as their schema types
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", list(repo_config()))
def test_every_top_level_key_survives_the_command_line(key):
    default = repo_config()[key]
    parsed = parse_config([f"{key}={json.dumps(default)}"])
    assert coerce_types(parsed, SCHEMA) == {key: default}


@pytest.mark.parametrize(
    ("arg", "key", "value"),
    [("training={T: 5}", ("training", "T"), 5),
     ("n_particles=[10,100]", ("n_particles",), [10, 100]),
     ("figures={particles_N: null}", ("figures", "particles_N"), None),
     ("training={keep_particle_snapshots: true}", ("training", "keep_particle_snapshots"), True),
     ("heuristic={thresholds: 0.1}", ("heuristic", "thresholds"), 0.1),
     ("heuristic={thresholds: '[0.1, 0.05]'}", ("heuristic", "thresholds"), [0.1, 0.05]),
     ("noether={drift: {langevin_betas: [1e-5, 1e-4]}}", ("noether", "drift", "langevin_betas"),
      [1e-5, 1e-4])],
)
def test_command_line_strings_read_as_schema_types(arg, key, value):
    got = coerce_types(parse_config([arg]), SCHEMA)
    for part in key:
        got = got[part]
    assert got == value and type(got) is type(value)


def test_unreadable_command_line_value_is_named_with_its_type(config):
    over = coerce_types(parse_config(["training={T: five}"]), SCHEMA)
    config["training"].update(over["training"])
    assert "training.T = 'five' has the wrong type; expected number" in refusal(config)


def test_strings_stay_strings_where_the_schema_wants_them():
    parsed = parse_config(["results_dir=2024", "group={name: C2, dim: 2}"])
    assert coerce_types(parsed, SCHEMA) == {"results_dir": "2024",
                                            "group": {"name": "C2", "dim": 2}}


# ---------------------------------------------------------------------------------------
# YAML syntax errors name the file and the line
# ---------------------------------------------------------------------------------------
BROKEN_YAML = "results_dir: results\ngroup: {name: C2\n  dim: 2\n"


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN_YAML)
    with pytest.raises(ConfigError, match=r"broken\.yaml'?, line 3, column \d+: not valid YAML"):
        read_config_file(path)
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="keys at its top level"):
        read_config_file(path)


# ---------------------------------------------------------------------------------------
# through snakemake: no job starts on a bad configuration; good command lines pass
# ---------------------------------------------------------------------------------------
def output_of(res) -> str:
    return res.stdout + res.stderr


@pytest.fixture(scope="module")
def workflow_copy(tmp_path_factory) -> Path:
    return sandbox(tmp_path_factory.mktemp("wf"), repo_config())


@pytest.mark.slow
@pytest.mark.parametrize(
    ("arg", "named"),
    [("results_dir=.", "results_dir = '.' is the repository root"),
     ("paper={build_dir: src}", "paper.build_dir = 'src' is the source folder 'src'"),
     ("training={T: abc}", "training.T = 'abc' has the wrong type; expected number"),
     ("noether={drift: {langevin_betas: [0.001]}}",
      "noether.drift.langevin_betas = [0.001] is empty or too short; it needs at least 2"),
     ("n_particles=[10,0]", "n_particles[1] = 0 is too small; it must be ≥ 1")],
)
def test_snakemake_refuses_before_any_job(workflow_copy, arg, named):
    res = snakemake(workflow_copy, "-n", "--config", arg, timeout=300, check=False)
    out = output_of(res)
    assert res.returncode != 0
    assert named in out, out[-3000:]
    assert "Building DAG of jobs" not in out
    assert not (workflow_copy / "results").exists()


@pytest.mark.slow
def test_every_top_level_key_from_the_command_line_is_accepted(workflow_copy):
    args = [f"{k}={json.dumps(v)}" for k, v in repo_config().items()]
    res = snakemake(workflow_copy, "-n", "--quiet", "--config", *args, timeout=300, check=False)
    assert res.returncode == 0, output_of(res)[-3000:]


def readme_config_commands() -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    return [shlex.split(line.strip())[1:] for line in text.splitlines()
            if line.strip().startswith("snakemake ") and "--config " in line]


@pytest.mark.slow
def test_readme_command_lines_with_config_pass_a_dry_run(workflow_copy):
    commands = readme_config_commands()
    assert commands, "the README shows a --config command line"
    for argv in commands:
        res = snakemake(workflow_copy, "-n", "--quiet", *argv, timeout=300, check=False)
        assert res.returncode == 0, (argv, output_of(res)[-3000:])


@pytest.mark.slow
def test_broken_config_yaml_is_named_with_its_line(tmp_path):
    wf = sandbox(tmp_path / "wf", repo_config())
    (wf / "config.yaml").write_text(BROKEN_YAML)
    out = output_of(snakemake(wf, "-n", timeout=300, check=False))
    assert "configuration file 'config.yaml', line 3" in out, out[-3000:]


@pytest.mark.slow
def test_broken_configfile_is_refused_before_any_job(workflow_copy, tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text(BROKEN_YAML)
    res = snakemake(workflow_copy, "-n", "--verbose", "--configfile", str(broken), timeout=300,
                    check=False)
    out = output_of(res)
    assert res.returncode != 0 and "Building DAG of jobs" not in out
    assert f'in "{broken}", line 3' in out, out[-3000:]


def test_shipped_configurations_pass_every_check():
    for name in ("config.yaml", "config/paper.yaml"):
        check_all(yaml.safe_load((ROOT / name).read_text()), SCHEMA, ROOT)


def test_the_shipped_size_overrides_merge_onto_the_paper_configuration():
    """``config/paper-3.4h-sizes.yaml`` on top of ``config/paper.yaml`` (Snakemake merges
    configuration files key by key) changes only the sizes it names and passes every
    check; the README's command names it."""
    from snakemake.utils import update_config

    paper = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    merged = copy.deepcopy(paper)
    update_config(merged, yaml.safe_load((ROOT / "config" / "paper-3.4h-sizes.yaml").read_text()))
    check_all(merged, SCHEMA, ROOT)
    assert merged["deep"]["mlp"]["n_particles"] == [10, 50, 100, 500]
    assert merged["deep"]["resnet"]["particles_per_layer"] == [5, 10, 50, 100]
    assert merged["saddle"]["n_particles"] == [20, 50]
    for key in ("mlp", "resnet"):
        for name, value in paper["deep"][key].items():
            if name not in ("n_particles", "particles_per_layer"):
                assert merged["deep"][key][name] == value, (key, name)
    assert merged["training"] == paper["training"] and merged["n_particles"] == paper["n_particles"]
    readme = (ROOT / "README.md").read_text()
    assert "snakemake --configfile config/paper.yaml config/paper-3.4h-sizes.yaml" in readme
