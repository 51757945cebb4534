"""``emu-backend trees`` and its library call: files, resume, refusals; trees read back with ytree.

The default tier runs the pipeline with the ZA and 2LPT backends (seconds) on 32^3 particles; the emulator
against pmwd is the slow test.
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from emu_backend.cli.main import main
from emu_backend.errors import DomainError, InputError
from emu_backend.pipelines.trees import TreesConfig, log_spaced_redshifts, trees

pytest.importorskip("halotools", reason="the package's FoF needs halotools (emu_backend[halotools])")
ytree = pytest.importorskip("ytree", reason="ytree reads the consistent-trees files (emu_backend[trees])")

FLAGS = ["-n", "32", "--n-outputs", "3", "--backend", "za", "--compare", "2lpt", "--linking-length", "0.28",
         "--min-particles", "10"]


def _ytree_halos_per_output(path, z):
    """Halos per output time in a tree file, counted by ytree (all nodes of all trees)."""
    arbor = ytree.load(str(path))
    zs = np.concatenate([tree["tree", "redshift"] for tree in arbor]) if arbor.size else np.zeros(0)
    return [int(np.sum(np.isclose(zs, zi, atol=1e-4))) for zi in z]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("trees")
    assert main(["trees", "--out", str(out), *FLAGS]) == 0
    return out


def test_cli_writes_trees_that_ytree_reads(cli_run):
    report = json.loads((cli_run / "report.json").read_text())
    z = report["config"]["z"]
    assert z == list(log_spaced_redshifts(3, 3.0, 0.0))
    for name in ("za", "2lpt"):
        b = report["backends"][name]
        # ytree finds every halo of every output in the file (independent count: ytree's own parsing)
        assert _ytree_halos_per_output(cli_run / name / "tree_0_0_0.dat", z) == b["counts"]["halos_per_output"]
        assert b["counts"]["halos"] > 10  # ZA / 2LPT at b = 0.28 form halos in this box: not a vacuous file
        assert b["seconds"]["trees"] > 0
    for f in ("report.md", "report.png", "trees_config.json"):
        assert (cli_run / f).is_file()
    assert "## za against 2lpt" in (cli_run / "report.md").read_text()


def test_rerun_resumes_from_the_saved_halos(cli_run):
    halo_files = sorted((cli_run / "za").glob("halos_*.npz")) + sorted((cli_run / "2lpt").glob("halos_*.npz"))
    assert len(halo_files) == 6
    stamps = [p.stat().st_mtime_ns for p in halo_files]
    config = TreesConfig(out=cli_run, grid=32, n_outputs=3, backend="za", compare_backend="2lpt",
                         linking_length=0.28, min_particles=10, plot=False)
    result = trees(config)
    assert [p.stat().st_mtime_ns for p in halo_files] == stamps  # nothing simulated or found again
    first = json.loads((cli_run / "report.json").read_text())
    assert result.report["backends"]["za"]["counts"] == first["backends"]["za"]["counts"]


def test_other_settings_into_the_same_folder_are_refused(cli_run):
    with pytest.raises(InputError, match="other settings"):
        trees(TreesConfig(out=cli_run, grid=32, n_outputs=3, backend="za", compare_backend="2lpt",
                          linking_length=0.2, min_particles=10))


def test_linear_density_input(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "delta.npy", 0.3 * rng.standard_normal((16, 16, 16)))
    result = trees(TreesConfig(out=tmp_path / "o", grid=16, z=(1.0, 0.0), backend="za", compare_backend=None,
                               linear_density=tmp_path / "delta.npy", linking_length=0.3, min_particles=5,
                               plot=False))
    assert set(result.tree_files) == {"za"} and "comparison" not in result.report
    with pytest.raises(InputError, match="shape"):
        trees(TreesConfig(out=tmp_path / "p", grid=8, z=(1.0, 0.0), backend="za", compare_backend=None,
                          linear_density=tmp_path / "delta.npy"))


def test_emulator_outside_its_redshift_domain_is_refused(tmp_path):
    # the shipped weights are trained for z in [0, 3]: z = 4 is refused unless extrapolation is allowed
    with pytest.raises(DomainError, match="allow-extrapolation|allow_extrapolation"):
        trees(TreesConfig(out=tmp_path, grid=16, z=(4.0, 0.0), compare_backend=None))


@pytest.mark.parametrize("kwargs, match", [
    ({"n_outputs": 1}, "n_outputs"), ({"z": (1.0,)}, "two distinct"), ({"linking_length": 1.2}, "linking_length"),
    ({"compare_backend": "emulator"}, "differ"), ({"min_shared_fraction": 0.0}, "min_shared_fraction"),
    ({"z_min": 4.0}, "z_min"),
])
def test_bad_config_is_refused(tmp_path, kwargs, match):
    with pytest.raises(InputError, match=match):
        TreesConfig(out=tmp_path, **kwargs)


@pytest.mark.slow
def test_emulator_against_pmwd(tmp_path):
    if importlib.util.find_spec("pmwd") is None:  # not importorskip: `import pmwd` switches JAX's x64 on
        pytest.skip("the comparison backend pmwd (emu_backend[pmwd])")
    result = trees(TreesConfig(out=tmp_path, grid=32, n_outputs=3, linking_length=0.28, min_particles=10))
    for name in ("emulator", "pmwd"):
        b = result.report["backends"][name]
        assert _ytree_halos_per_output(result.tree_files[name], result.report["config"]["z"]) == \
            b["counts"]["halos_per_output"]
    assert len(result.report["comparison"]["bins"]) == 3
