"""Growth factor, growth rate and Hubble rate against the reference table (scipy float64)."""

import json

import numpy as np
import pytest

from emu_backend.cosmology import growth_factor, growth_rate, hubble
from emu_backend.errors import InputError
from emu_backend.nn import displacement_norm, velocity_norm


def test_against_reference_table(golden):
    rows = json.loads((golden / "cosmology_table.json").read_text())
    assert len(rows) == 25
    for r in rows:
        # same closed forms evaluated in float64: agreement to 1e-10 (the requirement)
        assert growth_factor(r["z"], r["Om"]) == pytest.approx(r["D"], rel=1e-10, abs=1e-12)
        assert growth_rate(r["z"], r["Om"]) == pytest.approx(r["f"], rel=1e-10, abs=1e-12)
        assert hubble(r["z"], r["Om"]) == pytest.approx(r["H"], rel=1e-10)
        assert displacement_norm(r["z"], r["Om"]) == pytest.approx(r["dis_norm_factor_Mpc_h"], rel=1e-10)
        assert velocity_norm(r["z"], r["Om"]) == pytest.approx(r["vel_norm_factor_km_s"], rel=1e-10)


def test_growth_rate_is_dlnD_dlna():
    # independent check: centred finite difference of ln D in ln a; step 1e-4 gives ~1e-8 truncation error
    om, z = 0.27, 0.8
    lna = -np.log1p(z)
    h = 1e-4
    d = lambda lna_: np.log(growth_factor(np.exp(-lna_) - 1, om))
    fd = (d(lna + h) - d(lna - h)) / (2 * h)
    assert growth_rate(z, om) == pytest.approx(fd, rel=1e-7)


def test_einstein_de_sitter_limit():
    # Om = 1: D = a and f = 1 exactly (analytic)
    z = np.array([0.0, 0.5, 2.0])
    np.testing.assert_allclose(growth_factor(z, 1.0), 1 / (1 + z), rtol=1e-13)
    np.testing.assert_allclose(growth_rate(z, 1.0), 1.0, rtol=1e-13)


@pytest.mark.parametrize("om", [0.0, -0.1, 1.5, float("nan")])
def test_bad_omega_m(om):
    with pytest.raises(InputError, match="omega_m"):
        growth_factor(0.0, om)


def test_bad_redshift():
    with pytest.raises(InputError, match="redshift"):
        growth_rate(-1.0, 0.3)
