"""Inference precisions (autocast, TF32) and torch.compile: options, errors and accuracy."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from emu_backend.checkpoints import load_published
from emu_backend.cosmology import growth_factor
from emu_backend.errors import InputError
from emu_backend.inference import Emulator, ZdepConvention
from emu_backend.inference.acceleration import emulate_precision, precision_context, round_to
from emu_backend.nn import DIS_STD_MPC_H, StyledConv3d, StyledVNet, velocity_norm
from emu_backend.nn.styled_conv import foldable_tangent

CPU = torch.device("cpu")


@pytest.mark.parametrize("kw, words", [
    (dict(precision="fp8"), ["'fp8'", "fp32", "tf32", "bf16", "fp16"]),
    (dict(precision="tf32"), ["'tf32'", "CUDA", "'cpu'"]),
    (dict(precision="bf16", dtype="float64"), ["'bf16'", "float32", "float64"]),
    (dict(compile_mode="fastest"), ["'fastest'", "reduce-overhead"]),
])
def test_bad_run_options_name_value_and_allowed(kw, words):
    with pytest.raises(InputError) as err:
        Emulator(ZdepConvention(StyledVNet(2, width=2)), **kw)
    for w in words:
        assert w in str(err.value)


def test_precision_context_sets_and_restores_autocast():
    x, w = torch.randn(1, 2, 5, 5, 5), torch.randn(2, 2, 3, 3, 3)
    with precision_context("bf16", CPU):
        assert F.conv3d(x, w).dtype == torch.bfloat16
    with precision_context("fp32", CPU):
        assert F.conv3d(x, w).dtype == torch.float32
    assert not torch.is_autocast_enabled("cpu")
    assert F.conv3d(x, w).dtype == torch.float32


@pytest.mark.parametrize("precision, ulp", [("tf32", 2.0**-11), ("fp16", 2.0**-11), ("bf16", 2.0**-8)])
def test_round_to_keeps_the_format_mantissa(precision, ulp):
    # independent reference: a value is representable iff rounding it again changes nothing, and the
    # relative rounding error is at most half a unit in the last place (2^-11 for 10 mantissa bits)
    t = torch.randn(10_000, generator=torch.Generator().manual_seed(0))
    r = round_to(t, precision)
    assert torch.equal(round_to(r, precision), r)
    rel = ((r - t).abs() / t.abs()).max().item()
    assert ulp / 4 < rel <= ulp * (1 + 1e-6)
    if precision != "tf32":  # the cast itself is the reference for the two autocast formats
        assert torch.equal(r, t.to(getattr(torch, {"fp16": "float16", "bf16": "bfloat16"}[precision])).float())


def test_styled_weights_are_folded_in_float32_under_autocast():
    # modulation/demodulation in float32, then the convolution in bf16: the result equals the bf16
    # convolution of the float32-folded weight exactly (the same kernel on the same rounded operands)
    torch.manual_seed(0)
    conv = StyledConv3d(2, 4, 4, "conv")
    x, s = torch.randn(1, 4, 7, 7, 7), torch.tensor([0.3, -0.2])
    w32 = conv.folded_weight(s)
    with torch.no_grad(), precision_context("bf16", CPU):
        y = conv(x, s)
        ref = F.conv3d(x, w32, conv.bias)
    assert y.dtype == torch.bfloat16
    assert torch.equal(y, ref)
    # folding under autocast instead (the modulation's matmul in bf16) gives other weights, so the
    # test can tell the difference
    with torch.autocast("cpu", dtype=torch.bfloat16):
        w16 = conv.folded_weight(s)
    assert not torch.equal(w16, w32)


@pytest.fixture(scope="module")
def golden_errors(golden):
    """Max |error| / std against the reference's float64 output, (displacement, velocity), per run
    ``(precision, emulated)``; each run computed once for the module."""
    net = load_published(golden / "zdep" / "checkpoint.pt")
    case = golden / "zdep" / "tile_n104_om0p25_z1p0"
    x = torch.from_numpy(np.load(golden / "input_n104.npy"))
    ref_d, ref_v = np.load(case / "output_f64.npy"), np.load(case / "velocity_f64.npy")
    om, z = 0.25, 1.0
    cache = {}

    def errors(precision="fp32", emulated=None):
        if (precision, emulated) not in cache:
            emu = Emulator(ZdepConvention(net), precision=precision, memory_format="contiguous")
            with torch.no_grad(), precision_context(emu.precision, emu.device), \
                    (emulate_precision(emulated) if emulated else precision_context("fp32", CPU)):
                dis, vel = emu.model.predict_tiles(x * DIS_STD_MPC_H, om, z, True)  # golden input: network units
            d = dis.float().numpy() / 6.0
            v = vel.float().numpy() / float(velocity_norm(z, om))
            cache[precision, emulated] = (np.abs(d - ref_d).max() / ref_d.std(), np.abs(v - ref_v).max() / ref_v.std())
        return cache[precision, emulated]

    assert growth_factor(z, om) > 0
    return errors


@pytest.mark.slow
def test_bf16_autocast_error_on_golden_vectors_and_its_emulation(golden_errors):
    fp32, bf16, emul = golden_errors(), golden_errors("bf16"), golden_errors(emulated="bf16")
    # float32: the golden README's floor (1e-5 absolute on outputs of std ~1)
    assert max(fp32) < 1e-5
    # autocast really ran: far above the float32 floor
    assert all(100 * e32 < e16 for e32, e16 in zip(fp32, bf16))
    # bf16 keeps 8 significant bits (2^-9 relative per rounding); measured 1.3e-2 (displacement) and
    # 0.18 (velocity: the D-derivative of these random weights amplifies round-off); bounds at ~3x
    assert bf16[0] < 0.04 and bf16[1] < 0.5
    # the emulation (rounded convolution operands and outputs) reproduces real autocast's error
    # within a factor 2 (autocast also rounds some element-wise results), so its tf32/fp16 estimates
    # in docs/performance.md are credible
    for e_real, e_emul in zip(bf16, emul):
        assert 0.5 < e_emul / e_real < 2.0


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["tf32", "fp16"])
def test_emulated_10_bit_formats_between_fp32_and_bf16(golden_errors, precision):
    # 11 significant bits (tf32, fp16) against bf16's 8: 8x smaller round-off, far above float32;
    # measured ~10x smaller on the displacement and 2.5-3.5x on the (noisier) velocity
    (f32_d, f32_v), (e_d, e_v), (b_d, b_v) = golden_errors(), golden_errors(emulated=precision), golden_errors(emulated="bf16")
    assert 10 * f32_d < e_d < b_d / 3
    assert 10 * f32_v < e_v < b_v / 1.5


@pytest.mark.parametrize("velocity", [False, True])
def test_compiled_network_traces_as_one_graph(velocity):
    """torch.compile sees the whole network as one graph, displacement and the dual-number velocity path
    alike: a graph break splits it into per-layer frames that Dynamo recompiles for every level's shape,
    until its recompile limit (8) sends the remaining levels back to eager. Reference: Dynamo's own
    ``explain`` (the same tracer ``torch.compile`` runs), no compilation. The input is the smallest zdep
    tile, so that the lower levels' activations take the small-convolution oneDNN test of
    ``emu_backend.nn.modulated_conv`` -- whose call to ``torch.backends.mkldnn.is_available`` (a function
    Dynamo does not trace) broke the graph at all 34 convolutions once."""
    from emu_backend.inference.models import zdep_forward

    torch.manual_seed(0)
    net = StyledVNet(2, width=4).eval()
    x = torch.randn(1, 3, 104, 104, 104)
    om, dz = torch.tensor(0.3), torch.tensor(0.8)
    torch._dynamo.reset()
    with torch.no_grad():
        found = torch._dynamo.explain(
            lambda t: zdep_forward(net, t, om, dz, velocity=velocity, runner=net))(x)
    assert (found.graph_count, found.graph_break_count) == (1, 0), [b.reason for b in found.break_reasons][:3]


@pytest.mark.slow
def test_compiled_network_matches_eager():
    # torch.compile (inductor) fuses and reorders float32 element-wise work: agreement to 1e-5 of the
    # output's spread (measured ~1e-6); velocities go through the same compiled forward-mode network,
    # traced as one graph (torch.cond for the tangent's two formulas; compiling takes ~80 s here)
    torch.manual_seed(0)
    net = StyledVNet(2, width=4)
    x = np.random.default_rng(1).normal(0, 2.0, (3, 8, 8, 8)).astype(np.float32)
    eager = Emulator(ZdepConvention(net)).predict(x, 0.3, 0.5, tile_size=8)
    comp = Emulator(ZdepConvention(net), compile_mode="default").predict(x, 0.3, 0.5, tile_size=8)
    assert comp.meta["compile_mode"] == "default" and eager.meta["precision"] == "fp32"
    for a, b in ((eager.displacement, comp.displacement), (eager.velocity, comp.velocity)):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-5 * a.std())
    assert not np.array_equal(eager.displacement, x)  # the network did something


@pytest.mark.slow
def test_compiled_emulator_falls_back_to_eager_where_the_tangent_needs_two_convolutions():
    # a zero modulation (style weight and bias 0 on one input channel) makes the one-convolution
    # tangent formula invalid: the compiled graph has only that formula, so the emulator must run the
    # eager network (both formulas), giving the eager result bit for bit
    torch.manual_seed(0)
    net = StyledVNet(2, width=4)
    layer = net.conv_l01.convs[0]
    with torch.no_grad():
        layer.style_weight[1].zero_()
        layer.style_bias[1] = 0.0
    style = torch.tensor([0.1, -0.2])
    assert not foldable_tangent(net, style) and foldable_tangent(StyledVNet(2, width=4), style)
    x = np.random.default_rng(2).normal(0, 2.0, (3, 8, 8, 8)).astype(np.float32)
    eager = Emulator(ZdepConvention(net)).predict(x, 0.3, 0.5, tile_size=8)
    comp = Emulator(ZdepConvention(net), compile_mode="default").predict(x, 0.3, 0.5, tile_size=8)
    assert np.array_equal(comp.velocity, eager.velocity)


def test_flop_count_on_the_meta_device_equals_torchs_counter_on_a_real_forward():
    """``network_flops`` runs the network on the ``meta`` device (shapes only). Reference: torch's own
    ``FlopCounterMode`` over a real CPU forward of the same architecture, convolutions only (the counter
    also counts the style mapping's matmuls, which ``network_flops`` leaves out as negligible). Both count
    2 FLOPs per multiply-add from the same shapes, so they must agree exactly. The small activations'
    convolutions go to oneDNN directly (``aten.mkldnn_convolution``, emu_backend.nn.modulated_conv.conv),
    which the counter does not know: they are counted with the counter's own convolution formula."""
    from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

    from emu_backend.nn.flops import network_flops

    torch.manual_seed(0)
    net = StyledVNet(2, width=4)
    n = 2 * 48 + 8  # the smallest zdep input: 48 cells of context per side around an 8^3 output tile
    def onednn(x_shape, w_shape, *args, out_shape, **kwargs):
        return conv_flop_count(x_shape, w_shape, out_shape)

    counter = FlopCounterMode(display=False, custom_mapping={torch.ops.aten.mkldnn_convolution: onednn})
    with counter, torch.no_grad():
        net(torch.randn(1, 3, n, n, n), torch.tensor([0.3, 0.8]))
    counts = counter.get_flop_counts()["Global"]
    conv = sum(v for op, v in counts.items() if "convolution" in str(op))
    assert conv > 0
    assert network_flops(net, n) == conv


def test_precision_context_and_network_run_on_the_meta_device():
    """Every device type torch knows: on ``meta`` (no autocast there) fp32 runs the styled network for
    shapes, and a 16-bit precision is refused naming the device type instead of torch's
    'unknown device type for autocast'."""
    net = StyledVNet(2, width=4).to("meta")
    x = torch.empty(1, 3, 104, 104, 104, device="meta")
    with precision_context("fp32", torch.device("meta")):
        y = net(x, torch.empty(2, device="meta"))
    assert y.shape == (1, 3, 8, 8, 8) and y.device.type == "meta"
    with pytest.raises(InputError, match="autocast, which device type 'meta' does not have"):
        with precision_context("bf16", torch.device("meta")):
            pass
