"""The zdep training loss (emu_backend.training.loss): golden lag2eul painting, minimum, numpy recomputation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from emu_backend.errors import InputError
from emu_backend.nn import lag2eul_scale
from emu_backend.training.loss import LOG_EPS, LOSS_WEIGHTS, paint_pair, painting_scale, zdep_loss

TRAINED_CELL = 1000.0 / 512


def _golden(golden, name):
    return torch.from_numpy(np.load(golden / "lag2eul_n16" / f"{name}.npy"))


# -- the loss's painting path against the reference lag2eul (SPEC 4.4) ----------------------------
def test_painting_scale_is_reference_default():
    # 6 / (1000/512) and the reference's 6 * 512 / 1000 are both the correctly rounded 384/125
    assert painting_scale(TRAINED_CELL) == lag2eul_scale()


def test_paint_pair_golden_density(golden):
    dis, dis2 = _golden(golden, "dis"), _golden(golden, "dis2")
    mesh_a, mesh_b = paint_pair([dis, dis2], scale=painting_scale(TRAINED_CELL))
    # float64, the reference's formula; only index_add summation order may differ
    torch.testing.assert_close(mesh_a, _golden(golden, "density_pair_a"), rtol=0, atol=1e-12)
    torch.testing.assert_close(mesh_b, _golden(golden, "density_pair_b"), rtol=0, atol=1e-12)


def test_paint_pair_golden_momentum(golden):
    (mesh,) = paint_pair([_golden(golden, "dis")], [_golden(golden, "val")], scale=painting_scale(TRAINED_CELL))
    # as above: float64 summation-order round-off only
    torch.testing.assert_close(mesh, _golden(golden, "momentum_nonperiodic"), rtol=0, atol=1e-12)


# -- an independent numpy implementation ---------------------------------------------------------
def _np_cic(pos, values, n):
    """Brute-force non-periodic CIC: pos (3, P) in cells, values (C, P) -> (C, n, n, n)."""
    mesh = np.zeros((values.shape[0], n, n, n))
    base = np.floor(pos).astype(int)
    for off in np.ndindex(2, 2, 2):
        cell = base + np.array(off)[:, None]
        w = np.prod(1.0 - np.abs(pos - cell), axis=0)
        ok = np.all((cell >= 0) & (cell < n), axis=0)
        for c in range(values.shape[0]):
            np.add.at(mesh[c], tuple(cell[:, ok]), (w * values[c])[ok])
    return mesh


def _np_loss(out_d, out_v, tgt_d, tgt_v, scale):
    n = out_d.shape[-1]
    q = np.stack(np.meshgrid(*(np.arange(n),) * 3, indexing="ij")).reshape(3, -1)
    mean = 0.5 * (out_d.mean(axis=(1, 2, 3)) + tgt_d.mean(axis=(1, 2, 3)))
    meshes = {}
    for name, d, v in (("out", out_d, out_v), ("tgt", tgt_d, tgt_v)):
        pos = (d - mean[:, None, None, None]).reshape(3, -1) * scale + q
        meshes[name] = (_np_cic(pos, np.ones((1, pos.shape[1])), n), _np_cic(pos, v.reshape(3, -1), n))
    mse = {
        "dis": np.mean((out_d - tgt_d) ** 2),
        "vel": np.mean((out_v - tgt_v) ** 2),
        "den": np.mean((meshes["out"][0] - meshes["tgt"][0]) ** 2),
        "mom": np.mean((meshes["out"][1] - meshes["tgt"][1]) ** 2),
    }
    return 3 * math.log(mse["dis"]) + 3 * math.log(mse["vel"]) + math.log(mse["den"]) + math.log(mse["mom"]), mse


def test_loss_matches_numpy_recomputation():
    rng = np.random.default_rng(3)
    n, batch, scale = 8, 2, painting_scale(TRAINED_CELL)
    fields = [rng.normal(0, 0.4, (batch, 3, n, n, n)) for _ in range(4)]
    loss, parts = zdep_loss(*(torch.from_numpy(f) for f in fields), scale=scale)
    assert loss.shape == (batch,)
    for b in range(batch):
        expected, mse = _np_loss(*(f[b] for f in fields), scale)
        # float64 both sides, same formula; round-off of sums over 512 particles only
        assert loss[b].item() == pytest.approx(expected, rel=1e-10, abs=1e-10)
        for key in LOSS_WEIGHTS:
            assert parts[key][b].item() == pytest.approx(mse[key], rel=1e-10)


def test_loss_per_sample_independent_of_batch():
    # the batch loss is a per-sample loss: the DDP average over ranks equals the global batch mean
    g = torch.Generator().manual_seed(5)
    fields = [torch.randn(3, 3, 8, 8, 8, generator=g, dtype=torch.float64) * 0.3 for _ in range(4)]
    batched, _ = zdep_loss(*fields, scale=3.0)
    for b in range(3):
        single, _ = zdep_loss(*(f[b:b + 1] for f in fields), scale=3.0)
        # float64: identical operations per sample, at most summation-order round-off
        torch.testing.assert_close(single[0], batched[b], rtol=1e-13, atol=0)


# -- the minimum ---------------------------------------------------------------------------------
def test_loss_minimal_at_target():
    g = torch.Generator().manual_seed(7)
    dis = torch.randn(1, 3, 8, 8, 8, generator=g, dtype=torch.float64) * 0.3
    vel = torch.randn(1, 3, 8, 8, 8, generator=g, dtype=torch.float64) * 0.3
    best, parts = zdep_loss(dis, vel, dis, vel, scale=3.072)
    assert all(float(v) == 0.0 for v in parts.values())
    # every MSE is exactly 0, so the loss is the epsilon guard's finite floor 8 log(LOG_EPS)
    assert best.item() == pytest.approx(sum(LOSS_WEIGHTS.values()) * math.log(LOG_EPS), rel=1e-12)
    for k in range(10):
        eps = 10.0 ** -(k % 5 + 1)
        d2 = dis + eps * torch.randn(dis.shape, generator=g, dtype=dis.dtype)
        v2 = vel + eps * torch.randn(vel.shape, generator=g, dtype=vel.dtype)
        worse, _ = zdep_loss(d2, v2, dis, vel, scale=3.072)
        assert worse.item() > best.item() + 1.0  # MSE >= ~eps^2 >> LOG_EPS: log-distance is large


def test_loss_float32_finite_at_target():
    x = torch.zeros(1, 3, 8, 8, 8)
    loss, _ = zdep_loss(x, x, x, x, scale=3.072)
    assert torch.isfinite(loss).all()


def test_loss_bad_shapes():
    a = torch.zeros(1, 3, 8, 8, 8)
    with pytest.raises(InputError, match="share one shape"):
        zdep_loss(a, a, a, torch.zeros(1, 3, 8, 8, 4), scale=3.0)
    with pytest.raises(InputError, match=r"\(B, 3"):
        zdep_loss(*(torch.zeros(1, 2, 8, 8, 8),) * 4, scale=3.0)
    with pytest.raises(InputError, match="cell size"):
        painting_scale(0.0)
