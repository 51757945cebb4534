"""The Python examples in the documentation run as written."""

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.mark.parametrize("page", ["simulator.md", "validation.md", "training_data.md", "field_level.md"])
def test_python_blocks_run(page):
    if page == "field_level.md":
        pytest.importorskip("numpyro", reason="the field-level example samples with numpyro (extra 'jax')")
    text = (DOCS / page).read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, f"no python block in {page}"
    for code in blocks:
        exec(compile(code, str(DOCS / page), "exec"), {})
