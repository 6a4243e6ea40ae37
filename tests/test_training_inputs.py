"""What train_stack refuses, what it calls a divergence, and what it records about itself.

Inputs are checked at the boundary (shapes, finiteness, counts) and reported as input
problems; a run whose particles or loss grow far past their start is a divergence even
when every number is still finite; the result states the kernel, dtype and device used.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import make_setting

from mfsym.core.groups import c2_swap, symmetric_group
from mfsym.core.schemes import SCHEMES
from mfsym.core.teachers import Teacher, paper_teachers, random_teacher
from mfsym.engine import kernels, native
from mfsym.engine.divergence import TrainingDiverged
from mfsym.engine.run_inputs import initial_particles
from mfsym.engine.training import RunSpec, TrainConfig, train_stack
from mfsym.pipeline.config import ConfigError, check_config, load_schema

SETTING = make_setting(c2_swap(), "matrix", "sigmoid")
TEACHERS = paper_teachers(SETTING.group)
RUN = [RunSpec("WI", "vanilla", 0)]


def small(**kw) -> TrainConfig:
    return TrainConfig(**{"T": 1.0, "n_eval": 64, "n_snapshots": 3, **kw})


def train(runs=RUN, n=10, init="WI", cfg=None, teachers=TEACHERS, setting=SETTING, **kw):
    return train_stack(setting.group, setting.unit, teachers, runs, n, init, cfg or small(),
                       **kw)


# ---------------------------------------------------------------------------------------
# divergence by magnitude
# ---------------------------------------------------------------------------------------
def test_finite_blow_up_is_a_divergence_naming_run_step_quantity_and_hyperparameters():
    """α = 10⁶ at N = 10: after 10 steps the particles are ~1e15 yet finite, and the
    sigmoid keeps the loss bounded; the particle size gives it away."""
    with pytest.raises(TrainingDiverged) as err:
        train(cfg=small(alpha=1e6))
    msg = str(err.value)
    for needle in ("teacher=WI scheme=vanilla seed=0", "particle RMS", "step 10 of 10",
                   "alpha=1000000.0", "tau=0.0001", "divergence_factor=1000.0", "N=10"):
        assert needle in msg, (needle, msg)
    (bad,) = err.value.runs
    assert bad["quantity"] == "particle RMS" and bad["step"] == 10
    assert bad["value"] > 1e3 * bad["reference"]


def test_the_growth_bound_is_configurable():
    """The same legitimate run passes at the default bound and trips a bound of 1.01."""
    res = train(cfg=small(T=3.0))
    rms = np.sqrt((res.final_particles[0] ** 2).sum(-1).mean())
    assert rms > 1.01 * 0.25 * 2  # it grew past 1.01 × the init scale init_std·√D
    with pytest.raises(TrainingDiverged, match="divergence_factor=1.01"):
        train(cfg=small(T=3.0, divergence_factor=1.01))
    with pytest.raises(ValueError, match="training.divergence_factor"):
        small(divergence_factor=1.0)


def test_the_configs_carry_the_default_bound_and_the_schema_refuses_one_or_less():
    root = Path(__file__).resolve().parents[1]
    schema = load_schema(root / "workflow" / "schemas" / "config.schema.yaml")
    for name in ("config.yaml", "config/paper.yaml"):
        config = yaml.safe_load((root / name).read_text())
        assert config["training"]["divergence_factor"] == TrainConfig().divergence_factor
        check_config(config, schema)
        config["training"]["divergence_factor"] = 1.0
        with pytest.raises(ConfigError, match="training.divergence_factor"):
            check_config(config, schema)


def test_loss_growth_is_a_divergence_when_the_output_is_unbounded():
    """uv unit, v·tanh(uᵀx/d), α = 50 at N = 10: the output grows with v and the run ends
    non-finite; the loss passes its bound first, well before that."""
    s = make_setting(symmetric_group(3), "uv", "tanh")
    teacher = {"t": random_teacher(s.group, "arbitrary", 4, np.random.default_rng(3))}
    runs = [RunSpec("t", "vanilla", 0)]
    cfg = small(T=20.0, check_every=1)
    with pytest.raises(TrainingDiverged) as late:
        train(runs, 10, "WI", TrainConfig(**{**cfg.to_dict(), "divergence_factor": 1e300}),
              teacher, s)
    with pytest.raises(TrainingDiverged) as err:
        train(runs, 10, "WI", cfg, teacher, s)
    (bad,) = err.value.runs
    assert bad["quantity"] == "training loss", str(err.value)
    assert bad["value"] > 1e3 * bad["reference"]
    assert "training loss" in str(err.value)
    assert late.value.runs[0]["quantity"] == "non-finite value"
    assert bad["step"] < late.value.runs[0]["step"]


def test_paper_scale_runs_stay_far_below_the_default_bound():
    """α = 50, T = 20 at N = 5 (the noisiest N of the paper grid), every teacher, scheme
    and ten seeds: no run trips the bound, and the largest particle growth seen at 41
    snapshots is below a tenth of the default factor."""
    runs = [RunSpec(t, s, seed) for t in TEACHERS for s in SCHEMES for seed in range(10)]
    cfg = TrainConfig(n_snapshots=41, snapshot_spacing="linear", keep_particle_snapshots=True,
                      n_eval=256)
    res = train(runs, 5, "SI", cfg)
    rms = np.sqrt((res.particle_snapshots**2).sum(-1).mean(-1))  # (R, K)
    growth = rms.max(1) / np.maximum(rms[:, 0], cfg.init_std * 2.0)
    assert growth.max() < cfg.divergence_factor / 10, growth.max()
    assert np.isfinite(res.train_loss).all()


# ---------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------
def cloud(n=10, seed=0):
    return initial_particles(SETTING.group, n, seed, "WI")


def test_initial_cloud_of_the_wrong_size_is_refused():
    with pytest.raises(ValueError, match=r"init_particles\[0\].*\(7, 4\).*\(10, 4\)"):
        train(init_particles={0: cloud(7)})


def test_an_initial_cloud_past_the_bound_is_refused_before_it_is_drawn(monkeypatch):
    """N·D above MAX_CLOUD_NUMBERS is refused with N, D and the largest N named; at the
    bound the cloud is drawn. With the true bound, N = 141 202 589 (a 4.2 GiB cloud, which
    once ended in numpy's MemoryError) is refused, also through train_stack."""
    from mfsym.engine import run_inputs

    with pytest.raises(ValueError, match=r"N = 141202589 particles of dimension 4 .*"
                                         r"at most 33554432 \(N ≤ 8388608 here\)"):
        initial_particles(SETTING.group, 141202589, 0, "SI")
    with pytest.raises(ValueError, match=r"N = 141202589 particles"):
        train(n=141202589)
    monkeypatch.setattr(run_inputs, "MAX_CLOUD_NUMBERS", 40)
    assert initial_particles(SETTING.group, 10, 0, "SI").shape == (10, 4)
    with pytest.raises(ValueError, match=r"N = 11 particles of dimension 4 make a cloud of "
                                         r"44 numbers.*at most 40 \(N ≤ 10 here\)"):
        initial_particles(SETTING.group, 11, 0, "WI")


@pytest.mark.parametrize("where", ["init_particles", "teacher", "x_train", "x_eval"])
def test_non_finite_inputs_are_input_errors_not_divergence(where):
    kw, teachers = {}, TEACHERS
    if where == "init_particles":
        bad = cloud()
        bad[3, 1] = np.nan
        kw["init_particles"] = {0: bad}
    elif where == "teacher":
        p = TEACHERS["WI"].particles.copy()
        p[0, 0] = np.inf
        teachers = {**TEACHERS, "WI": Teacher("WI", p)}
    elif where == "x_train":
        x = np.random.default_rng(0).standard_normal((8, 2))
        x[2, 0] = np.nan
        kw["x_train"] = x
    else:
        x = np.random.default_rng(0).standard_normal((16, 2))
        x[5, 1] = np.nan
        kw["x_eval"] = x
    with pytest.raises(ValueError) as err:
        train(teachers=teachers, **kw)
    assert not isinstance(err.value, TrainingDiverged)
    msg = str(err.value)
    assert where in msg and "non-finite" in msg and "input" in msg and "lower alpha" not in msg


@pytest.mark.parametrize(
    ("x_eval", "needle"),
    [(np.zeros((0, 2)), r"x_eval.*empty"), (np.zeros((16, 3)), r"x_eval.*\(16, 3\).*\(n, 2\)"),
     (np.zeros(16), r"x_eval.*\(16,\)")],
)
def test_evaluation_sample_must_be_a_non_empty_matrix(x_eval, needle):
    with pytest.raises(ValueError, match=needle):
        train(x_eval=x_eval)


def test_numpy_integer_n_is_accepted_and_recorded_as_int():
    a = train(n=np.int64(10))
    b = train(n=10)
    assert type(a.n_particles) is int and a.n_particles == 10
    np.testing.assert_array_equal(a.final_particles, b.final_particles)


@pytest.mark.parametrize("n", [True, 10.0, 0, -3, np.float64(10)])
def test_n_must_be_a_positive_integer(n):
    with pytest.raises(ValueError, match=r"N must be an integer ≥ 1.*got"):
        train(n=n)


def test_fewer_than_one_step_is_refused():
    with pytest.raises(ValueError) as err:
        train(n=10, cfg=small(T=0.05))
    msg = str(err.value)
    for needle in ("training.T = 0.05", "N = 10", "N·T = 0.5", "T ≥ 1/N = 0.1"):
        assert needle in msg, (needle, msg)
    assert train(n=10, cfg=small(T=0.1)).steps[-1] == 1


# ---------------------------------------------------------------------------------------
# what ran
# ---------------------------------------------------------------------------------------
def test_result_records_backend_dtype_and_device():
    res = train(cfg=small(backend="eager", dtype="float64", device="cpu"))
    assert (res.backend, res.dtype, res.device) == ("eager", "float64", "cpu")


def test_auto_backend_records_the_fallback_and_its_reason(monkeypatch):
    def unavailable(*args, **kwargs):
        raise native.NativeUnavailable("no C compiler here")

    monkeypatch.setattr(kernels, "NativeKernel", unavailable)
    res = train(cfg=small(backend="auto", device="cpu"))
    assert res.backend.startswith("eager (") and "no C compiler here" in res.backend
    assert res.dtype == "float32"


def test_auto_backend_on_the_cpu_records_the_kernel_it_picked():
    res = train(cfg=small(backend="auto", device="cpu"))
    expected = kernels.select_kernel(SETTING.unit, "auto", torch.device("cpu")).name
    assert res.backend == expected
