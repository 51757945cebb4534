"""Operating-system, allocation and device errors become the package's errors: exit status 2, one line.

A full disk is a file-size limit here (``RLIMIT_FSIZE`` in a child process; Python ignores SIGXFSZ, so
writes fail with EFBIG, as they fail with ENOSPC on a full disk): ``predict`` and ``run`` (Gadget and
field files) exit 2 naming the file and leave no lock, partial or temporary file. An address-space
limit (``RLIMIT_AS``) makes a large run fail to allocate: exit 2, "out of memory". The pre-flight
checks refuse an output that is a folder, under a file, or in a read-only folder (not as root, who
may write anywhere), and a disk with less free space than the output needs, before anything is
computed. The output paths' cases are rows of the bad-input table (``tests/_writer_inputs.py``).
"""

import errno
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from _tiny_model import random_linear, seeded_model_file  # tests/_tiny_model.py

import emu_backend.cli.run as cli_run
from emu_backend.cli.main import main
from emu_backend.errors import ComputationError, InputError, ResourceError, from_system_error
from emu_backend.io.output_path import check_free_space, check_writable

# In a child: main() under a 20 kB file-size limit, then under an address-space limit; prints one JSON
# line per call: the exit code and what went to stderr.
CHILD = textwrap.dedent("""
    import contextlib, io, json, resource, sys
    from emu_backend.cli.main import main

    def call(name, argv):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = main(argv)
        print(json.dumps({"name": name, "code": code, "stderr": err.getvalue()}), flush=True)

    d = sys.argv[1]
    predict = ["predict", d + "/lin.npy", d + "/out.h5", "--omega-m", "0.3", "--z", "0.5", "--weights",
               d + "/model.emu", "--tile", "8", "--no-velocity"]
    run = ["run", "--backend", "za", "-n", "16", "--z", "0", "--no-plot"]
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, resource.RLIM_INFINITY))
    call("predict", predict)
    call("run-gadget", run + ["--out", d + "/gadget"])
    call("run-fields", run + ["--format", "fields", "--out", d + "/fields"])
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    with open("/proc/self/statm") as fh:
        used = int(fh.read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (used + 300 * 2**20, resource.RLIM_INFINITY))
    call("run-memory", ["run", "--backend", "za", "-n", "256", "--z", "0", "--no-plot", "--out", d + "/big"])
""")


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    """The child's results by name, and its folder."""
    d = tmp_path_factory.mktemp("os_errors")
    seeded_model_file(d / "model.emu", width=2)
    np.save(d / "lin.npy", random_linear(16, seed=2))
    (d / "child.py").write_text(CHILD)
    proc = subprocess.run([sys.executable, str(d / "child.py"), str(d)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return {r["name"]: r for r in map(json.loads, proc.stdout.splitlines())}, d


@pytest.mark.parametrize("name,path", [("predict", "out.h5"), ("run-gadget", "gadget"), ("run-fields", "fields")])
def test_full_disk_exits_2_naming_the_file(limited, name, path):
    results, d = limited
    result = results[name]
    assert result["code"] == 2, result["stderr"]
    [line] = result["stderr"].strip().splitlines()  # one line, no traceback
    assert line.startswith(f"error: '{d / path}") and "file-size limit" in line and "(EFBIG)" in line, line
    leftovers = sorted(p.name for p in d.iterdir())
    assert leftovers == ["child.py", "lin.npy", "model.emu"], leftovers  # no lock, partial, temporary, folder


def test_failed_allocation_exits_2(limited):
    result = limited[0]["run-memory"]
    assert result["code"] == 2, result["stderr"]
    [line] = result["stderr"].strip().splitlines()
    assert line.startswith("error: ") and "memory" in line, line


def test_output_checks_before_computing(tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "dir.h5").mkdir()
    with pytest.raises(InputError, match=r"is a folder; give a file name"):
        check_writable(tmp_path / "dir.h5")
    with pytest.raises(InputError, match=r"output folder '.*file' is a file; give a folder"):
        check_writable(tmp_path / "file", folder=True)
    with pytest.raises(InputError, match=r"cannot write '.*file/a/b\.h5': '.*file' is a file, not a folder"):
        check_writable(tmp_path / "file" / "a" / "b.h5")
    assert check_writable(tmp_path / "new" / "deeper" / "out.h5").name == "out.h5"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.h5", "file"]  # nothing created, no probe left


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only folder")
def test_read_only_folder_is_refused(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(InputError, match=r"permission denied \(EACCES\)"):
            check_writable(folder / "out.h5")
    finally:
        folder.chmod(0o700)


def test_not_enough_free_space(tmp_path):
    with pytest.raises(ResourceError, match=r"not enough disk space for x: needs 1e\+09 GB in '.*', [0-9.e+]+ GB free"):
        check_free_space(tmp_path, 10**18, "x")
    check_free_space(tmp_path, 1, "x")


@pytest.mark.parametrize("code,cls,text", [
    (errno.ENOSPC, ResourceError, "no space left on the device (ENOSPC)"),
    (errno.EDQUOT, ResourceError, "disk quota exceeded (EDQUOT)"),
    (errno.EFBIG, ResourceError, "(EFBIG)"),
    (errno.EACCES, InputError, "permission denied (EACCES)"),
    (errno.EROFS, InputError, "read-only file system (EROFS)"),
    (errno.ENOTDIR, InputError, "a component of the path is a file, not a folder (ENOTDIR)"),
    (errno.EISDIR, InputError, "a folder where a file is expected (EISDIR)"),
    (errno.EIO, ComputationError, "Input/output error"),
])
def test_os_errors_by_errno(code, cls, text):
    error = from_system_error(OSError(code, os.strerror(code), "/data/out.h5"))
    assert type(error) is cls and str(error).startswith("'/data/out.h5': ") and text in str(error), error
    h5py_style = RuntimeError(f"Can't write data (file write failed: time = Mon, filename = 'x.h5', file descriptor "
                              f"= 3, errno = {code}, error message = '{os.strerror(code)}', buf = 0x1)")
    assert type(from_system_error(h5py_style)) is cls  # h5py's errors carry the errno in their text


def test_allocation_and_device_errors():
    assert isinstance(from_system_error(MemoryError()), ResourceError)
    oom = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79 GiB total)\nmore")
    error = from_system_error(oom)
    assert isinstance(error, ResourceError) and "\n" not in str(error) and "Tried to allocate 2.00 GiB" in str(error)
    cpu = RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried "
                       "to allocate 1099511627776 bytes")
    assert isinstance(from_system_error(cpu), ResourceError)
    assert from_system_error(RuntimeError("shape mismatch")) is None
    assert from_system_error(InputError("x")) is None  # already the package's


@pytest.mark.parametrize("exc,match", [
    (OSError(errno.ENOSPC, "No space left on device", "/scratch/out.h5"), "'/scratch/out.h5': no space left"),
    (MemoryError("Unable to allocate 8.00 GiB for an array"), "out of memory: Unable to allocate 8.00 GiB"),
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"), "device out of memory: CUDA out"),
])
def test_cli_turns_system_errors_into_one_line(monkeypatch, capsys, exc, match):
    def handle(args):
        raise exc

    monkeypatch.setattr(cli_run, "handle", handle)
    assert main(["run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {match}") and len(err.strip().splitlines()) == 1, err


def test_cli_leaves_other_errors_alone(monkeypatch):
    def handle(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(cli_run, "handle", handle)
    with pytest.raises(RuntimeError, match="a bug"):  # a traceback: not hidden behind a package error
        main(["run"])

