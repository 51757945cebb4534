"""Mass assignment (emu_backend.mesh.paint): golden lag2eul vectors, conservation, windows, gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from emu_backend.errors import InputError
from emu_backend.mesh import deconvolve_window, paint, paint_cells, window_fourier
from emu_backend.nn import lag2eul_scale, lagrangian_to_eulerian

WINDOWS = ["ngp", "cic", "tsc"]


def _golden(golden, name):
    return torch.from_numpy(np.load(golden / "lag2eul_n16" / f"{name}.npy"))


# -- golden vectors of the reference lag2eul (SPEC 4.4) -----------------------------------------
def test_default_scale_is_reference_value():
    # 6 * D(0, 0.31) * 512 / 1000; D(0) = 1 exactly, so only float rounding of 6 * 0.512 remains
    assert lag2eul_scale() == pytest.approx(3.072, abs=1e-15)


@pytest.mark.parametrize(
    "name, periodic, with_val",
    [
        ("density_nonperiodic", False, False),
        ("density_periodic", True, False),
        ("momentum_nonperiodic", False, True),
        ("momentum_periodic", True, True),
    ],
)
def test_lag2eul_golden_single(golden, name, periodic, with_val):
    dis = _golden(golden, "dis")
    val = _golden(golden, "val") if with_val else None
    (mesh,) = lagrangian_to_eulerian(dis, val, periodic=periodic)
    expected = _golden(golden, name)
    assert mesh.shape == expected.shape and mesh.dtype == torch.float64
    # float64 with the same operation order as the reference; only index_add summation order may differ
    torch.testing.assert_close(mesh, expected, rtol=0, atol=1e-12)


def test_lag2eul_golden_pair_common_mean(golden):
    dis, dis2 = _golden(golden, "dis"), _golden(golden, "dis2")
    mesh_a, mesh_b = lagrangian_to_eulerian([dis, dis2])
    # float64, same formula as the reference: summation-order round-off only
    torch.testing.assert_close(mesh_a, _golden(golden, "density_pair_a"), rtol=0, atol=1e-12)
    torch.testing.assert_close(mesh_b, _golden(golden, "density_pair_b"), rtol=0, atol=1e-12)
    # painting dis alone (its own mean) differs from the pair painting: the mean really is common
    (alone,) = lagrangian_to_eulerian(dis)
    assert (alone - mesh_a).abs().max() > 1e-6


def test_lag2eul_golden_float32(golden):
    (mesh,) = lagrangian_to_eulerian(_golden(golden, "dis").float(), periodic=True)
    # float32 positions of O(16) cells carry ~1e-6 absolute error, so weights and counts ~1e-5
    torch.testing.assert_close(mesh.double(), _golden(golden, "density_periodic"), rtol=0, atol=2e-5)


def test_lag2eul_periodic_mean_is_one():
    gen = torch.Generator().manual_seed(1)
    dis = torch.randn(2, 3, 8, 8, 8, generator=gen, dtype=torch.float64)
    (den,) = lagrangian_to_eulerian(dis, periodic=True)
    # each particle deposits total weight 1 exactly up to float64 round-off of the CIC weights
    torch.testing.assert_close(den.mean(dim=(1, 2, 3, 4)), torch.ones(2, dtype=torch.float64), rtol=0, atol=1e-13)


def test_lag2eul_matches_paint():
    gen = torch.Generator().manual_seed(2)
    n, box = 8, 20.0
    dis = torch.randn(1, 3, n, n, n, generator=gen, dtype=torch.float64)
    scale = 1.7
    (den,) = lagrangian_to_eulerian(dis, scale=scale, rm_dis_mean=False, periodic=True)
    q = torch.stack(torch.meshgrid(*(torch.arange(n, dtype=torch.float64),) * 3, indexing="ij"))
    pos = ((dis[0] * scale + q) * (box / n)).reshape(3, -1).T
    # two routes to the same cell coordinates, differing by one multiply/divide by box/n
    torch.testing.assert_close(paint(pos, n, box)[None, None], den, rtol=0, atol=1e-12)


def test_lag2eul_rejects_bad_input():
    with pytest.raises(InputError, match="shape"):
        lagrangian_to_eulerian(torch.zeros(1, 2, 4, 4, 4))
    with pytest.raises(InputError, match="shape"):
        lagrangian_to_eulerian([torch.zeros(1, 3, 4, 4, 4), torch.zeros(1, 3, 5, 5, 5)])
    with pytest.raises(InputError, match="values"):
        lagrangian_to_eulerian(torch.zeros(1, 3, 4, 4, 4), torch.zeros(1, 3, 5, 5, 5))


# -- paint: conservation, stencils, wrapping ---------------------------------------------------
@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-3)])
def test_mass_conservation_periodic(window, dtype, tol):
    gen = torch.Generator().manual_seed(3)
    box = 50.0
    pos = (torch.rand(5000, 3, generator=gen, dtype=torch.float64) * 3 - 1) * box  # also outside the box
    mass = torch.rand(5000, generator=gen, dtype=torch.float64)
    mesh = paint(pos.to(dtype), (8, 9, 10), box, weights=mass.to(dtype), window=window)
    # sum of 5000 O(1) terms: float64 round-off ~1e-12, float32 ~1e-4 relative accumulation
    assert float(mesh.sum()) == pytest.approx(float(mass.sum()), rel=tol)


@pytest.mark.parametrize("window", WINDOWS)
def test_nonperiodic_keeps_interior_mass_drops_outside(window):
    box, n = 10.0, 10
    inside = torch.tensor([[5.3, 4.1, 6.7]], dtype=torch.float64)
    outside = torch.tensor([[-5.0, 4.0, 4.0], [4.0, 25.0, 4.0]], dtype=torch.float64)
    mesh = paint(torch.cat([inside, outside]), n, box, window=window, periodic=False)
    # weights of one interior particle sum to 1 up to float64 round-off
    assert float(mesh.sum()) == pytest.approx(1.0, abs=1e-14)


def test_cic_on_mesh_point_deposits_to_one_cell():
    box, n = 16.0, 8  # cell 2 Mpc/h
    pos = torch.tensor([[4.0, 6.0, 14.0]], dtype=torch.float64)
    mesh = paint(pos, n, box, window="cic")
    assert mesh[2, 3, 7] == 1.0  # exact: weight 1 - 0 = 1
    assert torch.count_nonzero(mesh) == 1


@pytest.mark.parametrize("window, support", [("ngp", 1), ("cic", 2), ("tsc", 3)])
def test_stencil_weights_sum_to_one(window, support):
    gen = torch.Generator().manual_seed(4)
    pos = torch.rand(200, 3, generator=gen, dtype=torch.float64) * 16.0
    for p in pos:
        mesh = paint(p[None], 16, 16.0, window=window)
        # the stencil polynomials sum to 1 identically; float64 round-off only
        assert float(mesh.sum()) == pytest.approx(1.0, abs=1e-14)
        assert bool((mesh >= 0).all())
        assert torch.count_nonzero(mesh) <= support**3


def test_tsc_weights_analytic():
    # particle at cell coordinate 3.2 on axis 0: d = 0.2 from mesh point 3
    mesh = paint(torch.tensor([[3.2, 0.0, 0.0]], dtype=torch.float64), 8, 8.0, window="tsc")
    expected = [0.5 * 0.3**2, 0.75 - 0.2**2, 0.5 * 0.7**2]
    # y = z = 0 sit on a mesh point (weights 1/8, 3/4, 1/8), so marginalise over them
    # closed-form TSC weights, float64 round-off
    expected = torch.tensor(expected, dtype=torch.float64)
    torch.testing.assert_close(mesh.sum(dim=(1, 2))[2:5], expected, rtol=0, atol=1e-15)


def test_periodic_wrap():
    box, n = 8.0, 8
    pos = torch.tensor([[7.5, 0.0, 0.0]], dtype=torch.float64)  # half-way between cell 7 and cell 0
    mesh = paint(pos, n, box)
    assert mesh[7, 0, 0] == 0.5 and mesh[0, 0, 0] == 0.5  # exact binary fractions
    gen = torch.Generator().manual_seed(5)
    many = torch.rand(300, 3, generator=gen, dtype=torch.float64) * box
    shift = torch.tensor([box, -2 * box, 3 * box], dtype=torch.float64)
    # shifting by whole boxes changes positions by O(1e-15) relative, hence the weights by ~1e-14
    torch.testing.assert_close(paint(many + shift, n, box), paint(many, n, box), rtol=0, atol=1e-12)
    nonper = paint(pos, n, box, periodic=False)
    assert nonper[7, 0, 0] == 0.5 and float(nonper.sum()) == 0.5  # the wrapped half is dropped


def test_vector_weights_and_batches():
    gen = torch.Generator().manual_seed(6)
    pos = torch.rand(100, 3, generator=gen, dtype=torch.float64) * 10
    vel = torch.randn(100, 3, generator=gen, dtype=torch.float64)
    mom = paint(pos, 6, 10.0, weights=vel)
    assert mom.shape == (3, 6, 6, 6)
    for c in range(3):
        # same deposits per channel; identical arithmetic, differences only from summation order
        torch.testing.assert_close(mom[c], paint(pos, 6, 10.0, weights=vel[:, c]), rtol=0, atol=1e-13)
    batched = paint_cells(torch.stack([pos.T, pos.T.flip(0)]) * 0.6, (6, 6, 6))
    # batch entries must not mix: each equals its own unbatched painting up to summation order
    torch.testing.assert_close(batched[1, 0], paint(pos.flip(1), 6, 10.0), rtol=0, atol=1e-13)


@pytest.mark.parametrize("window", ["cic", "tsc"])
def test_counts_and_single_batches_take_the_general_path_bit_for_bit(window):
    """Particle counts (no values) skip the product with unit values and one batch skips the batch offset;
    the reference is the general path itself: explicit unit values, and the same batch painted beside a
    second one, must give the same mesh and the same position gradient bit for bit (x * 1 is exact; the
    deposits are the same numbers added in the same order)."""
    gen = torch.Generator().manual_seed(8)
    pos = torch.rand(1, 3, 3000, generator=gen, dtype=torch.float32) * 12
    other = torch.rand(1, 3, 3000, generator=gen, dtype=torch.float32) * 12
    cot = torch.randn(1, 1, 12, 12, 12, generator=gen, dtype=torch.float32)

    def mesh_and_grad(batch, values, take):
        p = batch.clone().requires_grad_()
        m = paint_cells(p, (12, 12, 12), values, window=window)[take:take + 1]
        (m * cot).sum().backward()
        return m.detach(), p.grad[take:take + 1]

    fast = mesh_and_grad(pos, None, 0)
    for general in (mesh_and_grad(pos, torch.ones(1, 1, 3000), 0),
                    mesh_and_grad(torch.cat([other, pos]), None, 1)):
        assert torch.equal(fast[0], general[0]) and torch.equal(fast[1], general[1])
    assert fast[1].abs().max() > 0  # the gradient is not trivially zero


def test_paint_rejects_bad_input():
    pos = torch.zeros(4, 3, dtype=torch.float64)
    with pytest.raises(InputError, match="window"):
        paint(pos, 4, 1.0, window="pcs")
    with pytest.raises(InputError, match="positions"):
        paint(torch.zeros(4, 2), 4, 1.0)
    with pytest.raises(InputError, match="mesh_shape"):
        paint(pos, 0, 1.0)
    with pytest.raises(InputError, match="box_size"):
        paint(pos, 4, -1.0)
    with pytest.raises(InputError, match="weights"):
        paint(pos, 4, 1.0, weights=torch.ones(5))


# -- gradients ----------------------------------------------------------------------------------
@pytest.mark.parametrize("window", ["cic", "tsc"])
def test_position_gradient_jumps_across_a_mesh_plane_only_with_cic(window):
    """The gradient of a painted field in a particle's position, just left and right of a mesh point and of
    a half-cell plane, against the kernels' closed forms (cell size H = 1): CIC's tent ``1 - |d|`` has
    derivative -+1 on either side of its peak and of its feet, so where the particle crosses mesh point 2
    the gradient of ``sum(v * mesh)`` jumps by ``v[1] - 2 v[2] + v[3]``, and not at the half-cell; TSC's
    quadratic B-spline has a continuous derivative (its second jumps at the half-cells), so both jumps are
    zero up to the second derivative times the 2e-9 gap. Tolerances: 1e-12 (float64 round-off; CIC's
    gradient is piecewise constant) and 1e-7 (TSC: |v| ~ 3 times a second derivative of at most 2)."""
    n = 8
    v = torch.from_numpy(np.random.default_rng(0).normal(size=(n,) * 3))

    def grad_x(x):
        pos = torch.tensor([[x, 3.0, 5.0]], dtype=torch.float64, requires_grad=True)  # y, z on mesh points
        (g,) = torch.autograd.grad((v * paint(pos, n, float(n), window=window)).sum(), pos)
        return float(g[0, 0])

    gap = 1e-9
    at_point = grad_x(2.0 + gap) - grad_x(2.0 - gap)
    at_half = grad_x(2.5 + gap) - grad_x(2.5 - gap)
    if window == "cic":
        line = v[:, 3, 5].numpy()
        assert at_point == pytest.approx(line[1] - 2 * line[2] + line[3], abs=1e-12)
        assert abs(at_point) > 0.1  # the draw makes the jump visible
        assert at_half == pytest.approx(0.0, abs=1e-12)
    else:
        assert at_point == pytest.approx(0.0, abs=1e-7)
        assert at_half == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("window", ["cic", "tsc"])
@pytest.mark.parametrize("periodic", [True, False])
def test_gradcheck_positions_and_weights(window, periodic):
    gen = torch.Generator().manual_seed(7)
    n = 5
    # cell coordinates k + 0.25..0.75 (CIC kinks sit at integers, TSC's second-derivative jumps at
    # half-integers are harmless for first derivatives), so finite differences do not straddle a kink
    cells = torch.randint(0, n, (6, 3), generator=gen).double()
    pos = (cells + 0.25 + 0.5 * torch.rand(6, 3, generator=gen, dtype=torch.float64)) * 2.0
    if window == "tsc":
        pos = pos + 1.0  # move the offsets to -0.25..0.25 around mesh points, away from half-integers
    pos.requires_grad_(True)
    w = torch.rand(6, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    # gradcheck's default float64 tolerances (atol 1e-5, rtol 1e-3) with eps 1e-6
    assert torch.autograd.gradcheck(
        lambda p, v: paint(p, n, 2.0 * n, weights=v, window=window, periodic=periodic), (pos, w)
    )


def test_gradcheck_lag2eul():
    gen = torch.Generator().manual_seed(8)
    # small displacements: positions stay within 0.05..0.35 cells of their mesh point, no kink crossed
    dis = (0.05 + 0.3 * torch.rand(1, 3, 3, 3, 3, generator=gen, dtype=torch.float64)) / 3.072
    dis.requires_grad_(True)
    # gradcheck default float64 tolerances; the mean removal couples all particles linearly
    assert torch.autograd.gradcheck(lambda d: lagrangian_to_eulerian(d, rm_dis_mean=False, periodic=True)[0], (dis,))


# -- Fourier window -----------------------------------------------------------------------------
def test_window_fourier_values():
    w = window_fourier(8, "cic")
    assert w.shape == (8, 8, 5)
    assert w[0, 0, 0] == 1.0  # sinc(0) = 1 exactly
    # CIC at the Nyquist frequency of one axis: sinc(pi/2)^2 = (2/pi)^2; float64 sin/cos round-off
    assert float(w[4, 0, 0]) == pytest.approx((2 / math.pi) ** 2, rel=1e-14)
    tsc_full = window_fourier((4, 6, 8), "tsc", rfft=False)
    assert tsc_full.shape == (4, 6, 8)
    # TSC = CIC^(3/2) by construction: same sinc, power 3 vs 2; float64 round-off
    torch.testing.assert_close(tsc_full, window_fourier((4, 6, 8), "cic", rfft=False) ** 1.5, rtol=1e-13, atol=0)


def test_window_matches_subcell_average_of_cic():
    # A particle at sub-cell offset u deposits the triangle W(j - u); averaging its phase-corrected
    # DFT over u uniform in [0, 1) gives the continuous Fourier transform of W, i.e. sinc^2(k H / 2).
    n, k_idx = 16, 3
    u = (torch.arange(2000, dtype=torch.float64) + 0.5) / 2000
    pos = torch.zeros(len(u), 3, 1, dtype=torch.float64)
    pos[:, 0, 0] = u
    meshes = paint_cells(pos, (n, n, n))[:, 0]  # one batch entry per offset
    phase = torch.exp(2j * math.pi * k_idx * u / n)
    average = (torch.fft.fftn(meshes, dim=(1, 2, 3))[:, k_idx, 0, 0] * phase).real.mean()
    expected = window_fourier(n, "cic")[k_idx, 0, 0]
    # midpoint rule with 2000 nodes on a smooth integrand: error O(1/2000^2) ~ 1e-7
    assert float(average) == pytest.approx(float(expected), abs=1e-6)
    assert float(expected) == pytest.approx(np.sinc(k_idx / n) ** 2, rel=1e-14)  # same formula, numpy vs torch


def test_deconvolve_window_roundtrip():
    gen = torch.Generator().manual_seed(9)
    mesh = torch.rand(8, 8, 8, generator=gen, dtype=torch.float64)
    mk = torch.fft.rfftn(mesh)
    back = deconvolve_window(mk * window_fourier(8, "tsc"), "tsc")
    # multiply then divide by the same float64 window: a few ulp
    torch.testing.assert_close(back, mk, rtol=1e-13, atol=1e-13)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("window", WINDOWS)
def test_cuda_matches_cpu(window):
    gen = torch.Generator().manual_seed(10)
    pos = torch.rand(20000, 3, generator=gen, dtype=torch.float64) * 30.0
    cpu = paint(pos, 12, 30.0, window=window)
    gpu = paint(pos.cuda(), 12, 30.0, window=window)
    assert gpu.device.type == "cuda"
    # identical float64 arithmetic; only the atomic-add summation order differs
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=1e-10)
