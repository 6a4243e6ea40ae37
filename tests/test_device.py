"""Device selection: ``auto`` follows CUDA availability, an explicit GPU request is checked.

CUDA availability is monkeypatched, so these tests mean the same on a CPU-only machine and
on a GPU node.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mfsym.core.groups import c2_swap
from mfsym.core.teachers import paper_teachers
from mfsym.core.units import make_unit
from mfsym.engine.device import resolve_device
from mfsym.engine.divergence import TrainingDiverged
from mfsym.engine.training import RunSpec, TrainConfig, train_stack


def fake_cuda(monkeypatch, available: bool, count: int = 1) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count if available else 0)


@pytest.mark.parametrize(("available", "expected"), [(True, "cuda"), (False, "cpu")])
def test_auto_follows_cuda_availability(monkeypatch, available, expected):
    fake_cuda(monkeypatch, available)
    dev = resolve_device("auto")
    assert dev.type == expected
    assert dev.index is None


@pytest.mark.parametrize("available", [True, False])
def test_cpu_is_cpu_whatever_the_gpu(monkeypatch, available):
    fake_cuda(monkeypatch, available)
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "cuda:3"])
def test_explicit_cuda_without_gpu_fails_clearly(monkeypatch, spec):
    fake_cuda(monkeypatch, False)
    with pytest.raises(RuntimeError) as err:
        resolve_device(spec)
    msg = str(err.value)
    assert repr(spec) in msg  # names what was asked for
    assert "no CUDA GPU" in msg
    assert "'auto'" in msg and "'cpu'" in msg  # and what would work instead


def test_explicit_cuda_with_gpu_is_honoured(monkeypatch):
    fake_cuda(monkeypatch, True, count=2)
    assert resolve_device("cuda") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)


def test_cuda_index_beyond_the_devices_fails_clearly(monkeypatch):
    fake_cuda(monkeypatch, True, count=2)
    with pytest.raises(RuntimeError, match=r"'cuda:2'.*only 2 CUDA device"):
        resolve_device("cuda:2")


@pytest.mark.parametrize("spec", ["gpu", "CUDA", "cuda:", "cuda:x", "cuda0", "", "mps"])
def test_unknown_device_names_the_allowed_values(spec):
    with pytest.raises(ValueError) as err:
        resolve_device(spec)
    msg = str(err.value)
    assert repr(spec) in msg
    for allowed in ("'auto'", "'cpu'", "'cuda'", "'cuda:<index>'"):
        assert allowed in msg


# ---------------------------------------------------------------------------------------
# the engine honours the choice
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def paper_setting():
    unit = make_unit("matrix", 2, 2, "sigmoid")
    group = unit.group(c2_swap())
    return group, unit, paper_teachers(group)


def tiny_config(device: str, **kw) -> TrainConfig:
    return TrainConfig(T=0.5, n_eval=64, n_snapshots=3, device=device, **kw)


def test_training_on_cuda_without_gpu_fails_before_any_work(monkeypatch, tmp_path, paper_setting):
    """An explicit GPU request on a CPU-only node stops at once: no result, no checkpoint."""
    fake_cuda(monkeypatch, False)
    group, unit, teachers = paper_setting
    ckpt = tmp_path / "stack.ckpt.npz"
    with pytest.raises(RuntimeError, match=r"'cuda'.*no CUDA GPU") as err:
        train_stack(
            group, unit, teachers, [RunSpec("WI", "vanilla", 0)], 8, "SI",
            tiny_config("cuda", checkpoint_every=1), checkpoint_path=ckpt,
        )
    assert not isinstance(err.value, TrainingDiverged)
    assert list(tmp_path.iterdir()) == []


def test_auto_without_gpu_trains_on_cpu_like_cpu(monkeypatch, paper_setting):
    """``auto`` on a CPU-only machine is exactly the ``cpu`` run (same numbers)."""
    fake_cuda(monkeypatch, False)
    group, unit, teachers = paper_setting
    runs = [RunSpec("arbitrary", "vanilla", 0), RunSpec("WI", "FA", 1)]
    res = {
        dev: train_stack(group, unit, teachers, runs, 8, "WI", tiny_config(dev))
        for dev in ("auto", "cpu")
    }
    np.testing.assert_array_equal(res["auto"].final_particles, res["cpu"].final_particles)
    np.testing.assert_array_equal(res["auto"].population_risk, res["cpu"].population_risk)
    assert not np.array_equal(res["cpu"].final_particles, res["cpu"].initial_particles)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_training_keeps_the_exact_invariants(paper_setting):
    """On a GPU node: a CUDA run starts from the CPU's particles and EA stays on E^G.

    Random streams are device-specific, so the trajectories differ from the CPU's; the
    checks are those that hold whatever the stream.
    """
    group, unit, teachers = paper_setting
    runs = [RunSpec("WI", "vanilla", 0), RunSpec("WI", "EA", 0)]
    cfg = dict(T=2.0, n_eval=256, n_snapshots=3, dtype="float64")
    gpu = train_stack(group, unit, teachers, runs, 20, "SI", TrainConfig(device="cuda", **cfg))
    cpu = train_stack(group, unit, teachers, runs, 20, "SI", TrainConfig(device="cpu", **cfg))
    np.testing.assert_array_equal(gpu.initial_particles, cpu.initial_particles)
    assert np.isfinite(gpu.final_particles).all()
    assert not np.array_equal(gpu.final_particles, gpu.initial_particles)
    assert gpu.rmd_projected[1].max() < 1e-10  # EA: exactly on E^G up to rounding


# ---------------------------------------------------------------------------------------
# the pipeline: the GPU profile on a machine without a GPU
# ---------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a usable GPU")
def test_gpu_profile_on_a_cpu_node_stops_with_a_clear_message(tmp_path):
    """profiles/slurm-gpu sets training.device: cuda; a training job that lands where no
    GPU is usable fails at once, says why, and leaves neither a result nor a checkpoint."""
    from pipeline_sandbox import sandbox, snakemake, tiny_config

    wf = sandbox(tmp_path / "wf", tiny_config({"inits": ["SI"]}))
    run = "results/runs/SI/N12/b0.nc"
    res = snakemake(
        wf, "--workflow-profile", "profiles/slurm-gpu", "--executor", "local", "--cores", "2",
        "--retries", "0", run, check=False,
    )
    out = res.stdout + res.stderr
    assert res.returncode != 0, out[-3000:]
    assert "Error in rule train" in out, out[-3000:]
    message = "device 'cuda' was requested but no CUDA GPU is usable here"
    assert message in out + (wf / "results/logs/train/SI/N12/b0.log").read_text()
    assert not (wf / run).exists()
    assert not list((wf / "results").rglob("*.npz"))
