"""Hostile and unlucky inputs shared by tests: malicious JAX-port ``.npz`` files and the bad-input
table's cases for untrusted weights and resumed runs.

The malicious files reference ``_pickle_canary.Canary`` (tests/_pickle_canary.py) without importing
it: the pickle of a legitimate parameter tree is written with a placeholder string whose opcodes are
then swapped for a GLOBAL opcode and a call. :func:`reliability_cases` adds rows to the table of
``tests/test_bad_inputs.py`` (and so to docs/reliability.md); it takes that module's ``Case`` class.
"""

import io
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import torch
from numpy.lib import format as npy_format

from emu_backend.checkpoints import flax_from_state_dict, read_jax_npz
from emu_backend.errors import CheckpointError, InputError
from emu_backend.inference import Emulator
from emu_backend.inference.streaming import predict_to_file
from emu_backend.nn import StyledVNet

SENTINEL = "__CANARY_SENTINEL__"  # a string leaf whose pickle opcodes are swapped for a global
#: GLOBAL ``_pickle_canary.Canary``, EMPTY_TUPLE, REDUCE: ``Canary()`` for a full unpickler.
CANARY_CALL = b"c_pickle_canary\nCanary\n)R"


def pickle_dumps(obj) -> bytes:
    """``obj`` pickled as ``np.savez`` does for object arrays, with protocol 3 (GLOBAL opcodes are text)."""
    return pickle.dumps(obj, protocol=3)


def npz_with_payload(path: Path, payload: bytes) -> Path:
    """An ``.npz`` whose ``params.npy`` is a 0-d object array header followed by ``payload``."""
    member = io.BytesIO()
    npy_format.write_array_header_1_0(member, {"descr": "|O", "fortran_order": False, "shape": ()})
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("params.npy", member.getvalue() + payload)
    return Path(path)


def malicious_npz(path: Path, state_dict, replacement: bytes = CANARY_CALL) -> Path:
    """A port-style ``.npz`` of ``state_dict`` whose tree also holds ``replacement`` (pickle opcodes) at
    ``conv_l00.conv_0.payload``."""
    tree = flax_from_state_dict(state_dict)
    tree["conv_l00"]["conv_0"]["payload"] = SENTINEL
    obj = np.empty((), dtype=object)
    obj[()] = tree
    data = pickle_dumps(obj)
    encoded = b"X" + len(SENTINEL).to_bytes(4, "little") + SENTINEL.encode()
    assert data.count(encoded) == 1
    return npz_with_payload(path, data.replace(encoded, replacement))


def _state_dict():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return StyledVNet(2, width=2).state_dict()


def _evil(folder: Path) -> Path:
    path = Path(folder) / "canary.npz"
    return path if path.exists() else malicious_npz(path, _state_dict())


def _string_leaf(folder: Path) -> Path:
    tree = flax_from_state_dict(_state_dict())
    tree["conv_l00"]["conv_0"]["payload"] = np.array(["x"])
    np.savez(Path(folder) / "string_leaf.npz", params=np.array(tree, dtype=object))
    return Path(folder) / "string_leaf.npz"


def _resume_with_replaced_input(emu, folder: Path):
    """Leave a partial run of an 8^3 box, replace its input by new content of the same size and
    modification time, and resume: the run record's content digest refuses it."""
    folder = Path(folder) / "replaced_input"
    folder.mkdir(exist_ok=True)
    src, dst = folder / "lin.npy", folder / "out.h5"
    np.save(src, np.zeros((3, 8, 8, 8), np.float32))

    def stop(next_tile, n_tiles):
        raise KeyboardInterrupt

    try:
        predict_to_file(emu, src, dst, 0.3, 0.0, tile_size=8, velocity=False, on_batch=stop)
    except KeyboardInterrupt:
        pass
    stat = src.stat()
    np.save(src, np.ones((3, 8, 8, 8), np.float32))
    os.utime(src, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    return predict_to_file(emu, src, dst, 0.3, 0.0, tile_size=8, velocity=False)


def reliability_cases(case) -> list:
    """Rows of the bad-input table: ``case`` is ``tests/test_bad_inputs.py``'s ``Case``; the calls get
    its ``ctx`` (a temporary ``dir`` and an ``emu``)."""
    refused = r"names the global _pickle_canary\.Canary, which is not part of a parameter tree .*refused without importing it"
    return [
        case("jax-pickle-global", "reader", "read_jax_npz of an .npz whose pickle calls a class "
             "(_pickle_canary.Canary, a harmless stand-in): never imported", lambda c: read_jax_npz(_evil(c.dir)),
             CheckpointError, refused),
        case("jax-pickle-from-checkpoint", "API", "Emulator.from_checkpoint of that .npz (allow_pickle=False, the "
             "default)", lambda c: Emulator.from_checkpoint(_evil(c.dir)), CheckpointError, refused),
        case("jax-string-leaf", "reader", "read_jax_npz of a tree with a string array among the weights",
             lambda c: read_jax_npz(_string_leaf(c.dir)), CheckpointError, r"dtype 'U1' is not part of a parameter tree"),
        case("stream-input-replaced", "API", "predict_to_file resuming after its input was replaced by other "
             "values of the same size and modification time", lambda c: _resume_with_replaced_input(c.emu, c.dir),
             InputError, r"written by a different run \(input_sha256: recorded '[0-9a-f]{64}', now '[0-9a-f]{64}'\)"),
    ]
