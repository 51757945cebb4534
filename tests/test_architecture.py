"""The floor plan (docs/architecture.md): the layer contracts, the front door, and the import rules.

The contracts themselves (the layer stack, acyclic modules, private modules) are import-linter's, in
pyproject.toml; this file runs them as CI does and checks what import-linter does not see: imports made
inside functions, private names taken from another module, and what ``import emu_backend`` loads.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import emu_backend

ROOT = Path(__file__).resolve().parents[1]
#: source folder -> package name (pyproject's package-dir)
SOURCES = {ROOT / "emu_backend": "emu_backend", ROOT / "adapters": "emu_backend.adapters",
           ROOT / "validation": "emu_backend.validation"}
#: libraries a user may lack: imported inside the functions (of adapters mostly) that need them
OPTIONAL = {"classy", "jax", "jaxlib", "jaxpm", "jax_cosmo", "pmwd", "mcfit", "nbodykit", "halotools", "MAS_library",
            "ytree", "yt", "healpy", "Pk_library", "readgadget", "readfof", "hdf5plugin", "mpi4py", "numpyro"}


def _modules():
    """(path, dotted module name, is package) of every source module of the installed package."""
    for folder, package in SOURCES.items():
        for path in sorted(folder.rglob("*.py")):
            if package == "emu_backend" and path.relative_to(folder).parts[0] in ("adapters", "validation"):
                continue
            parts = list(path.relative_to(folder).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts = parts[:-1]
            yield path, ".".join([package, *parts]), is_package


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _function_level_imports(tree: ast.AST):
    def walk(node, in_function):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)) and in_function:
                yield child
            yield from walk(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))

    yield from walk(tree, False)


def test_import_linter_contracts_hold():
    """The layer stack, acyclic modules in every package and private modules, as `.ci/run` checks them."""
    if shutil.which("lint-imports") is None:
        pytest.skip("import-linter is not installed (pip install 'emu_backend[test]')")
    run = subprocess.run(["bash", str(ROOT / "scripts" / "lint_imports.sh")], capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout or "broken" not in run.stdout.split("Contracts:")[-1], run.stdout[-2000:]


def test_function_level_imports_are_optional_libraries_or_explained():
    """An import inside a function is an optional library, or an in-package import whose line (or the
    line above) says which cycle it breaks on purpose."""
    offenders = []
    for path, module, is_package in _modules():
        source = path.read_text()
        lines = source.splitlines()
        for node in _function_level_imports(ast.parse(source)):
            if isinstance(node, ast.ImportFrom):
                target = _absolute(node, module, is_package)
            else:
                target = node.names[0].name
            if target.split(".")[0] in OPTIONAL:
                continue
            context = " ".join(lines[max(node.lineno - 2, 0):node.lineno]).lower()
            if target.startswith("emu_backend") and "cycle" in context:
                continue
            offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {target} inside a function")
    assert not offenders, "\n".join(offenders)


def test_no_private_name_is_imported_from_another_module():
    """``from x import _name`` across modules hides a shared helper: make it public where it lives."""
    offenders = []
    modules = {module for _, module, _ in _modules()}
    for path, module, is_package in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                target = _absolute(node, module, is_package)
                if not target.startswith("emu_backend"):
                    continue
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__") \
                            and f"{target}.{alias.name}" not in modules:  # private modules: import-linter
                        offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {target}.{alias.name}")
    assert not offenders, "\n".join(offenders)


def _fresh_python(code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONSTARTUP"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)


def test_import_emu_backend_loads_no_optional_library_nor_torch():
    code = (
        "import sys, emu_backend\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {sorted(OPTIONAL | {'torch', 'matplotlib', 'h5py'})!r})\n"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    run = _fresh_python(code)
    assert run.returncode == 0, run.stdout + run.stderr


def test_front_door_imports_what_a_cosmologist_calls_without_optional_libraries():
    """``from emu_backend import simulate, InitialConditions, Cosmology, default_emulator`` works, runs a
    tiny ZA simulation, and still loads no optional library."""
    code = (
        "import sys\n"
        "from emu_backend import simulate, InitialConditions, Cosmology, default_emulator, QUIJOTE_FIDUCIAL\n"
        "ics = InitialConditions.from_noise(8, None, QUIJOTE_FIDUCIAL, seed=1)\n"
        "snaps = simulate(ics, QUIJOTE_FIDUCIAL, z=[0.0], backend='za')\n"
        "assert isinstance(QUIJOTE_FIDUCIAL, Cosmology) and snaps[0].grid == 8 and callable(default_emulator)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {sorted(OPTIONAL)!r})\n"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    run = _fresh_python(code)
    assert run.returncode == 0, run.stdout + run.stderr


def test_front_door_names_resolve_and_unknown_names_fail():
    for name in emu_backend.__all__:
        assert getattr(emu_backend, name) is not None, name
    assert set(emu_backend.__all__) <= set(dir(emu_backend))
    with pytest.raises(AttributeError, match="no attribute 'simulator_of_dreams'"):
        emu_backend.simulator_of_dreams  # noqa: B018


@pytest.mark.parametrize("package", ["cosmology", "datatypes", "ics", "mesh", "nn", "checkpoints", "inference",
                                     "simulator", "validation"])
def test_subpackages_export_public_names_only(package):
    mod = __import__(f"emu_backend.{package}", fromlist=["__all__"])
    assert mod.__all__, package
    for name in mod.__all__:
        assert not name.startswith("_"), f"emu_backend.{package} exports the private name {name}"
        assert hasattr(mod, name), f"emu_backend.{package}.__all__ names {name}, which it does not define"
