"""Checkpoints: published .pt files (strict), the JAX port's .npz mapping, our own format."""


import numpy as np
import pytest
import torch
import torch.nn.functional as F

from emu_backend.checkpoints import (
    flax_from_state_dict,
    load_model_file,
    load_published,
    read_jax_npz,
    save_model_file,
    state_dict_from_flax,
    write_jax_npz,
)
from emu_backend.errors import CheckpointError, FileFormatError
from emu_backend.inference import EmuConvention, Emulator, ZdepConvention
from emu_backend.nn import StyledConv3d, StyledVNet


@pytest.fixture(scope="module")
def narrow_sd():
    torch.manual_seed(0)
    return StyledVNet(2, width=4).state_dict()


def _same(sd1, sd2):
    assert list(sd1) == list(sd2)
    for k in sd1:
        assert torch.equal(sd1[k], sd2[k]), k


def test_published_wrappings_load(tmp_path, narrow_sd):
    for name, obj in [("wrapped.pt", {"model": narrow_sd, "epoch": 3, "min_loss": 0.1}),
                      ("bare.pt", narrow_sd),
                      ("ddp.pt", {"model": {f"module.{k}": v for k, v in narrow_sd.items()}})]:
        torch.save(obj, tmp_path / name)
        _same(load_published(tmp_path / name).state_dict(), narrow_sd)


def test_golden_checkpoints_load_with_expected_kind(golden):
    assert isinstance(Emulator.from_checkpoint(golden / "zdep" / "checkpoint.pt").model, ZdepConvention)
    assert isinstance(Emulator.from_checkpoint(golden / "emu_d2d" / "checkpoint.pt").model, EmuConvention)


def test_emu_pair_with_velocity_checkpoint(golden):
    emu = Emulator.from_checkpoint(golden / "emu_d2d" / "checkpoint.pt", model="emu",
                                   velocity_checkpoint=golden / "emu_d2d" / "checkpoint.pt")
    assert emu.model.has_velocity


@pytest.mark.parametrize("damage,pattern", [
    (lambda sd: sd.pop("conv_c.skip.bias"), r"missing tensors \['conv_c.skip.bias'\]"),
    (lambda sd: sd.__setitem__("extra.weight", torch.zeros(1)), r"unexpected tensors \['extra.weight'\]"),
    (lambda sd: sd.__setitem__("up_r1.convs.0.weight", torch.zeros(4, 4, 3, 3, 3)),
     r"up_r1.convs.0.weight: expected \(4, 4, 2, 2, 2\), found \(4, 4, 3, 3, 3\)"),
])
def test_strict_loading_names_the_tensor(tmp_path, narrow_sd, damage, pattern):
    sd = dict(narrow_sd)
    damage(sd)
    torch.save({"model": sd}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=pattern):
        load_published(tmp_path / "bad.pt")


def test_wrong_architecture_for_kind(tmp_path, narrow_sd):
    torch.save({"model": narrow_sd}, tmp_path / "zdep.pt")
    with pytest.raises(CheckpointError, match="style size 2, this model kind needs 1"):
        Emulator.from_checkpoint(tmp_path / "zdep.pt", model="emu")


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04truncated"])
def test_corrupt_files(tmp_path, content):
    (tmp_path / "x.pt").write_bytes(content)
    with pytest.raises(FileFormatError):
        load_published(tmp_path / "x.pt")


def test_missing_file(tmp_path):
    with pytest.raises(FileFormatError, match="does not exist"):
        Emulator.from_checkpoint(tmp_path / "nope.pt")


def test_pickled_objects_refused_by_default(tmp_path, narrow_sd):
    torch.save({"model": narrow_sd, "rng": np.random.default_rng(0)}, tmp_path / "rng.pt")
    with pytest.raises(CheckpointError, match="allow_pickle=True"):
        load_published(tmp_path / "rng.pt")
    _same(load_published(tmp_path / "rng.pt", allow_pickle=True).state_dict(), narrow_sd)


# -- the JAX port ---------------------------------------------------------------------------------
def test_jax_round_trip(tmp_path, narrow_sd):
    tree = flax_from_state_dict(narrow_sd)
    assert set(tree["conv_l00"]) == {"conv_0", "conv_1", "skip"} and set(tree["up_r0"]) == {"conv_0"}
    _same(state_dict_from_flax(tree), narrow_sd)
    _same(state_dict_from_flax({"params": tree}), narrow_sd)  # the loader's {'params': ...} wrapper
    write_jax_npz(narrow_sd, tmp_path / "p.npz")
    _same(read_jax_npz(tmp_path / "p.npz"), narrow_sd)
    emu = Emulator.from_checkpoint(tmp_path / "p.npz")
    assert isinstance(emu.model, ZdepConvention)


def test_jax_upsampling_convention_numerically():
    """Independent check of the (out, in, k, k, k) + input-dilation layout of the JAX port: run the
    port's operation (zero-insert the input, pad by 1, plain conv with its weights) and compare with our
    transposed convolution with the converted weights."""
    torch.manual_seed(1)
    layer = StyledConv3d(2, 3, 5, "up").double()
    style = torch.randn(2, dtype=torch.float64)
    x = torch.randn(1, 3, 4, 5, 6, dtype=torch.float64)
    with torch.no_grad():
        ours = layer(x, style)
        jax_leaf = flax_from_state_dict({f"up_r0.convs.0.{k}": v for k, v in layer.state_dict().items()})["up_r0"]["conv_0"]
        w = torch.from_numpy(jax_leaf["weight"]).double()  # (out, in, 2, 2, 2)
        m = style @ torch.from_numpy(jax_leaf["style_weight"]).double().T + torch.from_numpy(jax_leaf["style_bias"]).double()
        w = w * m[None, :, None, None, None]
        w = w / torch.sqrt((w**2).sum(dim=(1, 2, 3, 4), keepdim=True) + 1e-8)
        dil = torch.zeros(1, 3, 2 * 4 - 1, 2 * 5 - 1, 2 * 6 - 1, dtype=torch.float64)
        dil[:, :, ::2, ::2, ::2] = x
        theirs = F.conv3d(F.pad(dil, (1, 1, 1, 1, 1, 1)), w) + torch.from_numpy(jax_leaf["bias"]).double()[:, None, None, None]
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-12)  # float64 round-off


def test_jax_file_without_params(tmp_path):
    np.savez(tmp_path / "bad.npz", weights=np.zeros(3))
    with pytest.raises(CheckpointError, match="no 'params' entry"):
        read_jax_npz(tmp_path / "bad.npz")


# -- our own format -------------------------------------------------------------------------------
DOMAIN = {"omega_m": [0.1, 0.5], "z": [0.0, 3.0], "cell_size_mpc_h": 1000 / 512}


def test_native_round_trip_is_exact(tmp_path):
    torch.manual_seed(2)
    net = StyledVNet(2, width=4)
    checksum = save_model_file(tmp_path / "m.emu", "zdep", {"displacement": net}, DOMAIN,
                               provenance={"trained_on": "nothing", "steps": 0})
    mf = load_model_file(tmp_path / "m.emu")
    assert mf.kind == "zdep" and mf.checksum == checksum and mf.domain == DOMAIN
    assert mf.provenance["steps"] == 0 and mf.versions["torch"] == torch.__version__
    _same(mf.networks["displacement"].state_dict(), net.state_dict())
    assert mf.networks["displacement"].arch == net.arch
    emu = Emulator.from_checkpoint(tmp_path / "m.emu")
    assert emu.checksum == checksum and emu.model.domain.omega_m == (0.1, 0.5)


def test_native_emu_pair_and_emulator_save(tmp_path):
    torch.manual_seed(3)
    emu = Emulator(EmuConvention(StyledVNet(1, width=4), StyledVNet(1, width=4)))
    emu.save(tmp_path / "pair.emu")
    back = Emulator.from_checkpoint(tmp_path / "pair.emu")
    assert back.model.kind == "emu" and back.model.has_velocity and back.model.domain.z == (0.0, 0.0)
    _same(back.model.v2v.state_dict(), emu.model.v2v.state_dict())


def test_native_float16_storage(tmp_path):
    torch.manual_seed(4)
    net = StyledVNet(2, width=4)
    save_model_file(tmp_path / "h.emu", "zdep", {"displacement": net}, DOMAIN, storage_dtype="float16")
    back = load_model_file(tmp_path / "h.emu").networks["displacement"]
    for k, v in net.state_dict().items():
        # float16 keeps 11 significant bits: relative rounding <= 2^-11 (weights are O(0.01-1))
        torch.testing.assert_close(back.state_dict()[k], v, rtol=2**-11, atol=1e-7)


def test_native_checksum_detects_tampering(tmp_path):
    torch.manual_seed(5)
    net = StyledVNet(2, width=4)
    save_model_file(tmp_path / "m.emu", "zdep", {"displacement": net}, DOMAIN)
    obj = torch.load(tmp_path / "m.emu", weights_only=True)
    obj["networks"]["displacement"]["conv_c.convs.0.bias"][0] += 1e-3
    torch.save(obj, tmp_path / "tampered.emu")
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_model_file(tmp_path / "tampered.emu")
    obj = torch.load(tmp_path / "m.emu", weights_only=True)
    obj["domain"]["omega_m"] = [0.0, 1.0]
    torch.save(obj, tmp_path / "domain.emu")
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_model_file(tmp_path / "domain.emu")


def test_native_refuses_overwrite_and_truncation(tmp_path):
    net = StyledVNet(2, width=4)
    save_model_file(tmp_path / "m.emu", "zdep", {"displacement": net}, DOMAIN)
    with pytest.raises(Exception, match="already exists"):
        save_model_file(tmp_path / "m.emu", "zdep", {"displacement": net}, DOMAIN)
    data = (tmp_path / "m.emu").read_bytes()
    (tmp_path / "cut.emu").write_bytes(data[: len(data) // 2])
    with pytest.raises(FileFormatError):
        load_model_file(tmp_path / "cut.emu")
