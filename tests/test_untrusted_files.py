"""Untrusted weight files: a JAX-port ``.npz`` is read without running anything it names.

The malicious files reference ``_pickle_canary.Canary`` (tests/_pickle_canary.py), a harmless class
whose import and instantiation leave a trace in a flag file; the checks run in a fresh interpreter,
with tests/ on ``sys.path`` so that a loader that tried to import the module would succeed.
"""

import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from _untrusted_inputs import (  # tests/_untrusted_inputs.py
    CANARY_CALL,
    malicious_npz,
    npz_with_payload,
    pickle_dumps,
)

from emu_backend.checkpoints import flax_from_state_dict, read_jax_npz, write_jax_npz
from emu_backend.errors import CheckpointError, FileFormatError
from emu_backend.inference import Emulator, ZdepConvention
from emu_backend.nn import StyledVNet

TESTS = Path(__file__).resolve().parent

# Loads a file both ways in a fresh interpreter and reports the errors and what was imported.
CHECKER = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, sys.argv[1])
    from emu_backend.checkpoints import read_jax_npz
    from emu_backend.inference import Emulator
    path, allow = sys.argv[2], sys.argv[3] == "1"
    report = {}
    for name, call in [("read_jax_npz", lambda: read_jax_npz(path, allow_pickle=allow)),
                       ("from_checkpoint", lambda: Emulator.from_checkpoint(path, allow_pickle=allow))]:
        try:
            call()
            report[name] = None
        except Exception as exc:
            report[name] = [type(exc).__name__, str(exc)]
    report["canary_imported"] = "_pickle_canary" in sys.modules
    report["flax_imported"] = "flax" in sys.modules
    print(json.dumps(report))
""")


@pytest.fixture(scope="module")
def state_dict():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return StyledVNet(2, width=4).state_dict()


def _check_in_fresh_process(path: Path, flag: Path, allow_pickle: bool) -> dict:
    env = dict(os.environ, EMU_PICKLE_CANARY=str(flag))
    proc = subprocess.run([sys.executable, "-c", CHECKER, str(TESTS), str(path), "1" if allow_pickle else "0"],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_malicious_npz_is_refused_and_never_imports(tmp_path, state_dict):
    evil = malicious_npz(tmp_path / "evil.npz", state_dict)
    flag = tmp_path / "canary.log"
    report = _check_in_fresh_process(evil, flag, allow_pickle=False)
    for name in ("read_jax_npz", "from_checkpoint"):
        assert report[name] is not None and report[name][0] == "CheckpointError", report
        assert "_pickle_canary.Canary" in report[name][1] and "refused without importing it" in report[name][1]
    assert report["canary_imported"] is False and not flag.exists()
    # the same file with allow_pickle=True (the caller's opt-in, threaded through from_checkpoint) does
    # import and instantiate the class: the payload is live, and only the default refuses it
    report = _check_in_fresh_process(evil, flag, allow_pickle=True)
    assert report["canary_imported"] is True
    assert flag.read_text().split() == ["imported", "instantiated", "instantiated"]  # instantiated by each loader
    for name in ("read_jax_npz", "from_checkpoint"):  # then the tree itself is rejected
        assert report[name][0] == "CheckpointError", report


def test_malicious_npz_in_process(tmp_path, state_dict):
    evil = malicious_npz(tmp_path / "evil.npz", state_dict, CANARY_CALL)
    before = "_pickle_canary" in sys.modules
    with pytest.raises(CheckpointError, match=r"names the global _pickle_canary\.Canary"):
        read_jax_npz(evil)
    with pytest.raises(CheckpointError, match=r"names the global _pickle_canary\.Canary"):
        Emulator.from_checkpoint(evil)
    assert ("_pickle_canary" in sys.modules) == before


@pytest.mark.parametrize("replacement,match", [
    (b"cos\nsystem\n", r"global os\.system"),
    (b"cbuiltins\neval\n", r"global builtins\.eval"),
    (b"cnumpy\nload\n", r"global numpy\.load"),  # an allowed module, a name outside the list
    (b"cnumpy\nndarray\n(J\x00\xe4\x0bT\x85tR", r"numpy\.ndarray called directly"),  # np.ndarray((2e11,))
    (b"X\x03\x00\x00\x00abc", r"conv_l00\.conv_0\.payload holds str, expected a numeric array"),
])
def test_refused_payloads(tmp_path, state_dict, replacement, match):
    with pytest.raises(CheckpointError, match=match):
        read_jax_npz(malicious_npz(tmp_path / "evil.npz", state_dict, replacement))


def test_non_numeric_leaves_are_refused(tmp_path, state_dict):
    for leaf, match in [(np.array(["a"]), r"dtype 'U1' is not part of a parameter tree"),
                        (np.array([{"x": 1}], dtype=object), r"payload holds an array of dtype object"),
                        (np.zeros(2, dtype=[("a", "f4")]), r"not part of a parameter tree")]:
        tree = flax_from_state_dict(state_dict)
        tree["conv_l00"]["conv_0"]["payload"] = leaf
        np.savez(tmp_path / "leaf.npz", params=np.array(tree, dtype=object))
        with pytest.raises(CheckpointError, match=match):
            read_jax_npz(tmp_path / "leaf.npz")
    np.savez(tmp_path / "list.npz", params=np.array([1.0, 2.0]))  # a numeric array, no tree
    with pytest.raises(CheckpointError, match="expected a pickled parameter tree"):
        read_jax_npz(tmp_path / "list.npz")
    (tmp_path / "trunc.npz").write_bytes((tmp_path / "leaf.npz").read_bytes()[:300])
    with pytest.raises(FileFormatError, match="not a readable .npz parameter file"):
        read_jax_npz(tmp_path / "trunc.npz")


def _same(sd1, sd2):
    assert list(sd1) == list(sd2)
    for k in sd1:
        assert sd1[k].dtype == torch.float32 and torch.equal(sd1[k], sd2[k]), k  # exact: float32 in and out


def _emulator_state(emu):
    return emu.model.networks["displacement"].state_dict()


def test_legitimate_files_round_trip_without_pickle(tmp_path, state_dict):
    write_jax_npz(state_dict, tmp_path / "ours.npz")
    tree = flax_from_state_dict(state_dict)
    obj = np.empty((), dtype=object)  # as the JAX port saves its tree: an object array in np.savez
    obj[()] = tree
    np.savez(tmp_path / "port.npz", params=obj)
    wrapped = np.empty((), dtype=object)
    wrapped[()] = {"params": tree}  # the loader's {'params': tree} wrapper
    np.savez_compressed(tmp_path / "wrapped.npz", params=wrapped)
    for name in ("ours.npz", "port.npz", "wrapped.npz"):
        _same(read_jax_npz(tmp_path / name), state_dict)
        _same(read_jax_npz(tmp_path / name, allow_pickle=True), state_dict)
        emu = Emulator.from_checkpoint(tmp_path / name)
        assert isinstance(emu.model, ZdepConvention)
        _same(_emulator_state(emu), state_dict)


def test_flax_frozen_dict_is_read_as_a_dict_without_flax(tmp_path, state_dict, monkeypatch):
    """A tree pickled as Flax ``FrozenDict``s (``FrozenDict(dict)`` in the pickle) loads without Flax."""
    assert "flax" not in sys.modules

    class FrozenDict(dict):  # a stand-in pickled under Flax's name, as flax.core.frozen_dict.FrozenDict
        def __reduce__(self):
            return FrozenDict, (dict(self),)

    FrozenDict.__module__, FrozenDict.__qualname__ = "flax.core.frozen_dict", "FrozenDict"
    with monkeypatch.context() as m:
        for name in ("flax", "flax.core", "flax.core.frozen_dict"):
            m.setitem(sys.modules, name, types.ModuleType(name))
        m.setattr(sys.modules["flax.core.frozen_dict"], "FrozenDict", FrozenDict, raising=False)
        tree = flax_from_state_dict(state_dict)
        frozen = FrozenDict({b: FrozenDict({s: FrozenDict(leaves) for s, leaves in subs.items()})
                             for b, subs in tree.items()})
        data = pickle_dumps(np.array(FrozenDict(params=frozen), dtype=object))
    assert b"flax.core.frozen_dict\nFrozenDict" in data and "flax" not in sys.modules
    _same(read_jax_npz(npz_with_payload(tmp_path / "frozen.npz", data)), state_dict)
    assert "flax" not in sys.modules
