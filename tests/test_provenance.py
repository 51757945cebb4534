"""Every output file of the package records its provenance: package version, configuration, seed,
weights checksum (where weights are involved) and cosmology (where a cosmology is involved).

Each case below produces one kind of output at a small size (tiny random weights of width 4 saved to a
model file, 16^3 boxes, 2LPT training data, 2 training steps), reads it back with an independent
reader (h5py, json, numpy, PIL, torch) and compares each field with the value that was passed in: the
version with ``emu_backend.__version__``, the seed with the seed given, the checksum with the checksum
stored in the weights file used, the cosmology with the Cosmology given. A second test checks that
writing the same output again without ``overwrite`` is refused and leaves the file untouched.
The table "Provenance of every output" in docs/reliability.md lists the same cases.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from _tiny_model import seeded_model_file  # tests/_tiny_model.py
from _training_helpers import TINY  # tests/_training_helpers.py

import emu_backend
from emu_backend.cosmology import QUIJOTE_FIDUCIAL
from emu_backend.errors import InputError

VERSION = emu_backend.__version__
SEED = 1234
#: Not the default cosmology, so that a recorded default would not pass for the one given.
COSMO = QUIJOTE_FIDUCIAL.clone(omega_m=0.28, sigma8=0.79)
DESIGN = [QUIJOTE_FIDUCIAL.clone(omega_m=0.27, sigma8=0.80), QUIJOTE_FIDUCIAL.clone(omega_m=0.33, sigma8=0.85)]
N = 16


def _plain(obj):
    """``obj`` as read back from JSON (tuples as lists)."""
    return json.loads(json.dumps(obj))


# -- producers (module fixtures: each output is made once) ------------------------------------------
@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A tiny zdep model file and the checksum stored in it (read back independently with torch.load)."""
    path, returned = seeded_model_file(tmp_path_factory.mktemp("weights") / "tiny.emu")
    stored = torch.load(path, map_location="cpu", weights_only=True)["checksum"]
    assert returned == stored
    return path, stored


def _run(root: Path, weights_path, fmt: str):
    from emu_backend.pipelines.run import RunConfig
    from emu_backend.pipelines.run import run as execute

    config = RunConfig(cosmology=COSMO, grid=N, seed=SEED, z=(0.5,), backend="emulator", weights=str(weights_path),
                       format=fmt, out=str(root / fmt), plot=fmt == "gadget", baseline="none")
    execute(config)
    return config


@pytest.fixture(scope="module")
def runs(tmp_path_factory, weights):
    """``emu-backend run`` (library entry point) in the three snapshot formats."""
    root = tmp_path_factory.mktemp("runs")
    return root, {fmt: _run(root, weights[0], fmt) for fmt in ("gadget", "fields", "npz")}


@pytest.fixture(scope="module")
def predicted(tmp_path_factory, weights, runs):
    """predict_to_file and a one-rank predict_distributed from the run's field file (which records the seed)."""
    from emu_backend.inference import Emulator
    from emu_backend.inference.distributed import predict_distributed
    from emu_backend.inference.streaming import predict_to_file

    root = tmp_path_factory.mktemp("predict")
    src = runs[0] / "fields" / "fields_000.h5"
    emu = Emulator.from_checkpoint(weights[0])
    [single] = predict_to_file(emu, src, root / "single.h5", COSMO.omega_m, 0.0, tile_size=16)
    [index] = predict_distributed(emu, src, root / "dist.h5", COSMO.omega_m, 0.0, tile_size=16)
    return {"single": single, "index": index, "part": root / "dist.0.h5", "src": src}


@pytest.fixture(scope="module")
def training_set(tmp_path_factory):
    from emu_backend.training.make_set import make_training_set

    out = tmp_path_factory.mktemp("set")
    made = make_training_set(out, DESIGN, grid=N, z=[0.0, 1.0], backend="2lpt", seed=SEED, progress=False)
    return out, made


@pytest.fixture(scope="module")
def trained(tmp_path_factory, weights, training_set):
    """Two training steps fine-tuning the tiny weights (so an input checksum is involved)."""
    from emu_backend.training.config import TrainConfig
    from emu_backend.training.trainer import train

    out = tmp_path_factory.mktemp("train") / "run"
    files = list(training_set[1].files)
    config = TrainConfig(steps=2, lr=1e-3, checkpoint_every=1, val_every=2, seed=SEED, init_weights=str(weights[0]),
                         **TINY)
    train(config, files[:1], files[1:], out, progress=False)
    return out, config


@pytest.fixture(scope="module")
def heldout(tmp_path_factory, weights, training_set):
    """Held-out evaluation (its per-run validation reports are write_report's files)."""
    pytest.importorskip("matplotlib", reason="matplotlib not installed: pip install 'emu_backend[validation]'")
    from emu_backend.validation.heldout import evaluate_heldout

    from emu_backend.inference import Emulator

    out = tmp_path_factory.mktemp("heldout")
    emu = Emulator.from_checkpoint(weights[0], allow_extrapolation=True)
    summary = evaluate_heldout(emu, [training_set[1].files[0]], [0.0], out, halos=False)
    return out, summary


# -- readers: each returns the recorded fields ------------------------------------------------------
def _h5_attrs(path) -> dict:
    with h5py.File(path, "r") as f:
        return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}


def _snapshot_meta_case(meta: dict, version, config: dict, weights) -> dict:
    return {"version": version, "config": meta["config"], "seed": meta["seed"], "checksum": meta["checksum"],
            "cosmology": meta["cosmology"], "want_config": _plain(config.to_dict()), "want_checksum": weights[1]}


def case_gadget(req):
    root, configs = req.getfixturevalue("runs")
    with h5py.File(root / "gadget" / "snap_000.hdf5", "r") as f:
        prov = f["Provenance"].attrs
        meta, version = json.loads(prov["meta_json"]), prov["package_version"]
        assert json.loads(prov["cosmology_json"]) == COSMO.to_dict()
    return _snapshot_meta_case(meta, version, configs["gadget"], req.getfixturevalue("weights"))


def case_fields(fmt):
    def read(req):
        root, configs = req.getfixturevalue("runs")
        if fmt == "fields":
            attrs = _h5_attrs(root / fmt / "fields_000.h5")
        else:
            with np.load(root / fmt / "fields_000.npz", allow_pickle=False) as z:
                attrs = {k: z[k].item() for k in z.files if z[k].ndim == 0}
        assert json.loads(attrs["cosmology"]) == COSMO.to_dict()
        return _snapshot_meta_case(json.loads(attrs["meta"]), attrs["package_version"], configs[fmt],
                                   req.getfixturevalue("weights"))
    return read


def case_run_json(req):
    root, configs = req.getfixturevalue("runs")
    doc = json.loads((root / "gadget" / "run.json").read_text())
    return {"version": doc["versions"]["emu_backend"], "config": doc["config"], "seed": doc["seed"],
            "checksum": doc["checksum"], "cosmology": doc["cosmology"],
            "want_config": _plain(configs["gadget"].to_dict()), "want_checksum": req.getfixturevalue("weights")[1]}


def case_power_png(req):
    pytest.importorskip("PIL", reason="Pillow (with matplotlib) not installed")
    from PIL import Image

    root, configs = req.getfixturevalue("runs")
    with Image.open(root / "gadget" / "power.png") as im:
        text = dict(im.text)
    meta = json.loads(text["Description"])
    assert text["Software"] == f"emu_backend {VERSION}"
    return {"version": meta["versions"]["emu_backend"], "config": meta["config"], "seed": meta["seed"],
            "checksum": meta["checksum"], "cosmology": meta["cosmology"],
            "want_config": _plain(configs["gadget"].to_dict()), "want_checksum": req.getfixturevalue("weights")[1]}


def _streamed(attrs: dict, req, src) -> dict:
    meta = json.loads(attrs["meta"])
    return {"version": meta["package_version"], "config": meta["config"], "seed": meta["seed"],
            "checksum": meta["checksum"], "cosmology": json.loads(attrs["cosmology"]) if "cosmology" in attrs
            else attrs["cosmology_dict"], "want_config": {"input": str(Path(src).resolve()), "tile_size": 16},
            "want_checksum": req.getfixturevalue("weights")[1]}


def case_predict_to_file(req):
    p = req.getfixturevalue("predicted")
    return _streamed(_h5_attrs(p["single"]), req, p["src"])


def case_distributed_part(req):
    p = req.getfixturevalue("predicted")
    return _streamed(_h5_attrs(p["part"]), req, p["src"])


def case_distributed_index(req):
    p = req.getfixturevalue("predicted")
    doc = json.loads(Path(p["index"]).read_text())
    return _streamed({"meta": json.dumps(doc["meta"]), "cosmology_dict": doc["cosmology"]}, req, p["src"])


def case_training_sample(req):
    out, made = req.getfixturevalue("training_set")
    attrs = _h5_attrs(made.files[1])
    prov = json.loads(attrs["provenance"])
    return {"version": attrs["package_version"], "config": prov["settings"], "seed": int(attrs["seed"]),
            "cosmology": json.loads(attrs["cosmology"]), "want_seed": SEED + 1, "want_cosmology": DESIGN[1].to_dict(),
            "want_config": {"seed": SEED, "grid": N, "z": [0.0, 1.0], "backend": "2lpt"}}


def case_manifest(req):
    out, made = req.getfixturevalue("training_set")
    doc = json.loads((out / "manifest.json").read_text())
    return {"version": doc["versions"]["emu_backend"], "config": doc["settings"], "seed": doc["settings"]["seed"],
            "cosmology": [s["cosmology"] for s in doc["samples"]], "samples_seeds": [s["seed"] for s in doc["samples"]],
            "want_cosmology": [c.to_dict() for c in DESIGN], "want_samples_seeds": [SEED, SEED + 1],
            "want_config": {"seed": SEED, "grid": N, "z": [0.0, 1.0], "backend": "2lpt"}}


def _training_want(req, config) -> dict:
    return {"want_config": _plain(config.to_dict()), "want_checksum": req.getfixturevalue("weights")[1],
            "want_cosmology": [c.to_dict() for c in DESIGN]}


def case_training_checkpoint(req):
    out, config = req.getfixturevalue("trained")
    files = sorted((out / "checkpoints").glob("step_*.pt"))
    ckpt = torch.load(files[-1], map_location="cpu", weights_only=True)
    data = ckpt["data_description"]
    return {"version": ckpt["package_version"], "config": ckpt["config"], "seed": ckpt["config"]["seed"],
            "checksum": ckpt["init_weights_checksum"],
            "cosmology": [d["cosmology"] for d in data["train"] + data["val"]], **_training_want(req, config)}


def case_trained_model(req):
    out, config = req.getfixturevalue("trained")
    obj = torch.load(out / "model.emu", map_location="cpu", weights_only=True)
    tr = obj["provenance"]["training"]
    from emu_backend.checkpoints.native import load_model_file

    assert load_model_file(out / "model.emu").checksum == obj["checksum"]  # its own checksum verifies
    return {"version": obj["versions"]["emu_backend"], "config": tr["config"], "seed": tr["seed"],
            "checksum": tr["init_weights_checksum"],
            "cosmology": [d["cosmology"] for d in tr["data"]["train"] + tr["data"]["val"]],
            **_training_want(req, config)}


def case_exported_weights(req):
    path, checksum = req.getfixturevalue("weights")
    from emu_backend.checkpoints.native import load_model_file

    obj = torch.load(path, map_location="cpu", weights_only=True)
    # load_model_file recomputes the checksum from the stored tensors and refuses a mismatch
    return {"version": obj["versions"]["emu_backend"], "checksum": load_model_file(path).checksum,
            "want_checksum": checksum}


def case_training_log(req):
    out, config = req.getfixturevalue("trained")
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2]
    # a plain CSV table: its provenance is that of the checkpoints and model.emu beside it
    ckpt = torch.load(sorted((out / "checkpoints").glob("step_*.pt"))[-1], map_location="cpu", weights_only=True)
    return {"version": ckpt["package_version"], "config": ckpt["config"], "seed": ckpt["config"]["seed"],
            **{k: v for k, v in _training_want(req, config).items() if k == "want_config"}}


def _report_dir(req) -> Path:
    return req.getfixturevalue("heldout")[0] / "sim0_z0"


def _report_want(req) -> dict:
    return {"want_seed": SEED, "want_cosmology": DESIGN[0].to_dict(), "want_checksum": req.getfixturevalue("weights")[1],
            "want_config": {"z": [0.0], "halos": False}}


def case_report_json(req):
    doc = json.loads((_report_dir(req) / "report.json").read_text())
    meta = doc["meta"]
    return {"version": doc["package_version"], "config": meta["config"], "seed": meta["seed"],
            "checksum": meta["checksum"], "cosmology": meta["cosmology"], **_report_want(req)}


def case_report_md(req):
    text = (_report_dir(req) / "report.md").read_text()
    line = next(s for s in text.splitlines() if s.startswith("Provenance:"))
    cosmo = json.loads(line.split("; cosmology ")[1].split("; the configuration")[0])
    assert f"emu_backend {VERSION};" in line
    return {"version": VERSION, "seed": int(line.split("; seed ")[1].split(";")[0]),
            "checksum": line.split("weights checksum ")[1].split(";")[0], "cosmology": cosmo,
            **{k: v for k, v in _report_want(req).items() if k != "want_config"}}


def case_report_png(req):
    pytest.importorskip("PIL", reason="Pillow (with matplotlib) not installed")
    from PIL import Image

    with Image.open(_report_dir(req) / "power_ratio.png") as im:
        text = dict(im.text)
    meta = json.loads(text["Description"])
    assert text["Software"] == f"emu_backend {VERSION}"
    return {"version": meta["package_version"], "config": meta["config"], "seed": meta["seed"],
            "checksum": meta["checksum"], "cosmology": meta["cosmology"], **_report_want(req)}


def case_heldout_summary(req):
    out, summary = req.getfixturevalue("heldout")
    doc = json.loads((out / "summary.json").read_text())
    assert doc == summary
    [run] = doc["runs"]
    return {"version": doc["package_version"], "config": doc["config"], "seed": run["seed"],
            "checksum": doc["checksum"], "cosmology": run["cosmology"], **_report_want(req)}


@pytest.fixture(scope="module")
def validated(tmp_path_factory, weights):
    """``emu-backend validate --against jaxpm`` (a 16^3 PM run as the truth)."""
    pytest.importorskip("jaxpm", reason="JaxPM not installed: pip install 'emu_backend[jaxpm]'")
    pytest.importorskip("matplotlib", reason="matplotlib not installed: pip install 'emu_backend[validation]'")
    from emu_backend.cli.main import main

    out = tmp_path_factory.mktemp("validate") / "report"
    code = main(["validate", "--against", "jaxpm", "-n", str(N), "--seed", str(SEED), "--omega-m", "0.28",
                 "--weights", str(weights[0]), "--no-halos", "--candidates", "emulator", "-o", str(out)])
    assert code in (0, 1)  # 1: thresholds missed (random weights); bad input would raise or exit 2
    return out


def case_validate_cli(req):
    from emu_backend.cosmology.params import Cosmology

    doc = json.loads((req.getfixturevalue("validated") / "report.json").read_text())
    meta = doc["meta"]
    return {"version": doc["package_version"], "config": meta["config"], "seed": meta["seed"],
            "checksum": meta["checksum"], "cosmology": meta["cosmology"],
            "want_cosmology": Cosmology.preset("quijote").clone(omega_m=0.28, name="custom").to_dict(),
            "want_checksum": req.getfixturevalue("weights")[1],
            "want_config": {"against": "jaxpm", "grid": N, "seed": SEED, "omega_m": 0.28}}


CASES = {
    "gadget-snapshot": case_gadget,
    "fields-hdf5": case_fields("fields"),
    "fields-npz": case_fields("npz"),
    "run-json": case_run_json,
    "power-png": case_power_png,
    "predict-to-file": case_predict_to_file,
    "distributed-part": case_distributed_part,
    "distributed-index": case_distributed_index,
    "training-sample": case_training_sample,
    "training-manifest": case_manifest,
    "training-checkpoint": case_training_checkpoint,
    "trained-model-emu": case_trained_model,
    "training-log-csv": case_training_log,
    "exported-weights-emu": case_exported_weights,
    "validation-report-json": case_report_json,
    "validation-report-md": case_report_md,
    "validation-report-png": case_report_png,
    "heldout-summary-json": case_heldout_summary,
    "validate-cli-report-json": case_validate_cli,
}
SLOW = {"validate-cli-report-json"}  # a JaxPM run: ~15 s more


def _subset(got, want) -> bool:
    """Every key of ``want`` has the same value in ``got`` (dicts compared recursively)."""
    if isinstance(want, dict):
        return isinstance(got, dict) and all(k in got and _subset(got[k], v) for k, v in want.items())
    return got == want


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if c in SLOW else c for c in CASES])
def test_output_records_its_provenance(case, request):
    got = CASES[case](request)
    assert got["version"] == VERSION
    if "config" in got:  # the configuration given, as recorded (the listed keys of it)
        assert _subset(got["config"], got["want_config"]), (got["config"], got["want_config"])
    if "seed" in got:
        assert got["seed"] == got.get("want_seed", SEED)
    if "checksum" in got:
        assert got["checksum"] == got["want_checksum"] and len(got["checksum"]) == 64
    if "cosmology" in got:
        assert got["cosmology"] == got.get("want_cosmology", COSMO.to_dict())
    if "samples_seeds" in got:
        assert got["samples_seeds"] == got["want_samples_seeds"]


# -- no silent overwrite ------------------------------------------------------------------------------
def rewrite_run(req, tmp_path):
    from emu_backend.pipelines.run import run as execute

    root, configs = req.getfixturevalue("runs")
    return root / "gadget" / "run.json", lambda: execute(configs["gadget"])


def rewrite_predict(req, tmp_path):
    from emu_backend.inference import Emulator
    from emu_backend.inference.streaming import predict_to_file

    p = req.getfixturevalue("predicted")
    emu = Emulator.from_checkpoint(req.getfixturevalue("weights")[0])
    return p["single"], lambda: predict_to_file(emu, p["src"], p["single"], COSMO.omega_m, 0.0, tile_size=16)


def rewrite_sample(req, tmp_path):
    from emu_backend.io.training_sample import read_training_sample, write_training_sample

    path = req.getfixturevalue("training_set")[1].files[0]
    return path, lambda: write_training_sample(path, read_training_sample(path))


def rewrite_model(req, tmp_path):
    from emu_backend.inference import Emulator

    path = req.getfixturevalue("weights")[0]
    return path, lambda: Emulator.from_checkpoint(path).save(path)


def rewrite_heldout(req, tmp_path):
    from emu_backend.validation.heldout import evaluate_heldout

    from emu_backend.inference import Emulator

    out, _ = req.getfixturevalue("heldout")
    files = [req.getfixturevalue("training_set")[1].files[0]]
    emu = Emulator.from_checkpoint(req.getfixturevalue("weights")[0], allow_extrapolation=True)
    return out / "summary.json", lambda: evaluate_heldout(emu, files, [0.0], out, halos=False)


@pytest.mark.parametrize("rewrite", [rewrite_run, rewrite_predict, rewrite_sample, rewrite_model, rewrite_heldout],
                         ids=lambda f: f.__name__.removeprefix("rewrite_"))
def test_existing_output_is_not_replaced_without_overwrite(rewrite, request, tmp_path):
    path, again = rewrite(request, tmp_path)
    before = Path(path).read_bytes()
    with pytest.raises(InputError, match="already exists"):
        again()
    assert Path(path).read_bytes() == before


# -- reproducibility ----------------------------------------------------------------------------------
def test_same_seed_and_config_give_bit_identical_snapshots(runs, tmp_path):
    import dataclasses

    from emu_backend.pipelines.run import run as execute

    root, configs = runs
    again = dataclasses.replace(configs["gadget"], out=str(tmp_path / "again"), plot=False)
    execute(again)
    with h5py.File(root / "gadget" / "snap_000.hdf5", "r") as a, h5py.File(tmp_path / "again" / "snap_000.hdf5") as b:
        for name in ("Coordinates", "Velocities", "ParticleIDs"):
            # same seed, config, device, dtype and thread count: the same operations on the same numbers
            np.testing.assert_array_equal(a["PartType1"][name][...], b["PartType1"][name][...])
        assert json.loads(a["Provenance"].attrs["meta_json"])["seed"] == SEED
