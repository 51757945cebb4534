"""``emu-backend reconstruct`` and its inputs: density mesh files, snapshots of the backends, the
observation generators, the report, resuming a finished or partial run.

References: the closed-loop observation against the forward model on the same white noise (float32 emulator
arithmetic: 1e-4 of the field's scale); the report's r(k) against :func:`cross_correlation` of the saved
MAP; the resumed run against the first run, bit for bit.
"""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from emu_backend.validation import cross_correlation

from emu_backend.cli.main import main
from emu_backend.cosmology import QUIJOTE_FIDUCIAL
from emu_backend.differentiable import ForwardModel
from emu_backend.errors import FileFormatError, InputError
from emu_backend.ics import InitialConditions, white_noise
from emu_backend.io.density_mesh import DensityMesh, read_density_mesh, write_density_mesh
from emu_backend.io.gadget import write_gadget_hdf5
from emu_backend.simulator import simulate

pytest.importorskip("numpyro", reason="field-level sampling needs numpyro (extra 'jax')")

from emu_backend.fieldlevel.observations import observe, synthetic_observation  # noqa: E402

BOX = 250.0
FAST = ["--num-warmup", "6", "--num-samples", "6", "--num-chains", "2", "--max-tree-depth", "3", "--save-every", "3",
        "--map-iterations", "20"]
FAST_WARMUP = 2 * 6  # warm-up steps of FAST, all chains


def test_density_mesh_round_trip_and_refusals(tmp_path):
    rng = np.random.default_rng(0)
    mesh = DensityMesh(rng.normal(size=(8,) * 3), BOX, 0.5, QUIJOTE_FIDUCIAL, noise_sigma=rng.uniform(0.1, 1, (8,) * 3),
                       mask=rng.uniform(size=(8,) * 3) < 0.5, initial_noise=rng.normal(size=(8,) * 3), meta={"a": 1})
    path = write_density_mesh(tmp_path / "m.h5", mesh)
    back = read_density_mesh(path)
    for key in ("density", "noise_sigma", "mask", "initial_noise"):
        np.testing.assert_array_equal(getattr(back, key), getattr(mesh, key))
    assert (back.box_size, back.z, back.cosmology, back.meta) == (BOX, 0.5, QUIJOTE_FIDUCIAL, {"a": 1})
    with pytest.raises(InputError, match="already exists"):
        write_density_mesh(path, mesh)
    with pytest.raises(InputError, match="noise_sigma"):
        DensityMesh(np.zeros((8,) * 3), BOX, 0.5, QUIJOTE_FIDUCIAL, noise_sigma=-1.0)
    with pytest.raises(InputError, match="cubic"):
        DensityMesh(np.zeros((8, 8, 4)), BOX, 0.5, QUIJOTE_FIDUCIAL)
    with h5py.File(path, "r+") as f:
        del f["density"]
    with pytest.raises(FileFormatError, match="missing"):
        read_density_mesh(path)


def test_closed_loop_observation_is_the_forward_model_on_the_same_noise():
    """The emulator backend of simulate() and the ForwardModel see the same white noise and linear field."""
    n, z = 16, 0.5
    box = n * 1000 / 512
    ics = InitialConditions.from_noise(n, None, QUIJOTE_FIDUCIAL, 9)
    snap = simulate(ics, QUIJOTE_FIDUCIAL, z=[z], backend="emulator")[0]
    obs = observe(snap, n, 0.1, add_noise=False)
    with torch.no_grad():
        model = ForwardModel(n, box, z, output="density")(torch.from_numpy(white_noise(n, 9).astype(np.float64)))
    scale = np.abs(obs.density).max()
    # the same float32 network on the same tiles; positions rounded to float32 in the snapshot
    np.testing.assert_allclose(obs.density, model.double().numpy(), rtol=0, atol=2e-4 * scale)


def test_reconstruct_a_density_mesh_file_writes_a_consistent_report_and_reruns_identically(tmp_path):
    obs = synthetic_observation(8, 0.5, 0.3, seed=3, backend="za", box_size=BOX)
    write_density_mesh(tmp_path / "obs.h5", obs)
    args = ["reconstruct", str(tmp_path / "obs.h5"), "--out", str(tmp_path / "rec"), "--dynamics", "linear",
            "--infer", "sigma8", *FAST]
    assert main(args) == 0
    report = json.loads((tmp_path / "rec" / "report.json").read_text())
    assert (tmp_path / "rec" / "report.png").stat().st_size > 10_000
    assert "| sigma8 |" in (tmp_path / "rec" / "report.md").read_text()
    with np.load(tmp_path / "rec" / "map.npz") as z:
        noise_map = z["noise"]
    k_edges = np.linspace(2 * np.pi / BOX, np.pi * 8 / BOX, 4)
    ref = cross_correlation(noise_map, obs.initial_noise, BOX, k_edges)
    np.testing.assert_allclose(report["r_k"]["map"], ref.r, rtol=1e-12)
    p = report["parameters"]["sigma8"]
    assert 0.6 <= p["q05"] <= p["mean"] <= p["q95"] <= 1.0 and p["data_cosmology"] == QUIJOTE_FIDUCIAL.sigma8
    assert report["sampling"]["gradient_evaluations"] > 0 and report["map"]["evaluations"] > 0
    assert report["data"]["window"] == obs.meta["window"] == "tsc"  # the default, recorded by the data
    # the cost: the chains' step timings are parts of the sampler call's wall time, the draws' apart from the
    # warm-up's; per gradient and per effective sample from the draws only
    cost = report["sampling"]
    assert 0 < cost["draw_seconds"] and 0 < cost["warmup_seconds"]
    assert cost["draw_seconds"] + cost["warmup_seconds"] <= cost["seconds"]
    assert cost["warmup_gradients"] >= FAST_WARMUP  # at least one gradient per warm-up step
    assert cost["seconds_per_gradient"] == pytest.approx(cost["draw_seconds"] / cost["gradient_evaluations"], rel=1e-12)
    assert cost["seconds_per_effective_sample"]["sigma8"] == pytest.approx(
        cost["draw_seconds"] / report["diagnostics"]["sigma8"]["n_eff"], rel=1e-12)
    assert "per effective sample: sigma8" in (tmp_path / "rec" / "report.md").read_text()
    # a rerun of the finished run reuses the MAP and the chains: the same numbers, the chains' recorded timings
    assert main(args) == 0
    again = json.loads((tmp_path / "rec" / "report.json").read_text())
    assert again["parameters"] == report["parameters"] and again["r_k"] == report["r_k"]
    for key in ("draw_seconds", "warmup_seconds", "warmup_gradients", "seconds_per_effective_sample"):
        assert again["sampling"][key] == cost[key], key
    # other data into the same folder is refused
    other = synthetic_observation(8, 0.5, 0.3, seed=4, backend="za", box_size=BOX)
    write_density_mesh(tmp_path / "other.h5", other)
    assert main(["reconstruct", str(tmp_path / "other.h5"), "--out", str(tmp_path / "rec"), "--dynamics", "linear",
                 "--infer", "sigma8", *FAST]) == 2


def test_the_model_paints_as_the_data_were_painted(tmp_path):
    """The model's window is the one the data file records; another is refused, naming both; data that
    records none (or a snapshot) gets the default, TSC."""
    from emu_backend.pipelines.reconstruct import ReconstructConfig, load_observation, model_window

    obs = synthetic_observation(8, 0.5, 0.3, seed=3, backend="za", box_size=BOX, window="cic")
    assert obs.meta["window"] == "cic"
    write_density_mesh(tmp_path / "cic.h5", obs)
    config = ReconstructConfig(tmp_path / "cic.h5", tmp_path / "rec")
    assert model_window(config, load_observation(config)) == "cic"
    explicit = ReconstructConfig(tmp_path / "cic.h5", tmp_path / "rec", window="tsc")
    with pytest.raises(InputError, match=r"window 'tsc' differs from the data's: .*painted with 'cic'"):
        model_window(explicit, load_observation(explicit))
    assert main(["reconstruct", str(tmp_path / "cic.h5"), "--out", str(tmp_path / "rec"), "--window", "tsc",
                 "--dynamics", "za", *FAST]) == 2
    bare = DensityMesh(obs.density, BOX, 0.5, QUIJOTE_FIDUCIAL, noise_sigma=0.3)
    write_density_mesh(tmp_path / "bare.h5", bare)
    config = ReconstructConfig(tmp_path / "bare.h5", tmp_path / "rec")
    assert model_window(config, load_observation(config)) == "tsc"
    with pytest.raises(InputError, match=r"window must be one of"):
        ReconstructConfig(tmp_path / "bare.h5", tmp_path / "rec", window="ngp")


def test_reconstruct_a_snapshot_paints_it_and_finds_its_seed(tmp_path, capsys):
    ics = InitialConditions.from_noise(8, BOX, QUIJOTE_FIDUCIAL, 11)
    snap = simulate(ics, QUIJOTE_FIDUCIAL, z=[0.5], backend="2lpt")[0]
    write_gadget_hdf5(snap, tmp_path / "snap.hdf5")
    base = ["reconstruct", str(tmp_path / "snap.hdf5"), "--out", str(tmp_path / "rec"), "--dynamics", "za",
            "--infer", *FAST]
    assert main(base) == 2  # no --noise-sigma for a snapshot
    assert "--noise-sigma" in capsys.readouterr().err
    assert main([*base, "--noise-sigma", "0.2"]) == 0
    report = json.loads((tmp_path / "rec" / "report.json").read_text())
    assert report["data"]["has_truth"] and report["parameters"] == {}
    # the CLI's summary carries the bias section's scale (the report's number, formatted)
    line = next(s for s in capsys.readouterr().out.splitlines() if "bias against the truth" in s)
    k_map = report["bias"]["r_k"]["fields"]["map"]["k_max_contiguous"]
    assert f"map {'-' if k_map is None else format(k_map, '.3f')}" in line, line
    # 2LPT data, ZA model, 31 Mpc/h cells: the largest scales are recovered
    assert report["r_k"]["map"][0] > 0.8, report["r_k"]


def test_sampler_flags_reach_the_sampler_config():
    """``--precondition`` and ``--no-centre`` set :class:`SamplerConfig`; by default the Hessian preconditioner
    with partial centring."""
    import argparse

    from emu_backend.cli.reconstruct import add_arguments, config_from_args

    p = argparse.ArgumentParser()
    add_arguments(p)
    default = config_from_args(p.parse_args(["obs.h5", "--out", "rec"])).sampler
    assert (default.precondition, default.centre) == ("hessian", True)
    flagged = config_from_args(p.parse_args(["obs.h5", "--out", "rec", "--precondition", "linear", "--no-centre"]))
    assert (flagged.sampler.precondition, flagged.sampler.centre) == ("linear", False)
