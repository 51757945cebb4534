"""Bad input to the emulator raises the documented error, naming the value and the allowed range."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from emu_backend.errors import DomainError, InputError
from emu_backend.inference import EmuConvention, Emulator, ZdepConvention
from emu_backend.nn import StyledVNet


@pytest.fixture(scope="module")
def emu():
    torch.manual_seed(0)
    return Emulator(ZdepConvention(StyledVNet(2, width=4)))


GOOD = np.zeros((3, 8, 8, 8), np.float32)


@pytest.mark.parametrize("field,pattern", [
    (np.zeros((8, 8, 8), np.float32), r"shape \(3, N0, N1, N2\).*got \(8, 8, 8\)"),
    (np.zeros((2, 8, 8, 8), np.float32), r"got \(2, 8, 8, 8\)"),
    (np.zeros((3, 4, 8, 8), np.float32), r"every N >= 8, got \(3, 4, 8, 8\)"),
    (np.zeros((3, 8, 8, 8), np.int32), "floating point, got dtype int32"),
])
def test_bad_field(emu, field, pattern):
    with pytest.raises(InputError, match=pattern):
        emu.predict(field, 0.3, 0.0, tile_size=8)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_field(emu, value):
    field = GOOD.copy()
    field[1, 2, 3, 4] = value
    with pytest.raises(InputError, match=r"non-finite value .* at index \(1, 2, 3, 4\)"):
        emu.predict(field, 0.3, 0.0, tile_size=8)


@pytest.mark.parametrize("om,z,pattern", [
    (0.05, 0.0, r"omega_m = 0.05 is outside the training range \[0.1, 0.5\]"),
    (0.6, 0.0, r"omega_m = 0.6 is outside the training range"),
    (0.3, 3.5, r"z = 3.5 is outside the training range \[0.0, 3.0\]"),
    (0.3, [0.0, -0.5], r"z = -0.5 is outside"),
])
def test_outside_training_domain(emu, om, z, pattern):
    with pytest.raises(DomainError, match=pattern):
        emu.predict(GOOD, om, z, tile_size=8)


def test_extrapolation_only_when_allowed(caplog):
    torch.manual_seed(0)
    emu = Emulator(ZdepConvention(StyledVNet(2, width=4)), allow_extrapolation=True)
    p = emu.predict(GOOD, 0.6, 3.5, tile_size=8, velocity=False)
    assert np.isfinite(p.displacement).all()
    assert "extrapolating outside the training domain" in caplog.text


def test_emu_model_is_z0_only():
    emu = Emulator(EmuConvention(StyledVNet(1, width=4)))
    with pytest.raises(DomainError, match=r"z = 0.5 is outside the training range \[0.0, 0.0\]"):
        emu.predict(GOOD, 0.3, 0.5, tile_size=8, velocity=False)
    with pytest.raises(InputError, match="no velocity network"):
        emu.predict(GOOD, 0.3, 0.0, tile_size=8)


def test_cell_size_must_match_training(emu):
    with pytest.raises(DomainError, match=r"cell size .* differs from the trained 1.95312 Mpc/h \(use box_size = 15.625"):
        emu.predict(GOOD, 0.3, 0.0, tile_size=8, box_size=100.0)
    emu.predict(GOOD, 0.3, 0.0, tile_size=8, box_size=8 * 1000 / 512, velocity=False)


@pytest.mark.parametrize("kwargs,pattern", [
    ({"tile_size": 12}, "tile size must be a positive multiple of 8"),
    ({"tile_size": 0}, "tile size must be a positive multiple of 8"),
    ({"batch_size": 0}, "batch_size must be a positive integer"),
    ({"box_size": -1.0}, "box_size must be positive"),
    ({"z": []}, "at least one redshift"),
    ({"omega_m": float("nan")}, "must be finite"),
])
def test_bad_arguments(emu, kwargs, pattern):
    args = {"omega_m": 0.3, "z": 0.0, "tile_size": 8}
    args.update(kwargs)
    with pytest.raises(InputError, match=pattern):
        emu.predict(GOOD, **args)


def test_bad_constructor_arguments():
    net = ZdepConvention(StyledVNet(2, width=4))
    with pytest.raises(InputError, match="dtype must be one of"):
        Emulator(net, dtype="float16")
    with pytest.raises(InputError, match="unknown device"):
        Emulator(net, device="tpu9")
    with pytest.raises(InputError, match="model must be one of"):
        Emulator.from_checkpoint("x.pt", model="d2d")


def test_network_rejects_bad_tile_sizes():
    net = StyledVNet(2, width=4)
    with pytest.raises(InputError, match="multiples of 8 and >= 104"):
        net(torch.zeros(1, 3, 100, 104, 104), torch.zeros(2))
    with pytest.raises(InputError, match="style must be"):
        net(torch.zeros(1, 3, 104, 104, 104), torch.zeros(3))


def test_import_loads_no_optional_dependency():
    """Optional extras load only inside their adapters (core requirements such as h5py and matplotlib
    are imported at module top where they are used)."""
    code = (
        "import sys, emu_backend, emu_backend.inference, emu_backend.checkpoints, emu_backend.adapters, "
        "emu_backend.validation; "
        "bad = [m for m in ('classy', 'jax', 'pmwd', 'jaxpm', 'nbodykit', 'halotools', 'mpi4py', 'hdf5plugin', "
        "'Pk_library', 'MAS_library', 'readgadget') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_no_top_level_adapters_or_validation_package():
    code = ("import importlib.util, sys; sys.path = [p for p in sys.path if p not in ('', '.')]; "
            "print(importlib.util.find_spec('adapters'), importlib.util.find_spec('validation'))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert res.stdout.strip() == "None None", res.stdout + res.stderr
