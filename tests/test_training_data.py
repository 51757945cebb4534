"""Training data: the Latin-hypercube design, make_training_set (JaxPM), resume, and user-supplied runs.

One small JaxPM training set (2 simulations of 16^3 particles, z = 0, 1, 3, mesh factor 2 and the
shipped rtol = atol = 1e-4, a_start = 0.1) is made once per module and shared; the resume test copies it
and recomputes one simulation. About 1 minute on 2 cores.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from emu_backend.cosmology import QUIJOTE_FIDUCIAL, EisensteinHuPower
from emu_backend.datatypes import Snapshot
from emu_backend.errors import DomainError, InputError
from emu_backend.ics import InitialConditions, white_noise
from emu_backend.ics.linear import za_displacement
from emu_backend.io.training_sample import read_training_sample, write_training_sample
from emu_backend.simulator import simulate
from emu_backend.training.design import DEFAULT_RANGES, QUIJOTE_LH_RANGES, Design, latin_hypercube
from emu_backend.training.make_set import (
    DEFAULT_JAXPM_OPTIONS,
    MANIFEST_NAME,
    make_training_set,
    read_manifest,
    sample_path,
)
from emu_backend.training.user_data import sample_from_quijote, sample_from_snapshots

sys.path.insert(0, str(Path(__file__).resolve().parent))

GRID = 16
Z = [0.0, 1.0, 3.0]
SEED = 11
BOX = 1000.0 * GRID / 512
MF2 = {"mesh_factor": 2}


def _hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- the design -------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_sims", [1, 7, 64])
@pytest.mark.parametrize("vary_all", [False, True])
def test_design_is_a_latin_hypercube_within_the_ranges(n_sims, vary_all):
    design = latin_hypercube(n_sims, seed=5, vary_all=vary_all)
    ranges = QUIJOTE_LH_RANGES if vary_all else DEFAULT_RANGES
    assert set(design.names) == set(ranges) and len(design.cosmologies) == n_sims
    for j, name in enumerate(design.names):
        lo, hi = ranges[name]
        values = np.array([getattr(c, name) for c in design.cosmologies])
        np.testing.assert_array_equal(values, design.table[:, j])
        assert np.all((values >= lo) & (values <= hi))
        # definition of a Latin hypercube: each of the n equal strata of every 1-D projection holds one point
        strata = np.floor((values - lo) / (hi - lo) * n_sims).astype(int)
        assert sorted(strata.tolist()) == list(range(n_sims)), name
    fixed = set(QUIJOTE_LH_RANGES) - set(ranges)
    for c in design.cosmologies:
        for name in fixed:  # parameters not varied keep the Quijote fiducial values
            assert getattr(c, name) == getattr(QUIJOTE_FIDUCIAL, name)
    again = latin_hypercube(n_sims, seed=5, vary_all=vary_all)
    np.testing.assert_array_equal(again.table, design.table)  # seeded
    if n_sims > 1:
        assert not np.array_equal(latin_hypercube(n_sims, seed=6, vary_all=vary_all).table, design.table)


def test_design_custom_range_and_explicit_list():
    design = latin_hypercube(10, seed=0, ranges={"omega_m": (0.2, 0.4), "h": (0.6, 0.8)})
    assert design.names == ("omega_m", "sigma8", "h")
    om = np.array([c.omega_m for c in design.cosmologies])
    assert sorted(np.floor((om - 0.2) / 0.2 * 10).astype(int).tolist()) == list(range(10))
    listed = Design.from_cosmologies([QUIJOTE_FIDUCIAL, QUIJOTE_FIDUCIAL.clone(omega_m=0.2)])
    assert listed.cosmologies[1].omega_m == 0.2 and len(listed) == 2
    assert json.loads(json.dumps(design.to_dict()))["cosmologies"][3]["omega_m"] == design.cosmologies[3].omega_m


@pytest.mark.parametrize("kwargs, error, match", [
    ({"n_sims": 0}, InputError, r"n_sims.*>= 1.*0"),
    ({"n_sims": 2.5}, InputError, r"n_sims.*2\.5"),
    ({"seed": -1}, InputError, r"seed.*-1"),
    ({"ranges": {"omega_m": (0.05, 0.5)}}, DomainError, r"omega_m.*0\.05.*training domain \[0\.1, 0\.5\]"),
    ({"ranges": {"omega_m": (0.1, 0.6)}}, DomainError, r"0\.6.*\[0\.1, 0\.5\]"),
    ({"ranges": {"sigma8": (1.0, 0.6)}}, InputError, r"sigma8.*\(1\.0, 0\.6\).*low < high"),
    ({"ranges": {"h": (0.1, 0.9)}}, InputError, r"h = \(0\.1, 0\.9\).*allowed range \[0\.2, 2\.0\]"),
    ({"ranges": {"w0": (-1.1, -0.9)}}, InputError, r"'w0'"),
    ({"ranges": {"n_s": (0.9, float("nan"))}}, InputError, r"n_s.*finite"),
    ({"ranges": {"omega_b": (0.03, 0.2)}}, InputError, r"Omega_b up to 0\.2.*Omega_m 0\.1"),
    ({"ranges": {"h": 0.7}}, InputError, r"range of h must be a pair"),
])
def test_design_bad_inputs(kwargs, error, match):
    args = {"n_sims": 4, "seed": 0, **kwargs}
    with pytest.raises(error, match=match):
        latin_hypercube(args.pop("n_sims"), args.pop("seed"), **args)


# -- make_training_set with JaxPM -----------------------------------------------------------------
@pytest.fixture(scope="module")
def made(tmp_path_factory):
    pytest.importorskip("jaxpm", reason="JaxPM not installed: pip install 'emu_backend[jaxpm]'")
    out = tmp_path_factory.mktemp("training_set")
    design = latin_hypercube(2, seed=3)
    # mesh factor 2 (not the default 3) keeps the module fast; rtol, atol, a_start are the defaults
    result = make_training_set(out, design, grid=GRID, z=Z, seed=SEED, backend_options=MF2)
    return out, design, result


def test_files_and_manifest_round_trip(made, tmp_path):
    out, design, result = made
    assert result.computed == (0, 1) and result.skipped == ()
    manifest = read_manifest(out)
    settings = manifest["settings"]
    assert settings["grid"] == GRID and settings["z"] == Z and settings["seed"] == SEED
    assert settings["backend"] == "jaxpm" and settings["backend_settings"]["mesh_factor"] == 2
    assert math.isclose(settings["box_size"], BOX)
    assert [s["file"] for s in manifest["samples"]] == ["sample_0000.h5", "sample_0001.h5"]
    for i, cosmo in enumerate(design.cosmologies):
        sample = read_training_sample(sample_path(out, i))
        assert sample.grid == GRID and sample.z.tolist() == Z and math.isclose(sample.box_size, BOX)
        assert sample.cosmology == cosmo and sample.seed == SEED + i
        jax_settings = sample.provenance["backend_settings"]
        for key in ("rtol", "atol", "a_start", "lpt_order"):  # the shipped defaults, where not given
            assert jax_settings[key] == DEFAULT_JAXPM_OPTIONS[key] == settings["backend_settings"][key]
        assert manifest["samples"][i]["cosmology"] == cosmo.to_dict()
        # the stored sample survives a write/read cycle bit for bit
        copy = write_training_sample(tmp_path / f"copy{i}.h5", sample)
        again = read_training_sample(copy)
        for key in ("input_displacement", "z", "displacement", "velocity"):
            np.testing.assert_array_equal(getattr(again, key), getattr(sample, key))


def test_input_is_the_za_field_of_the_seed(made):
    out, design, _ = made
    for i, cosmo in enumerate(design.cosmologies):
        sample = read_training_sample(sample_path(out, i))
        # independent recomputation: white noise of seed SEED + i -> EH P(k) of the design cosmology -> ZA
        psi = za_displacement(white_noise(GRID, SEED + i), EisensteinHuPower(cosmo), BOX, dtype=np.float64)
        np.testing.assert_allclose(sample.input_displacement, psi, rtol=0,
                                   atol=1e-6 * np.abs(psi).max())  # float32 storage of the same numbers


def test_target_at_z3_is_close_to_2lpt(made):
    out, design, _ = made
    for i, cosmo in enumerate(design.cosmologies):
        sample = read_training_sample(sample_path(out, i))
        ics = InitialConditions.from_linear_displacement(sample.input_displacement, sample.box_size)
        lpt = sample_from_snapshots(ics, simulate(ics, cosmo, z=Z, backend="2lpt"), cosmology=cosmo)
        err = {}
        for t, z in enumerate(Z):
            a, b = sample.displacement[t].astype(np.float64), lpt.displacement[t].astype(np.float64)
            err[z] = float(np.sqrt(np.mean((a - b) ** 2) / np.mean(b**2)))
            r = float(np.sum(a * b) / np.sqrt(np.sum(a * a) * np.sum(b * b)))
            if z == 3.0:
                # at z = 3 the rms displacement is ~ half a cell and shell crossing has barely begun: 2LPT
                # (the PM run's own start at a = 0.1) still describes the particles to < 10% rms (measured
                # 4-7% here), and their cross-correlation exceeds 0.995 (measured 0.998-0.999)
                assert err[z] < 0.10 and r > 0.995, (i, err[z], r)
        # gravity, not LPT: the departure from 2LPT grows as the structure becomes nonlinear
        assert err[0.0] > 2 * err[3.0] and err[1.0] > err[3.0], err


def test_resume_recomputes_only_the_missing_sample(made, tmp_path):
    out, design, _ = made
    copy = tmp_path / "set"
    shutil.copytree(out, copy)
    keep, lost = sample_path(copy, 0), sample_path(copy, 1)
    before = {p.name: (_hash(p), p.stat().st_mtime_ns) for p in (keep, copy / MANIFEST_NAME)}
    original = read_training_sample(lost)
    lost.unlink()
    (copy / ".sample_0001.h5.x1y2z3.part").write_bytes(b"\x89HDF")  # a killed run's temporary file
    result = make_training_set(copy, design, grid=GRID, z=Z, seed=SEED, backend_options=MF2)
    assert result.computed == (1,) and result.skipped == (0,)
    after = {p.name: (_hash(p), p.stat().st_mtime_ns) for p in (keep, copy / MANIFEST_NAME)}
    assert after == before  # untouched: same content and same modification time
    assert not list(copy.glob("*.part"))
    redo = read_training_sample(lost)
    np.testing.assert_array_equal(redo.input_displacement, original.input_displacement)  # same seed, same ICs
    # the same run again: JaxPM on CPU is deterministic up to float32 summation order in the painting
    rms = float(np.sqrt(np.mean(original.displacement.astype(np.float64) ** 2)))
    np.testing.assert_allclose(redo.displacement, original.displacement, rtol=0, atol=1e-3 * rms)
    # nothing left to do
    assert make_training_set(copy, design, grid=GRID, z=Z, seed=SEED, backend_options=MF2).computed == ()


@pytest.mark.parametrize("change, match", [
    ({"seed": SEED + 1}, r"other settings.*seed: 11 -> 12"),
    ({"z": [0.0, 1.0]}, r"other settings.*settings\.z"),
    ({"backend_options": {"mesh_factor": 1}}, r"other settings.*mesh_factor: 2 -> 1"),
    ({"backend_options": {**MF2, "rtol": 1e-3}}, r"other settings.*rtol: 0\.0001 -> 0\.001"),
    ({"design": "other"}, r"other settings.*design\."),
])
def test_changed_configuration_is_refused_on_resume(made, tmp_path, change, match):
    out, design, _ = made
    copy = tmp_path / "set"
    shutil.copytree(out, copy)
    before = sorted((p.name, _hash(p)) for p in copy.iterdir())
    kwargs = {"grid": GRID, "z": Z, "seed": SEED, "backend_options": MF2, **change}
    if kwargs.pop("design", None) == "other":
        design = latin_hypercube(2, seed=4)
    with pytest.raises(InputError, match=match):
        make_training_set(copy, design, **kwargs)
    assert sorted((p.name, _hash(p)) for p in copy.iterdir()) == before


def test_sample_files_without_manifest_are_refused(made, tmp_path):
    out, design, _ = made
    shutil.copy(sample_path(out, 0), tmp_path / "sample_0000.h5")
    with pytest.raises(InputError, match=r"sample_0000\.h5.*no manifest\.json"):
        make_training_set(tmp_path, design, grid=GRID, z=Z, seed=SEED, backend_options=MF2)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"grid": 4}, InputError, r"grid.*>= 8.*4"),
    ({"grid": 16.0}, InputError, r"grid.*16\.0"),
    ({"z": [0.0, 3.5]}, DomainError, r"z = 3\.5.*\[0\.0, 3\.0\]"),
    ({"z": [-0.5]}, DomainError, r"z = -0\.5"),
    ({"z": [1.0, 1.0]}, InputError, r"z = 1\.0.*twice"),
    ({"z": []}, InputError, r"non-empty"),
    ({"z": [float("nan")]}, InputError, r"finite.*nan"),
    ({"seed": -3}, InputError, r"seed.*-3"),
    ({"power": "bbks"}, InputError, r"power.*'bbks'"),
    ({"backend": "nope"}, InputError, r"unknown backend 'nope'"),
    ({"backend": "emulator"}, InputError, r"emulator.*N-body"),
    ({"backend_options": {"steps": 3}}, InputError, r"does not accept.*steps"),
    ({"design": [QUIJOTE_FIDUCIAL.clone(omega_m=0.6)]}, DomainError, r"omega_m = 0\.6.*\[0\.1, 0\.5\]"),
    ({"design": "cosmo"}, InputError, r"design must be"),
])
def test_make_training_set_bad_inputs(tmp_path, kwargs, error, match):
    args = {"design": latin_hypercube(2, seed=0), "grid": 8, "z": [0.0], "backend": "2lpt", **kwargs}
    with pytest.raises(error, match=match):
        make_training_set(tmp_path / "out", args.pop("design"), **args)
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_bad_jaxpm_option_names_the_value(tmp_path):
    pytest.importorskip("jaxpm", reason="JaxPM not installed: pip install 'emu_backend[jaxpm]'")
    with pytest.raises(InputError, match=r"mesh_factor.*7"):
        make_training_set(tmp_path, latin_hypercube(1, seed=0), grid=8, z=[0.0], backend_options={"mesh_factor": 7})


def test_pmwd_backend_passes_through(tmp_path):
    # find_spec, not importorskip: importing pmwd directly switches JAX to x64 for the whole process (the
    # adapter imports it inside its own x64 context), which would break the JaxPM runs of later tests
    if importlib.util.find_spec("pmwd") is None:
        pytest.skip("pmwd not installed: pip install 'emu_backend[pmwd]'")
    result = make_training_set(tmp_path, latin_hypercube(1, seed=0), grid=8, z=[0.0, 1.0], backend="pmwd",
                               backend_options={"mesh_factor": 2, "steps": 4})
    settings = read_manifest(tmp_path)["settings"]
    assert settings["backend"] == "pmwd" and settings["backend_settings"]["steps"] == 4
    sample = read_training_sample(result.files[0])
    assert sample.provenance["backend"] == "pmwd" and np.isfinite(sample.displacement).all()
    assert "rtol" not in settings["backend_settings"]  # JaxPM's defaults are not forced on another backend


# -- user-supplied simulations ------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["za", "2lpt", "jaxpm"])
def test_sample_from_snapshots_round_trips_our_backends(backend, tmp_path):
    if backend == "jaxpm":
        pytest.importorskip("jaxpm", reason="JaxPM not installed: pip install 'emu_backend[jaxpm]'")
    cosmo = QUIJOTE_FIDUCIAL
    ics = InitialConditions.from_noise(8, None, cosmo, seed=2)
    opts = {"mesh_factor": 1, "rtol": 1e-3, "atol": 1e-3} if backend == "jaxpm" else {}
    snaps = simulate(ics, cosmo, z=[1.0, 0.0, 2.0], backend=backend, **opts)  # any order
    sample = sample_from_snapshots(ics, snaps, cosmology=cosmo, provenance={"note": "test"})
    assert sample.z.tolist() == [0.0, 1.0, 2.0] and sample.seed == 2
    assert sample.provenance["note"] == "test" and sample.provenance["snapshot_meta"]["backend"] == backend
    path = write_training_sample(tmp_path / "s.h5", sample)
    back = read_training_sample(path)
    for t, snap in zip(range(3), [snaps[1], snaps[0], snaps[2]]):
        rebuilt = Snapshot.from_displacement(back.displacement[t], back.velocity[t], snap.a, back.box_size, cosmo)
        # same particles: positions equal modulo the box to float32 rounding of L-sized numbers
        d = rebuilt.positions.astype(np.float64) - snap.positions
        d -= snap.box_size * np.round(d / snap.box_size)
        assert np.abs(d).max() <= 4 * snap.box_size * 2.0**-24
        np.testing.assert_array_equal(back.velocity[t], snap.velocity_field())
    np.testing.assert_array_equal(back.input_displacement, ics.displacement)


def test_sample_displacement_is_unwrapped_around_the_linear_motion():
    cosmo = QUIJOTE_FIDUCIAL
    n, box = 4, 10.0
    psi = np.zeros((3, n, n, n))
    psi[0] = 0.7 * box  # every particle moves 0.7 L along x by z = 0: wrapped positions, minimal image -0.3 L
    snap = simulate(InitialConditions.from_linear_displacement(psi, box), cosmo, z=0.0, backend="za")[0]
    assert np.allclose(snap.displacement_field()[0], -0.3 * box, atol=1e-5)
    sample = sample_from_snapshots(psi, [snap], cosmology=cosmo, box_size=box)
    np.testing.assert_allclose(sample.displacement[0, 0], 0.7 * box, atol=1e-5)  # continuous, not wrapped


def _snap(n=8, box=None, z=0.0, cosmo=QUIJOTE_FIDUCIAL, seed=1):
    ics = InitialConditions.from_noise(n, box, cosmo, seed=seed)
    return ics, simulate(ics, cosmo, z=z, backend="za")[0]


@pytest.mark.parametrize("case, match", [
    ("grid", r"snapshot 0 has 16\^3 particles but the linear field is 8\^3"),
    ("box", r"snapshot 0.*20\.0 Mpc/h but the ICs' box is 15\.625"),
    ("twice", r"repeats redshift z = 0\.0"),
    ("omega_m", r"Omega_m = 0\.25 but cosmology has 0\.3175"),
    ("empty", r"non-empty sequence"),
    ("shape", r"shape \(3, n, n, n\), got \(8, 8, 8\)"),
    ("box_arg", r"box_size is 99\.0 Mpc/h but the ICs' box is 15\.625|ICs' box is 15\.625 Mpc/h but box_size is 99"),
])
def test_sample_from_snapshots_refuses_inconsistent_runs(case, match):
    cosmo = QUIJOTE_FIDUCIAL
    ics, snap = _snap()
    kwargs = {"cosmology": cosmo}
    linear, snaps = ics, [snap]
    if case == "grid":
        snaps = [_snap(n=16)[1]]
    elif case == "box":
        snaps = [_snap(box=20.0)[1]]
    elif case == "twice":
        snaps = [snap, snap]
    elif case == "omega_m":
        snaps = [simulate(ics, cosmo.clone(omega_m=0.25), z=0.0, backend="za")[0]]
    elif case == "empty":
        snaps = []
    elif case == "shape":
        linear = np.zeros((8, 8, 8))
    elif case == "box_arg":
        kwargs["box_size"] = 99.0
    with pytest.raises(InputError, match=match):
        sample_from_snapshots(linear, snaps, **kwargs)


def test_sample_from_quijote_folder(tmp_path):
    from quijote_fixture import Z_ICS, build_quijote_dir

    from emu_backend.cosmology.growth import growth_factor

    # a Quijote-format folder (Gadget-1 ICs at z = 127, multi-file HDF5 snapshot, 1-based shuffled IDs)
    # written by the test-only writers of the Quijote reader tests, with a 2LPT z = 0 snapshot as "truth"
    fx = build_quijote_dir(tmp_path / "lh", n=8, sim=1, truth="2lpt", halos=None, compress=False)
    sample = sample_from_quijote(fx.root, 1, [fx.snapnum])
    assert sample.seed == fx.seed and sample.cosmology.omega_m == fx.cosmology.omega_m
    assert sample.z.tolist() == [0.0] and math.isclose(sample.box_size, fx.ics.box_size)
    assert sample.provenance["source"] == "quijote" and sample.provenance["snapnums"] == [fx.snapnum]
    # input: the linear field recovered from 2LPT ICs; float32 kpc/h storage divided by D(127) ~ 0.01
    d127 = float(growth_factor(Z_ICS, fx.cosmology.omega_m))
    psi = np.asarray(fx.ics.displacement, np.float64)
    bound = 4 * fx.ics.box_size * 2.0**-24 / d127 + 1e-4 * float(np.sqrt(np.mean(psi**2)))
    assert np.abs(sample.input_displacement - psi).max() <= bound
    # target: the written snapshot, to float32 kpc/h storage
    np.testing.assert_allclose(sample.displacement[0], fx.truth.displacement_field(), rtol=0,
                               atol=4 * fx.ics.box_size * 2.0**-24)
    with pytest.raises(InputError, match=r"snapnums.*non-empty"):
        sample_from_quijote(fx.root, 1, [])


def test_docs_example_runs():
    import re

    text = (Path(__file__).resolve().parents[1] / "docs" / "training_data.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks
    for code in blocks:
        exec(compile(code, "docs/training_data.md", "exec"), {})
