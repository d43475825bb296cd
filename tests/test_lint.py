"""The source tree passes ruff (line length 120, sorted imports; settings in pyproject.toml)."""
import importlib.util
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_ruff_finds_nothing():
    # ruff from the interpreter running the tests (its own venv), whether or not that venv is activated.
    if importlib.util.find_spec("ruff") is None:
        pytest.fail("ruff is not installed: `pip install '.[test]'` brings it")
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--output-format", "concise", REPO],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
