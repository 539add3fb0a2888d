"""The code base passes ruff (settings in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys

from . import golden


def test_ruff_is_clean():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=golden.REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-1000:]
