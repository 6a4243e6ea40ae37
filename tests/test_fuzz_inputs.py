"""Fuzzing every input surface that can come from someone else.

The property, for each surface: the input is accepted and gives a correct result, or it is
refused with a clear, named error raised by the library's own checks. Never a traceback
from inside the library (an exception raised by numpy, torch or the standard library on
the library's behalf), a signal, a hang, unbounded memory, or a file written outside the
target folder.

Each example runs under bounds set by the test itself (:func:`bounded`): an address-space
cap of ``MEMORY_HEADROOM`` above what the process holds when the example starts (an
allocation past it raises MemoryError, which fails the example), and a wall-clock alarm of
``EXAMPLE_TIMEOUT_S`` (a hang fails the example). Example counts are set per surface by
``settings``; ``MFSYM_FUZZ_EXAMPLES`` scales them all (e.g. 10 for a longer hunt).
"""

from __future__ import annotations

import contextlib
import copy
import gzip
import hashlib
import json
import logging
import math
import os
import resource
import signal
import tarfile
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import make_setting
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from mfsym.core.groups import c2_swap
from mfsym.core.schemes import INITS
from mfsym.core.teachers import paper_teachers
from mfsym.core.units import make_unit
from mfsym.engine import checkpoint as ckpt
from mfsym.engine.blocks import Block
from mfsym.engine.divergence import TrainingDiverged
from mfsym.engine.run_inputs import initial_particles
from mfsym.engine.training import RunSpec, TrainConfig, train_stack
from mfsym.measure.transport import rmd, rmd_to_projected, w2_squared
from mfsym.pipeline import bundle
from mfsym.pipeline.config import ConfigError, check_all, load_schema
from mfsym.pipeline.targets import final_targets
from mfsym.records.atomic import checksum_path, file_sha256

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = load_schema(ROOT / "workflow" / "schemas" / "config.schema.yaml")
DEFAULT = yaml.safe_load((ROOT / "config.yaml").read_text())
MEMORY_HEADROOM = 1 << 30
EXAMPLE_TIMEOUT_S = 20
SCALE = float(os.environ.get("MFSYM_FUZZ_EXAMPLES", "1"))
LIBRARY = str(ROOT / "src" / "mfsym")


def examples(n: int):
    return settings(max_examples=max(1, int(n * SCALE)), deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])


class Hang(Exception):
    """An example ran past its time bound."""


@contextlib.contextmanager
def bounded():
    """Run the block with at most MEMORY_HEADROOM more address space and EXAMPLE_TIMEOUT_S
    of wall time (SIGALRM raises :class:`Hang`); both are restored afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    used = int(Path("/proc/self/statm").read_text().split()[0]) * resource.getpagesize()
    cap = used + MEMORY_HEADROOM
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)

    def alarm(signum, frame):
        raise Hang(f"example ran past {EXAMPLE_TIMEOUT_S} s")

    old = signal.signal(signal.SIGALRM, alarm)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    signal.setitimer(signal.ITIMER_REAL, EXAMPLE_TIMEOUT_S)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def assert_named_refusal(exc: BaseException, allowed: tuple[type, ...]) -> None:
    """``exc`` is one of ``allowed``, with a message, raised by the library's own code."""
    assert isinstance(exc, allowed), f"{type(exc).__name__} escaped: {exc!r}\n" + "".join(
        traceback.format_exception(exc))
    assert str(exc).strip(), f"{type(exc).__name__} without a message"
    frames = traceback.extract_tb(exc.__traceback__)
    assert frames and frames[-1].filename.startswith(LIBRARY), (
        f"{type(exc).__name__} raised outside the library's checks "
        f"({frames[-1].filename}:{frames[-1].lineno}): {exc}\n"
        + "".join(traceback.format_exception(exc)))


# ---------------------------------------------------------------------------------------
# configuration values through the schema and every check
# ---------------------------------------------------------------------------------------
def leaf_paths(value, path=()):
    if isinstance(value, dict) and value:
        for key, sub in value.items():
            yield from leaf_paths(sub, (*path, key))
    elif isinstance(value, list) and value:
        yield path
        for i, sub in enumerate(value):
            yield from leaf_paths(sub, (*path, i))
    else:
        yield path


PATHS = sorted(set(leaf_paths(DEFAULT)) - {()}, key=repr)
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-10**12, 10**12), st.sampled_from([0, 1, -1, 2**63]),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["", "~", "..", "/", "auto", "SI", "float64", "C2", "symmetric", "cuda",
                     "1e400", "nan", "results/../src"]),
)
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=8)


def schema_words(node) -> set:
    """Every enum value and default the schema names (strings the checks know)."""
    found = set()
    if isinstance(node, dict):
        for key, sub in node.items():
            if key == "enum":
                found.update(v for v in sub if isinstance(v, str))
            elif key == "default" and isinstance(sub, str):
                found.add(sub)
            else:
                found |= schema_words(sub)
    elif isinstance(node, list):
        for sub in node:
            found |= schema_words(sub)
    return found


WORDS = sorted(schema_words(SCHEMA))


def get_path(config, path):
    for key in path:
        config = config[key]
    return config


@st.composite
def nearby(draw, path):
    """A value close to the default at ``path``: a scaled or shifted number, another word
    the schema knows, a shortened, reordered or repeated list (these pass the schema more
    often and so reach the checks across keys)."""
    value = get_path(DEFAULT, path)
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        new = draw(st.sampled_from([0, 1, -1, 2, 3, 10**6, value * 2, value / 2, value + 1,
                                    -value, value * 1000]))
        return int(new) if isinstance(value, int) and draw(st.booleans()) else new
    if isinstance(value, str):
        return draw(st.sampled_from(WORDS))
    if isinstance(value, list):
        items = draw(st.lists(st.sampled_from(value), max_size=len(value) + 2)) if value \
            else []
        return items
    return draw(VALUES)


def set_path(config, path, value):
    node = config
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


CHANGES = st.sampled_from(PATHS).flatmap(
    lambda path: st.tuples(st.just(path), st.one_of(nearby(path), nearby(path), VALUES)))


@examples(300)
@given(changes=st.lists(CHANGES, min_size=1, max_size=3))
def test_fuzz_configuration_values(changes, tmp_path):
    """Values at any key of the configuration (one to three at once): accepted, then every
    target of the run is listed; or a ConfigError naming the key."""
    config = copy.deepcopy(DEFAULT)
    for path, value in changes:
        with contextlib.suppress(KeyError, IndexError, TypeError):
            set_path(config, path, value)
    before = set(ROOT.iterdir())
    with bounded():
        try:
            checked = check_all(config, SCHEMA, ROOT, tmp_path)
            final_targets(checked)
            event("accepted")
        except ConfigError as exc:
            event("refused")
            assert_named_refusal(exc, (ConfigError,))
            text = str(exc)
            assert any(str(p[-1]) in text or str(p[0]) in text for p, _ in changes), text
    assert set(ROOT.iterdir()) == before and list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------
# bundle archives
# ---------------------------------------------------------------------------------------
VALID_NAMES = st.sampled_from(["results/summary.nc", "results/figures/a.pdf", "config.yaml",
                              "paper/output/claims.json", "requirements.lock"])
NAMES = st.one_of(
    VALID_NAMES, VALID_NAMES, VALID_NAMES,
    st.sampled_from(["results/summary.nc", "config.yaml", bundle.MANIFEST, "PROVENANCE.json",
                     "../up", "/abs", "a/../../b", "results/", "", ".", "a//b", "results/x.nc",
                     "results/x.nc/y", "x" * 300]),
    st.text(st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=20),
)
KINDS = st.sampled_from([tarfile.REGTYPE] * 12 + [tarfile.DIRTYPE, tarfile.SYMTYPE,
                        tarfile.LNKTYPE, tarfile.FIFOTYPE, tarfile.CHRTYPE])
MEMBERS = st.lists(st.tuples(NAMES, KINDS, st.binary(max_size=300),
                             st.sampled_from([None] * 12 + [1 << 40, 10**6])),
                   max_size=6)
MANIFEST_LINES = st.lists(st.one_of(
    st.just("listed"), st.just("listed"), st.just("listed"), st.text(max_size=80),
    st.builds(lambda n: "0" * 64 + "  " + n, NAMES)), max_size=4)


def write_archive(dest: Path, members, extra_lines, with_manifest: bool) -> None:
    """A gzipped tar of ``members`` (name, type, data, declared size or None: a header
    that claims more bytes than follow); the manifest lists each regular member's real
    digest where ``extra_lines`` says "listed", plus the other lines as they are."""
    lines = []
    for line in extra_lines:
        if line == "listed":
            lines += [f"{hashlib.sha256(d).hexdigest()}  {n}" for n, k, d, _ in members
                      if k == tarfile.REGTYPE]
        else:
            lines.append(line)
    entries = list(members)
    if with_manifest:
        entries.insert(0, (bundle.MANIFEST, tarfile.REGTYPE,
                           "\n".join(lines).encode("utf-8", "surrogatepass"), None))
    blocks = []
    for name, kind, payload, declared in entries:  # written by hand: headers may lie
        info = tarfile.TarInfo(name)
        info.type = kind
        if kind == tarfile.REGTYPE:
            info.size = declared or len(payload)
            blocks += [info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape"), payload,
                       b"\0" * (-len(payload) % tarfile.BLOCKSIZE)]
        else:
            info.linkname = "results/summary.nc"
            blocks.append(info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape"))
    data = b"".join(blocks) + b"\0" * (2 * tarfile.BLOCKSIZE)
    dest.write_bytes(gzip.compress(data, mtime=0))


@examples(400)
@given(members=MEMBERS, lines=MANIFEST_LINES,
       with_manifest=st.sampled_from([True, True, True, False]))
def test_fuzz_bundle_archives(members, lines, with_manifest, tmp_path_factory):
    """Random member names, types, sizes and manifest lines: verified and unpacked inside
    the target folder with every file matching its digest, or a BundleError."""
    work = tmp_path_factory.mktemp("bundle")
    archive, into = work / "b.tar.gz", work / "area" / "into"
    into.parent.mkdir()
    try:
        write_archive(archive, members, lines, with_manifest)
    except (ValueError, UnicodeError, tarfile.TarError):
        return  # tarfile cannot even write this member; nobody can send it
    with bounded():
        try:
            digests = bundle.read_bundle(archive, bundle.Limits(member_bytes=1 << 20,
                                                                total_bytes=4 << 20))
            bundle.unpack_bundle(archive, into)
            event("unpacked")
        except bundle.BundleError as exc:
            event("refused: " + str(exc).split(": ", 1)[-1][:25])
            assert_named_refusal(exc, (bundle.BundleError,))
            assert not into.exists()
        else:
            for name, digest in digests.items():
                assert file_sha256(into / name) == digest
    written = {p for p in work.rglob("*")} - {archive, into.parent}
    assert all(p.is_relative_to(into) for p in written), sorted(written)
    assert not any(p.is_symlink() for p in written)


# ---------------------------------------------------------------------------------------
# checkpoint files
# ---------------------------------------------------------------------------------------
RUNS = [RunSpec("WI", "vanilla", 0), RunSpec("SI", "FA", 1)]
CFG = TrainConfig(T=2.0, rng_chunk=4, checkpoint_every=4, n_eval=16, n_snapshots=3,
                  log_every_s=1e9, dtype="float64")
N = 6


@pytest.fixture(scope="module")
def small():
    s = make_setting(c2_swap(), "matrix", "sigmoid")
    teachers = paper_teachers(s.group)
    reference = train_stack(s.group, s.unit, teachers, RUNS, N, "SI", CFG)
    return s, teachers, reference


class Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def genuine(small, tmp_path_factory):
    """The arrays and metadata of a real checkpoint of the small run, interrupted at
    step 9 (its newest checkpoint is that of step 8)."""
    s, teachers, _ = small
    ck = tmp_path_factory.mktemp("genuine") / "run.ckpt.npz"
    original = Block.steps

    def step(self, prepared, j0, j1, xi_all, step0, gate=None):
        if step0 + (j1 - j0) > 9:
            raise Interrupt(step0)
        return original(self, prepared, j0, j1, xi_all, step0, gate)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(Block, "steps", step)
        with pytest.raises(Interrupt):
            train_stack(s.group, s.unit, teachers, RUNS, N, "SI", CFG, checkpoint_path=ck)
    with np.load(ck) as data:
        meta = json.loads(str(data["__meta__"]))
    arrays = ckpt.read_checkpoint(ck)
    assert int(arrays["counters"][0]) == 8
    return arrays, meta


DTYPES = st.sampled_from([np.float64, np.float32, np.int64, np.int8, np.uint8, np.bool_,
                          np.complex64])


@st.composite
def mutated_state(draw, genuine):
    arrays, meta = genuine
    arrays = {k: v.copy() for k, v in arrays.items()}
    for _ in range(draw(st.integers(0, 3))):
        action = draw(st.sampled_from(["drop", "reshape", "retype", "counters", "add",
                                       "values"]))
        key = draw(st.sampled_from(sorted(arrays))) if arrays else None
        if action == "drop" and key:
            del arrays[key]
        elif action == "reshape" and key:
            # never the genuine shape: zeros there are an edit of the values, which no
            # reader can tell from genuine ones (a loss sum of 0 is a possible state)
            genuine_shape = genuine[0][key].shape if key in genuine[0] else None
            shape = draw(st.lists(st.integers(0, 5), max_size=3).filter(
                lambda sh, g=genuine_shape: tuple(sh) != g))
            arrays[key] = np.zeros(shape, dtype=arrays[key].dtype)
        elif action == "retype" and key:
            # never back to the genuine dtype: float64 → float32 → float64 is an edit of
            # the values (their last bits), which no reader can tell from genuine ones
            genuine_dtype = genuine[0][key].dtype if key in genuine[0] else None
            with np.errstate(invalid="ignore"):  # NaN to an integer type is the point
                arrays[key] = arrays[key].astype(
                    draw(DTYPES.filter(lambda d, g=genuine_dtype: np.dtype(d) != g)))
        elif action == "counters":
            arrays["counters"] = np.array(
                draw(st.lists(st.integers(-2**40, 2**40), min_size=0, max_size=4)),
                dtype=np.int64)
        elif action == "add":
            arrays[draw(st.text(min_size=1, max_size=8))] = np.zeros(2)
        elif action == "values" and key and np.issubdtype(arrays[key].dtype, np.floating):
            # a non-finite value is refusable; other finite values behind valid digests
            # cannot be told from genuine ones (like an edited result with a new sidecar)
            arrays[key] = arrays[key].copy()
            flat = arrays[key].reshape(-1)
            if flat.size:
                flat[draw(st.integers(0, flat.size - 1))] = draw(st.sampled_from(
                    [math.nan, math.inf, -math.inf]))
    if draw(st.sampled_from([False, False, False, True])):
        meta = {**meta, "N": draw(st.integers(-3, 10))}
    return arrays, meta


@examples(80)
@given(data=st.data(), sidecar=st.sampled_from(["valid"] * 4 + ["missing", "wrong"]))
def test_fuzz_checkpoint_files(small, genuine, data, sidecar, tmp_path_factory, caplog):
    """Random keys, shapes, dtypes, values and counters behind valid digests (and a valid,
    missing or wrong sidecar): the run resumes or starts afresh, and its result is that of
    the uninterrupted run; planted non-finite values are never resumed from, let alone
    written as a result."""
    s, teachers, reference = small
    caplog.clear()
    caplog.set_level(logging.INFO, logger="mfsym.engine.training")
    arrays, meta = data.draw(mutated_state(genuine))
    ck = tmp_path_factory.mktemp("ck") / "run.ckpt.npz"
    try:
        ckpt.save_checkpoint(ck, arrays, meta)
    except TypeError:
        return
    if sidecar == "missing":
        checksum_path(ck).unlink()
    elif sidecar == "wrong":
        checksum_path(ck).write_text("0" * 64 + "  run.ckpt.npz\n")
    with bounded():
        try:
            res = train_stack(s.group, s.unit, teachers, RUNS, N, "SI", CFG,
                              checkpoint_path=ck)
        except TrainingDiverged as exc:
            pytest.fail(f"a planted state was resumed from and diverged: {exc}")
    event(f"resumed: {'resumed at step' in caplog.text}")
    for name in ("final_particles", "rmd_projected", "population_risk", "train_loss",
                 "dist_fixed"):
        np.testing.assert_array_equal(getattr(res, name), getattr(reference, name),
                                      err_msg=name)


# ---------------------------------------------------------------------------------------
# the public API's arguments
# ---------------------------------------------------------------------------------------
ANY = st.one_of(SCALARS, st.lists(SCALARS, max_size=3),
                st.dictionaries(st.integers(-2, 8), SCALARS, max_size=2))
RUN_LISTS = st.lists(st.builds(RunSpec, st.sampled_from(["WI", "SI", "arbitrary"] * 3 + ["X"]),
                               st.sampled_from(["vanilla", "DA", "FA", "EA", "DA-orbit"] * 2
                                               + ["?"]),
                               st.integers(0, 3)), min_size=1, max_size=3, unique=True)
ARRAYS = st.builds(
    lambda shape, fill: np.full(shape, fill),
    st.lists(st.integers(0, 7), min_size=0, max_size=3),
    st.sampled_from([0.0, 1.0, math.nan, math.inf, -1e300]))
#: a horizon this long is no fault, only a long run: the fuzz keeps T below it
LONG = 50


def not_long(value) -> bool:
    return not (isinstance(value, int | float) and not isinstance(value, bool)
                and value > LONG)


TRAIN_KEYS = st.fixed_dictionaries({}, optional={
    "T": st.one_of(st.floats(-1, 3), ANY.filter(not_long)),
    "alpha": st.one_of(st.floats(-10, 100), ANY),
    "batch_size": st.one_of(st.integers(-2, 40), ANY), "dtype": ANY, "backend": ANY,
    "n_snapshots": st.one_of(st.integers(-1, 5), ANY), "beta": ANY, "tau": ANY,
    "da_mode": ANY, "rng_chunk": st.one_of(st.integers(-1, 9), ANY),
    "snapshot_spacing": ANY, "n_eval": st.one_of(st.integers(-1, 40), ANY)})


#: each argument: (a valid value, a value that is probably not)
ARGUMENTS = {
    "n": (st.integers(4, 12), st.one_of(st.integers(-3, 3), ANY)),
    "init": (st.sampled_from(INITS), ANY),
    "runs": (RUN_LISTS, st.one_of(st.lists(ANY, max_size=2), ANY)),
    "train": (st.fixed_dictionaries({}, optional={"T": st.floats(0.4, 1.0),
                                                  "batch_size": st.integers(1, 30),
                                                  "dtype": st.sampled_from(["float32",
                                                                            "float64"])}),
              TRAIN_KEYS),
    "init_particles": (st.none(), st.one_of(
        st.dictionaries(st.integers(-1, 3), ARRAYS, max_size=2), ANY)),
    "x_eval": (st.none(), st.one_of(ARRAYS, ANY)),
    # not 3 … 256: valid counts, whose OpenMP threads the address-space bound of an
    # example may leave no room to start (the runtime then ends the process)
    "threads": (st.sampled_from([None, 1]), st.one_of(
        st.integers(-1, 2), ANY.filter(lambda v: not (isinstance(v, int)
                                                      and 3 <= v <= 256)))),
    "config_kind": (st.just("TrainConfig"), st.just("dict")),
}


@examples(300)
@given(data=st.data(), bad=st.lists(st.sampled_from(sorted(ARGUMENTS)), max_size=2,
                                    unique=True))
def test_fuzz_train_stack_arguments(small, data, bad):
    """Arguments to the engine's entry point, none, one or two of them random: a trained
    stack whose numbers are finite, or a TypeError/ValueError raised by the library's own
    checks."""
    s, teachers, _ = small
    args = draw_arguments(data, ARGUMENTS, bad)
    n, init, runs, train = args["n"], args["init"], args["runs"], args["train"]
    init_particles, x_eval, threads = args["init_particles"], args["x_eval"], args["threads"]
    config_kind = args["config_kind"]
    before = torch.get_num_threads()
    with bounded():
        try:
            cfg = (TrainConfig(**{"n_eval": 16, "log_every_s": 1e9, "T": 0.5, **train})
                   if config_kind == "TrainConfig" else train)
            res = train_stack(s.group, s.unit, teachers, runs, n, init, cfg,
                              init_particles=init_particles, x_eval=x_eval, threads=threads)
        except TrainingDiverged as exc:  # reported as the engine promises (tau up to 1e12)
            event("diverged, reported")
            assert_named_refusal(exc, (TrainingDiverged,))
        except MemoryError as exc:  # e.g. batch_size 10^12: named, with the sizes to lower
            event("too large for memory, reported")
            assert_named_refusal(exc, (MemoryError,))
            assert "batch_size=" in str(exc)
        except (TypeError, ValueError) as exc:
            event(f"refused: {type(exc).__name__}: {str(exc)[:40]}")
            assert_named_refusal(exc, (TypeError, ValueError))
        else:
            event("trained")
            assert np.isfinite(res.final_particles).all()
        finally:
            torch.set_num_threads(before)


VALID_CLOUDS = st.builds(
    lambda n, d, seed, scale: scale * np.random.default_rng(seed).standard_normal((n, d)),
    st.integers(1, 9), st.just(4), st.integers(0, 9), st.sampled_from([0.0, 1e-300, 1.0,
                                                                       1e150]))
PROJECTORS = st.builds(lambda k: np.diag([1.0] * k + [0.0] * (4 - k)), st.integers(0, 4))


def draw_arguments(data, table, bad):
    """One value per argument of ``table`` (name: (valid, probably not)), the names in
    ``bad`` drawn from their second strategy."""
    return {name: data.draw(pair[name in bad], label=name) for name, pair in table.items()}


TRANSPORT = {"a": (VALID_CLOUDS, st.one_of(ARRAYS, ANY)),
             "b": (VALID_CLOUDS, st.one_of(ARRAYS, ANY, VALID_CLOUDS.map(lambda c: c[:, :2]))),
             "projector": (PROJECTORS, st.one_of(ARRAYS, ANY, VALID_CLOUDS))}


@examples(300)
@given(data=st.data(), bad=st.lists(st.sampled_from(sorted(TRANSPORT)), max_size=2,
                                    unique=True))
def test_fuzz_transport_arguments(data, bad):
    """W₂², RMD and the closed form to a projection: a number in its range, or a named
    refusal (non-finite atoms, mismatched spaces, a matrix that is no projector)."""
    args = draw_arguments(data, TRANSPORT, bad)
    a, b, projector = args["a"], args["b"], args["projector"]
    with bounded():
        for name, call, top in (("w2_squared", lambda: w2_squared(a, b), math.inf),
                                ("rmd", lambda: rmd(a, b), 1.0),
                                ("rmd_to_projected", lambda: rmd_to_projected(a, projector),
                                 1.0)):
            try:
                value = call()
            except (TypeError, ValueError) as exc:
                event(f"{name} refused")
                assert_named_refusal(exc, (TypeError, ValueError))
            else:
                event(f"{name} computed")
                assert 0.0 <= value <= top * (1 + 1e-12), (name, value)


UNIT_ARGUMENTS = {
    "unit": (st.sampled_from(["matrix", "uv", "mlp"]), ANY),
    "dx": (st.just(2), st.one_of(st.integers(-1, 4), ANY)),
    "dy": (st.just(2), st.one_of(st.integers(-1, 4), ANY)),
    "activation": (st.sampled_from(["sigmoid", "tanh", "relu", "leaky_relu", "linear"]), ANY),
    "leaky": (st.floats(0.01, 0.5), st.one_of(st.floats(), ANY)),
    "hidden": (st.sampled_from([None, 2]), st.one_of(st.integers(-1, 4), ANY)),
    "n": (st.integers(1, 6), st.one_of(st.integers(-2, 0), ANY)),
    "seed": (st.integers(0, 3), ANY),
    "init": (st.sampled_from(INITS), ANY),
}


@examples(200)
@given(data=st.data(), bad=st.lists(st.sampled_from(sorted(UNIT_ARGUMENTS)), max_size=2,
                                    unique=True))
def test_fuzz_units_and_initial_clouds(data, bad):
    """Building a unit, then its C₂ group on X = Y = R² and an initial cloud: an object
    that works, or a named refusal."""
    args = draw_arguments(data, UNIT_ARGUMENTS, bad)
    with bounded():
        try:
            made = make_unit(args["unit"], args["dx"], args["dy"], args["activation"],
                             args["leaky"], args["hidden"])
        except (TypeError, ValueError) as exc:
            event("make_unit refused")
            assert_named_refusal(exc, (TypeError, ValueError))
            return
        event("unit made")
        if (made.dx, made.dy) != (2, 2):
            return
        try:
            group = made.group(c2_swap())
            cloud = initial_particles(group, args["n"], args["seed"], args["init"])
        except (TypeError, ValueError) as exc:
            event("group or initial_particles refused")
            assert_named_refusal(exc, (TypeError, ValueError))
        else:
            event("cloud drawn")
            assert cloud.shape == (args["n"], group.dim_z) and np.isfinite(cloud).all()
