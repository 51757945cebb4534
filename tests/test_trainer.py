"""Training (emu_backend.training): data draws, config, the velocity gradient, a short run that learns."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from _training_helpers import TINY, write_tiny_samples  # tests/_training_helpers.py

from emu_backend.errors import InputError
from emu_backend.inference.tiling import periodic_read
from emu_backend.io.training_sample import read_training_sample
from emu_backend.nn.normalisation import velocity_norm
from emu_backend.training.config import TrainConfig, lr_factor
from emu_backend.training.dataset import CropSampler, find_sample_files, split_files
from emu_backend.training.distributed import DistInfo
from emu_backend.training.loss import painting_scale, zdep_loss
from emu_backend.training.trainer import build_model, evaluate, predict_crop, train


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    return write_tiny_samples(tmp_path_factory.mktemp("samples"), 3)


# -- data ---------------------------------------------------------------------------------------
def test_draws_are_deterministic_and_normalised(samples):
    sampler = CropSampler(samples, 8, seed=5, augment=False)
    a, b = sampler.draw(7, 2), sampler.draw(7, 2)
    assert all(np.array_equal(getattr(a, k), getattr(b, k)) for k in ("x", "dis", "vel"))
    other = sampler.draw(8, 2)
    assert not np.array_equal(a.x, other.x)
    # the crop is the file's data at the drawn origin, in network units (independent re-read)
    s = read_training_sample(samples[a.file_index])
    t = int(np.flatnonzero(s.z == a.z)[0])
    # float32 division then multiplication by the norm: 1 ulp
    np.testing.assert_allclose(a.dis * 6, periodic_read(s.displacement[t], a.origin, (8,) * 3), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(a.vel * velocity_norm(a.z, s.cosmology.omega_m),
                               periodic_read(s.velocity[t], a.origin, (8,) * 3), rtol=1e-6, atol=1e-6)
    inp = periodic_read(s.input_displacement, tuple(o - 48 for o in a.origin), (104,) * 3)
    np.testing.assert_allclose(a.x * 6, inp, rtol=1e-6, atol=1e-6)
    assert a.x.shape == (3, 104, 104, 104) and a.dis.shape == (3, 8, 8, 8)
    sampler.close()


def test_split_holds_out_whole_simulations(samples):
    train_f, val_f = split_files(samples, 0.34, seed=1)
    assert len(val_f) == 1 and len(train_f) == 2 and not set(train_f) & set(val_f)
    assert split_files(samples, 0.34, seed=1) == (train_f, val_f)
    assert split_files(samples, 0.0, seed=1) == (sorted(samples), [])
    assert find_sample_files([samples[0].parent]) == sorted(p.resolve() for p in samples)
    with pytest.raises(InputError, match="val_fraction"):
        split_files(samples, 1.0, seed=1)


# -- config -------------------------------------------------------------------------------------
@pytest.mark.parametrize("changes, match", [
    ({"width": 0}, "width"), ({"crop": 4}, "crop"), ({"lr": -1.0}, "lr"), ({"precision": "fp8"}, "precision"),
    ({"warmup_steps": 10, "steps": 10}, "warmup"), ({"betas": (0.9, 1.5)}, "betas"), ({"grad_clip": 0}, "grad_clip"),
])
def test_config_rejects_bad_values(changes, match):
    with pytest.raises(InputError, match=match):
        TrainConfig(**changes)


def test_lr_schedule_warmup_then_cosine():
    cfg = TrainConfig(steps=100, warmup_steps=10, min_lr_ratio=0.01)
    f = [lr_factor(s, cfg) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0) and f[99] == pytest.approx(0.01)
    assert all(a >= b for a, b in zip(f[9:], f[10:]))  # monotone decay after the warm-up


# -- the velocity branch ------------------------------------------------------------------------
@pytest.mark.slow
def test_dual_velocity_gradient_matches_finite_difference(samples):
    """Reverse-mode gradient through the Dual velocity pass = finite difference of the same loss.

    The directional derivative <grad, v> along a random parameter direction v is compared with
    (L(theta + h v) - L(theta - h v)) / 2h; the Dual tangent itself is checked against
    d(output)/dD by a central difference in D.
    """
    crop = CropSampler(samples[:1], 8, seed=0).draw(0, 0)
    net = build_model(TrainConfig(width=4)).double()
    x = torch.from_numpy(crop.x).double()[None]
    tgt = [torch.from_numpy(a).double()[None] for a in (crop.dis, crop.vel)]

    def loss_fn():
        out, vel = predict_crop(net, x, crop.omega_m, crop.growth, "dual")
        return zdep_loss(out, vel, *tgt, scale=painting_scale(crop.cell_size))[0].sum(), out, vel

    loss, out, vel = loss_fn()
    loss.backward()
    gen = torch.Generator().manual_seed(0)
    params = list(net.parameters())
    direction = [torch.randn(p.shape, generator=gen, dtype=p.dtype) * p.detach().abs().mean() for p in params]
    analytic = sum((p.grad * v).sum() for p, v in zip(params, direction)).item()
    h = 1e-5
    values = []
    with torch.no_grad():
        for sign in (1, -1):
            for p, v in zip(params, direction):
                p.add_(sign * h * v)
            values.append(loss_fn()[0].item())
            for p, v in zip(params, direction):
                p.sub_(sign * h * v)
        numeric = (values[0] - values[1]) / (2 * h)
        # float64 central difference: truncation O(h^2) ~1e-10 and round-off ~1e-16 |L| / h ~1e-10
        assert analytic == pytest.approx(numeric, rel=1e-5, abs=1e-7)
        assert abs(analytic) > 1e-3
        dd = 1e-5
        plus, minus = (predict_crop(net, x, crop.omega_m, crop.growth + s * dd, "dual")[0] for s in (1, -1))
        # the velocity is d(output)/dD: central difference in D, same float64 error budget
        torch.testing.assert_close(vel, (plus - minus) / (2 * dd), rtol=1e-6, atol=1e-7 * vel.abs().max().item())


def test_jvp_and_dual_velocities_agree(samples):
    """The two forward-mode formulations give the same output and velocity (no backward: fast)."""
    crop = CropSampler(samples[:1], 8, seed=0).draw(1, 0)
    net = build_model(TrainConfig(width=4))
    x = torch.from_numpy(crop.x)[None]
    with torch.no_grad():
        out_d, vel_d = predict_crop(net, x, crop.omega_m, crop.growth, "dual")
        out_j, vel_j = predict_crop(net, x, crop.omega_m, crop.growth, "jvp")
    # float32: folded-weight vs product-rule tangents differ by round-off through ~30 layers
    torch.testing.assert_close(out_d, out_j, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(vel_d, vel_j, rtol=1e-4, atol=1e-4 * vel_j.abs().max().item())


# -- a short run --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def short_run(samples, tmp_path_factory):
    cfg = TrainConfig(steps=2, lr=2e-3, checkpoint_every=1, val_every=2, **TINY)
    out = tmp_path_factory.mktemp("run")
    before = evaluate(build_model(cfg).to(memory_format=torch.channels_last_3d),
                      CropSampler(samples[2:], 8, cfg.seed, augment=False), cfg, DistInfo(), "fp32")
    result = train(cfg, samples[:2], samples[2:], out, resume=False, progress=False)
    return cfg, out, before, result


@pytest.mark.slow
def test_training_lowers_validation_loss(short_run):
    cfg, out, before, result = short_run
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2]
    after = float(rows[-1]["val_loss"])
    # the same fixed validation crop before and after: deterministic, no noise; 2 steps take the
    # random network's ~-10.5 to ~-17.5 (product of MSEs / e^7), a margin of 2 is far from round-off
    assert after < before["loss"] - 2.0
    assert result.best_val_loss == pytest.approx(after, rel=1e-6) and result.best_step == 2


@pytest.mark.slow
def test_exported_model_file(short_run, samples):
    from emu_backend.checkpoints.native import load_model_file

    cfg, out, _, result = short_run
    mf = load_model_file(result.model_path)
    assert mf.kind == "zdep" and mf.networks["displacement"].arch.width == cfg.width
    oms = sorted(read_training_sample(p).cosmology.omega_m for p in samples[:2])
    assert mf.domain["omega_m"] == pytest.approx(oms) and mf.domain["z"] == [0.0, 1.0]
    assert mf.domain["cell_size_mpc_h"] == pytest.approx(1000 / 512, rel=1e-12)
    prov = mf.provenance["training"]
    assert prov["best_step"] == 2 and prov["config"]["width"] == 4
    assert [d["name"] for d in prov["data"]["train"]] == ["sim_000.h5", "sim_001.h5"]


@pytest.mark.slow
def test_resume_refuses_changes(short_run, samples):
    cfg, out, _, _ = short_run
    with pytest.raises(InputError, match="config changed.*lr"):
        train(TrainConfig(steps=2, lr=1e-3, checkpoint_every=1, val_every=2, **TINY), samples[:2], samples[2:], out)
    with pytest.raises(InputError, match="file list differs"):
        train(cfg, samples[:1], samples[2:], out)
    with pytest.raises(InputError, match="already holds a training run"):
        train(cfg, samples[:2], samples[2:], out, resume=False)


def test_bad_training_inputs(samples, tmp_path):
    with pytest.raises(InputError, match="no training-sample files"):
        CropSampler([], 8, 0)
    with pytest.raises(InputError, match="crop"):
        CropSampler(samples, 4, 0)
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(InputError, match="cannot be read"):
        CropSampler([bad], 8, 0)
    with pytest.raises(InputError, match="batch 1 is smaller"):
        from emu_backend.training.trainer import _train

        _train(TrainConfig(**TINY), samples, [], tmp_path / "r", True, False, False, DistInfo(world_size=2))


def test_cli_train_errors_exit_2(samples, tmp_path, capsys):
    from emu_backend.cli.main import main

    base = ["train", "--out", str(tmp_path / "run"), "--no-progress"]
    assert main([*base, "--data", str(tmp_path / "missing")]) == 2
    assert "neither a file nor a folder" in capsys.readouterr().err
    assert main([*base, "--data", str(samples[0]), "--width", "0"]) == 2
    assert "width" in capsys.readouterr().err
    assert main([*base, "--data", str(samples[0]), "--val-files", str(samples[0])]) == 2
    assert "also given as training data" in capsys.readouterr().err
    assert main([*base, "--data", *map(str, samples), "--val-fraction", "1.5"]) == 2
    assert "val_fraction" in capsys.readouterr().err


def test_lazy_reads_equal_in_memory_reads(samples, monkeypatch):
    import emu_backend.training.dataset as dataset

    in_memory = CropSampler(samples, 8, seed=3)
    monkeypatch.setattr(dataset, "IN_MEMORY_BYTES", 0)  # force block reads through h5py
    lazy = CropSampler(samples, 8, seed=3)
    assert not isinstance(lazy.files[0]._dis, np.ndarray)
    for i in range(3):
        a, b = in_memory.draw(5, i), lazy.draw(5, i)
        for key in ("x", "dis", "vel"):  # the same float32 values, read two ways
            assert np.array_equal(getattr(a, key), getattr(b, key)), key


def test_init_weights_copies_a_model_file_and_refuses_another_width(tmp_path):
    """Fine-tuning starts from exactly the saved network; a width mismatch is refused by name."""
    from emu_backend.checkpoints.native import save_model_file
    from emu_backend.training.trainer import load_init_weights

    src = build_model(TrainConfig(width=4, seed=7))
    path = tmp_path / "m.emu"
    save_model_file(path, "zdep", {"displacement": src},
                           {"omega_m": [0.1, 0.5], "z": [0.0, 3.0], "cell_size_mpc_h": 1000 / 512})
    dst = build_model(TrainConfig(width=4, seed=0))
    load_init_weights(dst, str(path))
    for (k, a), (_, b) in zip(src.state_dict().items(), dst.state_dict().items()):
        assert torch.equal(a, b), k  # a copy: bitwise
    with pytest.raises(InputError, match="set width to 4"):
        load_init_weights(build_model(TrainConfig(width=8)), str(path))
