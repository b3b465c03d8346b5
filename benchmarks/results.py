"""Writing benchmark numbers into benchmarks/RESULTS.md, one section per benchmark."""

from __future__ import annotations

import os
import platform
import re
from datetime import date
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")
_TITLE = "# Benchmark results\n\nEach section is rewritten by the benchmark named in it.\n"


def machine() -> str:
    """One line naming this machine: CPU model, core count, Python, and the date."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"Machine: {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"date {date.today().isoformat()}."
    )


def write_section(heading: str, body: str, path: Path = RESULTS) -> None:
    """Replace (or append) the section ``## heading`` of RESULTS.md with ``body``."""
    text = path.read_text() if path.exists() else _TITLE
    section = f"## {heading}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _m: section + "\n", text).rstrip() + "\n"
    else:
        text = text.rstrip() + "\n\n" + section
    path.write_text(text)
