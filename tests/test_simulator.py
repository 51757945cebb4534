"""Tests of the simulator interface: ICs, interchangeable backends and simulate()."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from scipy.integrate import quad

import emu_backend
from emu_backend.cosmology import PLANCK18, QUIJOTE_FIDUCIAL, EisensteinHuPower
from emu_backend.datatypes import Snapshot
from emu_backend.errors import DomainError, InputError, MissingDependencyError
from emu_backend.ics import (
    InitialConditions,
    linear_field,
    second_order_displacement,
    second_order_growth_factor,
    white_noise,
)
from emu_backend.inference import Emulator, ZdepConvention
from emu_backend.nn import StyledVNet
from emu_backend.simulator import (
    Backend,
    EmulatorBackend,
    LPT2Backend,
    ZABackend,
    available_backends,
    get_backend,
    register_backend,
    simulate,
)
from emu_backend.simulator import backends as backends_module

COSMO = QUIJOTE_FIDUCIAL
N = 8
BOX = 1000.0 * N / 512  # the emulator's trained cell size
SEED = 7
ZS = [1.0, 0.0]  # deliberately not sorted: outputs follow the order asked


def _growth_by_quadrature(z: float, om: float) -> float:
    """D(z)/D(0) for flat LCDM from the Heath integral D ~ H(a) int_0^a da' / (a' H(a'))^3 (independent of the package)."""
    def e(a):
        return np.sqrt(om / a**3 + 1.0 - om)

    def unnorm(a):
        return e(a) * quad(lambda x: 1.0 / (x * e(x)) ** 3, 0.0, a, epsabs=0, epsrel=1e-11)[0]

    return unnorm(1.0 / (1.0 + z)) / unnorm(1.0)


def _lagrangian(n, box):
    q = np.arange(n) * (box / n)
    return np.stack(np.meshgrid(q, q, q, indexing="ij"))


def _min_image(d, box):
    return d - box * np.round(d / box)


@pytest.fixture(scope="module")
def ics():
    return InitialConditions.from_noise(N, None, COSMO, seed=SEED)


@pytest.fixture(scope="module")
def narrow_emulator():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = StyledVNet(2, width=4)
    return Emulator(ZdepConvention(net), checksum="test-checksum", source="narrow-test-net")


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.records = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture(scope="module")
def emulator_run(ics, narrow_emulator):
    """One emulator run (the expensive part: ~10 s) shared by the tests; flagged untrained on purpose."""
    narrow_emulator.untrained = True
    handler = _Records()
    log = logging.getLogger("emu_backend")
    log.addHandler(handler)
    try:
        snaps = simulate(ics, COSMO, z=ZS, backend=EmulatorBackend(narrow_emulator, tile_size=8))
    finally:
        log.removeHandler(handler)
        narrow_emulator.untrained = False
    return snaps, handler.records


@pytest.fixture(scope="module", params=["za", "2lpt", "emulator"])
def backend_run(request, ics, emulator_run):
    if request.param == "emulator":
        return request.param, emulator_run[0]
    return request.param, simulate(ics, COSMO, z=ZS, backend=request.param)


# -- the shared interface ------------------------------------------------------------------------
def test_backends_share_one_interface(backend_run, ics):
    name, snaps = backend_run
    assert isinstance(snaps, list) and len(snaps) == len(ZS)
    for snap, z in zip(snaps, ZS):
        assert isinstance(snap, Snapshot)
        assert snap.z == pytest.approx(z, abs=1e-12) and snap.a == pytest.approx(1.0 / (1.0 + z), rel=1e-12)
        assert snap.grid == N and snap.box_size == pytest.approx(BOX) and snap.cosmology == COSMO
        assert snap.positions.shape == (N**3, 3) and snap.velocities.shape == (N**3, 3)
        assert snap.positions.min() >= 0 and snap.positions.max() < BOX
        assert np.array_equal(np.sort(snap.ids), np.arange(N**3))
        assert np.all(np.isfinite(snap.velocities))
        meta = snap.meta
        assert meta["backend"] == name and meta["seed"] == SEED
        assert meta["package_version"] == emu_backend.__version__
        assert meta["cosmology"] == COSMO.to_dict()
        assert meta["z"] == z and meta["ics"]["source"] == "noise" and meta["ics"]["seed"] == SEED
        assert meta["checksum"] == ("test-checksum" if name == "emulator" else None)
        assert meta["untrained"] is (name == "emulator")  # the fixture flags the narrow net untrained


def test_backend_instances_and_names_are_interchangeable(ics):
    by_name = simulate(ics, COSMO, z=0.5, backend="za")[0]
    by_instance = simulate(ics, COSMO, z=0.5, backend=ZABackend())[0]
    assert np.array_equal(by_name.positions, by_instance.positions)
    lpt2 = simulate(ics, COSMO, z=0.5, backend=LPT2Backend())[0]
    assert np.array_equal(lpt2.positions, simulate(ics, COSMO, z=0.5, backend="2lpt")[0].positions)
    assert {"emulator", "za", "2lpt", "jaxpm", "pmwd"} <= set(available_backends())


# -- physics of the baselines --------------------------------------------------------------------
def test_za_positions_and_velocities_by_hand(ics):
    z = 0.7
    snap = simulate(ics, COSMO, z=z, backend="za")[0]
    om = COSMO.omega_m
    d = _growth_by_quadrature(z, om)
    eps = 1e-4  # f = dlnD/dlna by a central difference in ln a
    lna = -np.log1p(z)
    f = (np.log(_growth_by_quadrature(np.exp(-(lna + eps)) - 1, om))
         - np.log(_growth_by_quadrature(np.exp(-(lna - eps)) - 1, om))) / (2 * eps)
    a = 1.0 / (1.0 + z)
    hubble = 100.0 * np.sqrt(om / a**3 + 1 - om)  # h km/s/Mpc
    psi = ics.displacement.astype(np.float64)
    expected = np.mod(_lagrangian(N, BOX) + d * psi, BOX).reshape(3, -1).T
    # float32 positions in a 15.6 Mpc/h box: ~1e-6 Mpc/h rounding; D by quadrature to ~1e-9
    np.testing.assert_allclose(_min_image(snap.positions - expected, BOX), 0.0, atol=5e-5)
    v_expected = (a * hubble * f * d * psi).reshape(3, -1).T
    # f by finite difference (~1e-7) and the package's growth-rate fit tolerance: 1e-4 relative
    np.testing.assert_allclose(snap.velocities, v_expected, rtol=1e-4, atol=1e-4 * np.abs(v_expected).max())


def test_2lpt_differs_from_za_by_the_second_order_term(ics):
    z = 0.3
    za, lpt2 = (simulate(ics, COSMO, z=z, backend=b)[0] for b in ("za", "2lpt"))
    d2 = float(second_order_growth_factor(z, COSMO.omega_m))
    psi2 = second_order_displacement(ics.displacement, BOX).reshape(3, -1).T
    diff = _min_image(lpt2.positions.astype(np.float64) - za.positions, BOX)
    assert np.abs(d2 * psi2).max() > 1e-3  # the term is not negligible here
    np.testing.assert_allclose(diff, d2 * psi2, atol=5e-5)  # float32 rounding of the positions


def test_z_and_a_alternatives_agree(ics):
    by_z = simulate(ics, COSMO, z=[0.0, 1.0], backend="2lpt")
    by_a = simulate(ics, COSMO, a=[1.0, 0.5], backend="2lpt")
    for s1, s2 in zip(by_z, by_a):
        assert s1.a == s2.a
        assert np.array_equal(s1.positions, s2.positions) and np.array_equal(s1.velocities, s2.velocities)


def test_output_order_is_preserved(ics):
    snaps = simulate(ics, COSMO, z=[2.0, 0.0, 0.5], backend="za")
    assert [s.z for s in snaps] == pytest.approx([2.0, 0.0, 0.5])


# -- the emulator backend --------------------------------------------------------------------------
def test_emulator_warns_loudly_when_untrained(emulator_run):
    snaps, records = emulator_run
    assert any(r.levelno == logging.WARNING and "NOT physical" in r.getMessage() for r in records)
    assert all(s.meta["untrained"] is True for s in snaps)


def test_emulator_refuses_other_cell_sizes(narrow_emulator):
    ics = InitialConditions.from_noise(N, 20.0, COSMO, seed=1)  # 2.5 Mpc/h cells, not 1000/512
    with pytest.raises(DomainError, match="cell size"):
        simulate(ics, COSMO, z=0.0, backend=EmulatorBackend(narrow_emulator, tile_size=8))
    assert narrow_emulator.allow_extrapolation is False


def test_emulator_refuses_out_of_domain_z_and_omega_m(ics, narrow_emulator):
    backend = EmulatorBackend(narrow_emulator, tile_size=8)
    with pytest.raises(DomainError, match="z = 5.0"):
        simulate(ics, COSMO, z=5.0, backend=backend)
    with pytest.raises(DomainError, match="omega_m = 0.7"):
        simulate(ics, COSMO.clone(omega_m=0.7), z=0.0, backend=backend)


def test_emulator_backend_options_are_checked(narrow_emulator):
    with pytest.raises(InputError, match="tile_size"):
        EmulatorBackend(narrow_emulator, tile_size=12)
    with pytest.raises(InputError, match="batch_size"):
        EmulatorBackend(narrow_emulator, batch_size=0)
    with pytest.raises(InputError, match="not both"):
        EmulatorBackend(narrow_emulator, weights="x.emu")


# -- bad input -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(z=-0.5), r"z = -0\.5"),
        (dict(a=2.0), r"a = 2\.0"),
        (dict(a=0.0), r"a = 0\.0"),
        (dict(z=[0.0, 0.0]), r"z = 0\.0 is requested twice"),
        (dict(z=float("nan")), "finite"),
        (dict(z=[]), "at least one"),
        (dict(z="1"), "'1'"),
        (dict(), "exactly one of z and a"),
        (dict(z=0.0, a=1.0), "exactly one of z and a"),
        (dict(z=0.0, backend="nbody"), "'nbody'"),
        (dict(z=0.0, backend="za", tile_size=8), r"tile_size"),
    ],
)
def test_bad_inputs_name_the_value(ics, kwargs, match):
    with pytest.raises(InputError, match=match):
        simulate(ics, COSMO, **kwargs)


def test_bad_ics_and_cosmology(ics):
    with pytest.raises(InputError, match="InitialConditions"):
        simulate(np.zeros((3, N, N, N)), COSMO, z=0.0, backend="za")
    with pytest.raises(InputError, match="Cosmology"):
        simulate(ics, {"omega_m": 0.3}, z=0.0, backend="za")
    with pytest.raises(InputError, match="seed"):
        InitialConditions.from_noise(N, None, COSMO, seed=-1)
    with pytest.raises(InputError, match="shape"):
        InitialConditions.from_linear_displacement(np.zeros((2, N, N, N)), BOX)


def test_pm_backends_point_to_the_adapters(ics):
    """Without its library a PM backend name gives an error naming the extra (jaxpm's own test file
    covers the installed case and, in a subprocess, the missing one)."""
    import importlib.util

    names = ["pmwd"] if importlib.util.find_spec("pmwd") is None else []
    if importlib.util.find_spec("jaxpm") is None:
        names.append("jaxpm")
    if not names:
        pytest.skip("pmwd and jaxpm are both installed")
    for name in names:
        with pytest.raises(MissingDependencyError, match=rf"emu_backend\[{name}\]"):
            simulate(ics, COSMO, z=0.0, backend=name)


def test_register_backend(ics, monkeypatch):
    monkeypatch.setattr(backends_module, "_REGISTRY", dict(backends_module._REGISTRY))
    # where pmwd is installed its adapter may already have registered the real backend: start from the placeholder
    monkeypatch.setitem(backends_module._REGISTRY, "pmwd", backends_module._adapter_placeholder("pmwd", "pmwd"))

    class Frozen(Backend):
        """Particles stay on the grid (a stand-in for an adapter's PM backend)."""

        name = "pmwd"

        def __init__(self, steps: int = 10):
            self.steps = steps

        def run(self, ics, cosmology, z):
            zero = np.zeros((3, ics.n, ics.n, ics.n))
            return [Snapshot.from_displacement(zero, zero, 1 / (1 + zi), ics.box_size, cosmology,
                                               meta={"steps": self.steps}) for zi in z]

    register_backend("pmwd", Frozen)  # replaces the placeholder without replace=True
    snap = simulate(ics, COSMO, z=0.0, backend="pmwd", steps=3)[0]
    assert snap.meta["backend"] == "pmwd" and snap.meta["steps"] == 3 and snap.meta["seed"] == SEED
    with pytest.raises(InputError, match="already registered"):
        register_backend("pmwd", Frozen)
    with pytest.raises(InputError, match="does not accept"):
        get_backend("pmwd", dt=0.1)


# -- ICs -------------------------------------------------------------------------------------------
def test_ics_match_the_linear_field_and_are_reproducible(ics):
    ref = linear_field(white_noise(N, SEED), EisensteinHuPower(COSMO))
    assert np.array_equal(ics.displacement, ref.displacement) and np.array_equal(ics.density, ref.density)
    again = InitialConditions.from_noise(N, None, COSMO, seed=SEED)
    assert np.array_equal(again.displacement, ics.displacement)
    assert not ics.displacement.flags.writeable
    paired = InitialConditions.from_noise(N, None, COSMO, seed=SEED, paired=True)
    np.testing.assert_array_equal(paired.displacement, -ics.displacement)


@pytest.mark.parametrize("backend", ["za", "2lpt"])
def test_user_fields_give_the_noise_path_snapshot(ics, backend):
    by_density = InitialConditions.from_linear_density(ics.density, BOX)
    by_displacement = InitialConditions.from_linear_displacement(ics.displacement, BOX, seed=SEED)
    ref = simulate(ics, COSMO, z=0.5, backend=backend)[0]
    for user in (by_density, by_displacement):
        snap = simulate(user, COSMO, z=0.5, backend=backend)[0]
        # the density path re-derives Psi from float32 delta: agreement to float32 rounding
        np.testing.assert_allclose(_min_image(snap.positions - ref.positions, BOX), 0.0, atol=1e-4)
        np.testing.assert_allclose(snap.velocities, ref.velocities, atol=1e-4 * np.abs(ref.velocities).max())
    assert by_density.seed is None and by_density.provenance["source"] == "linear_density"
    assert by_displacement.seed == SEED


def test_ics_cosmology_mismatch_is_logged(ics, caplog):
    with caplog.at_level(logging.WARNING, logger="emu_backend"):
        simulate(ics, PLANCK18, z=0.0, backend="za")
    assert "ICs were made with cosmology" in caplog.text
