"""The source tree passes ruff (line length 120, sorted imports; settings in pyproject.toml)."""
import os
import shutil
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_ruff_finds_nothing():
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.fail("ruff is not installed: `pip install '.[test]'` brings it")
    proc = subprocess.run([ruff, "check", "--output-format", "concise", REPO], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
