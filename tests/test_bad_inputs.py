"""Table of bad inputs across the API, the CLI and the file readers, and the error each gives.

Every case names the bad input, the documented error class it must raise (see ``docs/errors.md``) and a
regular expression the message must match -- the offending value and what was expected. CLI cases run
``main(["run", ...])`` and must exit with status 2 and print ``error: <message>`` to stderr with no
traceback; the exception class is read where ``main`` catches it.

The table ``docs/reliability.md`` is generated from the errors actually raised here: every run renders it
into pytest's temporary folder, and ``EMU_WRITE_RELIABILITY_TABLE=1 python -m pytest tests/test_bad_inputs.py``
copies it to ``docs/`` (only when every case ran). ``test_reliability_table_lists_every_case`` fails when a
case is added without regenerating the file.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import h5py
import numpy as np
import pytest
import torch
from _untrusted_inputs import reliability_cases  # tests/_untrusted_inputs.py
from emu_backend.validation.bispectrum import bispectrum
from emu_backend.validation.halos import find_halos
from emu_backend.validation.power import power_spectrum
from emu_backend.validation.rsd import multipoles

import emu_backend.cli.main as cli_main
from emu_backend.checkpoints import load_model_file, load_published, read_jax_npz, save_model_file
from emu_backend.cli._common import cli_message
from emu_backend.cli.main import main
from emu_backend.cosmology import QUIJOTE_FIDUCIAL, Cosmology, EisensteinHuPower, TabulatedPower
from emu_backend.datatypes import Snapshot
from emu_backend.errors import (
    CheckpointError,
    DomainError,
    EmuBackendError,
    FileFormatError,
    InputError,
    MissingDependencyError,
)
from emu_backend.ics import InitialConditions, linear_field, white_noise
from emu_backend.inference import Emulator, ZdepConvention
from emu_backend.io.fields import read_fields, write_fields
from emu_backend.io.gadget import read_gadget_hdf5, write_gadget_hdf5
from emu_backend.io.gadget1 import read_gadget_binary
from emu_backend.io.subfind import read_fof_groups
from emu_backend.io.training_sample import TrainingSample, read_training_sample
from emu_backend.mesh import paint
from emu_backend.nn import StyledVNet, VNetArch
from emu_backend.pipelines.run_config import load_toml
from emu_backend.simulator import EmulatorBackend, get_backend, simulate

DOC = Path(__file__).resolve().parents[1] / "docs" / "reliability.md"
WRITE_ENV = "EMU_WRITE_RELIABILITY_TABLE"
MESSAGE_WIDTH = 120
CELL = 1000.0 / 512  # the trained cell size [Mpc/h]


@dataclass(frozen=True)
class Case:
    """One bad input: ``call(ctx)`` must raise ``error`` with a message matching ``match``.

    For ``area == "CLI"``, ``call(ctx)`` returns the argument list after ``emu-backend run``, or after
    ``emu-backend`` when it starts with another subcommand's name.
    """

    id: str
    area: str
    bad_input: str
    call: Callable[[Any], Any]
    error: type
    match: str


# -- shared valid objects and damaged files --------------------------------------------------------
def _zeros(*shape, dtype=np.float32):
    return np.zeros(shape, dtype)


def _with(arr, index, value):
    arr = arr.copy()
    arr[index] = value
    return arr


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad_inputs")
    c = SimpleNamespace(dir=d)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = StyledVNet(2, width=2)
    c.emu = Emulator(ZdepConvention(net))
    c.good = _zeros(3, 8, 8, 8)
    c.eh = EisensteinHuPower(QUIJOTE_FIDUCIAL)
    c.ics = InitialConditions.from_noise(8, None, QUIJOTE_FIDUCIAL, seed=1)
    c.ics_box100 = InitialConditions.from_noise(8, 100.0, QUIJOTE_FIDUCIAL, seed=1)

    # checkpoints: published (+ damaged), native (+ tampered, newer version), JAX
    sd = net.state_dict()
    torch.save({"model": sd}, d / "published.pt")
    data = (d / "published.pt").read_bytes()
    (d / "truncated.pt").write_bytes(data[: len(data) // 2])
    (d / "garbage.pt").write_bytes(b"this is not a checkpoint\n" * 20)
    torch.save({"model": {k: v for k, v in sd.items() if k != "conv_c.skip.bias"}}, d / "missing_tensor.pt")
    torch.save([1, 2, 3], d / "list.pt")
    torch.save({"model": sd, "args": SimpleNamespace(lr=1e-3)}, d / "pickled.pt")
    torch.save({"model": {k: v.to(torch.float64).fill_(float("nan")) if k == "conv_c.skip.bias" else v
                          for k, v in sd.items()}}, d / "nan_weight.pt")
    domain = {"omega_m": [0.1, 0.5], "z": [0.0, 3.0], "cell_size_mpc_h": CELL}
    save_model_file(d / "model.emu", "zdep", {"displacement": net}, domain)
    obj = torch.load(d / "model.emu", weights_only=True)
    torch.save({**obj, "provenance": {"trained_on": "edited by hand"}}, d / "tampered.emu")
    torch.save({**obj, "format_version": 99}, d / "newer.emu")
    data = (d / "model.emu").read_bytes()
    (d / "truncated.emu").write_bytes(data[: len(data) // 3])
    np.savez(d / "no_params.npz", weights=np.zeros(3))
    (d / "truncated.npz").write_bytes(b"PK\x03\x04" + b"\x00" * 40)

    # snapshots and fields
    rng = np.random.default_rng(0)
    dis = rng.normal(0.0, 0.5, (3, 2, 2, 2)).astype(np.float32)
    vel = rng.normal(0.0, 50.0, (3, 2, 2, 2)).astype(np.float32)
    snap = Snapshot.from_displacement(dis, vel, 0.5, 2 * CELL, QUIJOTE_FIDUCIAL)
    write_gadget_hdf5(snap, d / "snap_000")
    data = (d / "snap_000.hdf5").read_bytes()
    (d / "truncated.hdf5").write_bytes(data[:600])
    write_gadget_hdf5(snap, d / "multi" / "snap_000", n_files=2)
    (d / "multi" / "snap_000.1.hdf5").unlink()
    with h5py.File(d / "no_header.hdf5", "w") as f:
        f.create_dataset("PartType1/Coordinates", data=np.zeros((8, 3), np.float32))
    shutil.copy(d / "snap_000.hdf5", d / "seven.hdf5")
    with h5py.File(d / "seven.hdf5", "r+") as f:
        for key in ("NumPart_ThisFile", "NumPart_Total"):
            counts = f["Header"].attrs[key].copy()
            counts[1] = 7
            f["Header"].attrs[key] = counts
    write_fields(d / "fields.h5", dis, vel, box_size=2 * CELL, a=0.5, cosmology=QUIJOTE_FIDUCIAL)
    write_fields(d / "fields.npz", dis, vel, box_size=2 * CELL, a=0.5, cosmology=QUIJOTE_FIDUCIAL)
    data = (d / "fields.h5").read_bytes()
    (d / "truncated.h5").write_bytes(data[: len(data) // 2])
    shutil.copy(d / "fields.h5", d / "nan_fields.h5")
    with h5py.File(d / "nan_fields.h5", "r+") as f:
        f["displacement"][0, 0, 0, 0] = np.nan
    shutil.copy(d / "fields.h5", d / "bad_z.h5")
    with h5py.File(d / "bad_z.h5", "r+") as f:
        f.attrs["z"] = 3.0
    arrays = dict(np.load(d / "fields.npz"))
    np.savez(d / "no_dis.npz", **{k: v for k, v in arrays.items() if k != "displacement"})
    np.savez(d / "noncubic.npz", **{**arrays, "displacement": np.zeros((3, 2, 2, 3), np.float32),
                                    "velocity": np.zeros((3, 2, 2, 3), np.float32)})

    # text files: configs and P(k) tables
    (d / "bad.toml").write_text("grid = 16\nz = [0.0,\n")
    (d / "latin1.toml").write_bytes("grid = 16 # \xe9t\xe9\n".encode("latin-1"))
    k = np.geomspace(1e-3, 10.0, 8)
    np.savetxt(d / "pk3.txt", np.column_stack([k, k, k]))
    (d / "pk_text.txt").write_text("k P\n0.1 abc\n")
    np.savetxt(d / "pk_negative.txt", np.column_stack([k, -np.ones_like(k)]))
    (d / "out_exists").mkdir()
    (d / "out_exists" / "snap_000.hdf5").write_bytes(b"an earlier result")
    return c


def _bytes(ctx, name: str, data: bytes):
    path = ctx.dir / "bytes" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _toml(ctx, name: str, text: str) -> str:
    path = ctx.dir / name
    path.write_text(text)
    return str(path)


# CLI runs that reach the emulator use the width-2 model file so that nothing large is built
def _cli_emu(ctx, *extra):
    return ["-n", "8", "--z", "0", "--no-plot", "--weights", str(ctx.dir / "model.emu"), "--out",
            str(ctx.dir / "never_written"), *extra]


def _cli(ctx, *extra):
    return ["--backend", "za", "-n", "8", "--z", "0", "--no-plot", "--out", str(ctx.dir / "never_written"), *extra]


def _missing_classy(ctx):
    from emu_backend.adapters.classy import ClassPower

    return ClassPower.from_cosmology(QUIJOTE_FIDUCIAL)


# -- the cases ----------------------------------------------------------------------------------
CASES = [
    # ---- API: the emulator
    Case("predict-shape-3d", "API", "Emulator.predict: field of shape (8, 8, 8), no channel axis",
         lambda c: c.emu.predict(_zeros(8, 8, 8), 0.3, 0.0, tile_size=8), InputError,
         r"shape \(3, N0, N1, N2\).*got \(8, 8, 8\)"),
    Case("predict-shape-channels", "API", "Emulator.predict: 2 channels instead of 3",
         lambda c: c.emu.predict(_zeros(2, 8, 8, 8), 0.3, 0.0, tile_size=8), InputError, r"got \(2, 8, 8, 8\)"),
    Case("predict-grid-too-small", "API", "Emulator.predict: 4 cells along an axis (< 8)",
         lambda c: c.emu.predict(_zeros(3, 4, 8, 8), 0.3, 0.0, tile_size=8), InputError,
         r"every N >= 8, got \(3, 4, 8, 8\)"),
    Case("predict-dtype-int", "API", "Emulator.predict: int32 displacement",
         lambda c: c.emu.predict(_zeros(3, 8, 8, 8, dtype=np.int32), 0.3, 0.0, tile_size=8), InputError,
         r"floating point, got dtype int32"),
    Case("predict-nan", "API", "Emulator.predict: NaN at index (1, 2, 3, 4)",
         lambda c: c.emu.predict(_with(c.good, (1, 2, 3, 4), np.nan), 0.3, 0.0, tile_size=8), InputError,
         r"non-finite value nan at index \(1, 2, 3, 4\)"),
    Case("predict-inf", "API", "Emulator.predict: +inf at index (0, 7, 0, 0)",
         lambda c: c.emu.predict(_with(c.good, (0, 7, 0, 0), np.inf), 0.3, 0.0, tile_size=8), InputError,
         r"non-finite value inf at index \(0, 7, 0, 0\)"),
    Case("predict-noncubic-box", "API", "Emulator.predict: (3, 8, 16, 8) grid with a box_size (needs a cube)",
         lambda c: c.emu.predict(_zeros(3, 8, 16, 8), 0.3, 0.0, tile_size=8, box_size=8 * CELL), InputError,
         r"box_size needs a cubic grid, got \(8, 16, 8\)"),
    Case("predict-cell-size", "API", "Emulator.predict: box_size 100 Mpc/h for n = 8 (cell 12.5, trained 1.953)",
         lambda c: c.emu.predict(c.good, 0.3, 0.0, tile_size=8, box_size=100.0), DomainError,
         r"box_size/n = 100\.0/8 = 12\.5 Mpc/h differs from the trained 1\.95312 Mpc/h"),
    Case("predict-omega-m-low", "API", "Emulator.predict: omega_m = 0.05 (trained [0.1, 0.5])",
         lambda c: c.emu.predict(c.good, 0.05, 0.0, tile_size=8), DomainError,
         r"omega_m = 0\.05 is outside the training range \[0\.1, 0\.5\]"),
    Case("predict-omega-m-high", "API", "Emulator.predict: omega_m = 0.6",
         lambda c: c.emu.predict(c.good, 0.6, 0.0, tile_size=8), DomainError, r"omega_m = 0\.6 is outside"),
    Case("predict-z-high", "API", "Emulator.predict: z = 3.5 (trained [0, 3])",
         lambda c: c.emu.predict(c.good, 0.3, 3.5, tile_size=8), DomainError,
         r"z = 3\.5 is outside the training range \[0\.0, 3\.0\]"),
    Case("predict-z-negative", "API", "Emulator.predict: z = [0.0, -0.5]",
         lambda c: c.emu.predict(c.good, 0.3, [0.0, -0.5], tile_size=8), DomainError, r"z = -0\.5 is outside"),
    Case("predict-omega-m-string", "API", "Emulator.predict: omega_m = '0.3' (a string)",
         lambda c: c.emu.predict(c.good, "0.3", 0.0, tile_size=8), InputError,
         r"omega_m must be finite and in \(0, 1\], got '0\.3'"),
    Case("predict-tile-not-multiple", "API", "Emulator.predict: tile_size = 12",
         lambda c: c.emu.predict(c.good, 0.3, 0.0, tile_size=12), InputError,
         r"tile size must be a positive multiple of 8.*got 12"),
    Case("predict-tile-zero", "API", "Emulator.predict: tile_size = 0",
         lambda c: c.emu.predict(c.good, 0.3, 0.0, tile_size=0), InputError,
         r"tile size must be a positive multiple of 8.*got 0"),
    Case("predict-batch-zero", "API", "Emulator.predict: batch_size = 0",
         lambda c: c.emu.predict(c.good, 0.3, 0.0, tile_size=8, batch_size=0), InputError,
         r"batch_size must be a positive integer, got 0"),
    Case("predict-box-negative", "API", "Emulator.predict: box_size = -1",
         lambda c: c.emu.predict(c.good, 0.3, 0.0, tile_size=8, box_size=-1.0), InputError,
         r"box_size must be positive and finite, got -1\.0"),
    Case("predict-out-shape", "API", "Emulator.predict: out arrays of shape (3, 4, 4, 4) for an 8^3 box",
         lambda c: c.emu.predict(c.good, 0.3, 0.0, tile_size=8, out=[(_zeros(3, 4, 4, 4), _zeros(3, 4, 4, 4))]),
         InputError, r"out\[0\] must be .* shape \(3, 8, 8, 8\), got shapes \(\(3, 4, 4, 4\)"),
    Case("emulator-dtype", "API", "Emulator(dtype='float16')",
         lambda c: Emulator(c.emu.model, dtype="float16"), InputError,
         r"dtype must be one of \['float32', 'float64'\], got 'float16'"),
    Case("emulator-device", "API", "Emulator(device='tpu')",
         lambda c: Emulator(c.emu.model, device="tpu"), InputError, r"unknown device 'tpu'"),
    Case("emulator-precision", "API", "Emulator(precision='fp8')",
         lambda c: Emulator(c.emu.model, precision="fp8"), InputError,
         r"precision must be one of \['fp32', 'tf32', 'bf16', 'fp16'\], got 'fp8'"),
    Case("emulator-tf32-cpu", "API", "Emulator(precision='tf32') on a CPU",
         lambda c: Emulator(c.emu.model, precision="tf32"), InputError,
         r"precision 'tf32' needs a CUDA device, got 'cpu'; on cpu use one of \('fp32', 'bf16', 'fp16'\)"),
    Case("emulator-compile-mode", "API", "Emulator(compile_mode='fastest')",
         lambda c: Emulator(c.emu.model, compile_mode="fastest"), InputError,
         r"compile_mode must be one of \[None, 'default', 'reduce-overhead', .*\], got 'fastest'"),
    Case("model-wrong-style-size", "API", "ZdepConvention(StyledVNet(style_size=1)): an emu network as zdep",
         lambda c: ZdepConvention(StyledVNet(1, width=2)), InputError, r"map2map_zdep needs style_size 2, got 1"),
    Case("from-checkpoint-kind", "API", "Emulator.from_checkpoint(model='d2d') (unknown kind)",
         lambda c: Emulator.from_checkpoint(c.dir / "published.pt", model="d2d"), InputError,
         r"model must be one of .*got 'd2d'"),
    # ---- API: cosmology, power spectra, ICs
    Case("cosmology-sigma8", "API", "Cosmology(sigma8=5.0)",
         lambda c: Cosmology(omega_m=0.3, sigma8=5.0), InputError,
         r"Cosmology\.sigma8 = 5\.0 is outside the allowed range \(0\.0, 3\.0\)"),
    Case("cosmology-omega-m", "API", "Cosmology(omega_m=1.2)",
         lambda c: Cosmology(omega_m=1.2), InputError, r"Cosmology\.omega_m = 1\.2 is outside .*\(0\.0, 1\.0\)"),
    Case("cosmology-omega-b", "API", "Cosmology(omega_m=0.3, omega_b=0.4): more baryons than matter",
         lambda c: Cosmology(omega_m=0.3, omega_b=0.4), InputError, r"Cosmology\.omega_b = 0\.4 .*\[0\.0, 0\.3\)"),
    Case("cosmology-two-normalisations", "API", "Cosmology with both sigma8 and A_s",
         lambda c: Cosmology(omega_m=0.3, sigma8=0.8, A_s=2e-9), InputError,
         r"exactly one of sigma8 and A_s .*sigma8=0\.8, A_s=2e-09"),
    Case("cosmology-dict-unknown-key", "API", "Cosmology.from_dict with unknown key 'w0'",
         lambda c: Cosmology.from_dict({"omega_m": 0.3, "w0": -1.0}), InputError,
         r"unknown cosmology key\(s\) \['w0'\]"),
    Case("cosmology-dict-wrong-type", "API", "Cosmology.from_dict({'omega_m': '0.3'})",
         lambda c: Cosmology.from_dict({"omega_m": "0.3"}), InputError,
         r"Cosmology\.omega_m must be a finite number, got '0\.3'"),
    Case("cosmology-dict-missing-key", "API", "Cosmology.from_dict({'h': 0.7}) without omega_m",
         lambda c: Cosmology.from_dict({"h": 0.7}), InputError, r"lacks the required key 'omega_m'"),
    Case("cosmology-dict-not-a-dict", "API", "Cosmology.from_dict([0.3, 0.7])",
         lambda c: Cosmology.from_dict([0.3, 0.7]), InputError, r"dict of parameters, got list: \[0\.3, 0\.7\]"),
    Case("cosmology-clone-unknown", "API", "QUIJOTE_FIDUCIAL.clone(Omega_m=0.3) (wrong case)",
         lambda c: QUIJOTE_FIDUCIAL.clone(Omega_m=0.3), InputError, r"unknown cosmology parameter\(s\) \['Omega_m'\]"),
    Case("cosmology-preset", "API", "Cosmology.preset('wmap9')",
         lambda c: Cosmology.preset("wmap9"), InputError, r"unknown cosmology preset 'wmap9'; choose one of"),
    Case("eisenstein-hu-A_s", "API", "EisensteinHuPower of a cosmology normalised by A_s",
         lambda c: EisensteinHuPower(Cosmology(omega_m=0.3, sigma8=None, A_s=2e-9)), InputError,
         r"normalised by sigma8.*A_s=2e-09"),
    Case("tabulated-k-order", "API", "TabulatedPower with decreasing k",
         lambda c: TabulatedPower([0.1, 0.01], [1.0, 2.0]), InputError, r"strictly increasing; k\[0\]=0\.1"),
    Case("white-noise-zero-grid", "API", "white_noise(n=0)",
         lambda c: white_noise(0, 1), InputError, r"grid size n must be an integer >= 2, got 0"),
    Case("white-noise-negative-seed", "API", "white_noise(seed=-1)",
         lambda c: white_noise(8, -1), InputError, r"seed must be a non-negative integer, got -1"),
    Case("linear-field-noncubic", "API", "linear_field: noise of shape (8, 8, 4)",
         lambda c: linear_field(_zeros(8, 8, 4), c.eh), InputError, r"cubic array .*got shape \(8, 8, 4\)"),
    Case("linear-field-nan", "API", "linear_field: noise with one NaN",
         lambda c: linear_field(_with(_zeros(8, 8, 8), (1, 1, 1), np.nan), c.eh), InputError,
         r"noise contains 1 non-finite value"),
    Case("linear-field-zero-box", "API", "linear_field(box_size=0)",
         lambda c: linear_field(_zeros(8, 8, 8), c.eh, 0.0), InputError,
         r"box_size \[Mpc/h\] must be a finite number > 0, got 0\.0"),
    Case("linear-field-dtype", "API", "linear_field(dtype=int32)",
         lambda c: linear_field(_zeros(8, 8, 8), c.eh, dtype=np.int32), InputError,
         r"dtype must be float32 or float64, got int32"),
    Case("linear-field-power-range", "API", "linear_field with a P(k) table not covering the grid's k",
         lambda c: linear_field(_zeros(8, 8, 8), TabulatedPower([0.5, 1.0], [1.0, 1.0])), InputError,
         r"cannot cover the grid wavenumbers k in \[0\.4.*outside the P\(k\) table range"),
    Case("ics-negative-grid", "API", "InitialConditions.from_noise(n=-8)",
         lambda c: InitialConditions.from_noise(-8, 10.0, QUIJOTE_FIDUCIAL, seed=1), InputError,
         r"grid size n must be an integer >= 2, got -8"),
    Case("ics-negative-box", "API", "InitialConditions.from_linear_density(box_size=-10)",
         lambda c: InitialConditions.from_linear_density(_zeros(8, 8, 8), -10.0), InputError,
         r"box_size \[Mpc/h\] must be a finite number > 0, got -10\.0"),
    Case("ics-provenance-type", "API", "InitialConditions.from_linear_density(provenance=['x'])",
         lambda c: InitialConditions.from_linear_density(_zeros(8, 8, 8), 10.0, provenance=["x"]), InputError,
         r"provenance must be a dict or None, got list: \['x'\]"),
    # ---- API: simulator, snapshots, validation, painting, optional dependency
    Case("simulate-unknown-backend", "API", "simulate(backend='gadget4')",
         lambda c: simulate(c.ics, QUIJOTE_FIDUCIAL, z=0.0, backend="gadget4"), InputError,
         r"unknown backend 'gadget4'; choose one of \['emulator', 'za', '2lpt'"),
    Case("get-backend-type", "API", "get_backend(5)",
         lambda c: get_backend(5), InputError, r"unknown backend 5"),
    Case("simulate-z-and-a", "API", "simulate(z=0, a=1): both output-time kinds",
         lambda c: simulate(c.ics, QUIJOTE_FIDUCIAL, z=0.0, a=1.0, backend="za"), InputError,
         r"give exactly one of z and a .*got z=0\.0, a=1\.0"),
    Case("simulate-a-range", "API", "simulate(a=2.0) (a > 1.5)",
         lambda c: simulate(c.ics, QUIJOTE_FIDUCIAL, a=2.0, backend="za"), InputError,
         r"scale factor a = 2\.0 is outside the allowed range \(0\.0, 1\.5\]"),
    Case("simulate-emulator-cell-size", "API", "simulate with the emulator, ICs n = 8 in a 100 Mpc/h box",
         lambda c: simulate(c.ics_box100, QUIJOTE_FIDUCIAL, z=0.0, backend=EmulatorBackend(c.emu, tile_size=8)),
         DomainError, r"cell size box_size/n = 100\.0/8 = 12\.5 Mpc/h differs .*use box_size = 15\.625"),
    Case("simulate-emulator-omega-m", "API", "simulate with the emulator, Omega_m = 0.7",
         lambda c: simulate(c.ics, QUIJOTE_FIDUCIAL.clone(omega_m=0.7), z=0.0, backend=EmulatorBackend(c.emu)),
         DomainError, r"omega_m = 0\.7 is outside the training range \[0\.1, 0\.5\]"),
    Case("emulator-backend-tile", "API", "get_backend('emulator', tile_size=12)",
         lambda c: get_backend("emulator", tile_size=12), InputError,
         r"tile_size must be a positive multiple of 8, got 12"),
    Case("emulator-backend-batch", "API", "get_backend('emulator', batch_size=-1)",
         lambda c: get_backend("emulator", batch_size=-1), InputError, r"batch_size must be a positive integer, got -1"),
    Case("snapshot-ids", "API", "Snapshot with ids [0, 0, 1, ...] (not a permutation)",
         lambda c: Snapshot(_zeros(8, 3), _zeros(8, 3), np.array([0, 0, 1, 2, 3, 4, 5, 6]), 1.0, 10.0, 2,
                            QUIJOTE_FIDUCIAL), InputError, r"ids must be a permutation of 0\.\.7"),
    Case("snapshot-nan-velocity", "API", "Snapshot with a NaN velocity",
         lambda c: Snapshot(_zeros(8, 3), _with(_zeros(8, 3), (3, 1), np.nan), np.arange(8), 1.0, 10.0, 2,
                            QUIJOTE_FIDUCIAL), InputError, r"Snapshot\.velocities contains NaN or inf"),
    Case("snapshot-ragged-positions", "API", "Snapshot with positions given as a ragged nested list",
         lambda c: Snapshot([[0.0, 0.0, 0.0], [1.0, 1.0]], _zeros(2, 3), np.arange(2), 1.0, 10.0, 1,
                            QUIJOTE_FIDUCIAL), InputError, r"Snapshot\.positions must be a rectangular numeric array"),
    Case("power-spectrum-noncubic", "API", "power_spectrum of a (8, 8, 4) field",
         lambda c: power_spectrum(_zeros(8, 8, 4), 10.0), InputError, r"cubic array .*got shape \(8, 8, 4\)"),
    Case("power-spectrum-inf", "API", "power_spectrum of a field with +inf",
         lambda c: power_spectrum(_with(_zeros(8, 8, 8), (0, 0, 0), np.inf), 10.0), InputError,
         r"field contains non-finite values"),
    Case("power-spectrum-box", "API", "power_spectrum(box_size=0)",
         lambda c: power_spectrum(_zeros(8, 8, 8), 0.0), InputError, r"box_size \[Mpc/h\] must be a finite number > 0, got 0\.0"),
    Case("power-spectrum-edges", "API", "power_spectrum(k_edges='abc')",
         lambda c: power_spectrum(_zeros(8, 8, 8), 10.0, k_edges="abc"), InputError,
         r"k_edges must be a finite, strictly increasing 1-d array .*got 'abc'"),
    Case("bispectrum-triangles", "API", "bispectrum with triangles of shape (1, 2)",
         lambda c: bispectrum(_zeros(8, 8, 8), 10.0, [[0.5, 0.6]]), InputError,
         r"triangles must have shape \(M, 3\) with M >= 1, got shape \(1, 2\)"),
    Case("bispectrum-nyquist", "API", "bispectrum with k = 100 h/Mpc beyond Nyquist",
         lambda c: bispectrum(_zeros(8, 8, 8), 10.0, [[100.0, 100.0, 100.0]]), InputError,
         r"triangle 0 = \[100\.0, 100\.0, 100\.0\] .*outside \(0, k_Nyquist = 2\.51327\]"),
    Case("paint-nan-positions", "API", "paint: a NaN particle position",
         lambda c: paint(torch.tensor([[0.0, 0.0, 0.0], [1.0, float("nan"), 0.0]]), 4, 4.0), InputError,
         r"positions must be finite; particle 1 has \[1\.0, nan, 0\.0\]"),
    Case("paint-nan-weights", "API", "paint: a NaN particle weight",
         lambda c: paint(torch.zeros(3, 3), 4, 4.0, weights=torch.tensor([1.0, float("nan"), 1.0])), InputError,
         r"weights must be finite; particle 1 has \[nan\]"),
    Case("paint-zero-mesh", "API", "paint(mesh_shape=0)",
         lambda c: paint(torch.zeros(2, 3), 0, 4.0), InputError, r"mesh_shape entries must be integers >= 1, got \(0, 0, 0\)"),
    Case("paint-window", "API", "paint(window='pcs')",
         lambda c: paint(torch.zeros(2, 3), 4, 4.0, window="pcs"), InputError,
         r"window must be one of \['cic', 'ngp', 'tsc'\], got 'pcs'"),
    Case("missing-classy", "API", "ClassPower.from_cosmology with classy not installed",
         _missing_classy, MissingDependencyError, r"'classy' is not installed.*pip install 'emu_backend\[class\]'"),

    # ---- CLI: emu-backend run
    Case("cli-unknown-key", "CLI", "TOML config with misspelt key 'grdi'",
         lambda c: [*_cli(c), "--config", _toml(c, "unknown.toml", "grdi = 16\n")], InputError,
         r"unknown config key\(s\) \['grdi'\]"),
    Case("cli-wrong-type", "CLI", "TOML config grid = \"16\" (a string)",
         lambda c: ["--config", _toml(c, "type.toml", 'grid = "16"\n'), "--out", str(c.dir / "never_written")],
         InputError, r"config key 'grid' must be an integer in \[8, 4096\], got '16'"),
    Case("cli-unknown-cosmology-key", "CLI", "TOML [cosmology] with unknown key 'w0'",
         lambda c: [*_cli(c), "--config", _toml(c, "w0.toml", "[cosmology]\nomega_m = 0.3\nw0 = -0.9\n")],
         InputError, r"unknown config key\(s\) \['cosmology\.w0'\]"),
    Case("cli-sigma8", "CLI", "TOML [cosmology] sigma8 = 5.0",
         lambda c: [*_cli(c), "--config", _toml(c, "s8.toml", "[cosmology]\npreset = 'quijote'\nsigma8 = 5.0\n")],
         InputError, r"sigma8 = 5\.0 is outside the allowed range"),
    Case("cli-z-and-a", "CLI", "TOML config with both z and a",
         lambda c: ["--config", _toml(c, "za.toml", "z = [0.0]\na = [1.0]\n"), "--out", str(c.dir / "never_written")],
         InputError, r"config keys 'z' and 'a' are exclusive"),
    Case("cli-grid-negative", "CLI", "--grid -8",
         lambda c: [*_cli(c), "--grid", "-8"], InputError, r"config key 'grid' must be an integer in \[8, 4096\], got -8"),
    Case("cli-box-zero", "CLI", "--box-size 0",
         lambda c: [*_cli(c), "--box-size", "0"], InputError, r"config key 'box_size' must be a finite number > 0\.0, got 0\.0"),
    Case("cli-tile-zero", "CLI", "--tile 0",
         lambda c: [*_cli(c), "--tile", "0"], InputError, r"config key 'tile' must be an integer in \[8, 1024\], got 0"),
    Case("cli-batch-zero", "CLI", "--batch 0",
         lambda c: [*_cli(c), "--batch", "0"], InputError, r"config key 'batch' must be an integer in \[1, 4096\], got 0"),
    Case("cli-seed-negative", "CLI", "--seed -1",
         lambda c: [*_cli(c), "--seed", "-1"], InputError, r"config key 'seed' must be an integer in \[0, .*\], got -1"),
    Case("cli-n-files-zero", "CLI", "--n-files 0",
         lambda c: [*_cli(c), "--n-files", "0"], InputError, r"config key 'n_files' must be an integer in \[1, 512\], got 0"),
    Case("cli-omega-m-invalid", "CLI", "--omega-m 1.5 (not a matter density)",
         lambda c: [*_cli(c), "--omega-m", "1.5"], InputError, r"omega_m = 1\.5 is outside the allowed range \(0\.0, 1\.0\)"),
    Case("cli-omega-m-domain", "CLI", "--omega-m 0.7 with the emulator (trained [0.1, 0.5])",
         lambda c: _cli_emu(c, "--omega-m", "0.7"), DomainError,
         r"omega_m = 0\.7 is outside the training range \[0\.1, 0\.5\] \(pass --allow-extrapolation to run anyway\)"),
    Case("cli-z-domain", "CLI", "--z 3.5 with the emulator (trained [0, 3])",
         lambda c: [*_cli_emu(c), "--z", "3.5"], DomainError, r"z = 3\.5 is outside the training range \[0\.0, 3\.0\]"),
    Case("cli-box-mismatch", "CLI", "-n 8 --box-size 100 with the emulator (cell 12.5 vs 1000/512)",
         lambda c: _cli_emu(c, "--box-size", "100"), DomainError,
         r"cell size box_size/n = 100\.0/8 = 12\.5 Mpc/h differs from the trained 1\.95312 Mpc/h"),
    Case("cli-unknown-backend", "CLI", "--backend gadget4",
         lambda c: [*_cli(c), "--backend", "gadget4"], InputError, r"config key 'backend' must be one of \[.*'za'.*got 'gadget4'"),
    Case("cli-unknown-format", "CLI", "--format fits",
         lambda c: [*_cli(c), "--format", "fits"], InputError,
         r"config key 'format' must be one of \['gadget', 'fields', 'npz'\], got 'fits'"),
    Case("cli-length-unit", "CLI", "--length-unit pc/h",
         lambda c: [*_cli(c), "--length-unit", "pc/h"], InputError,
         r"config key 'length_unit' must be one of \['kpc/h', 'Mpc/h'\], got 'pc/h'"),
    Case("cli-unknown-device", "CLI", "--device tpu with the emulator",
         lambda c: _cli_emu(c, "--device", "tpu"), InputError, r"unknown device 'tpu'"),
    Case("cli-config-missing", "CLI", "--config of a file that does not exist",
         lambda c: [*_cli(c), "--config", str(c.dir / "nope.toml")], FileFormatError,
         r"config file '.*nope\.toml' does not exist"),
    Case("cli-config-corrupt", "CLI", "--config of a file cut mid-array",
         lambda c: [*_cli(c), "--config", str(c.dir / "bad.toml")], FileFormatError,
         r"config file '.*bad\.toml' is not valid UTF-8 TOML"),
    Case("cli-config-latin1", "CLI", "--config of a Latin-1 (not UTF-8) file",
         lambda c: [*_cli(c), "--config", str(c.dir / "latin1.toml")], FileFormatError,
         r"config file '.*latin1\.toml' is not valid UTF-8 TOML: 'utf-8' codec can't decode"),
    Case("cli-weights-missing", "CLI", "--weights of a file that does not exist",
         lambda c: _cli_emu(c, "--weights", str(c.dir / "nope.pt")), FileFormatError,
         r"checkpoint file '.*nope\.pt' does not exist"),
    Case("cli-weights-truncated", "CLI", "--weights of a truncated .pt",
         lambda c: _cli_emu(c, "--weights", str(c.dir / "truncated.pt")), FileFormatError,
         r"'.*truncated\.pt' is not a readable torch checkpoint \(truncated or corrupt\?\)"),
    Case("cli-weights-checksum", "CLI", "--weights of a model file edited after saving",
         lambda c: _cli_emu(c, "--weights", str(c.dir / "tampered.emu")), CheckpointError,
         r"'.*tampered\.emu': checksum mismatch \(stored [0-9a-f]{16}\.\.\., computed [0-9a-f]{16}\.\.\.\)"),
    Case("cli-power-missing", "CLI", "--power of a file that does not exist",
         lambda c: [*_cli(c), "--power", str(c.dir / "nope.txt")], FileFormatError,
         r"P\(k\) table file '.*nope\.txt' does not exist"),
    Case("cli-overwrite", "CLI", "--out of a folder holding snap_000.hdf5, without --overwrite",
         lambda c: ["--backend", "za", "-n", "8", "--z", "0", "--no-plot", "--out", str(c.dir / "out_exists")],
         InputError, r"'.*out_exists/snap_000\.hdf5' already exists; pass --overwrite to replace it"),

    # ---- readers
    Case("published-missing", "reader", "load_published of a path that does not exist",
         lambda c: load_published(c.dir / "nope.pt"), FileFormatError, r"checkpoint file '.*nope\.pt' does not exist"),
    Case("published-truncated", "reader", "load_published of a .pt cut in half",
         lambda c: load_published(c.dir / "truncated.pt"), FileFormatError,
         r"'.*truncated\.pt' is not a readable torch checkpoint"),
    Case("published-text", "reader", "load_published of a text file",
         lambda c: load_published(c.dir / "garbage.pt"), FileFormatError, r"'.*garbage\.pt' is not a readable torch checkpoint"),
    Case("published-wrong-width", "reader", "load_published(arch=width 4) of a width-2 checkpoint",
         lambda c: load_published(c.dir / "published.pt", arch=VNetArch(2, width=4)), CheckpointError,
         r"does not match StyledVNet\{'style_size': 2, 'in_chan': 3, 'out_chan': 3, 'width': 4\}: wrong shapes "
         r"conv_l00\.convs\.0\.weight: expected \(4, 3, 3, 3, 3\), found \(3, 3, 3, 3, 3\)"),
    Case("checkpoint-wrong-style-size", "reader", "Emulator.from_checkpoint(model='emu') of a style-size-2 file",
         lambda c: Emulator.from_checkpoint(c.dir / "published.pt", model="emu"), CheckpointError,
         r"'.*published\.pt': style size 2, this model kind needs 1"),
    Case("published-missing-tensor", "reader", "load_published of a state dict without conv_c.skip.bias",
         lambda c: load_published(c.dir / "missing_tensor.pt"), CheckpointError, r"missing tensors \['conv_c\.skip\.bias'\]"),
    Case("published-nan-weight", "reader", "load_published of a state dict with a NaN tensor",
         lambda c: load_published(c.dir / "nan_weight.pt"), CheckpointError,
         r"tensors with NaN or inf values \['conv_c\.skip\.bias'\]"),
    Case("published-not-state-dict", "reader", "load_published of torch.save([1, 2, 3])",
         lambda c: load_published(c.dir / "list.pt"), CheckpointError,
         r"expected \{'model': state_dict\} or a bare state dict, found list"),
    Case("published-pickled-object", "reader", "load_published of a file pickling a Python object",
         lambda c: load_published(c.dir / "pickled.pt"), CheckpointError,
         r"holds objects other than tensors and plain containers; if you trust the file, load it with allow_pickle=True"),
    Case("native-checksum", "reader", "load_model_file of a model file edited after saving",
         lambda c: load_model_file(c.dir / "tampered.emu"), CheckpointError,
         r"checksum mismatch .*the file is corrupt or was modified"),
    Case("native-truncated", "reader", "load_model_file of a model file cut to a third",
         lambda c: load_model_file(c.dir / "truncated.emu"), FileFormatError,
         r"'.*truncated\.emu' is not a readable torch checkpoint"),
    Case("native-newer-version", "reader", "load_model_file with format_version 99",
         lambda c: load_model_file(c.dir / "newer.emu"), CheckpointError,
         r"format_version 99 is newer than this emu_backend reads \(1\)"),
    Case("native-is-published", "reader", "load_model_file of a published .pt",
         lambda c: load_model_file(c.dir / "published.pt"), CheckpointError,
         r"'.*published\.pt' is not an emu_backend model file \(no format='emu_backend\.model' entry\)"),
    Case("jax-missing", "reader", "read_jax_npz of a path that does not exist",
         lambda c: read_jax_npz(c.dir / "nope.npz"), FileFormatError, r"JAX parameter file '.*nope\.npz' does not exist"),
    Case("jax-no-params", "reader", "read_jax_npz of an .npz without 'params'",
         lambda c: read_jax_npz(c.dir / "no_params.npz"), CheckpointError, r"no 'params' entry \(found \['weights'\]\)"),
    Case("jax-truncated", "reader", "read_jax_npz of a zip header with nothing after it",
         lambda c: read_jax_npz(c.dir / "truncated.npz"), FileFormatError, r"is not a readable \.npz parameter file"),
    Case("gadget-missing", "reader", "read_gadget_hdf5 of a name with no file",
         lambda c: read_gadget_hdf5(c.dir / "snap_999"), FileFormatError,
         r"Gadget snapshot '.*snap_999' not found \(tried \[.*snap_999\.hdf5', .*snap_999\.0\.hdf5'\]\)"),
    Case("gadget-truncated", "reader", "read_gadget_hdf5 of a file cut at 600 bytes",
         lambda c: read_gadget_hdf5(c.dir / "truncated.hdf5"), FileFormatError,
         r"'.*truncated\.hdf5': cannot be opened as HDF5 \(missing, truncated or corrupt\)"),
    Case("gadget-multi-missing-part", "reader", "read_gadget_hdf5 of a 2-file set with file 1 deleted",
         lambda c: read_gadget_hdf5(c.dir / "multi" / "snap_000.0.hdf5"), FileFormatError,
         r"declares 2 files; missing: \['.*snap_000\.1\.hdf5'\]"),
    Case("gadget-no-header", "reader", "read_gadget_hdf5 of an HDF5 file without /Header",
         lambda c: read_gadget_hdf5(c.dir / "no_header.hdf5"), FileFormatError,
         r"'.*no_header\.hdf5': no 'Header' group; not a Gadget HDF5 snapshot"),
    Case("gadget-not-a-cube", "reader", "read_gadget_hdf5 with NumPart = 7 (not n^3)",
         lambda c: read_gadget_hdf5(c.dir / "seven.hdf5"), FileFormatError,
         r"7 particles is not a cube n\^3 of a Lagrangian grid"),
    Case("gadget-length-unit", "reader", "read_gadget_hdf5(length_unit='pc/h')",
         lambda c: read_gadget_hdf5(c.dir / "snap_000.hdf5", length_unit="pc/h"), InputError,
         r"length_unit must be one of \['Mpc/h', 'kpc/h'\], got 'pc/h'"),
    Case("fields-missing", "reader", "read_fields of a path that does not exist",
         lambda c: read_fields(c.dir / "nope.h5"), FileFormatError, r"field file '.*nope\.h5' not found"),
    Case("fields-suffix", "reader", "read_fields of a .txt path",
         lambda c: read_fields(c.dir / "fields.txt"), InputError,
         r"field file '.*fields\.txt' must end in \.h5, \.hdf5 or \.npz, got suffix '\.txt'"),
    Case("fields-truncated", "reader", "read_fields of an HDF5 file cut in half",
         lambda c: read_fields(c.dir / "truncated.h5"), FileFormatError,
         r"'.*truncated\.h5': cannot be read as an HDF5 field file \(truncated or corrupt\?\)"),
    Case("fields-nan", "reader", "read_fields of a file with a NaN displacement",
         lambda c: read_fields(c.dir / "nan_fields.h5"), FileFormatError,
         r"'.*nan_fields\.h5': invalid content: displacement contains NaN or inf"),
    Case("fields-z-inconsistent", "reader", "read_fields with attribute z = 3 but a = 0.5",
         lambda c: read_fields(c.dir / "bad_z.h5"), FileFormatError, r"z = 3\.0 is inconsistent with a = 0\.5"),
    Case("fields-no-displacement", "reader", "read_fields of an .npz without 'displacement'",
         lambda c: read_fields(c.dir / "no_dis.npz"), FileFormatError, r"'.*no_dis\.npz': array 'displacement' is missing"),
    Case("fields-noncubic", "reader", "read_fields of an .npz with displacement (3, 2, 2, 3)",
         lambda c: read_fields(c.dir / "noncubic.npz"), FileFormatError,
         r"invalid content: displacement must have shape \(3, n, n, n\), got \(3, 2, 2, 3\)"),
    Case("toml-missing", "reader", "load_toml of a path that does not exist",
         lambda c: load_toml(c.dir / "nope.toml"), FileFormatError, r"config file '.*nope\.toml' does not exist"),
    Case("pk-missing", "reader", "TabulatedPower.from_file of a path that does not exist",
         lambda c: TabulatedPower.from_file(c.dir / "nope.txt"), FileFormatError,
         r"P\(k\) table file '.*nope\.txt' does not exist"),
    Case("pk-three-columns", "reader", "TabulatedPower.from_file of a 3-column table",
         lambda c: TabulatedPower.from_file(c.dir / "pk3.txt"), FileFormatError,
         r"must have 2 columns \(k, P\), got shape \(8, 3\)"),
    Case("pk-not-numeric", "reader", "TabulatedPower.from_file of a table holding 'abc'",
         lambda c: TabulatedPower.from_file(c.dir / "pk_text.txt"), FileFormatError, r"'.*pk_text\.txt' is not numeric text"),
    # ---- readers of the Quijote formats and the training samples
    Case("gadget1-zeros", "reader", "read_gadget_binary of 100 zero bytes",
         lambda c: read_gadget_binary(_bytes(c, "zeros.0", b"\x00" * 100)), FileFormatError,
         r"not a Gadget binary file \(first record has .*expected the 256-byte header record"),
    Case("fof-tab-short", "reader", "read_fof_groups of a 10-byte group_tab file",
         lambda c: read_fof_groups(_bytes(c, "groups_004/group_tab_004.0", b"\x01" * 10).parent, 4, a=1.0),
         FileFormatError, r"10 bytes is shorter than the 24-byte group_tab header"),
    Case("training-sample-missing", "reader", "read_training_sample of a path that does not exist",
         lambda c: read_training_sample(c.dir / "nope.h5"), FileFormatError, r"training sample '.*nope\.h5' does not exist"),
    Case("training-sample-not-hdf5", "reader", "read_training_sample of a text file",
         lambda c: read_training_sample(_bytes(c, "text.h5", b"not hdf5")), FileFormatError,
         r"cannot be read as a training sample \(truncated or corrupt\?\)"),
    Case("training-sample-nan", "API", "TrainingSample with a NaN target displacement",
         lambda c: TrainingSample(_zeros(3, 2, 2, 2), [0.0], _with(_zeros(1, 3, 2, 2, 2), (0, 1, 0, 0, 0), np.nan),
                                  _zeros(1, 3, 2, 2, 2), 3.90625, QUIJOTE_FIDUCIAL), InputError,
         r"displacement contains NaN or inf"),
    Case("find-halos-b", "API", "find_halos with linking length b = -1",
         lambda c: find_halos(_zeros(8, 3), _zeros(8, 3), 10.0, 1e10, b=-1), InputError,
         r"linking length b \[mean separations\] = -1 is outside the allowed range \(0\.0, 1\.0\)"),
    Case("multipoles-los", "API", "multipoles with line of sight axis 3",
         lambda c: multipoles(_zeros(8, 3), _zeros(8, 3), 10.0, 8, 1.0, 0.3, los=3), InputError,
         r"los must be the mesh axis 0, 1 or 2, got 3"),
    # ---- the other subcommands
    Case("cli-train-crop", "CLI", "train --crop 4 (needs >= 8)",
         lambda c: ["train", "--data", str(c.dir), "--out", str(c.dir / "never_written"), "--crop", "4"], InputError,
         r"TrainConfig\.crop must be an integer >= 8, got 4"),
    Case("cli-train-data", "CLI", "train --data of a path that does not exist",
         lambda c: ["train", "--data", str(c.dir / "nope"), "--out", str(c.dir / "never_written")], InputError,
         r"training data '.*nope' is neither a file nor a folder"),
    Case("cli-make-set-n-sims", "CLI", "make-training-set --n-sims 0",
         lambda c: ["make-training-set", "--out", str(c.dir / "never_written"), "--n-sims", "0"], InputError,
         r"n_sims must be an integer >= 1, got 0"),
    Case("cli-make-set-range", "CLI", "make-training-set --range omega_m 0.05 0.5 (domain [0.1, 0.5])",
         lambda c: ["make-training-set", "--out", str(c.dir / "never_written"), "--n-sims", "2",
                    "--range", "omega_m", "0.05", "0.5"], DomainError,
         r"range of omega_m = \(0\.05, 0\.5\) leaves the emulator's training domain \[0\.1, 0\.5\]"),
    Case("cli-predict-missing-input", "CLI", "predict of an input that does not exist",
         lambda c: ["predict", str(c.dir / "nope.h5"), str(c.dir / "never_written.h5"), "--omega-m", "0.3", "--z", "0",
                    "--weights", str(c.dir / "model.emu")],
         InputError, r"input '.*nope\.h5' not found"),
    Case("cli-predict-tf32-cpu", "CLI", "predict --precision tf32 on a CPU",
         lambda c: ["predict", str(c.dir / "nope.h5"), str(c.dir / "never_written.h5"), "--omega-m", "0.3", "--z", "0",
                    "--weights", str(c.dir / "model.emu"), "--precision", "tf32"],
         InputError, r"precision 'tf32' needs a CUDA device, got 'cpu'"),
    Case("cli-validate-quijote-missing", "CLI", "validate --against quijote of a folder that does not exist",
         lambda c: ["validate", "--against", "quijote", str(c.dir / "nope"), "-o", str(c.dir / "never_written")],
         FileFormatError, r"Quijote simulation folder '.*nope' does not exist"),
    Case("cli-validate-min-r", "CLI", "validate --min-r 2 (a correlation coefficient)",
         lambda c: ["validate", "--against", "jaxpm", "--min-r", "2", "-o", str(c.dir / "never_written")],
         InputError, r"threshold min_r must be in \[-1, 1\], got 2\.0"),
    Case("pk-negative", "reader", "TabulatedPower.from_file of a table with P = -1",
         lambda c: TabulatedPower.from_file(c.dir / "pk_negative.txt"), FileFormatError,
         r"'.*pk_negative\.txt': table P \[\(Mpc/h\)\^3\] must be finite and > 0; got P\[0\]=-1\.0"),
]
CASES += reliability_cases(Case)  # untrusted weight files, resumed runs
CASES += __import__("_writer_inputs").reliability_cases(Case)  # output paths, locks, a full disk
CASES += __import__("_quijote_inputs").reliability_cases(Case)  # Quijote IDs that cannot be placed, download layouts
CASES += __import__("_resource_inputs").reliability_cases(Case)  # memory, sizes, predict inputs, out arrays, ranges

assert len({c.id for c in CASES}) == len(CASES), "case ids must be unique"

_RECORDS: dict[str, dict] = {}


# -- running the cases ------------------------------------------------------------------------------
def _run_cli(case, ctx, capsys, monkeypatch):
    caught = []
    # main() logs the caught exception at DEBUG inside its except block: read the class from there
    monkeypatch.setattr(cli_main.logger, "debug", lambda *a, **k: caught.append(sys.exc_info()[1]))
    args = case.call(ctx)
    argv = args if args and args[0] in cli_main.SUBCOMMANDS else ["run", *args]
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2, f"exit code {code} for {argv}; stderr: {err}"
    assert err.startswith("error: ") and "Traceback" not in err, err
    assert len(caught) == 1, caught
    message = err[len("error: "):].strip()
    assert cli_message(str(caught[0])) == message  # the command line names flags where the library names keywords
    return caught[0], message


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gives_documented_error(case, ctx, capsys, monkeypatch):
    if case.id == "missing-classy":
        monkeypatch.setitem(sys.modules, "classy", None)  # as if the 'class' extra were not installed
    if case.area == "CLI":
        exc, message = _run_cli(case, ctx, capsys, monkeypatch)
        assert isinstance(exc, case.error), f"{type(exc).__name__}: {exc}"
    else:
        with pytest.raises(EmuBackendError) as info:
            case.call(ctx)
        exc, message = info.value, str(info.value)
        assert isinstance(exc, case.error), f"expected {case.error.__name__}, got {type(exc).__name__}: {exc}"
    assert type(exc).__module__ == "emu_backend.errors"
    assert re.search(case.match, message), f"message {message!r} does not match {case.match!r}"
    _RECORDS[case.id] = {"area": case.area, "case": case.id, "input": case.bad_input,
                         "error": type(exc).__name__, "message": message.replace(str(ctx.dir), "<tmp>")}


def test_every_documented_error_class_is_exercised():
    used = {c.error for c in CASES}
    for cls in (InputError, DomainError, FileFormatError, CheckpointError, MissingDependencyError):
        assert cls in used, cls.__name__
    assert len(CASES) >= 45
    assert Counter(c.area for c in CASES).keys() == {"API", "CLI", "reader"}


# -- the generated table ----------------------------------------------------------------------------
def _cell(text: str, width: int | None = None) -> str:
    text = " ".join(str(text).split())
    if width is not None and len(text) > width:
        text = text[: width - 1] + "…"
    return text.replace("\\", "\\\\").replace("|", "\\|")


def render_table(records: list[dict]) -> str:
    """The Markdown page of ``docs/reliability.md`` from the recorded cases."""
    counts = Counter(r["area"] for r in records)
    by_error = Counter(r["error"] for r in records)
    lines = [
        "# Reliability: bad inputs and the errors they give",
        "",
        "<!-- GENERATED UP TO THE HAND-WRITTEN MARKER: do not edit the table by hand. Regenerate with",
        "     EMU_WRITE_RELIABILITY_TABLE=1 python -m pytest tests/test_bad_inputs.py -->",
        "",
        "Generated by `EMU_WRITE_RELIABILITY_TABLE=1 python -m pytest tests/test_bad_inputs.py` from the errors",
        "actually raised; do not edit by hand. Every public entry point, the command line and every file reader",
        "validate their input and raise one class of the hierarchy in [errors.md](errors.md); the message names",
        "the offending value and what was expected. CLI cases run `emu-backend run|train|predict|validate|make-training-set ...`, exit with status 2 and",
        "print `error: <message>`. Messages are cut at 120 characters; `<tmp>` is the test's temporary folder.",
        "",
        f"{len(records)} cases: " + ", ".join(f"{counts[a]} {a}" for a in ("API", "CLI", "reader")) + "; "
        + ", ".join(f"{n} {name}" for name, n in sorted(by_error.items())) + ".",
        "",
        "Random bytes and truncated or bit-flipped copies of valid files of every kind are fed to every reader",
        "by the property tests of `tests/test_fuzz_readers.py`, which assert that only these errors come out.",
        "",
        "| area | case | bad input | error | message |",
        "|---|---|---|---|---|",
    ]
    for r in records:
        lines.append(f"| {r['area']} | `{r['case']}` | {_cell(r['input'])} | `{r['error']}` | "
                     f"{_cell(r['message'], MESSAGE_WIDTH)} |")
    return "\n".join(lines) + "\n"


#: Everything of docs/reliability.md from this line on is hand-written and kept when the table is regenerated.
HAND_WRITTEN = "<!-- HAND-WRITTEN SECTIONS BELOW"


def _hand_written_tail() -> str:
    text = DOC.read_text(encoding="utf-8") if DOC.is_file() else ""
    i = text.find(HAND_WRITTEN)
    return "" if i < 0 else "\n" + text[i:]


@pytest.fixture(scope="module", autouse=True)
def reliability_table(tmp_path_factory):
    """After the module: render the table (always) and copy it to docs/ when asked and complete
    (keeping the hand-written sections after the ``HAND_WRITTEN`` marker)."""
    yield
    records = [_RECORDS[c.id] for c in CASES if c.id in _RECORDS]
    text = render_table(records) + _hand_written_tail()
    (tmp_path_factory.mktemp("reliability") / "reliability.md").write_text(text, encoding="utf-8")
    if os.environ.get(WRITE_ENV) == "1":
        if len(records) != len(CASES):
            pytest.fail(f"{WRITE_ENV}=1 but only {len(records)} of {len(CASES)} cases passed; docs/reliability.md "
                        "not written")
        DOC.write_text(text, encoding="utf-8")


def test_reliability_table_lists_every_case():
    if os.environ.get(WRITE_ENV) == "1":
        pytest.skip("the table is being regenerated")
    assert DOC.is_file(), f"{DOC} is missing; run {WRITE_ENV}=1 python -m pytest tests/test_bad_inputs.py"
    listed = set(re.findall(r"^\| \w+ \| `([^`]+)` \|", DOC.read_text(encoding="utf-8"), flags=re.M))
    expected = {c.id for c in CASES}
    assert listed == expected, (
        f"docs/reliability.md is stale (missing {sorted(expected - listed)}, extra {sorted(listed - expected)}); "
        f"regenerate it with {WRITE_ENV}=1 python -m pytest tests/test_bad_inputs.py"
    )
