"""Held-out evaluation (the shipped-weights accuracy table): the machinery, on a 2LPT stand-in truth."""

from __future__ import annotations

import json

import pytest
import torch
from emu_backend.validation.heldout import SUMMARY_COLUMNS, evaluate_heldout

from emu_backend.errors import InputError
from emu_backend.inference import Emulator, ZdepConvention
from emu_backend.nn import StyledVNet
from emu_backend.training.design import latin_hypercube
from emu_backend.training.make_set import make_training_set


@pytest.fixture(scope="module")
def heldout(tmp_path_factory):
    root = tmp_path_factory.mktemp("heldout")
    made = make_training_set(root / "set", latin_hypercube(2, seed=3), grid=16, z=[0.0, 1.0], backend="2lpt", seed=5)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        emu = Emulator(ZdepConvention(StyledVNet(2, width=4)), source="narrow-test")
    summary = evaluate_heldout(emu, made.files, [0.0, 1.0], root / "out", halos=False)
    return root, made, summary


def test_reports_and_summary_are_written(heldout):
    root, made, summary = heldout
    assert json.loads((root / "out" / "summary.json").read_text()) == summary
    for i in range(2):
        for z in ("0", "1"):
            assert (root / "out" / f"sim{i}_z{z}" / "report.json").is_file()
    assert set(summary["mean"]) == {"0", "1"}
    assert set(summary["mean"]["0"]["emulator"]) == set(SUMMARY_COLUMNS)


def test_2lpt_against_a_2lpt_truth_is_exact(heldout):
    # the truth files hold 2LPT runs from the same linear input, so the 2LPT baseline must reproduce them:
    # P ratio 1 and r = 1 up to float32 storage of the truth (1e-5), zero displacement error (< 1e-4 Mpc/h)
    _, _, summary = heldout
    for z in ("0", "1"):
        cols = summary["mean"][z]["2lpt"]
        assert cols["max_abs_pk_ratio_minus_1"] < 1e-5
        assert cols["min_r"] > 1 - 1e-5
        assert cols["rms_displacement_error_mpc_h"] < 1e-4
    # the random narrow network is far from it: the comparison can fail
    assert summary["mean"]["0"]["emulator"]["rms_displacement_error_mpc_h"] > 1e-2


def test_missing_redshift_and_empty_inputs_are_refused(heldout, tmp_path):
    _, made, _ = heldout
    emu = Emulator(ZdepConvention(StyledVNet(2, width=4)))
    with pytest.raises(InputError, match=r"has no output at z = 0.5"):
        evaluate_heldout(emu, made.files[:1], [0.5], tmp_path, halos=False)
    with pytest.raises(InputError, match="sample_files is empty"):
        evaluate_heldout(emu, [], [0.0], tmp_path, halos=False)


def test_a_second_evaluation_into_a_locked_folder_is_refused_before_computing(heldout, tmp_path):
    """The output folder is locked for the whole evaluation (as another run holding it would): the call
    raises naming the lock, writes nothing, and runs once the lock is released."""
    from emu_backend.errors import OutputLockedError
    from emu_backend.io.output_lock import output_lock

    _, made, _ = heldout
    emu = Emulator(ZdepConvention(StyledVNet(2, width=4)))
    out = tmp_path / "out"
    with output_lock(out, folder=True, command="another evaluation"):
        with pytest.raises(OutputLockedError, match=r"locked by another run.*another evaluation.*\.emu_backend\.lock"):
            evaluate_heldout(emu, made.files[:1], [0.0], out, halos=False)
        assert [p.name for p in out.iterdir()] == [".emu_backend.lock"]
    evaluate_heldout(emu, made.files[:1], [0.0], out, halos=False)
    assert (out / "summary.json").is_file() and not (out / ".emu_backend.lock").exists()
