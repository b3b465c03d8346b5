"""The README's quick start is a complete program: extracted from README.md and run as written."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def quick_start() -> str:
    """The first ```python block of README.md."""
    found = re.search(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    assert found is not None, "README.md has a python block"
    return found.group(1)


def test_the_quick_start_runs_as_written(tmp_path):
    code = quick_start()
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    first, second = proc.stdout.splitlines()
    shown = ast.literal_eval(first)
    assert shown["status"] == "ok" and shown["p_train"] > 0 and shown["p_core"] >= shown["p_train"]
    # the rule (label = first feature > 0) is learnt: well above the 50 % of chance
    assert shown["acc_val"] > 0.9
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1 and (runs[0] / "summary.json").is_file()
    where = Path("runs") / runs[0].name
    assert second == f"records in {where}; see them with: perfkit report runs/"
