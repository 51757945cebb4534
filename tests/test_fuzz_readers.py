"""Property tests of every file reader: random bytes, truncated and bit-flipped valid files.

Each reader either succeeds (a flipped byte may land somewhere harmless; the result must then still be
a valid object) or raises one of the documented errors (:class:`~emu_backend.errors.EmuBackendError`
subclasses) -- never a bare exception from h5py, numpy, torch or tomllib.

The valid files are made once per module with the package's own writers and are small (a 2^3 particle
snapshot, 2^3 fields, a width-2 StyledVNet) so that a damaged byte often hits metadata. Examples are
derandomised (the same inputs on every run, as the rest of the suite is seeded); set
``EMU_FUZZ_EXAMPLES=500`` for a deeper local search.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emu_backend.checkpoints import load_model_file, load_published, read_jax_npz, save_model_file, write_jax_npz
from emu_backend.cosmology import QUIJOTE_FIDUCIAL, TabulatedPower
from emu_backend.datatypes import Snapshot
from emu_backend.errors import EmuBackendError
from emu_backend.inference import Emulator
from emu_backend.io.fields import FieldData, read_fields, write_fields
from emu_backend.io.gadget import read_gadget_hdf5, write_gadget_hdf5
from emu_backend.io.training_sample import TrainingSample, read_training_sample, write_training_sample
from emu_backend.nn import StyledVNet
from emu_backend.pipelines.run_config import RunConfig, config_from_mapping, load_toml

# torch warns about the odd pickle protocol numbers of damaged files before failing on them
pytestmark = pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")

N_EXAMPLES = int(os.environ.get("EMU_FUZZ_EXAMPLES", "50"))
FUZZ = settings(max_examples=N_EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

CONFIG_TOML = """\
grid = 16
box_size = 31.25
seed = 7
z = [0.0, 1.0]
backend = "za"
format = "npz"
out = "fuzz_out"
plot = false
n_files = 1
[cosmology]
preset = "quijote"
omega_m = 0.3
"""

#: Magic prefixes, so that random tails get past the first format check more often.
MAGIC = {"hdf5": b"\x89HDF\r\n\x1a\n", "zip": b"PK\x03\x04", "npy": b"\x93NUMPY", "toml": b"grid = ", "text": b"0.1 "}


# -- the valid files ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def originals(tmp_path_factory) -> dict[str, list[Path]]:
    """One valid file (or file set) of every kind, written by the package's writers."""
    d = tmp_path_factory.mktemp("fuzz_originals")
    rng = np.random.default_rng(0)
    dis = rng.normal(0.0, 0.5, (3, 2, 2, 2)).astype(np.float32)
    vel = rng.normal(0.0, 50.0, (3, 2, 2, 2)).astype(np.float32)
    snap = Snapshot.from_displacement(dis, vel, 0.5, 3.90625, QUIJOTE_FIDUCIAL, {"seed": 1})
    files = {
        "gadget": write_gadget_hdf5(snap, d / "single" / "snap_000"),
        "gadget_multi": write_gadget_hdf5(snap, d / "multi" / "snap_000", n_files=2),
        "fields_h5": [write_fields(d / "f.h5", dis, vel, box_size=3.90625, a=0.5, cosmology=QUIJOTE_FIDUCIAL)],
        "fields_npz": [write_fields(d / "f.npz", dis, vel, box_size=3.90625, a=0.5, cosmology=QUIJOTE_FIDUCIAL)],
    }
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = StyledVNet(2, width=2)
    torch.save({"model": net.state_dict(), "epoch": 1}, d / "published.pt")
    files["published"] = [d / "published.pt"]
    save_model_file(d / "model.emu", "zdep", {"displacement": net},
                    {"omega_m": [0.1, 0.5], "z": [0.0, 3.0], "cell_size_mpc_h": 1000 / 512})
    files["native"] = [d / "model.emu"]
    files["jax"] = [write_jax_npz(net.state_dict(), d / "params.npz")]
    (d / "run.toml").write_text(CONFIG_TOML)
    files["toml"] = [d / "run.toml"]
    k = np.geomspace(1e-3, 10.0, 12)
    np.savetxt(d / "pk.txt", np.column_stack([k, 1e4 * k / (1 + (k / 0.02) ** 2.5)]), header="k P")
    files["pk"] = [d / "pk.txt"]
    sample = TrainingSample(dis, [0.0, 1.0], np.stack([dis, 0.5 * dis]), np.stack([vel, 0.5 * vel]), 3.90625,
                            QUIJOTE_FIDUCIAL, seed=1, provenance={"backend": "fuzz"})
    files["training_sample"] = [write_training_sample(d / "sample_0000.h5", sample)]
    files["_net"] = net
    return files


# -- the readers and what a success must satisfy ----------------------------------------------------
def _check_snapshot(snap):
    assert isinstance(snap, Snapshot)
    assert snap.positions.shape == (snap.grid**3, 3) and np.isfinite(snap.positions).all()
    assert (snap.positions >= 0).all() and (snap.positions < snap.box_size).all()
    assert np.isfinite(snap.velocities).all()


def _check_fields(data):
    assert isinstance(data, FieldData)
    assert data.displacement.shape[0] == 3 and np.isfinite(data.displacement).all()
    assert data.velocity is None or np.isfinite(data.velocity).all()


def _check_net(net, ref):
    assert isinstance(net, StyledVNet) and net.arch == ref.arch


def _check_native(model_file, ref):
    # the checksum covers every byte that matters: a successful read gives the original weights
    got = model_file.networks["displacement"].state_dict()
    for key, value in ref.state_dict().items():
        assert torch.equal(got[key], value), f"tensor {key} changed but the checksum passed"


def _check_state_dict(sd):
    assert isinstance(sd, dict) and all(isinstance(v, torch.Tensor) for v in sd.values())


def _check_config(config):
    assert isinstance(config, RunConfig) and config.grid >= 8


def _check_power(power):
    assert np.isfinite(power.power).all() and (power.power > 0).all() and (np.diff(power.k) > 0).all()


def _check_sample(sample):
    assert isinstance(sample, TrainingSample) and np.isfinite(sample.displacement).all()
    assert sample.displacement.shape == (sample.n_times, 3, sample.grid, sample.grid, sample.grid)


def _read_config(path):
    return config_from_mapping(load_toml(path), source=f"config file {str(path)!r}")


READERS = {
    # kind: (reader(path) -> object, check(object, originals))
    "gadget": (read_gadget_hdf5, lambda r, o: _check_snapshot(r)),
    "gadget_multi": (read_gadget_hdf5, lambda r, o: _check_snapshot(r)),
    "fields_h5": (read_fields, lambda r, o: _check_fields(r)),
    "fields_npz": (read_fields, lambda r, o: _check_fields(r)),
    "published": (load_published, lambda r, o: _check_net(r, o["_net"])),
    "native": (load_model_file, lambda r, o: _check_native(r, o["_net"])),
    "jax": (read_jax_npz, lambda r, o: _check_state_dict(r)),
    "toml": (_read_config, lambda r, o: _check_config(r)),
    "pk": (TabulatedPower.from_file, lambda r, o: _check_power(r)),
    "training_sample": (read_training_sample, lambda r, o: _check_sample(r)),
}
#: Emulator.from_checkpoint reads all three checkpoint kinds ("auto" picks by content and suffix).
ENTRY = dict.fromkeys(("published", "native", "jax"), Emulator.from_checkpoint)


def _call(reader, path):
    """Run a reader; return (result, None) or (None, documented error); anything else fails."""
    try:
        return reader(path), None
    except EmuBackendError as exc:
        assert str(exc), "documented errors carry a message"
        return None, exc
    except Exception as exc:  # pragma: no cover - this is the bug the test looks for
        pytest.fail(f"{getattr(reader, '__qualname__', reader)}({str(path)!r}) leaked {type(exc).__name__}: {exc}")


def _damaged_copy(files: list[Path], which: int, damage) -> tuple[Path, Path]:
    """Copy a file set into a new folder, damaging file ``which``; returns (folder, path to read)."""
    folder = Path(tempfile.mkdtemp(prefix="emu_fuzz_"))
    for i, f in enumerate(files):
        data = f.read_bytes()
        (folder / f.name).write_bytes(damage(data) if i == which % len(files) else data)
    return folder, folder / files[0].name


def _exercise(originals, kind, which, damage):
    reader, check = READERS[kind]
    folder, path = _damaged_copy(originals[kind], which, damage)
    try:
        result, _ = _call(reader, path)
        if result is not None:
            check(result, originals)
        if kind in ENTRY:
            _call(ENTRY[kind], path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


KINDS = list(READERS)


# -- the properties ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
@FUZZ
@given(data=st.data())
def test_truncated_files_raise_only_documented_errors(originals, kind, data):
    files = originals[kind]
    which = data.draw(st.integers(0, len(files) - 1), label="file")
    size = files[which].stat().st_size
    cut = data.draw(st.integers(0, size - 1), label="keep bytes")
    _exercise(originals, kind, which, lambda b: b[:cut])


@pytest.mark.parametrize("kind", KINDS)
@FUZZ
@given(data=st.data())
def test_bit_flipped_files_raise_only_documented_errors(originals, kind, data):
    files = originals[kind]
    which = data.draw(st.integers(0, len(files) - 1), label="file")
    size = files[which].stat().st_size
    flips = data.draw(st.lists(st.tuples(st.integers(0, size - 1), st.integers(1, 255)), min_size=1, max_size=6),
                      label="flips (offset, xor)")

    def damage(b: bytes) -> bytes:
        arr = bytearray(b)
        for offset, xor in flips:
            arr[offset] ^= xor
        return bytes(arr)

    _exercise(originals, kind, which, damage)


@pytest.mark.parametrize("kind", KINDS)
@FUZZ
@given(magic=st.sampled_from([b"", *MAGIC.values()]), tail=st.binary(max_size=600))
def test_random_bytes_raise_only_documented_errors(originals, kind, magic, tail):
    _exercise(originals, kind, 0, lambda b: magic + tail)


def test_originals_read_back(originals):
    """The undamaged files are valid (so the properties above test damage, not a broken writer)."""
    for kind, (reader, check) in READERS.items():
        check(reader(originals[kind][0]), originals)
    for kind, entry in ENTRY.items():
        assert isinstance(entry(originals[kind][0]), Emulator)
