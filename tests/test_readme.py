"""Every python block of the README runs as printed, from the repository root's modules, on the tiny model."""

import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("number", range(len(BLOCKS)))
def test_readme_python_block_runs_as_printed(number):
    namespace = {"__name__": f"readme_block_{number}"}
    exec(compile(BLOCKS[number], f"README.md python block {number + 1}", "exec"), namespace)  # cwd: a temp dir
