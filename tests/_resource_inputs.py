"""The bad-input table's cases for resources and inputs: jobs that would not fit in memory, sizes that do
not fit each other, damaged predict inputs, tensors and devices, caller-supplied output arrays, inputs
that make the network overflow, and out-of-range box sizes, output times, headers and config values.

:func:`reliability_cases` adds rows to the table of ``tests/test_bad_inputs.py`` (and so to
docs/reliability.md); it takes that module's ``Case`` class. The calls get its ``ctx`` (a temporary
``dir``, a width-2 model file ``dir/model.emu`` and a width-2 ``emu``). The memory cases are sized to
be refused on any machine (hundreds of GiB to TiB), so they never start; the message shows the memory
available where the table was generated. A Blosc dataset "without hdf5plugin" is simulated by making
the filter unavailable and the import fail.
"""

import sys
from pathlib import Path
from unittest import mock

import h5py
import numpy as np
import torch

from emu_backend.cosmology import QUIJOTE_FIDUCIAL
from emu_backend.datatypes import Snapshot
from emu_backend.errors import ComputationError, FileFormatError, InputError, MissingDependencyError, ResourceError
from emu_backend.ics import InitialConditions
from emu_backend.inference import Emulator, ZdepConvention
from emu_backend.inference.streaming import predict_to_file
from emu_backend.io.fields import write_fields
from emu_backend.io.gadget import read_gadget_hdf5, write_gadget_hdf5
from emu_backend.nn import StyledVNet
from emu_backend.simulator import simulate
from emu_backend.training.make_set import make_training_set

CELL = 1000.0 / 512
#: A refusal of a job that does not fit, whatever the machine.
TOO_BIG = (r"needs about [0-9.e+]+ [GT]iB of memory at its peak \(estimated\), but [0-9.]+ [MGT]iB is available "
           r"\(.*\); .*or pass --ignore-memory-check \(check_memory=False\) to try anyway")
_WIDE: dict = {}  # the width-64 emulator, built once


def _folder(ctx) -> Path:
    """The cases' files, made once in the table's temporary folder."""
    folder = Path(ctx.dir) / "resources"
    if folder.is_dir():
        return folder
    folder.mkdir()
    zeros = np.zeros((3, 8, 8, 8), np.float32)
    write_fields(folder / "good.h5", zeros, box_size=8 * CELL, a=1.0, cosmology=QUIJOTE_FIDUCIAL)
    for name, key, value in (("box_text.h5", "box_size", "big"), ("cosmology_text.h5", "cosmology", "{not json"),
                             ("meta_text.h5", "meta", "{not json")):
        with h5py.File(folder / name, "w") as f:
            f.create_dataset("displacement", data=zeros)
            f.attrs[key] = value
    (folder / "empty.npy").write_bytes(b"")
    with h5py.File(folder / "sparse_512.h5", "w") as f:  # a 512^3 box of which nothing is written: 1.6 GB unread
        f.create_dataset("displacement", shape=(3, 512, 512, 512), dtype=np.float32, chunks=(1, 64, 64, 64))
    import hdf5plugin  # the writer's side: the reader must not need it loaded

    with h5py.File(folder / "blosc.h5", "w") as f:
        f.create_dataset("displacement", data=zeros, **hdf5plugin.Blosc(cname="zstd", clevel=5))
    _wide_emulator().save(folder / "wide.emu")
    rng = np.random.default_rng(0)
    snap = Snapshot.from_displacement(rng.normal(0.0, 0.5, (3, 2, 2, 2)), rng.normal(0.0, 50.0, (3, 2, 2, 2)), 0.5,
                                      2 * CELL, QUIJOTE_FIDUCIAL)
    [path] = write_gadget_hdf5(snap, folder / "snap_000")
    with h5py.File(path, "r+") as f:
        f["Header"].attrs["Redshift"] = 3.0  # Time = 0.5 says z = 1
    make_training_set(folder / "set16", [QUIJOTE_FIDUCIAL, QUIJOTE_FIDUCIAL.clone(omega_m=0.3)], grid=16, z=[0.0, 1.0],
                      backend="2lpt", progress=False)
    (folder / "name5.toml").write_text("[cosmology]\nname = 5\nomega_m = 0.3\n")
    return folder


def _wide_emulator() -> Emulator:
    """A width-64 (published width) emulator with random weights."""
    if "emu" not in _WIDE:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            _WIDE["emu"] = Emulator(ZdepConvention(StyledVNet(2, width=64)))
    return _WIDE["emu"]


def _predict(ctx, name: str, *extra, omega_m: str = "0.3175", weights: str | None = None) -> list:
    """``predict`` of file ``name`` with the width-2 model (or ``weights``), tile 8 unless ``extra`` says."""
    folder = _folder(ctx)
    return ["predict", str(folder / name), str(folder / "never_written.h5"), "--omega-m", omega_m, "--z", "0",
            "--weights", weights or str(Path(ctx.dir) / "model.emu"), *(extra or ("--tile", "8"))]


def _run(ctx, *extra, times=("--z", "0", "1")) -> list:
    return ["run", "--backend", "za", *times, "--out", str(_folder(ctx) / "never_run"), *extra]


def _train(ctx, *extra) -> list:
    folder = _folder(ctx)
    return ["train", "--data", str(folder / "set16" / "sample_0000.h5"), "--val-files",
            str(folder / "set16" / "sample_0001.h5"), "--out", str(folder / "never_trained"), *extra]


def _blosc_without_plugin(ctx):
    folder = _folder(ctx)
    available = h5py.h5z.filter_avail
    with mock.patch.object(h5py.h5z, "filter_avail", lambda code: code != 32001 and available(code)), \
            mock.patch.dict(sys.modules, {"hdf5plugin": None}):
        return predict_to_file(ctx.emu, folder / "blosc.h5", folder / "never_written.h5", 0.3175, 0.0, tile_size=8,
                               velocity=False)


def _out(*arrays):
    return [tuple(arrays)]


def _read_only():
    arr = np.zeros((3, 8, 8, 8), np.float32)
    arr.flags.writeable = False
    return arr


def _aliased(ctx):
    field = np.ones((3, 16, 16, 16), np.float32)
    return ctx.emu.predict(field, 0.3, 0.0, tile_size=8, out=_out(field, np.zeros_like(field)))


def _shared(ctx):
    out = np.zeros((3, 8, 8, 8), np.float32)
    return ctx.emu.predict(np.zeros((3, 8, 8, 8), np.float32), 0.3, 0.0, tile_size=8, out=_out(out, out))


def _ics():
    return InitialConditions.from_noise(8, None, QUIJOTE_FIDUCIAL, seed=1)


def reliability_cases(case) -> list:
    """Rows of the bad-input table: ``case`` is ``tests/test_bad_inputs.py``'s ``Case``."""
    z8 = np.zeros((3, 8, 8, 8), np.float32)
    return [
        # ---- memory: estimated before any work, refused with the estimate and the available memory
        case("run-memory-4096", "CLI", "run -n 4096 (allowed by the config) with ZA", lambda c: [*_run(c), "-n", "4096"],
             ResourceError, r"run -n 4096 \(za, 2 output time\(s\), with the plot\) " + TOO_BIG),
        case("run-memory-1024", "CLI", "run -n 1024 with ZA and the plot",
             lambda c: [*_run(c), "-n", "1024"], ResourceError, r"run -n 1024 .*" + TOO_BIG),
        case("predict-memory-batch", "CLI", "predict --batch-size 27 of a 512^3 input, width-64 weights (27 tiles of "
             "224^3 input cells per network call)",
             lambda c: _predict(c, "sparse_512.h5", "--batch-size", "27", "--tile-size", "128", omega_m="0.3",
                                weights=str(_folder(c) / "wide.emu")), ResourceError,
             r"emulating a 512x512x512 box in batches of 27 tile\(s\) of 224x224x224 input cells \(width 64, with "
             r"velocities\) on cpu " + TOO_BIG),
        case("emulator-memory-batch", "API", "Emulator.predict of a 512^3 box (a broadcast view), batch_size = 27, "
             "width 64, outputs in memory",
             lambda c: _wide_emulator().predict(np.broadcast_to(np.float32(0), (3, 512, 512, 512)), 0.3, 0.0,
                                                tile_size=128, batch_size=27), ResourceError,
             r"emulating a 512x512x512 box in batches of 27 tile\(s\) .*" + TOO_BIG),
        case("train-memory-width", "CLI", "train --width 4096 (the model and one crop's pass)",
             lambda c: _train(c, "--crop", "16", "--width", "4096"), ResourceError,
             r"training width 4096 on crops of 16 \(112\^3 input cells\), 1 per step and rank, on cpu " + TOO_BIG),
        case("make-set-memory-4096", "CLI", "make-training-set --grid 4096 (2LPT)",
             lambda c: ["make-training-set", "--out", str(_folder(c) / "never_made"), "--n-sims", "2", "--grid",
                        "4096", "--backend", "2lpt"], ResourceError,
             r"make-training-set --grid 4096 \(2lpt, 5 redshift\(s\)\) " + TOO_BIG),
        # ---- sizes checked against each other
        case("train-crop-vs-grid", "CLI", "train --crop 1000 on a 16^3 training set",
             lambda c: _train(c, "--crop", "1000"), InputError,
             r"crop = 1000 cells is larger than the 16\^3 grid of '.*sample_0000\.h5'.*use crop <= 16"),
        case("train-batch-vs-data", "CLI", "train --batch 100000 on one 16^3 simulation at 2 redshifts (8192 crops)",
             lambda c: _train(c, "--crop", "8", "--batch", "100000"), InputError,
             r"TrainConfig\.batch = 100000 crops per step exceeds the 8192 distinct crops of the training data"),
        # ---- predict inputs
        case("predict-input-box-size-text", "CLI", "predict of an HDF5 input whose box_size attribute is 'big'",
             lambda c: _predict(c, "box_text.h5"), FileFormatError,
             r"'.*box_text\.h5': attribute box_size \[Mpc/h\] must be a finite number > 0, got 'big'"),
        case("predict-input-cosmology-text", "CLI", "predict of an HDF5 input whose cosmology attribute is not JSON",
             lambda c: _predict(c, "cosmology_text.h5"), FileFormatError,
             r"'.*cosmology_text\.h5': attribute cosmology is not the JSON of a cosmology: Expecting property name"),
        case("predict-input-meta-text", "CLI", "predict of an HDF5 input whose meta attribute is not JSON",
             lambda c: _predict(c, "meta_text.h5"), FileFormatError,
             r"'.*meta_text\.h5': attribute meta is not a JSON object: Expecting property name"),
        case("predict-input-empty-npy", "CLI", "predict of an empty (0-byte) .npy",
             lambda c: _predict(c, "empty.npy"), FileFormatError,
             r"'.*empty\.npy': cannot be read as a \.npy array \(empty, truncated or not \.npy\?\): EOFError"),
        case("predict-input-blosc-no-plugin", "API", "predict_to_file of a Blosc-compressed input, hdf5plugin not "
             "installed (simulated; installed, it is loaded when the filter is needed)", _blosc_without_plugin,
             MissingDependencyError, r"'.*blosc\.h5': dataset 'displacement' is compressed with HDF5 filter 32001 "
             r"\(blosc\); reading it needs hdf5plugin: pip install 'emu_backend\[quijote\]'"),
        # ---- tensors and devices
        case("predict-tensor-meta", "API", "Emulator.predict of a torch tensor on the meta device",
             lambda c: c.emu.predict(torch.zeros(3, 8, 8, 8, device="meta"), 0.3, 0.0, tile_size=8), InputError,
             r"linear displacement is a tensor on the 'meta' device, which holds shapes but no values"),
        case("emulator-device-meta", "API", "Emulator(device='meta')",
             lambda c: Emulator(c.emu.model, device="meta"), InputError,
             r"device 'meta' holds shapes but no values and cannot run the emulator; use 'cpu' or 'cuda'"),
        case("cli-predict-device-meta", "CLI", "predict --device meta",
             lambda c: _predict(c, "good.h5", "--tile", "8", "--device", "meta"), InputError,
             r"device 'meta' holds shapes but no values"),
        # ---- caller-supplied outputs
        case("predict-out-int", "API", "Emulator.predict into int32 out arrays",
             lambda c: c.emu.predict(z8, 0.3, 0.0, tile_size=8, out=_out(z8.astype(np.int32), z8.astype(np.int32))),
             InputError, r"out\[0\] displacement must be a floating-point array, got dtype int32"),
        case("predict-out-shared", "API", "Emulator.predict with one array for the displacement and the velocity",
             _shared, InputError, r"out\[0\] displacement and out\[0\] velocity share memory"),
        case("predict-out-aliases-input", "API", "Emulator.predict writing the displacement into its input array",
             _aliased, InputError, r"out\[0\] displacement shares memory with the input linear displacement"),
        case("predict-out-read-only", "API", "Emulator.predict into a read-only array",
             lambda c: c.emu.predict(z8, 0.3, 0.0, tile_size=8, out=_out(_read_only(), z8.copy())), InputError,
             r"out\[0\] displacement is read-only"),
        # ---- finite but absurd input
        case("predict-absurd-input", "API", "Emulator.predict of a finite but absurd field (3e38 Mpc/h everywhere)",
             lambda c: c.emu.predict(np.full((3, 8, 8, 8), 3e38, np.float32), 0.3, 0.0, tile_size=8),
             ComputationError, r"the emulator's (displacement|velocity) is not finite in tile 0 \(cells \[0, 8\) x "
             r"\[0, 8\) x \[0, 8\)\) at z = 0: .*max \|linear displacement\| in the tile = 3e\+38 Mpc/h"),
        # ---- out-of-range values
        case("run-box-inf", "CLI", "run --box-size inf --allow-extrapolation",
             lambda c: [*_run(c), "-n", "8", "--box-size", "inf", "--allow-extrapolation"], InputError,
             r"config key 'box_size' must be a finite number > 0\.0, got inf"),
        case("predict-box-inf", "CLI", "predict --box-size inf --allow-extrapolation",
             lambda c: _predict(c, "good.h5", "--tile", "8", "--box-size", "inf", "--allow-extrapolation"), InputError,
             r"box_size must be a finite number > 0, got inf"),
        case("ics-box-1e300", "API", "InitialConditions.from_noise with a 1e300 Mpc/h box",
             lambda c: InitialConditions.from_noise(8, 1e300, QUIJOTE_FIDUCIAL, seed=1), InputError,
             r"box_size \[Mpc/h\] = 1e\+300 is outside the range a linear field is made in, \[0\.001, 1e\+06\] Mpc/h"),
        case("cli-a-tiny", "CLI", "run --a 1e-300", lambda c: _run(c, "-n", "8", times=("--a", "1e-300")), InputError, r"config key 'a' values must be in \[0\.000999001, 1\.5\], got 1e-300"),
        case("simulate-a-tiny", "API", "simulate(a=1e-300)",
             lambda c: simulate(_ics(), QUIJOTE_FIDUCIAL, a=1e-300, backend="za"), InputError,
             r"scale factor a = 1e-300 is before the earliest output time a = 0\.000999001 \(z = 1000"),
        case("gadget-redshift-time", "reader", "read_gadget_hdf5 of a header with Time = 0.5 but Redshift = 3",
             lambda c: read_gadget_hdf5(_folder(c) / "snap_000.hdf5"), FileFormatError,
             r"Header/Redshift = 3\.0 disagrees with Header/Time = 0\.5 \(a = 1/\(1 \+ z\) would be 0\.25\)"),
        case("cli-cosmology-name-int", "CLI", "TOML [cosmology] name = 5",
             lambda c: [*_run(c), "-n", "8", "--config", str(_folder(c) / "name5.toml")], InputError,
             r"config key 'cosmology': Cosmology\.name must be a string \(a label\), got 5"),
    ]

