"""The training engine: the update of PAPER.md §4, invariances, stacking, errors, resume.

Sizes are small (N ≤ 40, at most a few hundred steps); exactness checks run in float64.
"""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
import torch
from conftest import make_setting

from mfsym.core.groups import c2_swap, symmetric_group
from mfsym.core.schemes import SCHEMES
from mfsym.core.teachers import paper_teachers, random_teacher
from mfsym.engine import checkpoint as ckpt
from mfsym.engine import chunk_feed
from mfsym.engine.blocks import Block
from mfsym.engine.divergence import TrainingDiverged
from mfsym.engine.run_inputs import evaluation_inputs, initial_particles, stream_seed
from mfsym.engine.training import RunSpec, TrainConfig, train_stack

F64 = torch.float64


def c2_paper():
    s = make_setting(c2_swap(), "matrix", "sigmoid")
    return s, paper_teachers(s.group)


def s3_uv():
    """S₃ permuting R³, uv unit (D = 6) with tanh; random teachers of each kind."""
    s = make_setting(symmetric_group(3), "uv", "tanh")
    rng = np.random.default_rng(3)
    teachers = {k: random_teacher(s.group, k, 4, rng) for k in ("arbitrary", "WI", "SI")}
    return s, teachers


SETTINGS = {"C2-matrix-sigmoid": c2_paper, "S3-uv-tanh": s3_uv}


def cfg64(**kw) -> TrainConfig:
    base = dict(dtype="float64", n_eval=256, n_snapshots=4, log_every_s=1e9)
    return TrainConfig(**{**base, **kw})


def train(setting, teachers, runs, n, init, cfg, **kw):
    return train_stack(setting.group, setting.unit, teachers, runs, n, init, cfg, **kw)


# ---------------------------------------------------------------------------------------
# one step against an independent computation from PAPER.md §2–4
# ---------------------------------------------------------------------------------------
def sigma_star(unit, theta, x):
    """σ*(x_s, θ_n), (S, N, dy), from the formulas (matrix: act(z x); uv: v·act(uᵀx/d))."""
    act = {"sigmoid": torch.sigmoid, "tanh": torch.tanh}[unit.activation.name]
    if unit.name == "matrix":
        z = theta.reshape(theta.shape[0], unit.dy, unit.dx)
        return act(torch.einsum("nkl,sl->snk", z, x))
    u, v = theta[:, : unit.dx], theta[:, unit.dx :]
    return act(x @ u.T / unit.dx)[:, :, None] * v[None]


def stream_draws(seed, n, cfg, group):
    """The first step's x, DA indices and ξ of a seed (the stream layout of mfsym.engine.blocks)."""
    gen = torch.Generator().manual_seed(stream_seed(seed, n))
    k, B = cfg.rng_chunk, cfg.batch_size
    x = cfg.input_std * torch.randn(k, B, group.dim_x, generator=gen, dtype=F64)
    g = torch.randint(0, group.order, (k, B), generator=gen)
    xi = torch.randn(k, n, group.dim_z, generator=gen, dtype=F64)
    return x[0], g[0], xi[0]


def hand_step(setting, teacher, scheme, init, theta0, draws, cfg):
    """θ₁ by autograd of the scheme's loss + τ(1/N)Σ‖θᵢ‖², in mean-field scaling; also
    returns the scheme's minibatch loss."""
    unit, group = setting.unit, setting.group
    gx, gy = torch.tensor(group.x), torch.tensor(group.y)
    pe = torch.tensor(group.reynolds())
    x, g, xi = draws
    n = theta0.shape[0]
    y = sigma_star(unit, torch.as_tensor(teacher.particles), x).mean(1)
    theta = torch.as_tensor(theta0).clone().requires_grad_(True)
    model = theta @ pe.T if scheme == "EA" else theta

    def phi(inputs):
        return sigma_star(unit, model, inputs).mean(1)

    if scheme in ("vanilla", "EA"):
        loss = ((phi(x) - y) ** 2).sum(-1).mean()
    elif scheme == "DA" and cfg.da_mode == "random":
        xg = torch.einsum("bij,bj->bi", gx[g], x)
        yg = torch.einsum("bij,bj->bi", gy[g], y)
        loss = ((phi(xg) - yg) ** 2).sum(-1).mean()
    elif scheme == "DA":
        pairs = zip(gx, gy, strict=True)
        terms = [((phi(x @ a.T) - y @ b.T) ** 2).sum(-1).mean() for a, b in pairs]
        loss = sum(terms) / group.order
    else:  # FA: Φ̂(x) = (1/|G|) Σ_g g⁻¹ Φ(g x)
        pred = sum(phi(x @ a.T) @ b for a, b in zip(gx, gy, strict=True)) / group.order
        loss = ((pred - y) ** 2).sum(-1).mean()
    data_loss = float(loss.detach())
    loss = loss + cfg.tau * (theta**2).sum() / n
    (grad,) = torch.autograd.grad(loss, theta)
    drift = n * grad
    noise = xi
    if scheme == "EA":
        drift = drift @ pe
    if scheme == "EA" or init == "SI":
        noise = xi @ pe
    lr = cfg.alpha / n
    step = -lr * drift + math.sqrt(2 * lr * cfg.beta) * noise
    return (torch.as_tensor(theta0) + step).detach().numpy(), data_loss


@pytest.mark.parametrize("backend", ["auto", "eager"])
@pytest.mark.parametrize(("init", "beta"), [("WI", 0.0), ("SI", 0.0), ("WI", 1e-3), ("SI", 1e-3)])
@pytest.mark.parametrize("da_mode", ["random", "orbit"])
@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_one_step_equals_hand_computation(name, da_mode, init, beta, backend):
    setting, teachers = SETTINGS[name]()
    n, seed = 7, 4
    cfg = cfg64(T=1 / n, tau=0.05, beta=beta, da_mode=da_mode, backend=backend)
    runs = [RunSpec("arbitrary", s, seed) for s in SCHEMES]
    res = train(setting, teachers, runs, n, init, cfg)
    assert res.steps[-1] == 1
    draws = stream_draws(seed, n, cfg, setting.group)
    theta0 = initial_particles(setting.group, n, seed, init)
    for i, r in enumerate(runs):
        start = setting.group.project(theta0) if r.scheme == "EA" else theta0
        np.testing.assert_allclose(res.initial_particles[i], start, rtol=0, atol=1e-15)
        expected, loss = hand_step(
            setting, teachers["arbitrary"], r.scheme, init, start, draws, cfg
        )
        np.testing.assert_allclose(res.final_particles[i], expected, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(res.train_loss[i], loss, rtol=1e-12)
    moved = np.abs(res.final_particles - res.initial_particles).max(axis=(1, 2))
    assert (moved > 1e-4).all()


# ---------------------------------------------------------------------------------------
# learning and invariances
# ---------------------------------------------------------------------------------------
def reference_risks(setting, teacher, cfg):
    """On the evaluation sample: the risk of the best constant predictor, ``E‖y − E y‖²``,
    and that of the best G-equivariant one, ``E‖y − ȳ‖²`` with ``ȳ(x) = mean_g g⁻¹ y(g x)``
    (the part of the teacher no equivariant model can fit; 0 for WI and SI teachers)."""
    group = setting.group
    x = torch.as_tensor(evaluation_inputs(cfg.n_eval, group.dim_x, cfg.input_std,
                                          cfg.eval_seed))
    cloud = torch.as_tensor(teacher.particles)
    y = sigma_star(setting.unit, cloud, x).mean(1)
    ybar = sum(
        sigma_star(setting.unit, cloud, x @ torch.tensor(a).T).mean(1) @ torch.tensor(b)
        for a, b in zip(group.x, group.y, strict=True)
    ) / group.order
    const = float(((y - y.mean(0)) ** 2).sum(-1).mean())
    return const, float(((y - ybar) ** 2).sum(-1).mean())


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_short_run_lowers_the_population_risk_for_every_scheme_and_teacher(name):
    """T = 3 at N = 30.  A model class that contains the teacher (vanilla; every scheme for
    the SI teacher; DA and FA for the WI one) ends an order of magnitude below the best
    constant predictor.  Equivariant schemes cannot fit the arbitrary teacher's
    non-equivariant part E‖y − ȳ‖²: their excess over that floor at least halves.  EA with
    the WI teacher is confined to E^G, whose best risk has no closed form: it must drop."""
    setting, teachers = SETTINGS[name]()
    runs = [RunSpec(t, s, 0) for t in teachers for s in SCHEMES]
    cfg = cfg64(T=3.0)
    res = train(setting, teachers, runs, 30, "WI", cfg)
    first, last = res.population_risk[:, 0], res.population_risk[:, -1]
    for r, a, b in zip(runs, first, last, strict=True):
        const, floor = reference_risks(setting, teachers[r.teacher], cfg)
        fits = r.scheme == "vanilla" or r.teacher == "SI" or (
            r.teacher == "WI" and r.scheme != "EA"
        )
        if fits:
            assert b < 0.1 * const, f"{r}: risk {b:.3g}, best constant {const:.3g}"
        elif r.teacher == "arbitrary":
            assert floor > 0.5 * const  # the arbitrary teacher is far from equivariant
            assert b - floor < 0.5 * (a - floor), f"{r}: {a:.3g} → {b:.3g}, floor {floor:.3g}"
        else:
            assert b < a, f"{r}: risk {a:.3g} → {b:.3g}"
    assert np.isfinite(res.train_loss).all() and (res.train_loss >= 0).all()


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_equivariant_schemes_keep_an_si_start_on_the_fixed_space(name):
    """EA (any teacher), FA and orbit-averaged DA (WI teacher) stay on E^G; vanilla with
    the arbitrary teacher leaves it.

    E^G is invariant but can be unstable (S₃/uv: rounding errors grow about ×15 per unit
    of time), so FA and DA are held to float tolerance over a short horizon.
    """
    setting, teachers = SETTINGS[name]()
    runs = [
        RunSpec("arbitrary", "EA", 0), RunSpec("WI", "EA", 1), RunSpec("WI", "FA", 0),
        RunSpec("WI", "DA", 1), RunSpec("arbitrary", "vanilla", 0),
    ]
    cfg = cfg64(T=1.5, da_mode="orbit", beta=1e-4)
    res = train(setting, teachers, runs, 30, "SI", cfg)
    group = setting.group
    for i, r in enumerate(runs[:4]):
        final = res.final_particles[i]
        assert np.abs(final - group.project(final)).max() < 1e-10, r
        assert res.rmd_projected[i].max() < 1e-10, r
        assert np.abs(final - res.initial_particles[i]).max() > 1e-3, r  # it did train
    assert res.rmd_projected[4, -1] > 1e-3
    assert group.distance_to_fixed(res.final_particles[4]).max() > 1e-3


def test_ea_is_exact_in_float32_too():
    setting, teachers = c2_paper()
    runs = [RunSpec("arbitrary", "EA", 0)]
    res = train(setting, teachers, runs, 40, "SI", TrainConfig(T=2.0, n_eval=64))
    final = res.final_particles[0]
    assert np.abs(final - setting.group.project(final)).max() < 1e-6


# ---------------------------------------------------------------------------------------
# stacking and determinism
# ---------------------------------------------------------------------------------------
MIXED = [
    RunSpec("arbitrary", "vanilla", 0), RunSpec("WI", "FA", 1), RunSpec("SI", "EA", 2),
    RunSpec("WI", "DA", 0), RunSpec("arbitrary", "DA", 3), RunSpec("SI", "vanilla", 1),
    RunSpec("arbitrary", "FA", 2), RunSpec("WI", "EA", 3),
]
RECORDS = ("final_particles", "population_risk", "train_loss", "rmd_projected", "dist_fixed")


@pytest.mark.parametrize("da_mode", ["random", "orbit"])
@pytest.mark.parametrize("backend", ["auto", "eager"])
def test_a_run_alone_equals_the_same_run_in_a_larger_stack(backend, da_mode):
    setting, teachers = c2_paper()
    cfg = TrainConfig(T=1.5, n_eval=128, backend=backend, da_mode=da_mode)
    stack = train(setting, teachers, MIXED, 24, "SI", cfg)
    for i in (0, 1, 3, 4, 7):
        alone = train(setting, teachers, [MIXED[i]], 24, "SI", cfg)
        for name in RECORDS:
            np.testing.assert_array_equal(
                getattr(alone, name)[0], getattr(stack, name)[i], err_msg=f"{MIXED[i]} {name}"
            )


def test_same_seed_same_result_different_seeds_differ():
    setting, teachers = c2_paper()
    cfg = TrainConfig(T=1.0, n_eval=64)
    runs = [RunSpec("WI", "vanilla", 5), RunSpec("WI", "vanilla", 6)]
    a = train(setting, teachers, runs, 20, "WI", cfg)
    b = train(setting, teachers, runs, 20, "WI", cfg)
    for name in RECORDS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.allclose(a.final_particles[0], a.final_particles[1])
    assert not np.allclose(a.population_risk[0, 1:], a.population_risk[1, 1:])


def test_snapshots_record_times_losses_and_optional_particles():
    setting, teachers = c2_paper()
    cfg = cfg64(T=2.0, n_snapshots=6, keep_particle_snapshots=True, snapshot_spacing="linear")
    res = train(setting, teachers, [RunSpec("WI", "vanilla", 0)], 10, "WI", cfg)
    np.testing.assert_array_equal(res.steps, [0, 4, 8, 12, 16, 20])
    np.testing.assert_allclose(res.times, res.steps / 10)
    assert res.particle_snapshots.shape == (1, 6, 10, 4)
    np.testing.assert_array_equal(res.particle_snapshots[0, 0], res.initial_particles[0])
    np.testing.assert_array_equal(res.particle_snapshots[0, -1], res.final_particles[0])
    assert res.config == cfg
    assert (res.train_loss[0] > 0).all()


def test_every_snapshot_at_step_zero_reports_the_first_loss():
    setting, teachers = c2_paper()
    res = train(setting, teachers, [RunSpec("WI", "vanilla", 0)], 5, "WI", cfg64(T=4.0))
    zero = np.flatnonzero(res.steps == 0)
    assert len(zero) > 1
    assert (res.train_loss[0, zero] == res.train_loss[0, 0]).all()
    assert res.train_loss[0, 0] > 0


# ---------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------
def test_divergence_raises_a_report_not_a_result(tmp_path):
    setting, teachers = c2_paper()
    runs = [RunSpec("arbitrary", "FA", 0), RunSpec("WI", "vanilla", 1)]
    cfg = TrainConfig(alpha=1e6, tau=1.0, T=10.0, checkpoint_every=32, n_eval=64)
    ck = tmp_path / "stack.ckpt.npz"
    with pytest.raises(TrainingDiverged) as err:
        train(setting, teachers, runs, 20, "WI", cfg, checkpoint_path=ck)
    msg = str(err.value)
    for needle in ("scheme=FA", "scheme=vanilla", "step ", "alpha=1000000.0", "tau=1.0",
                   "beta=1e-06", "batch_size=20", "dtype=float32", "N=20"):
        assert needle in msg
    assert {d["scheme"] for d in err.value.runs} == {"FA", "vanilla"}
    assert all(0 <= d["step"] <= 200 for d in err.value.runs)
    if ck.exists():  # a checkpoint, if any, holds only finite states
        with np.load(ck) as data:
            assert all(np.isfinite(data[k]).all() for k in data.files if "theta" in k)


@pytest.mark.parametrize(
    ("key", "value", "needle"),
    [
        ("alpha", -1.0, "training.alpha = -1.0"),
        ("alpha", float("nan"), "training.alpha"),
        ("batch_size", 0, "training.batch_size"),
        ("da_mode", "expected", "training.da_mode = 'expected'"),
        ("dtype", "float16", "training.dtype = 'float16'"),
        ("backend", "fast", "training.backend = 'fast'"),
        ("device", "gpu", "training.device = 'gpu'"),
        ("n_snapshots", 1, "training.n_snapshots"),
    ],
)
def test_invalid_config_values_name_the_key(key, value, needle):
    with pytest.raises(ValueError) as err:
        TrainConfig(**{key: value})
    assert needle in str(err.value)


def test_unknown_config_key_is_named_with_the_allowed_ones():
    with pytest.raises(ValueError, match=r"unknown training key\(s\) \['alpah'\]") as err:
        TrainConfig.from_dict({"alpah": 1.0})
    assert "'alpha'" in str(err.value)
    assert TrainConfig.from_dict({"alpha": 3.0}).alpha == 3.0


@pytest.mark.parametrize(
    ("runs", "needle"),
    [
        ([RunSpec("WI", "XA", 0)], "unknown scheme 'XA'"),
        ([RunSpec("nope", "FA", 0)], "unknown teacher 'nope'"),
        ([RunSpec("WI", "FA", 0)] * 2, "twice"),
        ([], "empty stack"),
    ],
)
def test_invalid_stacks_are_refused(runs, needle):
    setting, teachers = c2_paper()
    with pytest.raises(ValueError, match=needle):
        train(setting, teachers, runs, 5, "WI", TrainConfig(T=1.0))


# ---------------------------------------------------------------------------------------
# checkpoint and resume
# ---------------------------------------------------------------------------------------
class Interrupt(Exception):
    pass


def interrupt_at(monkeypatch, at_step: int):
    """Make Block.steps raise before a call that would run past step ``at_step``."""
    original = Block.steps

    def steps(self, prepared, j0, j1, xi_all, step0, gate=None):
        if step0 + (j1 - j0) > at_step:
            raise Interrupt(step0)
        return original(self, prepared, j0, j1, xi_all, step0, gate)

    monkeypatch.setattr(Block, "steps", steps)


RESUME_RUNS = [RunSpec("WI", "vanilla", 0), RunSpec("arbitrary", "FA", 1), RunSpec("SI", "EA", 0)]


def resume_cfg():
    return TrainConfig(T=10.0, rng_chunk=8, checkpoint_every=16, n_eval=64, n_snapshots=6)


@pytest.fixture(scope="module")
def uninterrupted():
    setting, teachers = c2_paper()
    return train(setting, teachers, RESUME_RUNS, 12, "SI", resume_cfg())


def interrupted_checkpoint(monkeypatch, tmp_path, at_step):
    setting, teachers = c2_paper()
    ck = tmp_path / "stack.ckpt.npz"
    with monkeypatch.context() as m:
        interrupt_at(m, at_step)
        with pytest.raises(Interrupt):
            train(setting, teachers, RESUME_RUNS, 12, "SI", resume_cfg(), checkpoint_path=ck)
    return ck


def resume(ck, caplog):
    setting, teachers = c2_paper()
    with caplog.at_level(logging.INFO, logger="mfsym"):
        return train(setting, teachers, RESUME_RUNS, 12, "SI", resume_cfg(), checkpoint_path=ck)


def assert_same(a, b):
    for name in RECORDS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def counted_steps(monkeypatch) -> list[int]:
    """The global steps every block trains from now on, collected as they run."""
    steps = []
    original = Block.steps

    def counting(self, prepared, j0, j1, xi_all, step0, gate=None):
        steps.extend(range(step0, step0 + j1 - j0))
        return original(self, prepared, j0, j1, xi_all, step0, gate)

    monkeypatch.setattr(Block, "steps", counting)
    return steps


def test_resumed_training_equals_the_uninterrupted_one(
    monkeypatch, tmp_path, caplog, uninterrupted
):
    """Interrupted at step 70 with checkpoints every 16 steps: the rerun resumes from the
    checkpoint of step 64 and runs steps 64..119 only, once per block."""
    ck = interrupted_checkpoint(monkeypatch, tmp_path, at_step=70)  # checkpoints at 16..64
    with np.load(ck) as data:
        assert int(data["counters"][0]) == 64
    steps = counted_steps(monkeypatch)
    res = resume(ck, caplog)
    assert "resumed at step 64 of 120" in caplog.text
    n_blocks = 2  # m = 1 (vanilla, EA) and m = |G| (FA)
    assert sorted(steps) == sorted(list(range(64, 120)) * n_blocks)
    assert_same(res, uninterrupted)


def test_a_finished_stack_leaves_its_final_state_and_trains_no_step_when_rerun(
    monkeypatch, tmp_path, caplog, uninterrupted
):
    """A stack that ends (120 steps, checkpoints every 16) saves its finished state; run
    again on the same path (a job of several stacks stopped after this one), it resumes at
    step 120 of 120, trains no step and gives the uninterrupted records."""
    setting, teachers = c2_paper()
    ck = tmp_path / "stack.ckpt.npz"
    first = train(setting, teachers, RESUME_RUNS, 12, "SI", resume_cfg(), checkpoint_path=ck)
    with np.load(ck) as data:
        assert int(data["counters"][0]) == 120
    steps = counted_steps(monkeypatch)
    again = resume(ck, caplog)
    assert "resumed at step 120 of 120" in caplog.text
    assert steps == []
    assert_same(first, uninterrupted)
    assert_same(again, uninterrupted)


def test_a_truncated_checkpoint_is_skipped_for_the_previous_one(
    monkeypatch, tmp_path, caplog, uninterrupted
):
    ck = interrupted_checkpoint(monkeypatch, tmp_path, at_step=70)
    ck.write_bytes(ck.read_bytes()[: ck.stat().st_size // 2])
    res = resume(ck, caplog)
    assert "skipping checkpoint" in caplog.text
    assert "resumed at step 48 of 120" in caplog.text
    assert_same(res, uninterrupted)


def test_corrupted_checkpoints_are_skipped_and_training_restarts(
    monkeypatch, tmp_path, caplog, uninterrupted
):
    ck = interrupted_checkpoint(monkeypatch, tmp_path, at_step=70)
    prev = ck.with_name(ck.name.removesuffix(".npz") + ".prev.npz")
    for path in (ck, prev):
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF  # one flipped byte in the middle
        path.write_bytes(bytes(data))
    res = resume(ck, caplog)
    assert caplog.text.count("skipping checkpoint") == 2
    assert "resumed at step" not in caplog.text
    assert_same(res, uninterrupted)


def test_a_checkpoint_of_another_computation_is_not_resumed(monkeypatch, tmp_path, caplog):
    ck = interrupted_checkpoint(monkeypatch, tmp_path, at_step=40)
    setting, teachers = c2_paper()
    other = TrainConfig(**{**resume_cfg().to_dict(), "alpha": 40.0})
    with caplog.at_level(logging.INFO, logger="mfsym"):
        train(setting, teachers, RESUME_RUNS, 12, "SI", other, checkpoint_path=ck)
    assert "different computation" in caplog.text
    assert "resumed at step" not in caplog.text


def forge(ck, change):
    """Rewrite the checkpoint ``ck`` through ``change(arrays)`` with valid digests, sidecar
    and metadata (as a crafted or buggy file would be), and drop its ``.prev``."""
    with np.load(ck) as data:
        meta = json.loads(str(data["__meta__"]))
    arrays = ckpt.read_checkpoint(ck)
    change(arrays)
    ckpt.remove_checkpoint(ck)
    ckpt.save_checkpoint(ck, arrays, meta)
    ckpt.remove_checkpoint(ck.with_name(ck.name.removesuffix(".npz") + ".prev.npz"))


def _drop_theta(a):
    del a["b0_theta"]


def _reshape_theta(a):
    a["b0_theta"] = a["b0_theta"][..., :-1].copy()


def _retype_risk(a):
    a["b0_risk"] = a["b0_risk"].astype(np.float32)


def _plant_nan(a):
    a["b0_dist"] = a["b0_dist"].copy()
    a["b0_dist"][0, 0] = np.nan


def _mark_bad(a):
    a["b0_first_bad"] = np.array([-1, 3], dtype=np.int64)


def _counters(values):
    def change(a):
        a["counters"] = np.array(values, dtype=np.int64)
    return change


@pytest.mark.parametrize(("change", "named"), [
    (_drop_theta, "its arrays are"),
    (_reshape_theta, "'b0_theta' is float32[2, 12, 3], not float32[2, 12, 4]"),
    (_retype_risk, "'b0_risk' is float32"), (_plant_nan, "'b0_dist' holds non-finite"),
    (_mark_bad, "'b0_first_bad' marks a run as gone bad at step 3"),
    (_counters([-16, 0, 0]), "impossible for a run of 120 steps"),
    (_counters([240, 6, 120]), "impossible"), (_counters([64, 1, 0]), "impossible"),
    (_counters([120, 6, 120]), "impossible"),
], ids=["missing-key", "wrong-shape", "wrong-dtype", "non-finite", "marked-bad",
        "negative-step", "past-the-end", "snapshots-behind", "end-past-its-last-snapshot"])
def test_a_checkpoint_that_cannot_be_this_run_starts_afresh_with_a_warning(
    monkeypatch, tmp_path, caplog, uninterrupted, change, named
):
    """Valid digests only say the file is the one written: keys, shapes, dtypes and step
    counters are checked against the run, and a misfit means a fresh start, never a
    crash or a resumed run that differs from the uninterrupted one."""
    ck = interrupted_checkpoint(monkeypatch, tmp_path, at_step=70)
    forge(ck, change)
    res = resume(ck, caplog)
    assert "skipping checkpoint" in caplog.text and named in caplog.text, caplog.text
    assert "resumed at step" not in caplog.text
    assert_same(res, uninterrupted)


def test_a_forged_checkpoint_with_consistent_counters_is_still_resumed(
    monkeypatch, tmp_path, caplog, uninterrupted
):
    """The check is not a blanket refusal: the same arrays rewritten unchanged resume."""
    ck = interrupted_checkpoint(monkeypatch, tmp_path, at_step=70)
    forge(ck, lambda a: None)
    res = resume(ck, caplog)
    assert "resumed at step 64 of 120" in caplog.text
    assert_same(res, uninterrupted)


def test_a_checkpoint_path_that_is_a_folder_is_refused_and_left_alone(tmp_path):
    setting, teachers = c2_paper()
    folder = tmp_path / "ck"
    folder.mkdir()
    (folder / "mine.txt").write_text("keep\n")
    with pytest.raises(ValueError, match="checkpoint_path = .* is a folder"):
        train(setting, teachers, RESUME_RUNS, 12, "SI", resume_cfg(), checkpoint_path=folder)
    assert [p.name for p in tmp_path.iterdir()] == ["ck"]
    assert (folder / "mine.txt").read_text() == "keep\n"


def test_train_stack_names_a_config_of_the_wrong_type():
    setting, teachers = c2_paper()
    with pytest.raises(TypeError, match="config must be a TrainConfig .* not dict"):
        train(setting, teachers, RESUME_RUNS, 12, "SI", {"T": 0.5})


def test_an_initial_cloud_for_a_seed_no_run_uses_is_refused():
    setting, teachers = c2_paper()
    cloud = np.zeros((12, setting.group.dim_z))
    with pytest.raises(ValueError, match=r"seeds \[5\] that no run uses .* \[0\]"):
        train(setting, teachers, [RunSpec("WI", "vanilla", 0)], 12, "SI", resume_cfg(),
              init_particles={5: cloud})


# ---------------------------------------------------------------------------------------
# progress reporting
# ---------------------------------------------------------------------------------------
def test_progress_lines_report_rate_and_eta(caplog, monkeypatch):
    setting, teachers = c2_paper()
    cfg = TrainConfig(T=4.0, rng_chunk=4, log_every_s=1e-9, n_eval=32)
    monkeypatch.setattr(chunk_feed, "MAX_CHUNKS", 2)  # a tiny run: 2 chunks per call
    with caplog.at_level(logging.INFO, logger="mfsym.engine.training"):
        train(setting, teachers, [RunSpec("WI", "vanilla", 0)], 10, "WI", cfg, label="probe")
    lines = [r.getMessage() for r in caplog.records if "probe step" in r.getMessage()]
    assert len(lines) == 5  # one per 2 chunks of 4 steps, 40 steps
    assert "step 40/40 (100.0%)" in lines[-1]
    assert all("steps/s" in ln and "ETA" in ln and "ns per particle-sample" in ln for ln in lines)
