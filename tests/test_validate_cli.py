"""``emu-backend validate`` end to end: against a Quijote-format folder and against JaxPM.

These tests check the machinery (exit codes, files, the printed summary, that the 2LPT baseline against an
N-body truth gives sensible statistics), not emulator accuracy (the shipped demo weights' accuracy is in
docs/shipped_weights.md); the emulator runs a narrow random network (width 4) saved as a weights file, for
speed. The Quijote
folder is the 32^3 JaxPM fixture shared with test_quijote_readers.py; the Quijote *download* (2LPTic
glass-tile IDs, halos in the Halos/FoF_id tree) is tests/_quijote_fixtures.py's 16^3 one and needs no
JaxPM. About 60 s on 2 cores, plus 25 s for the slow JaxPM reference test.
"""

from __future__ import annotations

import json
import re
import shutil

import h5py
import numpy as np
import pytest

pytest.importorskip("hdf5plugin", reason="hdf5plugin not installed: pip install 'emu_backend[quijote]'")
pytest.importorskip("matplotlib", reason="matplotlib not installed")

from _quijote_fixtures import build_download, lpt  # noqa: E402  (tests/_quijote_fixtures.py)
from _tiny_model import seeded_model_file  # noqa: E402  (tests/_tiny_model.py)
from quijote_fixture import shared_quijote_dir  # noqa: E402

from emu_backend.cli.main import main  # noqa: E402

N = 32
PLOTS = {"power_ratio.png", "cross_correlation.png", "transfer.png", "bispectrum_ratio.png"}


@pytest.fixture(scope="module")
def fx():
    pytest.importorskip("jaxpm", reason="JaxPM not installed: pip install 'emu_backend[jaxpm]'")
    return shared_quijote_dir(n=N)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return seeded_model_file(tmp_path_factory.mktemp("weights") / "narrow.emu")[0]


def _validate(capsys, *args):
    code = main(["validate", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def _low_k(report: dict, name: str, key: str, k_max: float) -> np.ndarray:
    k = np.array([np.nan if v is None else v for v in report["truth"]["power"]["k"]])
    vals = np.array([np.nan if v is None else v for v in report["candidates"][name][key]])
    return vals[np.isfinite(k) & (k < k_max)]


@pytest.fixture(scope="module")
def quijote_report(fx, weights, tmp_path_factory):
    """One full run: emulator (narrow random net) judged, 2LPT baseline, default thresholds."""
    out = tmp_path_factory.mktemp("report")
    code = main(["validate", "--against", "quijote", str(fx.root), "--sim", str(fx.sim), "--snapnum", "4",
                 "--weights", str(weights), "--out", str(out)])
    return code, out


def test_quijote_report_files_and_exit_code(quijote_report, fx):
    code, out = quijote_report
    assert code == 1  # the random emulator misses the default thresholds
    names = {p.name for p in out.iterdir()}
    expected = {"report.json", "report.md"} | PLOTS
    if fx.halos is not None and fx.halos.n_halos:
        expected.add("mass_function_ratio.png")
    assert names == expected
    for name in names - {"report.json", "report.md"}:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # the plots are PNGs
    report = json.loads((out / "report.json").read_text())
    assert report["passed"] is False and report["meta"]["candidates"] == ["emulator", "2lpt"]
    assert {c["candidate"] for c in report["checks"]} == {"emulator"}  # the baseline is reported, not judged
    assert report["meta"]["reference"]["snapnum"] == 4 and report["meta"]["seed"] == fx.seed
    md = (out / "report.md").read_text()
    assert "**Result: FAIL**" in md and "| emulator | min_r |" in md


def test_quijote_2lpt_baseline_is_sensible(quijote_report, fx):
    _, out = quijote_report
    report = json.loads((out / "report.json").read_text())
    # 2LPT from the recovered linear field against the N-body truth: linear scales agree (z = 0, k < 0.2 h/Mpc)
    r = _low_k(report, "2lpt", "r", 0.2)
    assert r.size and np.all(r > 0.9)
    ratio = _low_k(report, "2lpt", "power_ratio", 0.2)
    assert np.all(np.abs(ratio - 1) < 0.2)  # sample variance cancels: same modes in both
    disp = report["candidates"]["2lpt"]["displacement"]
    r_dis = np.array([np.nan if v is None else v for v in disp["r"]])
    assert np.nanmax(r_dis) > 0.95  # large-scale displacements match
    if fx.halos is not None and fx.halos.n_halos:
        assert report["truth"]["n_halos"] == fx.halos.n_halos  # from the groups_004 files


def test_quijote_thresholds_pass_and_fail_with_2lpt(fx, tmp_path, capsys):
    base = ["--against", "quijote", fx.root / str(fx.sim), "--candidates", "2lpt", "--no-halos", "--k-max", "0.3"]
    code, out, err = _validate(capsys, *base, "--max-pk-error", "10", "--min-r", "-1", "--out", tmp_path / "loose")
    assert code == 0, err
    assert "PASS" in out
    assert json.loads((tmp_path / "loose" / "report.json").read_text())["passed"] is True
    code, out, err = _validate(capsys, *base, "--max-pk-error", "0", "--min-r", "1", "--out", tmp_path / "strict")
    assert code == 1, err
    assert "FAIL" in out
    # an existing report is never replaced without --overwrite: exit 2 before anything is computed
    before = (tmp_path / "strict" / "report.json").read_bytes()
    code, _, err = _validate(capsys, *base, "--out", tmp_path / "strict")
    assert code == 2 and "already exists" in err and "--overwrite" in err
    assert (tmp_path / "strict" / "report.json").read_bytes() == before


@pytest.fixture(scope="module")
def download(tmp_path_factory):
    return build_download(tmp_path_factory.mktemp("download") / "DOWNLOAD", n=16)


def _tree(root):
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def test_quijote_download_layout_gives_a_report_with_halos(download, weights, tmp_path, capsys):
    """``validate --against quijote DOWNLOAD/Snapshots/latin_hypercube --sim 0``: 2LPTic IDs placed by the ICs'
    map, halos from DOWNLOAD/Halos/FoF_id, nothing copied into the download."""
    before = _tree(download.root)
    out = tmp_path / "report"
    code, stdout, err = _validate(capsys, "--against", "quijote", download.root / "Snapshots" / "latin_hypercube",
                                  "--sim", 0, "--weights", weights, "--out", out)
    assert code in (0, 1), err
    # the summary is printed once: one line per candidate, 4 significant digits, the weights named
    lines = stdout.splitlines()
    assert [line.split(":")[0].strip() for line in lines[1:3]] == ["emulator", "2lpt (baseline)"]
    assert sum("max|P/P_ref-1|" in line for line in lines) == 2 and not re.search(r"\d\.\d{6,}", stdout)
    assert f"weights: {weights}" in stdout
    assert _tree(download.root) == before  # no groups_XXX copied or linked, nothing written
    report = json.loads((out / "report.json").read_text())
    reference = report["meta"]["reference"]
    assert reference["halos_from"] == str(download.halos("FoF_id") / "groups_004")
    assert "permutation of the 16^3 grid" in reference["lagrangian_map"]
    truth = report["truth"]
    assert truth["n_halos"] == len(download.halo_members) and sum(truth["mass_function"]["counts"]) == 6
    assert "mass_function_ratio.png" in {p.name for p in out.iterdir()}
    # the truth is 2LPT at z = 0 with collapsed patches: the 2LPT baseline differs from it by the collapse only,
    # which holds only if the snapshot was put in the right Lagrangian order (a scrambled one: ~10 Mpc/h)
    pos_2lpt, _ = lpt(download.psi1, download.psi2, download.box, download.cosmology.omega_m, 0.0)
    d = download.snap_pos - pos_2lpt
    d -= download.box * np.round(d / download.box)
    expected = float(np.sqrt(np.mean(np.sum(d**2, axis=1))))
    assert report["summary"]["2lpt"]["rms_displacement_error_mpc_h"] == pytest.approx(expected, rel=1e-3, abs=1e-3)
    # --halos: the single-file FoF tree instead; it contradicts --no-halos
    code, _, err = _validate(capsys, "--against", "quijote", download.root, "--sim", 0, "--candidates", "2lpt",
                             "--halos", download.halos("FoF"), "--out", tmp_path / "fof")
    assert code in (0, 1), err
    report = json.loads((tmp_path / "fof" / "report.json").read_text())
    assert report["meta"]["reference"]["halos_from"] == str(download.halos("FoF") / "groups_004")
    assert report["truth"]["n_halos"] == len(download.halo_members)
    code, _, err = _validate(capsys, "--against", "quijote", download.root, "--sim", 0, "--no-halos", "--halos",
                             download.halos("FoF"), "--out", tmp_path / "never")
    assert code == 2 and "contradict" in err


def test_quijote_snapshot_of_another_simulation_is_an_error(download, tmp_path, capsys):
    """A snapshot whose IDs are not those of the ICs stops the run (exit 2) instead of being reordered."""
    broken = tmp_path / "DOWNLOAD"
    shutil.copytree(download.root, broken)
    snap = broken / "Snapshots" / "latin_hypercube" / "0" / "snapdir_004" / "snap_004.1.hdf5"
    with h5py.File(snap, "r+") as f:
        ids = f["PartType1/ParticleIDs"][...]
        del f["PartType1/ParticleIDs"]
        f["PartType1/ParticleIDs"] = ids + 16**3  # IDs the initial conditions never had
    code, _, err = _validate(capsys, "--against", "quijote", broken, "--sim", 0, "--candidates", "2lpt",
                             "--out", tmp_path / "never")
    assert code == 2 and "snap_004.0.hdf5" in err and "not IDs of the initial conditions" in err
    assert not (tmp_path / "never" / "report.json").exists()


@pytest.mark.slow
def test_against_jaxpm_writes_the_report(tmp_path, capsys):
    out_dir = tmp_path / "pm"
    code, out, err = _validate(capsys, "--against", "jaxpm", "-n", 16, "--mesh-factor", 1, "--seed", 3,
                               "--candidates", "2lpt,za", "--min-r", 0.5, "--max-pk-error", 10, "--out", out_dir)
    assert code == 0, err
    assert {p.name for p in out_dir.iterdir()} >= {"report.json", "report.md"} | PLOTS
    report = json.loads((out_dir / "report.json").read_text())
    assert report["meta"]["reference"]["against"] == "jaxpm" and report["meta"]["grid"] == 16
    r = _low_k(report, "2lpt", "r", 0.45)  # L = 31.25 Mpc/h: the first two bins
    assert r.size and np.all(r > 0.9)


def test_bad_input_exits_2_naming_the_problem(fx, tmp_path, capsys):
    code, _, err = _validate(capsys, "--against", "quijote", "--out", tmp_path / "a")
    assert code == 2 and "ROOT" in err
    code, _, err = _validate(capsys, "--against", "quijote", tmp_path / "nowhere", "--sim", 0, "--out", tmp_path / "b")
    assert code == 2 and "nowhere" in err
    broken = tmp_path / "lh"
    shutil.copytree(fx.root, broken)
    (broken / str(fx.sim) / "snapdir_004" / "snap_004.1.hdf5").unlink()
    code, _, err = _validate(capsys, "--against", "quijote", broken, "--sim", fx.sim, "--candidates", "2lpt",
                             "--out", tmp_path / "c")
    assert code == 2 and "snap_004.1.hdf5" in err
    code, _, err = _validate(capsys, "--against", "jaxpm", fx.root, "--out", tmp_path / "d")
    assert code == 2 and "--against quijote" in err
    code, _, err = _validate(capsys, "--against", "quijote", fx.root, "--candidates", "emulator,nbody")
    assert code == 2 and "nbody" in err


def test_compare_and_report_library(tmp_path):
    """compare() of a snapshot with itself is exact (analytic: ratio 1, r 1, zero error); report thresholds."""
    from emu_backend.validation.compare import compare
    from emu_backend.validation.report import Thresholds, write_report

    from emu_backend.cosmology import QUIJOTE_FIDUCIAL
    from emu_backend.errors import InputError
    from emu_backend.ics import InitialConditions
    from emu_backend.simulator import simulate

    ics = InitialConditions.from_noise(16, None, QUIJOTE_FIDUCIAL, seed=2)
    truth, za = (simulate(ics, QUIJOTE_FIDUCIAL, z=0.0, backend=b)[0] for b in ("2lpt", "za"))
    res = compare(truth, {"same": truth, "za": za}, halos=False)
    json.dumps(res, allow_nan=False)  # strict JSON
    same, worse = res["summary"]["same"], res["summary"]["za"]
    assert same["max_abs_pk_ratio_minus_1"] == 0.0 and same["rms_displacement_error_mpc_h"] == 0.0
    assert same["min_r"] == pytest.approx(1.0, abs=1e-12) and same["max_abs_bispectrum_ratio_minus_1"] == 0.0
    assert worse["min_r"] < same["min_r"] and worse["rms_displacement_error_mpc_h"] > 0.1
    rep = write_report(res, tmp_path / "a", thresholds=Thresholds(max_pk_error=1e-9, min_r=0.999999, judged=("same",)))
    assert rep.passed and len(rep.checks) == 2
    rep = write_report(res, tmp_path / "b", thresholds=Thresholds(max_pk_error=1e-9, min_r=0.999999, judged=("za",)))
    assert not rep.passed and (tmp_path / "b" / "report.md").read_text().count("**FAIL**") == 2
    with pytest.raises(InputError, match="already exists"):
        write_report(res, tmp_path / "b", thresholds=Thresholds())
    with pytest.raises(InputError, match="'other'"):
        write_report(res, tmp_path / "c", thresholds=Thresholds(judged=("other",)))
    with pytest.raises(InputError, match="a = "):
        compare(truth, {"z1": simulate(ics, QUIJOTE_FIDUCIAL, z=1.0, backend="za")[0]})


def test_validate_config_names_the_bad_value():
    """ValidateConfig (the library face of the command) refuses bad values before anything runs."""
    from emu_backend.errors import InputError
    from emu_backend.pipelines.validate import ValidateConfig

    config = ValidateConfig(against="jaxpm", grid=16, candidates=["2lpt", "za"], tile_size=16)
    assert config.candidates == ("2lpt", "za") and config.thresholds.judged == ("2lpt",)
    assert config.to_dict()["tile_size"] == 16 and config.pm_cosmology().name == "quijote_fiducial"
    for bad, match in [({"against": "gadget"}, "against must be one of"),
                       ({"against": "quijote"}, "ROOT"),
                       ({"against": "jaxpm", "sim": 3}, "--against quijote"),
                       ({"against": "jaxpm", "candidates": ("emulator", "emulator")}, "distinct"),
                       ({"against": "jaxpm", "tile_size": 12}, "multiple of 8"),
                       ({"against": "jaxpm", "min_r": 2.0}, r"min_r must be in \[-1, 1\]"),
                       ({"against": "jaxpm", "cosmology": "lcdm"}, "unknown cosmology preset")]:
        with pytest.raises(InputError, match=match):
            ValidateConfig(**bad)
