"""The network and the two model conventions reproduce the reference code's golden vectors."""

import numpy as np
import pytest
import torch

from emu_backend.checkpoints import load_published
from emu_backend.cosmology import growth_factor
from emu_backend.inference import EmuConvention, ZdepConvention
from emu_backend.inference.models import emu_style, zdep_forward
from emu_backend.nn import DIS_STD_MPC_H, StyledVNet, velocity_norm

torch.set_num_threads(max(torch.get_num_threads(), 1))


@pytest.fixture(scope="module")
def x104(golden):
    return torch.from_numpy(np.load(golden / "input_n104.npy"))


def test_parameter_counts():
    # SPEC 5.1: 3,352,210 (style size 1) and 3,354,776 (style size 2)
    assert sum(p.numel() for p in StyledVNet(1).parameters()) == 3_352_210
    assert sum(p.numel() for p in StyledVNet(2).parameters()) == 3_354_776


def test_state_dict_keys_and_order(golden):
    rows = [l.split("|") for l in (golden / "STATE_DICT_KEYS.txt").read_text().splitlines() if l and not l.startswith("#")]
    for s, col in ((1, 1), (2, 2)):
        sd = StyledVNet(s).state_dict()
        assert list(sd) == [r[0].strip() for r in rows]
        assert [str(tuple(v.shape)).replace(",)", ",)") for v in sd.values()] == [r[col].strip() for r in rows]


@pytest.mark.parametrize("dtype", ["float32", pytest.param("float64", marks=pytest.mark.slow)])
def test_emu_d2d_tile(golden, x104, dtype):
    net = load_published(golden / "emu_d2d" / "checkpoint.pt")
    case = golden / "emu_d2d" / "tile_n104_om0p30"
    style = torch.from_numpy(np.load(case / "style.npy"))
    ref_name = "output.npy" if dtype == "float32" else "output_f64.npy"
    ref = np.load(case / ref_name)
    dt = getattr(torch, dtype)
    # the model convention: style from Omega_m in float32, output in Mpc/h = network units * 6
    assert torch.equal(emu_style(0.30), style[0])
    dis, _ = EmuConvention(net.to(dt)).predict_tiles(x104.to(dt) * DIS_STD_MPC_H, 0.30, 0.0, velocity=False)
    # golden README: float32 max abs <= 1e-5 (conv algorithm freedom); float64 ~1e-10 (normalised units)
    np.testing.assert_allclose(dis.numpy() / 6.0, ref, rtol=0, atol=1e-5 if dtype == "float32" else 1e-10)


@pytest.mark.parametrize("dtype", ["float32", pytest.param("float64", marks=pytest.mark.slow)])
def test_zdep_tile_displacement_and_velocity(golden, x104, dtype):
    net = load_published(golden / "zdep" / "checkpoint.pt")
    case = golden / "zdep" / "tile_n104_om0p25_z1p0"
    om, z = 0.25, 1.0
    # the growth factor the reference fed the model, cast to float32
    assert np.float32(growth_factor(z, om)) == np.load(case / "dz.npy")[0]
    suffix = "" if dtype == "float32" else "_f64"
    ref_dis = np.load(case / f"output{suffix}.npy")
    ref_vel = np.load(case / f"velocity{suffix}.npy")
    dt = getattr(torch, dtype)
    model = ZdepConvention(net.to(dt))
    if dtype == "float32":
        # predict_tiles takes Mpc/h; the golden input is in network units (x 6 and back costs ~1e-7 relative)
        dis, vel = model.predict_tiles(x104.to(dt) * DIS_STD_MPC_H, om, z, velocity=True)
        dis, vel = dis.numpy() / 6.0, vel.numpy() / velocity_norm(z, om)
        # README tolerances: displacement max 1e-5; jvp velocity rms < 1e-3 std, max < 1e-2 max|v| (LeakyReLU kinks)
        np.testing.assert_allclose(dis, ref_dis, rtol=0, atol=1e-5)
        diff = vel - ref_vel
        assert np.sqrt(np.mean(diff**2)) < 1e-3 * ref_vel.std()
        assert np.abs(diff).max() < 1e-2 * np.abs(ref_vel).max()
    else:
        # float64 CPU convolutions are slow: one jvp, with the reference's exact inputs (it fed D
        # rounded to float32; the model computes D in float64, ~1e-8 away), float64 agrees to round-off: ~1e-10 absolute, 1e-9 relative
        dz32 = torch.tensor(float(np.load(case / "dz.npy")[0]), dtype=dt)
        with torch.no_grad():
            out, tangent = zdep_forward(model.net, x104.to(dt), torch.tensor(om, dtype=dt), dz32, method="jvp")
        np.testing.assert_allclose(out.numpy(), ref_dis, rtol=0, atol=1e-10)
        np.testing.assert_allclose(tangent.numpy(), ref_vel, rtol=0, atol=1e-9 * np.abs(ref_vel).max())


def test_zdep_velocity_equals_finite_difference():
    """Independent of the golden file: the jvp equals a central difference in D (float64, narrow net)."""
    torch.manual_seed(3)
    net = StyledVNet(2, width=8).double()
    x = torch.randn(1, 3, 104, 104, 104, dtype=torch.float64)
    om = torch.tensor(0.3, dtype=torch.float64)
    dz = torch.tensor(0.7, dtype=torch.float64)
    def f(d):
        return zdep_forward(net, x, om, d, velocity=False)[0]

    with torch.no_grad():
        _, jvp = zdep_forward(net, x, om, dz, method="jvp")
        h = 1e-7
        fd = (f(dz + h) - f(dz - h)) / (2 * h)
    # float64, h = 1e-7: round-off ~1e-16/h ~ 1e-9; LeakyReLU kinks crossed inside [D-h, D+h] add an
    # O(h) error to the outputs whose receptive field holds them (measured: rms ~7e-8 relative)
    err = (jvp - fd).abs().flatten()
    assert err.pow(2).mean().sqrt() < 1e-6 * jvp.std()
    assert torch.quantile(err, 0.999) < 1e-5 * jvp.abs().max()


def test_emu_v2v_scalings_match_reference_table(golden):
    """SPEC 3.1: v2v input = ZA/6 * f(0,Om)/f(0,0.31), output * 6*100*f(0,0.31) = 313.4221 km/s.
    The factors are taken from the reference table, the network is a narrow random one."""
    import json

    from emu_backend.cosmology import growth_rate

    rows = {(r["Om"], r["z"]): r for r in json.loads((golden / "cosmology_table.json").read_text())}
    f_ref = rows[(0.31, 0.0)]["f"]
    assert 600 * f_ref == pytest.approx(313.4221, abs=1e-4)
    # the reference evaluates f(0, Om) at the float32 Omega_m read from its style file
    f_om = growth_rate(0.0, float(np.float32(0.3)))
    assert f_om == pytest.approx(rows[(0.3, 0.0)]["f"], rel=1e-7)  # float32 rounding of Om: ~2e-8
    torch.manual_seed(0)
    d2d, v2v = StyledVNet(1, width=4).double(), StyledVNet(1, width=4).double()
    x = torch.randn(1, 3, 104, 104, 104, dtype=torch.float64)
    # predict_tiles takes Mpc/h and divides by 6 itself; x is in network units
    _, vel = EmuConvention(d2d, v2v).predict_tiles(x * DIS_STD_MPC_H, 0.3, 0.0, velocity=True)
    with torch.no_grad():
        expected = v2v(x * (f_om / f_ref), emu_style(0.3, dtype=torch.float64)) * (600 * f_ref)
    # table values vs our closed forms agree to 1e-10 relative: float64 round-off level here
    torch.testing.assert_close(vel, expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("force_fallback", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_dual_velocity_equals_jvp(force_fallback):
    """The folded forward-mode path (default) equals torch.func.jvp through the network (float64)."""
    torch.manual_seed(11)
    net = StyledVNet(2, width=4).double()
    if force_fallback:  # a zero modulation makes every layer take the general two-convolution tangent
        style = torch.tensor([(0.25 - 0.3) * 5, growth_factor(0.5, 0.25) - 1], dtype=torch.float64)
        with torch.no_grad():
            for mod in net.modules():
                if hasattr(mod, "style_bias"):
                    mod.style_bias[0] = -(mod.style_weight[0] @ style)
                    assert abs(float(mod.style_weight[0] @ style + mod.style_bias[0])) < 1e-3
    x = torch.randn(1, 3, 104, 104, 104, dtype=torch.float64)
    dual = ZdepConvention(net, velocity_method="dual").predict_tiles(x, 0.25, 0.5, velocity=True)
    ref = ZdepConvention(net, velocity_method="jvp").predict_tiles(x, 0.25, 0.5, velocity=True)
    # same derivative, different association of the float64 sums: round-off ~1e-12 relative
    torch.testing.assert_close(dual[0], ref[0], rtol=0, atol=1e-10)
    torch.testing.assert_close(dual[1], ref[1], rtol=0, atol=1e-9 * ref[1].abs().max().item())



@pytest.mark.slow
def test_channels_last_layout_matches_the_golden_vectors(golden, x104):
    """The default CPU layout of :class:`Emulator` (channels-last) against the reference outputs, at the
    golden README's float32 tolerances (displacement max 1e-5 in network units; velocity rms 1e-3 std
    and max 1e-2 max|v|): the layout only changes the convolutions' float32 accumulation order."""
    cl = torch.channels_last_3d
    net = load_published(golden / "zdep" / "checkpoint.pt").to(memory_format=cl)
    case = golden / "zdep" / "tile_n104_om0p25_z1p0"
    om, z = 0.25, 1.0
    dis, vel = ZdepConvention(net).predict_tiles((x104 * DIS_STD_MPC_H).contiguous(memory_format=cl), om, z, velocity=True)
    ref_dis, ref_vel = np.load(case / "output.npy"), np.load(case / "velocity.npy")
    np.testing.assert_allclose(dis.numpy() / 6.0, ref_dis, rtol=0, atol=1e-5)
    diff = vel.numpy() / velocity_norm(z, om) - ref_vel
    assert np.sqrt(np.mean(diff**2)) < 1e-3 * ref_vel.std()
    assert np.abs(diff).max() < 1e-2 * np.abs(ref_vel).max()
