"""Tests of the ``emu-backend`` command line (emu_backend.cli)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch

import emu_backend
from emu_backend.cli.main import main
from emu_backend.cosmology import PLANCK18, QUIJOTE_FIDUCIAL
from emu_backend.errors import InputError
from emu_backend.inference import Emulator, ZdepConvention
from emu_backend.io.fields import read_fields
from emu_backend.nn import StyledVNet
from emu_backend.pipelines.plot import png_metadata
from emu_backend.pipelines.run_config import RunConfig, config_from_mapping

FAST = ["--backend", "za", "-n", "16", "--no-halofit"]  # halofit (CLASS, a few s) has its own test


def _run(capsys, *args):
    code = main(["run", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def _toml(tmp_path, text):
    path = tmp_path / "run.toml"
    path.write_text(text)
    return path


def test_run_writes_the_expected_files(tmp_path, capsys):
    out_dir = tmp_path / "out"
    code, out, err = _run(capsys, *FAST, "--out", out_dir)
    assert code == 0, err
    names = sorted(p.name for p in out_dir.iterdir())
    assert names == ["power.png", "run.json", "snap_000.hdf5", "snap_001.hdf5"]
    for name in names:  # the report lists every file written
        assert str(out_dir / name) in out

    with h5py.File(out_dir / "snap_001.hdf5", "r") as f:
        box = f["Header"].attrs["BoxSize"]
        pos = f["PartType1/Coordinates"][...]
        assert box == pytest.approx(31.25e3)  # kpc/h
        assert pos.shape == (16**3, 3) and pos.min() >= 0 and pos.max() < box
        assert f["Header"].attrs["Redshift"] == pytest.approx(1.0)
        prov = f["Provenance"].attrs
        meta = json.loads(prov["meta_json"])
    # every file records version, config, seed, checksum and cosmology
    assert meta["package_version"] == emu_backend.__version__ and meta["seed"] == 42
    assert meta["config"]["grid"] == 16 and meta["cosmology"] == QUIJOTE_FIDUCIAL.to_dict()
    assert "checksum" in meta and meta["backend"] == "za"

    summary = json.loads((out_dir / "run.json").read_text())
    assert summary["versions"]["emu_backend"] == emu_backend.__version__
    assert summary["seed"] == 42 and summary["checksum"] is None and summary["untrained"] is False
    assert summary["config"]["z"] == [0.0, 1.0] and summary["cosmology"]["name"] == "quijote_fiducial"
    assert [os.path.basename(p) for p in summary["files"]] == ["snap_000.hdf5", "snap_001.hdf5", "power.png"]
    png = png_metadata(out_dir / "power.png")
    assert png["seed"] == 42 and png["config"]["backend"] == "za" and "checksum" in png


def test_existing_outputs_are_not_overwritten(tmp_path, capsys):
    out_dir = tmp_path / "out"
    assert _run(capsys, *FAST, "--no-plot", "--out", out_dir)[0] == 0
    before = (out_dir / "snap_000.hdf5").read_bytes()
    code, _, err = _run(capsys, *FAST, "--no-plot", "--seed", 1, "--out", out_dir)
    assert code == 2
    assert err.startswith("error: ") and "snap_000.hdf5" in err and "--overwrite" in err
    assert "Traceback" not in err
    assert (out_dir / "snap_000.hdf5").read_bytes() == before
    code, _, err = _run(capsys, *FAST, "--no-plot", "--seed", 1, "--out", out_dir, "--overwrite")
    assert code == 0, err
    assert (out_dir / "snap_000.hdf5").read_bytes() != before


@pytest.mark.parametrize(
    "text, names",
    [
        ("grdi = 16\n", ["'grdi'"]),
        ("grid = 'big'\n", ["'grid'", "integer"]),
        ("grid = 16.0\n", ["'grid'", "integer"]),
        ("z = [-0.5]\n", ["'z'", "-0.5"]),
        ("z = [0.0]\na = [1.0]\n", ["'z'", "'a'"]),
        ("format = 'fits'\n", ["'format'", "gadget"]),
        ("overwrite = 'yes'\n", ["'overwrite'", "true or false"]),
        ("[cosmology]\nomega_m = 1.5\n", ["omega_m", "1.5"]),
        ("[cosmology]\npreset = 'planck18'\nomega_x = 0.1\n", ["cosmology.omega_x"]),
        ("cosmology = 'lcdm'\n", ["'cosmology'", "planck18"]),
        ("backend = 'gadget4'\n", ["'backend'", "2lpt"]),
    ],
)
def test_bad_config_exits_2_naming_the_key(tmp_path, capsys, text, names):
    code, _, err = _run(capsys, "--config", _toml(tmp_path, text), "--out", tmp_path / "out")
    assert code == 2
    assert err.startswith("error: ") and "Traceback" not in err
    for name in names:
        assert name in err
    assert not (tmp_path / "out").exists()


def test_bad_flags_exit_2(tmp_path, capsys):
    out_dir = tmp_path / "out"
    code, _, err = _run(capsys, "--omega-m", 1.5, "--out", out_dir)
    assert code == 2 and "omega_m" in err
    code, _, err = _run(capsys, "--omega-m", 0.7, "-n", 8, "--out", out_dir)  # outside the emulator's domain
    assert code == 2 and "omega_m = 0.7" in err and "pass --allow-extrapolation" in err and "=True" not in err
    code, _, err = _run(capsys, "--z", 9, "-n", 8, "--out", out_dir)
    assert code == 2 and "z = 9.0" in err
    code, _, err = _run(capsys, "--seed", "x")  # argparse's own usage error
    assert code == 2 and "--seed" in err
    code, _, err = _run(capsys, "--tile", 12)
    assert code == 2 and "'tile'" in err
    assert not out_dir.exists()


def test_flags_win_over_the_config_file(tmp_path, capsys):
    path = _toml(tmp_path, "seed = 1\ngrid = 8\nz = [0.5]\nbackend = 'za'\nplot = false\n"
                           "[cosmology]\npreset = 'planck18'\n")
    code, _, err = _run(capsys, "--config", path, "--seed", 5, "--a", "1.0,0.5", "--out", tmp_path / "o")
    assert code == 0, err
    summary = json.loads((tmp_path / "o" / "run.json").read_text())
    assert summary["seed"] == 5 and summary["config"]["grid"] == 8
    assert summary["config"]["a"] == [1.0, 0.5] and summary["config"]["z"] is None
    assert [o["z"] for o in summary["outputs"]] == [0.0, 1.0]
    assert summary["cosmology"] == PLANCK18.to_dict()


def test_run_config_defaults_and_validation():
    c = RunConfig()
    assert (c.grid, c.seed, c.z, c.backend, c.format, c.out) == (32, 42, (0.0, 1.0), "emulator", "gadget", "emu_out")
    assert c.box_size_mpc_h == pytest.approx(62.5) and c.cosmology == QUIJOTE_FIDUCIAL
    assert config_from_mapping({"a": [0.5]}).redshifts == (1.0,)
    with pytest.raises(InputError, match="'n_files'"):
        RunConfig(n_files=0)
    with pytest.raises(InputError, match="'length_unit'"):
        RunConfig(length_unit="m")


def test_emulator_weights_file_and_npz_fields(tmp_path, capsys):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        emu = Emulator(ZdepConvention(StyledVNet(2, width=4)))
    checksum = emu.save(tmp_path / "narrow.emu")
    code, out, err = _run(capsys, "-n", 8, "--z", 0.5, "--weights", tmp_path / "narrow.emu", "--format", "npz",
                          "--baseline", "none", "--out", tmp_path / "o")
    assert code == 0, err
    assert "NOT PHYSICAL" not in out and checksum in out
    fields = read_fields(tmp_path / "o" / "fields_000.npz")
    assert fields.displacement.shape == (3, 8, 8, 8) and fields.z == pytest.approx(0.5)
    assert fields.meta["checksum"] == checksum and fields.meta["config"]["format"] == "npz"
    assert fields.meta["untrained"] is False and fields.meta["backend"] == "emulator"
    assert json.loads((tmp_path / "o" / "run.json").read_text())["checksum"] == checksum


def test_default_run_uses_the_shipped_weights(tmp_path, capsys):
    """The embedded default: the package's own trained weights, recorded by checksum, no untrained banner."""
    from emu_backend.checkpoints.native import load_model_file
    from emu_backend.inference.default import default_weights_path

    path = default_weights_path()
    if path is None:
        pytest.skip("this build ships no default weights (emu_backend/data/default_zdep.emu)")
    out_dir = tmp_path / "default"
    code, out, err = _run(capsys, "-n", 8, "--tile", 8, "--z", 0, "--out", out_dir)
    assert code == 0, err
    assert "NOT PHYSICAL" not in out and "UNTRAINED" not in out
    assert "docs/shipped_weights.md" in err  # the logged note on the weights' accuracy
    assert sorted(p.name for p in out_dir.iterdir()) == ["power.png", "run.json", "snap_000.hdf5"]
    summary = json.loads((out_dir / "run.json").read_text())
    assert summary["untrained"] is False and summary["checksum"] == load_model_file(path).checksum


@pytest.mark.slow
def test_untrained_stand_in_is_flagged_end_to_end(tmp_path, capsys, monkeypatch):
    """Where a build ships no weights, the random stand-in: banner, files, provenance."""
    import emu_backend.inference.default as default_module

    monkeypatch.setattr(default_module, "default_weights_path", lambda: None)
    out_dir = tmp_path / "default"
    code, out, err = _run(capsys, "-n", 8, "--tile", 8, "--z", 0, "--out", out_dir)
    assert code == 0, err
    assert "NOT PHYSICAL" in out and "UNTRAINED" in out
    assert "NOT physical" in err  # the library's logged warning
    assert sorted(p.name for p in out_dir.iterdir()) == ["power.png", "run.json", "snap_000.hdf5"]
    summary = json.loads((out_dir / "run.json").read_text())
    assert summary["untrained"] is True and summary["backend"] == "emulator"
    with h5py.File(out_dir / "snap_000.hdf5", "r") as f:
        meta = json.loads(f["Provenance"].attrs["meta_json"])
        assert np.all(f["PartType1/Coordinates"][...] < f["Header"].attrs["BoxSize"])
    assert meta["untrained"] is True and meta["weights_source"] == "untrained-random-seed0"


def test_help_and_module_entry_point(capsys):
    assert main(["--help"]) == 0
    assert "run" in capsys.readouterr().out
    assert main(["run", "--help"]) == 0
    help_text = capsys.readouterr().out
    for flag in ("--device", "--tile", "--seed", "--z", "--out", "--format", "--overwrite", "--verbose"):
        assert flag in help_text
    res = subprocess.run([sys.executable, "-m", "emu_backend", "--version"], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0 and emu_backend.__version__ in res.stdout


def test_every_subcommand_has_the_same_shape():
    """Each subcommand is a module with NAME, HELP, add_arguments and handle, and none imports cli.main."""
    import ast
    import inspect

    from emu_backend.cli.main import SUBCOMMANDS

    # the first six in this order; later subcommands (trees, lightcone, ...) follow
    assert list(SUBCOMMANDS)[:6] == ["run", "validate", "make-training-set", "predict", "train", "reconstruct"]
    for name, module in SUBCOMMANDS.items():
        assert module.NAME == name and isinstance(module.HELP, str) and module.HELP
        assert callable(module.add_arguments) and callable(module.handle)
        imported = {node.module for node in ast.walk(ast.parse(inspect.getsource(module)))
                    if isinstance(node, ast.ImportFrom)}
        assert "main" not in imported and "emu_backend.cli.main" not in imported, name


@pytest.mark.parametrize("flags, toml", [
    (["--tile-size", "16", "--batch-size", "2"], ""),
    (["--tile", "16", "--batch", "2"], ""),
    ([], "tile_size = 16\nbatch_size = 2\n"),
    ([], "tile = 16\nbatch = 2\n"),
])
def test_tile_and_batch_size_have_one_name_and_keep_their_aliases(tmp_path, capsys, flags, toml):
    """--tile-size / --batch-size and the TOML keys tile_size / batch_size; --tile, --batch, tile, batch
    still work and give the same run."""
    config = ["--config", _toml(tmp_path, toml)] if toml else []
    code, _, err = _run(capsys, *FAST, "--z", 0, "--no-plot", *config, *flags, "--out", tmp_path / "o")
    assert code == 0, err
    summary = json.loads((tmp_path / "o" / "run.json").read_text())
    assert summary["config"]["tile_size"] == 16 and summary["config"]["batch_size"] == 2
    assert "tile" not in summary["config"] and "batch" not in summary["config"]


def test_alias_errors_name_the_key_as_written(tmp_path, capsys):
    code, _, err = _run(capsys, *FAST, "--tile-size", 12, "--out", tmp_path / "o")
    assert code == 2 and "config key 'tile_size' must be a multiple of 8, got 12" in err
    code, _, err = _run(capsys, *FAST, "--tile", 12, "--out", tmp_path / "o")
    assert code == 2 and "config key 'tile' must be a multiple of 8, got 12" in err
    code, _, err = _run(capsys, "--config", _toml(tmp_path, "tile = 16\ntile_size = 16\n"), "--out", tmp_path / "o")
    assert code == 2 and "'tile'" in err and "'tile_size'" in err and "same key" in err
    assert config_from_mapping({"batch": 3}).batch_size == 3
    with pytest.raises(InputError, match="config key 'batch' must be an integer in"):
        config_from_mapping({"batch": 0})
    assert not (tmp_path / "o").exists()


def test_run_pipeline_is_the_command_as_a_library_call(tmp_path, capsys):
    """emu_backend.pipelines.run.run(RunConfig) writes what `emu-backend run` writes, with the same provenance."""
    from emu_backend.pipelines.run import run

    result = run(RunConfig(grid=16, z=(0.0,), backend="za", plot=False, out=str(tmp_path / "lib")))
    code, _, err = _run(capsys, *FAST, "--z", 0, "--no-plot", "--out", tmp_path / "cli")
    assert code == 0, err
    assert [p.name for p in result.files] == ["snap_000.hdf5", "run.json"]
    assert sorted(p.name for p in (tmp_path / "cli").iterdir()) == ["run.json", "snap_000.hdf5"]
    with h5py.File(tmp_path / "lib" / "snap_000.hdf5") as a, h5py.File(tmp_path / "cli" / "snap_000.hdf5") as b:
        np.testing.assert_array_equal(a["PartType1/Coordinates"][...], b["PartType1/Coordinates"][...])
    assert not result.untrained and result.checksum is None


def test_load_emulator_is_the_one_place_emulators_are_built(tmp_path):
    from emu_backend.inference.default import load_emulator
    from emu_backend.simulator import EmulatorBackend

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        emu = Emulator(ZdepConvention(StyledVNet(2, width=4)))
    checksum = emu.save(tmp_path / "narrow.emu")
    loaded = load_emulator(tmp_path / "narrow.emu", allow_extrapolation=True)
    assert loaded.checksum == checksum and loaded.allow_extrapolation is True
    backend = EmulatorBackend(weights=tmp_path / "narrow.emu", tile_size=8, batch_size=2)
    assert backend.emulator.checksum == checksum and (backend.tile_size, backend.batch_size) == (8, 2)
    for bad, match in [({"tile_size": 12}, "tile_size must be a positive multiple of 8, got 12"),
                       ({"tile_size": True}, "tile_size must be a positive multiple of 8, got True"),
                       ({"batch_size": 0}, "batch_size must be a positive integer, got 0")]:
        with pytest.raises(InputError, match=match):
            EmulatorBackend(emulator=emu, **bad)
