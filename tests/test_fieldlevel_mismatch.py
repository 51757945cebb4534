"""Issue #17's model mismatch: the bias section of the reconstruction report, and a run on PM (pmwd) data.

References independent of the code under test:
- the parameter bias recomputed here from the report's own posterior mean and std and the data's cosmology
  (``QUIJOTE_FIDUCIAL``): float64 arithmetic on the same numbers, 1e-12;
- r(k) of a field with itself is 1 (round-off, 1e-12); r(k) of the true noise with an independent white
  noise is ~0: per bin, ``r`` is a mean over ``n_modes / 2`` independent complex modes (``n_modes`` counts
  k and -k), each ``Re(F G*) / (|F| |G|)``-like term of variance 1/2, so ``std(r) ~ 1 / sqrt(n_modes)``;
  the test allows 5 of those (a false failure per bin ~6e-7);
- r(k) of the saved MAP against :func:`cross_correlation` computed here (1e-12).
"""

from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
import pytest
from emu_backend.validation import cross_correlation

from emu_backend.cli.main import main
from emu_backend.cosmology import QUIJOTE_FIDUCIAL
from emu_backend.differentiable import ForwardModel
from emu_backend.errors import InputError
from emu_backend.io.density_mesh import DensityMesh, read_density_mesh, write_density_mesh

pytest.importorskip("numpyro", reason="field-level sampling needs numpyro (extra 'jax')")

from emu_backend.fieldlevel import FieldLikelihood, find_map  # noqa: E402
from emu_backend.fieldlevel.bias import bias_section, data_backend, parameter_bias, r_summary  # noqa: E402
from emu_backend.fieldlevel.observations import synthetic_observation  # noqa: E402

BOX = 250.0
FAST = ["--num-warmup", "6", "--num-samples", "6", "--num-chains", "2", "--max-tree-depth", "3", "--save-every", "3",
        "--map-iterations", "20"]


def _edges(n, box):
    return np.linspace(2 * np.pi / box, np.pi * n / box, max(3, n // 2))


# -- the helpers ---------------------------------------------------------------------------------------------
def test_bias_section_identity_independent_noise_and_parameter_bias():
    n, box = 16, 100.0
    rng = np.random.default_rng(5)
    truth = rng.normal(size=(n,) * 3)
    mesh = DensityMesh(rng.normal(size=(n,) * 3), box, 0.5, QUIJOTE_FIDUCIAL, noise_sigma=0.3, initial_noise=truth,
                       meta={"backend": "pmwd"})
    estimates = {"omega_m": {"value": 0.35, "std": 0.01, "estimator": "posterior_mean"},
                 "sigma8": {"value": 0.80, "std": None, "estimator": "map"}}
    section = bias_section(mesh, {"map": truth.copy(), "posterior_mean": rng.normal(size=(n,) * 3)}, estimates,
                           _edges(n, box))
    assert section["available"] and section["data_backend"] == "pmwd"
    om, s8 = section["parameters"]["omega_m"], section["parameters"]["sigma8"]
    # float64 subtraction of the same numbers: round-off only
    assert om["bias"] == pytest.approx(0.35 - QUIJOTE_FIDUCIAL.omega_m, abs=1e-12)
    assert om["bias_over_std"] == pytest.approx((0.35 - QUIJOTE_FIDUCIAL.omega_m) / 0.01, abs=1e-10)
    assert s8["bias"] == pytest.approx(0.80 - QUIJOTE_FIDUCIAL.sigma8, abs=1e-12)
    assert s8["std"] is None and s8["bias_over_std"] is None and s8["estimator"] == "map"
    r_k = section["r_k"]
    same, other = r_k["fields"]["map"], r_k["fields"]["posterior_mean"]
    # a field with itself: r = 1 up to round-off
    np.testing.assert_allclose(same["r"], 1.0, rtol=0, atol=1e-12)
    assert same["k_max_contiguous"] == pytest.approx(r_k["k"][-1], rel=1e-12) == same["k_max_above"]
    # independent white noises: |r| < 5 / sqrt(n_modes) per bin (5 sigma of the mode average)
    assert np.all(np.abs(other["r"]) < 5 / np.sqrt(r_k["n_modes"])), (other["r"], r_k["n_modes"])
    assert other["k_max_contiguous"] is None and other["k_above"] == []
    # the independent reference of the cross-correlation
    ref = cross_correlation(mesh.initial_noise, truth, box, _edges(n, box))
    np.testing.assert_allclose(same["r"], ref.r, rtol=0, atol=1e-12)


def test_bias_section_without_truth_says_so():
    rng = np.random.default_rng(6)
    mesh = DensityMesh(rng.normal(size=(8,) * 3), BOX, 0.5, QUIJOTE_FIDUCIAL, noise_sigma=0.3)
    section = bias_section(mesh, {"map": rng.normal(size=(8,) * 3)}, {"sigma8": {"value": 0.8, "std": 0.05}},
                           _edges(8, BOX))
    assert section == {"available": False, "data_backend": None, "reason": section["reason"]}
    assert "no true white noise" in section["reason"]
    # a model grid other than the ICs' grid: no r(k), the reason names both shapes
    mesh = DensityMesh(rng.normal(size=(8,) * 3), BOX, 0.5, QUIJOTE_FIDUCIAL, initial_noise=rng.normal(size=(16,) * 3))
    section = bias_section(mesh, {"map": rng.normal(size=(8,) * 3)}, {}, _edges(8, BOX))
    assert not section["available"] and "(16, 16, 16)" in section["reason"]


def test_r_summary_and_parameter_bias_edge_cases():
    k = [0.1, 0.2, np.nan, 0.4, 0.5]
    s = r_summary(k, [0.99, 0.95, np.nan, 0.5, 0.93])
    assert s["k_above"] == [0.1, 0.2, 0.5] and s["k_max_above"] == 0.5 and s["k_max_contiguous"] == 0.2
    assert r_summary([0.1, 0.2], [0.5, 0.95])["k_max_contiguous"] is None
    assert parameter_bias(0.8, None, 0.1)["bias"] is None
    assert parameter_bias(0.8, 0.7, 0.0)["bias_over_std"] is None  # zero std: undefined, not inf
    with pytest.raises(InputError, match="estimator"):
        parameter_bias(0.8, 0.7, estimator="mode")
    with pytest.raises(InputError, match="threshold"):
        r_summary([0.1], [0.5], threshold=1.5)
    with pytest.raises(InputError, match="same length"):
        r_summary([0.1, 0.2], [0.5])


def test_synthetic_observation_records_its_backend_through_a_file(tmp_path):
    obs = synthetic_observation(8, 0.5, 0.3, seed=3, backend="za", box_size=BOX)
    assert obs.meta["backend"] == "za" and obs.meta["ics_seed"] == 3 and data_backend(obs) == "za"
    back = read_density_mesh(write_density_mesh(tmp_path / "obs.h5", obs))
    assert data_backend(back) == "za"
    # a mesh made by observe() alone: the snapshot's provenance is used
    assert data_backend(DensityMesh(obs.density, BOX, 0.5, QUIJOTE_FIDUCIAL, meta={"snapshot": {"backend": "2lpt"}})) \
        == "2lpt"


# -- the report ----------------------------------------------------------------------------------------------
def test_reconstruct_report_bias_section_is_the_estimate_minus_the_truth(tmp_path):
    obs = synthetic_observation(8, 0.5, 0.3, seed=3, backend="za", box_size=BOX)
    write_density_mesh(tmp_path / "obs.h5", obs)
    assert main(["reconstruct", str(tmp_path / "obs.h5"), "--out", str(tmp_path / "rec"), "--dynamics", "linear",
                 "--infer", "sigma8", *FAST]) == 0
    report = json.loads((tmp_path / "rec" / "report.json").read_text())
    bias = report["bias"]
    assert bias["available"] and bias["data_backend"] == "za" and report["data"]["backend"] == "za"
    p, b = report["parameters"]["sigma8"], bias["parameters"]["sigma8"]
    # recomputed from the report's own mean and std and the data's cosmology (float64 round-off)
    assert b["estimator"] == "posterior_mean" and b["truth"] == QUIJOTE_FIDUCIAL.sigma8
    assert b["bias"] == pytest.approx(p["mean"] - QUIJOTE_FIDUCIAL.sigma8, abs=1e-12)
    assert b["bias_over_std"] == pytest.approx((p["mean"] - QUIJOTE_FIDUCIAL.sigma8) / p["std"], rel=1e-12)
    with np.load(tmp_path / "rec" / "map.npz") as z:
        noise_map = z["noise"]
    ref = cross_correlation(noise_map, obs.initial_noise, BOX, _edges(8, BOX))
    fields = bias["r_k"]["fields"]
    # the same FFT estimator on the same arrays: round-off
    np.testing.assert_allclose(fields["map"]["r"], ref.r, rtol=0, atol=1e-12)
    np.testing.assert_allclose(fields["posterior_mean"]["r"], report["r_k"]["posterior_mean"], rtol=0, atol=1e-12)
    above = [k for k, r in zip(ref.k, ref.r) if r > 0.9]
    assert fields["map"]["k_above"] == pytest.approx(above, rel=1e-12)
    md = (tmp_path / "rec" / "report.md").read_text()
    assert "## Bias against the truth" in md and "data made by: `za`" in md and "| sigma8 | posterior mean |" in md


def test_reconstruct_report_without_truth_states_it(tmp_path):
    obs = synthetic_observation(8, 0.5, 0.3, seed=4, backend="za", box_size=BOX)
    plain = DensityMesh(obs.density, BOX, 0.5, QUIJOTE_FIDUCIAL, noise_sigma=0.3)  # no initial_noise, no meta
    write_density_mesh(tmp_path / "obs.h5", plain)
    assert main(["reconstruct", str(tmp_path / "obs.h5"), "--out", str(tmp_path / "rec"), "--dynamics", "linear",
                 "--infer", "sigma8", *FAST]) == 0
    report = json.loads((tmp_path / "rec" / "report.json").read_text())
    assert report["bias"]["available"] is False and "no true white noise" in report["bias"]["reason"]
    assert "r_k" not in report and report["data"]["backend"] is None
    md = (tmp_path / "rec" / "report.md").read_text()
    assert "not computed: the data carries no true white noise" in md and "data made by: `not recorded`" in md


# -- PM data -------------------------------------------------------------------------------------------------
def test_mismatch_run_on_pmwd_data_gives_finite_numbers(tmp_path):
    if importlib.util.find_spec("pmwd") is None:  # not importorskip: `import pmwd` switches JAX's x64 on
        pytest.skip("PM data for the model-mismatch run needs pmwd (extra 'pmwd')")
    n, z, sigma = 8, 0.5, 0.5
    obs = synthetic_observation(n, z, sigma, seed=1, backend="pmwd", mesh_factor=1, steps=4)
    assert data_backend(obs) == "pmwd" and np.all(np.isfinite(obs.density))
    # the emulator's joint MAP on PM data, a couple of gradients (the benchmark runs the real budget)
    fm = ForwardModel(n, obs.box_size, z, output="density")
    lik = FieldLikelihood(fm, obs.density, noise_sigma=sigma)
    best = find_map(lik, max_iterations=1, inner_iterations=2)
    estimates = {k: {"value": v, "std": None, "estimator": "map"} for k, v in best.theta.items()}
    section = bias_section(obs, {"map": best.noise}, estimates, _edges(n, obs.box_size))
    assert section["available"] and section["data_backend"] == "pmwd"
    for name in ("omega_m", "sigma8"):
        b = section["parameters"][name]
        lo, hi = lik.priors.bounds(name)
        assert lo < b["estimate"] < hi and math.isfinite(b["bias"])
    r = np.asarray(section["r_k"]["fields"]["map"]["r"])
    assert np.all(np.isfinite(r)) and np.all(np.abs(r) <= 1 + 1e-12)  # a correlation coefficient, round-off
    # the report of `reconstruct` on the PM data file (ZA model: seconds) names the backend as a mismatch
    write_density_mesh(tmp_path / "pm.h5", obs)
    assert main(["reconstruct", str(tmp_path / "pm.h5"), "--out", str(tmp_path / "rec"), "--dynamics", "za",
                 "--infer", "sigma8", *FAST]) == 0
    report = json.loads((tmp_path / "rec" / "report.json").read_text())
    assert report["bias"]["data_backend"] == "pmwd" and math.isfinite(report["bias"]["parameters"]["sigma8"]["bias"])
    assert "(a PM code: model mismatch)" in (tmp_path / "rec" / "report.md").read_text()
