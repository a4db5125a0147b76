"""docs/tnf.md: every python block runs on its own; the page keeps no placeholders."""

import re
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[2] / "docs" / "tnf.md"
BLOCKS = re.findall(r"```python\n(.*?)```", PAGE.read_text(encoding="utf-8"), flags=re.DOTALL)


def test_page_has_examples_and_no_placeholders():
    assert len(BLOCKS) == 2
    assert "_FIGURES" not in PAGE.read_text(encoding="utf-8")


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_python_block_runs(block):
    exec(compile(block, str(PAGE), "exec"), {})
