"""Tests of the CLASS adapter (emu_backend.adapters.classy) against classy's own numbers.

The reference is a ``classy.Class`` computed here with explicitly written CLASS parameters, so the
provider's parameter mapping and unit conversion are both checked. Tests that need classy skip
without it; the missing-dependency tests run everywhere.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from emu_backend.adapters.classy import ClassPower
from emu_backend.validation.power import power_spectrum

from emu_backend.cosmology import QUIJOTE_FIDUCIAL, Cosmology, EisensteinHuPower, LinearPower, growth, sigma_r
from emu_backend.errors import ComputationError, InputError, MissingDependencyError
from emu_backend.ics import linear_field, white_noise

DOC = Path(__file__).resolve().parents[1] / "docs" / "adapters" / "classy.md"

#: CLASS parameters equivalent to QUIJOTE_FIDUCIAL under ClassPower.from_cosmology's mapping.
REFERENCE_PARAMS = {
    "h": 0.6711,
    "Omega_b": 0.049,
    "Omega_cdm": 0.3175 - 0.049,
    "n_s": 0.9624,
    "sigma8": 0.834,
    "N_ur": 3.044,
    "N_ncdm": 0,
    "P_k_max_h/Mpc": 10.0,
    "z_max_pk": 10.0,
    "output": "mPk,mTk",
}


@pytest.fixture(scope="module")
def classy():
    return pytest.importorskip("classy", reason="CLASS adapter tests need the 'class' extra (pip install classy)")


@pytest.fixture(scope="module")
def reference(classy):
    """classy's own computation, independent of the adapter."""
    c = classy.Class()
    c.set(REFERENCE_PARAMS)
    c.compute()
    return c


@pytest.fixture(scope="module")
def power(classy):
    return ClassPower.from_cosmology(QUIJOTE_FIDUCIAL)


# ----------------------------------------------------------------------------- equals classy
@pytest.mark.parametrize("z", [0.0, 0.5, 2.0, 10.0])
def test_power_equals_classy_pk_lin(power, reference, z):
    # pure unit conversion of the same CLASS numbers: rounding only
    h = reference.h()
    k = np.array([1e-4, 1e-3, 0.01, 0.05, 0.1, 0.3, 1.0, 3.0, 10.0])
    expected = np.array([reference.pk_lin(kk * h, z) for kk in k]) * h**3
    np.testing.assert_allclose(power(k, z=z), expected, rtol=1e-10, atol=0)


def test_from_class_and_from_params_agree(power, reference):
    wrapped = ClassPower.from_class(reference)
    k = np.geomspace(1e-3, 5.0, 30)
    np.testing.assert_allclose(wrapped(k), power(k), rtol=1e-10, atol=0)
    # from_params adds the outputs and a z range that classy needs; the rest is the caller's
    minimal = {key: v for key, v in REFERENCE_PARAMS.items() if key not in ("output", "z_max_pk")}
    from_dict = ClassPower.from_params(minimal, name="dict")
    np.testing.assert_allclose(from_dict(k, z=1.0), power(k, z=1.0), rtol=1e-10, atol=0)
    assert from_dict.cosmology.name == "dict" and from_dict.z_max >= 10.0
    assert isinstance(wrapped, LinearPower) and isinstance(power, LinearPower)


def test_shape_and_range(power):
    k = np.geomspace(0.01, 1.0, 12).reshape(3, 4)
    assert power(k).shape == (3, 4)
    assert power(0.1).shape == ()
    lo, hi = power.k_range
    assert lo < 2e-5 and hi > 10.0  # CLASS pads the requested 10 h/Mpc
    power(np.array([lo, hi]))  # the ends themselves are valid
    with pytest.raises(InputError, match="P_k_max_h/Mpc"):
        power(np.array([2.0 * hi]))
    with pytest.raises(InputError, match="redshift"):
        power(np.array([0.1]), z=power.z_max + 1.0)
    with pytest.raises(InputError, match="redshift"):
        power(np.array([0.1]), z=-0.5)
    with pytest.raises(InputError, match="single redshift"):
        power(np.array([0.1]), z=[0.0, 1.0])


def test_sigma8_is_classy_sigma8(power, reference):
    assert power.sigma8() == reference.sigma8()
    assert power.cosmology.sigma8 == reference.sigma8()
    # our independent top-hat integral of the adapter's P(k): Simpson on CLASS's spline (measured 4e-7)
    assert sigma_r(power, 8.0) == pytest.approx(reference.sigma8(), rel=1e-5)


def test_cosmology_rebuilt_from_class(power):
    c = power.cosmology
    assert (c.omega_m, c.omega_b, c.h, c.n_s) == pytest.approx(
        (QUIJOTE_FIDUCIAL.omega_m, QUIJOTE_FIDUCIAL.omega_b, QUIJOTE_FIDUCIAL.h, QUIJOTE_FIDUCIAL.n_s), rel=1e-12
    )
    assert c.A_s is None and c.name == QUIJOTE_FIDUCIAL.name
    assert c.sigma8 == pytest.approx(0.834, rel=1e-5)  # CLASS's shooting to the requested sigma8


def test_a_s_normalisation(classy):
    cosmo = Cosmology(omega_m=0.31, omega_b=0.049, h=0.68, n_s=0.965, sigma8=None, A_s=2.1e-9)
    p = ClassPower.from_cosmology(cosmo, k_max_h_mpc=1.0, z_max=0.5)
    ref = classy.Class()
    ref.set({"h": 0.68, "Omega_b": 0.049, "Omega_cdm": 0.31 - 0.049, "n_s": 0.965, "A_s": 2.1e-9,
             "N_ur": 3.044, "N_ncdm": 0, "P_k_max_h/Mpc": 1.0, "z_max_pk": 0.5, "output": "mPk"})
    ref.compute()
    assert p.sigma8() == ref.sigma8() == p.cosmology.sigma8
    assert ref.get_current_derived_parameters(["A_s"])["A_s"] == pytest.approx(2.1e-9, rel=1e-12)
    no_transfer = ClassPower.from_class(ref)  # computed without 'mTk'
    with pytest.raises(InputError, match="mTk"):
        no_transfer.transfer(np.array([0.1]))


@pytest.mark.parametrize("z", [0.0, 0.3, 1.0, 3.0, 50.0])
def test_growth_equals_classy(power, reference, z):
    d0 = reference.scale_independent_growth_factor(0.0)
    assert power.growth_factor(z) == pytest.approx(reference.scale_independent_growth_factor(z) / d0, rel=1e-14)
    assert power.growth_rate(z) == reference.scale_independent_growth_factor_f(z)


def test_growth_vectorised(power):
    z = np.array([[0.0, 1.0], [2.0, 3.0]])
    assert power.growth_factor(z).shape == (2, 2) and power.growth_factor(0.0) == 1.0
    np.testing.assert_array_equal(power.growth_rate(z)[1], [power.growth_rate(2.0), power.growth_rate(3.0)])


def test_growth_close_to_matter_lambda_closed_form(power):
    # CLASS keeps radiation (Omega_r ~ 9e-5 with massless neutrinos) that the closed form drops;
    # measured for Quijote: |dD/D| = 4.2e-4 at z = 3, 8.0e-4 at z = 5 (1.8e-3 at z = 10, 2.5e-2 at
    # z = 127); |df/f| = 7.6e-4 at z = 3, 1.2e-3 at z = 5.
    z = np.array([0.0, 0.5, 1.0, 2.0, 3.0, 5.0])
    om = power.cosmology.omega_m
    np.testing.assert_allclose(power.growth_factor(z), growth.growth_factor(z, om), rtol=1.5e-3, atol=0)
    np.testing.assert_allclose(power.growth_rate(z), growth.growth_rate(z, om), rtol=2e-3, atol=0)


# ----------------------------------------------------------------------------- transfer function
def test_transfer_goes_to_one_at_low_k(power):
    lo = power.k_range[0]
    assert power.transfer(np.array([lo]))[0] == pytest.approx(1.0, abs=1e-12)
    # near the horizon scale the shape still moves slightly (measured 1 - T(1e-4) = 1.2e-4)
    assert power.transfer(np.array([1e-4]))[0] == pytest.approx(1.0, abs=3e-4)
    assert np.all(np.diff(power.transfer(np.geomspace(1e-3, 10.0, 50))) < 0)


@pytest.mark.parametrize("z", [0.0, 3.0])
def test_transfer_is_classy_d_m_and_matches_pk(power, reference, z):
    table = reference.get_transfer(z)
    kt = table["k (h/Mpc)"][1:-1]
    t_class = table["d_m"][1:-1] / kt**2
    t_class = t_class / (table["d_m"][0] / table["k (h/Mpc)"][0] ** 2)
    np.testing.assert_allclose(power.transfer(kt, z=z), t_class, rtol=1e-12, atol=0)
    # P = A k^n_s T^2 at CLASS's points (measured 1e-14 at z = 0, 2e-7 at z = 3) ...
    ratio = power(kt, z=z) / (kt**power.cosmology.n_s * power.transfer(kt, z=z) ** 2)
    np.testing.assert_allclose(ratio / ratio[0], 1.0, rtol=1e-6, atol=0)
    # ... and between them, where the T spline and CLASS's ln P spline differ (measured 2.3e-4)
    k = np.geomspace(1e-4, 5.0, 997)
    ratio = power(k, z=z) / (k**power.cosmology.n_s * power.transfer(k, z=z) ** 2)
    np.testing.assert_allclose(ratio / ratio[0], 1.0, rtol=5e-4, atol=0)


# ----------------------------------------------------------------------------- cross-engine
def test_eisenstein_hu_close_to_class(power):
    # EH98 quote "better than 10%" for the baryon features in T(k); both spectra share sigma8 here.
    # Measured for Quijote over 0.01-1 h/Mpc: -2.4% ... +3.8% (largest at the BAO, k ~ 0.09 h/Mpc).
    k = np.geomspace(0.01, 1.0, 400)
    eh = EisensteinHuPower(power.cosmology)
    np.testing.assert_allclose(eh(k), power(k), rtol=0.05, atol=0)


def _bin_average(power, n, box, edges):
    """Theory per bin: CLASS P averaged over the FFT modes of the bin (as the estimator averages)."""
    kf = 2.0 * np.pi / box
    i1 = np.fft.fftfreq(n, 1.0 / n).astype(np.int64)
    m = (i1[:, None, None] ** 2 + i1[None, :, None] ** 2 + i1[None, None, :] ** 2).ravel()  # |k|^2 / kf^2
    m_unique, inverse = np.unique(m, return_inverse=True)
    kmag = kf * np.sqrt(m_unique.astype(np.float64))
    p_unique = np.zeros_like(kmag)
    p_unique[1:] = power(kmag[1:])  # one CLASS call per distinct |k|
    keep = (m > 0) & (kmag[inverse] >= edges[0]) & (kmag[inverse] < edges[-1])
    idx = np.searchsorted(edges, kmag[inverse][keep], side="right") - 1
    count = np.bincount(idx, minlength=edges.size - 1)
    total = np.bincount(idx, weights=p_unique[inverse][keep], minlength=edges.size - 1)
    return total / np.maximum(count, 1), count


@pytest.mark.parametrize("seed", [0, 1])
def test_ics_from_class_have_class_power(power, seed):
    n = 64
    field = linear_field(white_noise(n, seed=seed), power)  # fourier convention: Nyquist planes zeroed
    ps = power_spectrum(field.density, field.box_size)
    k_nyquist = np.pi * n / field.box_size
    use = (ps.n_modes > 0) & (ps.k_edges[1:] <= k_nyquist)  # bins without Nyquist-plane modes
    theory, count = _bin_average(power, n, field.box_size, ps.k_edges)
    np.testing.assert_array_equal(count[use], ps.n_modes[use])
    # n_modes counts k and -k: n/2 independent complex modes, Var(P_bin) = 2 P^2 / n_modes
    chi2 = np.sum((ps.power[use] - theory[use]) ** 2 / (2.0 * theory[use] ** 2 / ps.n_modes[use]))
    dof = int(use.sum())
    assert dof == 31
    assert abs(chi2 - dof) < 4.0 * np.sqrt(2.0 * dof), f"chi2 = {chi2:.1f} for {dof} bins"


# ----------------------------------------------------------------------------- errors
def test_unknown_parameter_is_input_error_with_class_message(classy):
    with pytest.raises(InputError, match="did not read input parameter.*not_a_class_parameter") as info:
        ClassPower.from_params({**REFERENCE_PARAMS, "not_a_class_parameter": 1.0})
    assert isinstance(info.value.__cause__, classy.CosmoSevereError)


def test_refused_value_is_input_error_with_class_message(classy):
    with pytest.raises(InputError, match="negative values") as info:
        ClassPower.from_params({**REFERENCE_PARAMS, "Omega_cdm": -0.1})
    assert isinstance(info.value.__cause__, classy.CosmoSevereError)


def test_failed_computation_is_computation_error(classy):
    with pytest.raises(ComputationError, match="thermodynamics") as info:
        ClassPower.from_params({**REFERENCE_PARAMS, "tau_reio": 5.0})
    assert not isinstance(info.value, InputError)
    assert isinstance(info.value.__cause__, (classy.CosmoSevereError, classy.CosmoComputationError))


@pytest.mark.parametrize(
    "params, match",
    [(["h", 0.7], "must be a dict"), ({1: 0.7}, "names must be str"), ({"h": None}, "str or a number")],
)
def test_bad_parameter_dicts(classy, params, match):
    with pytest.raises(InputError, match=match):
        ClassPower.from_params(params)


def test_bad_arguments(classy):
    with pytest.raises(InputError, match="classy.Class"):
        ClassPower.from_class(object())
    with pytest.raises(InputError, match="k_max_h_mpc"):
        ClassPower.from_cosmology(QUIJOTE_FIDUCIAL, k_max_h_mpc=0.0)
    with pytest.raises(InputError, match="z_max"):
        ClassPower.from_cosmology(QUIJOTE_FIDUCIAL, z_max=0.0)
    with pytest.raises(InputError, match="Cosmology"):
        ClassPower.from_cosmology(REFERENCE_PARAMS)


def test_class_instance_without_mpk_is_refused(classy):
    c = classy.Class()
    c.set({"h": 0.7})
    c.compute()
    with pytest.raises(InputError, match="mPk"):
        ClassPower.from_class(c)


# ----------------------------------------------------------------------------- optional dependency
def test_missing_classy_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "classy", None)  # import classy now raises ImportError
    with pytest.raises(MissingDependencyError, match=re.escape("emu_backend[class]")):
        ClassPower.from_cosmology(QUIJOTE_FIDUCIAL)
    with pytest.raises(MissingDependencyError, match="classy"):
        ClassPower.from_params({"h": 0.7})
    with pytest.raises(MissingDependencyError):
        ClassPower.from_class(object())


def test_import_does_not_import_classy():
    code = (
        "import sys; sys.modules['classy'] = None\n"
        "import emu_backend.adapters.classy as m\n"
        "assert sys.modules['classy'] is None and hasattr(m, 'ClassPower')"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------- docs example
def test_docs_example_runs(classy, capsys):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 1
    exec(compile(blocks[0], str(DOC), "exec"), {"__name__": "docs_example"})
    assert "sigma8 = 0.834" in capsys.readouterr().out
