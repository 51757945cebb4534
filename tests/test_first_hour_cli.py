"""The command line of the first hour (issue "The first hour"): cosmology flags that reach the ICs, the
config format in ``--help`` and ``--print-config``, the demo-weights note once and after the result, errors
that name flags and round their ranges, progress lines for the long steps, the validate report's k_max
label. About 25 s on 2 cores.
"""

from __future__ import annotations

import json
import re
import tomllib

import numpy as np
import pytest
from emu_backend.validation import report
from emu_backend.validation.compare import compare

from emu_backend import InitialConditions, simulate
from emu_backend.cli.main import main
from emu_backend.cosmology import QUIJOTE_FIDUCIAL
from emu_backend.io.fields import read_fields
from emu_backend.pipelines.run_config import RunConfig, config_from_mapping

ZA = ["--backend", "za", "-n", "16", "--z", "0", "--no-plot", "--format", "npz"]


def _run(capsys, *args):
    code = main(["run", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_sigma8_flag_reaches_the_ics(tmp_path, capsys):
    # linear theory: at fixed seed and shape the displacement is proportional to sigma8
    assert _run(capsys, *ZA, "--out", tmp_path / "a")[0] == 0
    code, _, err = _run(capsys, *ZA, "--sigma8", 0.6, "--out", tmp_path / "b")
    assert code == 0, err
    ref = read_fields(tmp_path / "a" / "fields_000.npz").displacement.astype(np.float64)
    got = read_fields(tmp_path / "b" / "fields_000.npz").displacement.astype(np.float64)
    # float32 storage: 1e-6 relative, far below the 28% change of the amplitude
    np.testing.assert_allclose(got, ref * 0.6 / QUIJOTE_FIDUCIAL.sigma8, rtol=1e-5, atol=1e-6 * np.abs(ref).max())


@pytest.mark.parametrize("flag, key, value", [("--omega-b", "omega_b", 0.04), ("--h", "h", 0.7),
                                              ("--n-s", "n_s", 0.95), ("--omega-m", "omega_m", 0.3)])
def test_cosmology_flags_reach_the_ics(tmp_path, capsys, flag, key, value):
    base = tmp_path / "base"
    assert _run(capsys, *ZA, "--out", base)[0] == 0
    code, _, err = _run(capsys, *ZA, flag, value, "--out", tmp_path / "x")
    assert code == 0, err
    summary = json.loads((tmp_path / "x" / "run.json").read_text())
    assert summary["cosmology"][key] == value and summary["cosmology"]["name"] == "custom"
    others = {k: v for k, v in QUIJOTE_FIDUCIAL.to_dict().items() if k not in (key, "name")}
    assert {k: summary["cosmology"][k] for k in others} == others  # only that parameter changed
    # Eisenstein-Hu's shape depends on omega_m h, omega_b / omega_m and n_s: the field changes
    ref = read_fields(base / "fields_000.npz").displacement
    got = read_fields(tmp_path / "x" / "fields_000.npz").displacement
    assert not np.allclose(got, ref, rtol=1e-4)


def test_a_s_flag_replaces_sigma8(tmp_path, capsys):
    code, out, err = _run(capsys, "--print-config", "--A-s", 2.1e-9)
    assert code == 0, err
    cosmo = tomllib.loads(out)["cosmology"]
    assert cosmo["A_s"] == 2.1e-9 and "sigma8" not in cosmo


def test_cosmology_flag_errors_name_the_flag(tmp_path, capsys):
    code, _, err = _run(capsys, *ZA, "--sigma8", 7, "--out", tmp_path / "x")
    assert code == 2 and err.startswith("error: --sigma8: sigma8 = 7.0 is outside the allowed range (0.0, 3.0)")


def test_print_config_is_the_documented_format_and_reads_back(tmp_path, capsys):
    code, out, err = _run(capsys, "--print-config")
    assert code == 0 and err == ""
    assert config_from_mapping(tomllib.loads(out)) == RunConfig()
    code, out, _ = _run(capsys, "--print-config", "-n", 64, "--sigma8", 0.8, "--z", "0,0.5")
    path = tmp_path / "my.toml"
    path.write_text(out)
    config = config_from_mapping(tomllib.loads(out))
    assert config.grid == 64 and config.cosmology.sigma8 == 0.8 and config.z == (0.0, 0.5)
    # the printed file runs as a config (flags win over it)
    code, _, err = _run(capsys, "--config", path, "-n", 16, "--backend", "za", "--no-plot", "--out", tmp_path / "o")
    assert code == 0, err
    assert json.loads((tmp_path / "o" / "run.json").read_text())["cosmology"]["sigma8"] == 0.8


def test_help_documents_the_config_format_and_the_flags(capsys):
    assert main(["run", "--help"]) == 0
    out = capsys.readouterr().out
    for text in ("[cosmology]", "--print-config", "--sigma8", "--omega-b", "--h ", "--n-s", "--A-s", "--reference",
                 "preset"):
        assert text in out


def test_demo_weights_note_appears_once_after_the_result(tmp_path, capsys, monkeypatch):
    import emu_backend.cli._common as common
    import emu_backend.pipelines.steps as steps

    # every step counts as long, so the line below does not depend on this machine's speed
    monkeypatch.setattr(steps, "LONG_STEP_S", 0.0)
    monkeypatch.setattr(common, "LONG_STEP_S", 0.0)
    code, out, err = _run(capsys, "-n", 16, "--z", "0", "--no-plot", "--out", tmp_path / "x")
    assert code == 0, err
    assert err.count("demo weights") == 1, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("note: default emulator:") and "--weights PATH" in last and "weights=" not in last
    assert "weights: demo weights, see docs/shipped_weights.md" in out  # the summary names them too
    # a progress line per long step in a batch log (stderr is not a terminal here), before the note
    assert re.search(r"run: step 2/3 emulator done in \d+\.\d s", err), err


def test_an_error_prints_only_the_error(tmp_path, capsys):
    # the emulator is loaded (with its note) before it refuses Omega_m: only the one-line error is printed
    code, _, err = _run(capsys, "-n", 16, "--z", "0", "--no-plot", "--omega-m", 0.7, "--out", tmp_path / "x")
    assert code == 2
    assert err.strip().splitlines() == [err.strip()], err
    assert err.startswith("error: omega_m = 0.7 is outside the training range [")
    assert "pass --allow-extrapolation to run anyway" in err and "=True" not in err
    assert not re.search(r"\d\.\d{7,}", err), "ranges are rounded, not printed to 17 digits"


def test_overwrite_error_names_the_flag(tmp_path, capsys):
    assert _run(capsys, *ZA, "--out", tmp_path / "x")[0] == 0
    code, _, err = _run(capsys, *ZA, "--out", tmp_path / "x")
    assert code == 2 and "pass --overwrite to replace it" in err and "overwrite=True" not in err


def test_python_messages_stay_python():
    # the library's own message names the keyword (and the flag) for Python users
    from emu_backend.errors import DomainError
    from emu_backend.inference.default import default_emulator

    emu = default_emulator()
    with pytest.raises(DomainError, match=r"\(pass allow_extrapolation=True to run anyway\)") as info:
        emu.predict(np.zeros((3, 8, 8, 8), np.float32), omega_m=0.7, z=0.0, tile_size=8, box_size=8 * 1000 / 512)
    assert not re.search(r"\d\.\d{7,}", str(info.value))


def test_validate_plots_label_k_max():
    # the dotted k_max line of the report's k-plots has a legend entry with its value
    ics = InitialConditions.from_noise(16, None, QUIJOTE_FIDUCIAL, seed=1)
    truth, za = (simulate(ics, QUIJOTE_FIDUCIAL, z=[0.0], backend=backend)[0] for backend in ("2lpt", "za"))
    result = compare(truth, {"za": za}, halos=False)
    for plot in ("power_ratio.png", "cross_correlation.png", "transfer.png"):
        fig = report._figure(result, plot)
        labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
        k_max = result["meta"]["k_max_h_mpc"]
        assert any("k_\\mathrm{max}" in t and f"{k_max:.3g}" in t for t in labels), labels



def test_mass_function_plot_tick_labels_do_not_overlap():
    """The validate report's mass-function axis over a narrow mass range (a small box: ~1.3 decades) used
    to label minor ticks too (2, 3, 4, 6 x 10^n), the labels running into each other. Drawn with Agg,
    the boxes of the labels drawn inside the axes (major and minor) must be disjoint. The halo numbers
    are set by hand: this checks the layout, not the halos."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    ics = InitialConditions.from_noise(16, None, QUIJOTE_FIDUCIAL, seed=1)
    truth, za = (simulate(ics, QUIJOTE_FIDUCIAL, z=[0.0], backend=backend)[0] for backend in ("2lpt", "za"))
    result = compare(truth, {"za": za}, halos=False)
    for lo, hi in ((2e12, 3e13), (4e12, 8e13)):  # Msun/h: both overlapped with matplotlib's default labels
        result["truth"]["mass_function"] = {"mass": np.geomspace(lo, hi, 8).tolist()}
        result["candidates"]["za"]["mass_function"] = {"ratio": [1.0] * 8, "ratio_err": [0.1] * 8}
        fig = report._figure(result, "mass_function_ratio.png")
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        renderer = canvas.get_renderer()
        ax = fig.axes[0]
        x_lo, x_hi = ax.get_window_extent(renderer).intervalx
        labels = [t for t in ax.get_xticklabels() + ax.get_xticklabels(minor=True)
                  if t.get_visible() and t.get_text()]
        boxes = sorted(b.bounds for b in (t.get_window_extent(renderer) for t in labels)
                       if x_lo <= (b.x0 + b.x1) / 2 <= x_hi)
        assert len(boxes) >= 2, (lo, hi)  # the axis is still labelled
        for (x0, _, w0, _), (x1, _, _, _) in zip(boxes, boxes[1:]):
            assert x0 + w0 <= x1, (lo, hi, [t.get_text() for t in labels])
