"""The CI runner of the benchmarks' smoke mode (scripts/run_benchmark_smoke.sh): every script in
benchmarks/ knows --smoke, and a script that raises (or lacks the flag) makes the runner, and so
.ci/run, fail. The smoke runs themselves are CI's step, not tests (they take minutes)."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUNNER = ROOT / "scripts" / "run_benchmark_smoke.sh"
BENCHMARKS = sorted(p for p in (ROOT / "benchmarks").glob("*.py") if not p.name.startswith("_"))


def _options(path: Path) -> set[str]:
    """The option strings of every ``add_argument`` call in a script (read, not imported)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
            out |= {a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)}
    return out


@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda p: p.name)
def test_every_benchmark_has_a_smoke_mode(script):
    assert "--smoke" in _options(script), f"{script.name} has no --smoke flag: CI's smoke step would fail on it"


def test_ci_runs_the_smoke_runner():
    assert "bash scripts/run_benchmark_smoke.sh" in (ROOT / ".ci" / "run").read_text()


def _run(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(RUNNER), str(folder)], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable})


def test_runner_fails_when_a_benchmark_raises_and_still_runs_the_others(tmp_path):
    (tmp_path / "a_raises.py").write_text("import sys\nassert '--smoke' in sys.argv\nraise RuntimeError('boom')\n")
    (tmp_path / "b_ok.py").write_text("import sys\nassert sys.argv[1:] == ['--smoke']\n")
    (tmp_path / "_helper.py").write_text("raise SystemExit(3)  # a helper module: never run\n")
    res = _run(tmp_path)
    assert res.returncode != 0
    assert "a_raises.py FAILED" in res.stdout and "b_ok.py passed" in res.stdout
    assert "_helper" not in res.stdout
    assert "1 of 2 failed: a_raises.py" in res.stderr


def test_runner_fails_on_a_script_without_smoke_mode_and_passes_when_all_pass(tmp_path):
    (tmp_path / "old.py").write_text("import argparse\nargparse.ArgumentParser().parse_args()\n")
    assert _run(tmp_path).returncode != 0  # argparse: unrecognized arguments: --smoke
    (tmp_path / "old.py").write_text("import sys\nassert sys.argv[1:] == ['--smoke']\n")
    res = _run(tmp_path)
    assert res.returncode == 0 and "all 1 passed" in res.stdout


def test_runner_fails_on_an_empty_folder(tmp_path):
    assert _run(tmp_path).returncode != 0
