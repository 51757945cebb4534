"""``emu-backend make-training-set``: a thin CLI over latin_hypercube + make_training_set.

The JaxPM runs are tiny (8^3 particles, mesh factor 1, rtol 1e-3): the CLI is checked for passing the
options through, resuming, and refusing bad input with exit code 2, not for physics
(tests/test_training_data.py does that). About 20 s on 2 cores.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from emu_backend.cli.main import SUBCOMMANDS, main
from emu_backend.io.training_sample import read_training_sample
from emu_backend.training.design import latin_hypercube
from emu_backend.training.make_set import read_manifest, sample_path

FAST = ["--grid", "8", "--z", "0", "1", "--mesh-factor", "1", "--rtol", "1e-3"]


def test_registered():
    assert "make-training-set" in SUBCOMMANDS


def test_cli_makes_and_resumes_a_jaxpm_set(tmp_path, capsys):
    pytest.importorskip("jaxpm", reason="JaxPM not installed: pip install 'emu_backend[jaxpm]'")
    out = tmp_path / "set"
    assert main(["make-training-set", "--out", str(out), "--n-sims", "2", "--seed", "4", *FAST]) == 0
    assert "2 computed, 0 already there" in capsys.readouterr().out
    manifest = read_manifest(out)
    settings = manifest["settings"]
    assert settings["backend"] == "jaxpm" and settings["z"] == [0.0, 1.0] and settings["grid"] == 8
    jax_settings = settings["backend_settings"]
    assert (jax_settings["mesh_factor"], jax_settings["rtol"], jax_settings["atol"]) == (1, 1e-3, 1e-3)
    expected = latin_hypercube(2, seed=4)  # the CLI's design is the library's for the same seed
    for i, cosmo in enumerate(expected.cosmologies):
        sample = read_training_sample(sample_path(out, i))
        assert sample.cosmology == cosmo and sample.seed == 4 + i and sample.z.tolist() == [0.0, 1.0]
        assert np.isfinite(sample.displacement).all()
    # the same command resumes and finds nothing to do
    assert main(["make-training-set", "--out", str(out), "--n-sims", "2", "--seed", "4", *FAST]) == 0
    assert "0 computed, 2 already there" in capsys.readouterr().out
    # another seed on the same folder is refused, naming the difference
    assert main(["make-training-set", "--out", str(out), "--n-sims", "2", "--seed", "5", *FAST]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "other settings" in err and "seed: 4 -> 5" in err


def test_cli_vary_all_ranges_and_backend_option(tmp_path, capsys):
    # a 2LPT "simulation" keeps this fast: only the design and the option plumbing are checked here
    out = tmp_path / "lh"
    code = main(["make-training-set", "-o", str(out), "--n-sims", "3", "--grid", "8", "--z", "0.5", "--backend", "2lpt",
                 "--vary-all", "--range", "omega_m", "0.2", "0.3", "--power", "eh"])
    assert code == 0, capsys.readouterr().err
    design = read_manifest(out)["design"]
    assert design["names"] == ["omega_m", "sigma8", "omega_b", "h", "n_s"]
    assert design["ranges"]["omega_m"] == [0.2, 0.3] and design["ranges"]["h"] == [0.5, 0.9]
    om = sorted(c["omega_m"] for c in design["cosmologies"])
    assert [int((v - 0.2) / 0.1 * 3) for v in om] == [0, 1, 2]  # one per stratum of the custom range
    code = main(["make-training-set", "-o", str(tmp_path / "x"), "--n-sims", "1", "--grid", "8", "--backend", "2lpt",
                 "--backend-option", "order=2"])
    assert code == 2 and "does not accept" in capsys.readouterr().err


@pytest.mark.parametrize("argv, match", [
    (["--n-sims", "0"], "n_sims must be an integer >= 1, got 0"),
    (["--n-sims", "1", "--grid", "4"], "grid must be an integer >= 8, got 4"),
    (["--n-sims", "1", "--z", "5"], "z = 5.0 is outside the emulator's training range [0.0, 3.0]"),
    (["--n-sims", "1", "--range", "omega_m", "0.05", "0.5"], "omega_m = (0.05, 0.5) leaves the emulator's training"),
    (["--n-sims", "1", "--range", "omega_m", "low", "0.5"], "LOW and HIGH must be numbers"),
    (["--n-sims", "1", "--backend", "nope"], "unknown backend 'nope'"),
    (["--n-sims", "1", "--seed", "-2"], "seed must be a non-negative integer, got -2"),
    (["--n-sims", "1", "--power", "bbks"], "invalid choice: 'bbks'"),
    (["--n-sims", "1", "--backend-option", "novalue"], "expected KEY=VALUE"),
    (["--n-sims", "x"], "invalid int value: 'x'"),
    ([], "the following arguments are required: --n-sims"),
])
def test_bad_input_exits_2_with_a_message(tmp_path, capsys, argv, match):
    out = tmp_path / "o"
    assert main(["make-training-set", "--out", str(out), "--backend", "2lpt", *argv]) == 2
    assert match in capsys.readouterr().err
    assert not out.exists()


def test_bad_jaxpm_option_exits_2(tmp_path, capsys):
    pytest.importorskip("jaxpm", reason="JaxPM not installed: pip install 'emu_backend[jaxpm]'")
    assert main(["make-training-set", "--out", str(tmp_path / "o"), "--n-sims", "1", "--grid", "8",
                 "--mesh-factor", "9"]) == 2
    assert "mesh_factor must be an integer in (1, 2, 3, 4), got 9" in capsys.readouterr().err


def test_manifest_is_plain_json(tmp_path):
    out = tmp_path / "m"
    assert main(["make-training-set", "--out", str(out), "--n-sims", "1", "--grid", "8", "--z", "0",
                 "--backend", "2lpt"]) == 0
    text = (out / "manifest.json").read_text()
    manifest = json.loads(text)
    assert manifest["format"] == "emu_backend/training_set" and manifest["versions"]["emu_backend"]
