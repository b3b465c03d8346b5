"""Shared parsing helpers: header names, value cells with units, and columns found by header.

Every layout parser turns its text into ``{header name: Cell}`` per device; ``build_sample``
maps header names to DeviceSample fields through one synonym table and converts units, so the
tools differ only in how their text is cut into cells.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from perfkit.probes._sample import NAN, DeviceSample, ProbeParseError


@dataclass(frozen=True)
class Cell:
    """A value's text, the 1-based line it came from, and the unit its header names."""

    text: str
    line_number: int
    line: str
    header_unit: str = ""


# Header name (normalised by ``split_header``) -> DeviceSample quantity, in order of preference.
SYNONYMS: dict[str, tuple[str, ...]] = {
    # hy-smi names its index and utilisation columns DCU / DCU% (older DTK) or HCU / HCU% (DTK 25+).
    # rocm-smi 6.x names it "Device" (last: npu-smi's "Device" column is not its index).
    "index": ("index", "gpu", "card", "npu", "devid", "id", "dcu", "hcu", "device"),
    "chip": ("chip",),
    "name": ("name", "model", "product name", "card series"),
    # "used / total" in one cell; HBM before Memory-Usage: npu-smi's Memory-Usage is the
    # control CPU's DDR where the card also has HBM.
    "memory_pair": ("hbm-usage", "memory-usage", "mem", "memory"),
    "memory_used": ("memory.used", "vram_used", "vram total used memory"),
    "memory_total": ("memory.total", "vram_total", "vram total memory"),
    "utilization": (
        "utilization.gpu",
        "gpu-util",
        "util",
        "aicore",
        "%gpu",
        "userate",
        "gfx_util",
        "dcu%",
        "hcu%",
        "gpu%",
        "gpu use",
    ),
    # The first number of "usage / cap" where the header is Pwr:Usage/Cap.
    "power": (
        "power.draw",
        "power.draw.average",
        "pwr:usage/cap",
        "power",
        "avgpwr",
        "average graphics package power",
        "current socket graphics package power",
    ),
    "temperature": ("temperature.gpu", "temp", "gpu_temp", "temperature (sensor edge)"),
}

_UNIT_SUFFIX = re.compile(r"^(.*?)\s*[(\[]([^()\[\]]*)[)\]]\s*$")


def split_header(raw: str) -> tuple[str, str]:
    """``"Memory-Usage(MB)"`` -> ``("memory-usage", "mb")``; ``"power.draw [W]"`` ->
    ``("power.draw", "w")``; a name without a trailing bracket has no unit."""
    raw = raw.strip()
    m = _UNIT_SUFFIX.match(raw)
    if m and m.group(1):
        return m.group(1).lower(), m.group(2).strip().lower()
    return raw.lower(), ""


# Scale to the base unit, per quantity. Every tool in tests/fixtures_probes/smi-samples writes
# binary megabytes as "MB" (npu-smi: 65536 MB on a 64 GiB card; amd-smi: 196300 MB on a 192 GiB
# one), so MB/GB are read as MiB/GiB.
_BYTES = {"b": 1.0, "kib": 2.0**10, "kb": 2.0**10, "mib": 2.0**20, "mb": 2.0**20}
_BYTES |= {"gib": 2.0**30, "gb": 2.0**30}
SCALES: dict[str, dict[str, float]] = {
    "bytes": _BYTES,
    "pct": {"%": 1.0},
    "w": {"w": 1.0, "mw": 1e-3},
    "c": {"c": 1.0, "°c": 1.0, "_c": 1.0},  # rocm-smi prints "32.0_C" where it has no "°"
}
_UNITS = frozenset(unit for scale in SCALES.values() for unit in scale)
_GAP = re.compile(r"^(n/?a|-)$", re.I)  # a value printed as missing
DEFAULT_UNIT = {"bytes": "mib", "pct": "%", "w": "w", "c": "c"}

_MISSING = re.compile(r"^(\[.*\]|n/?a|-|not supported|unknown)?$", re.I)
# A missing value with its unit still printed after it ("NA W", "N/A    MiB").
_MISSING_WITH_UNIT = re.compile(r"^(n/?a|-)\s+[^\d\s]+$", re.I)
_NUMBER = re.compile(r"^([-+]?\d+(?:\.\d+)?)\s*(\S*)$")


def fail(tool: str, cell: Cell, reason: str) -> ProbeParseError:
    return ProbeParseError(tool, cell.line_number, cell.line, reason)


def quantity(tool: str, cell: Cell, kind: str, text: str | None = None) -> float:
    """The number in ``text`` (default: the cell's) in the base unit of ``kind`` ("bytes",
    "pct", "w", "c"); NaN for N/A, [Not Supported], "-", nothing and the like, also with
    their unit still printed ("NA W", " MiB"). The unit is the one
    written after the number, else the header's, else the tool convention (MiB, %, W, C)."""
    text = (cell.text if text is None else text).strip()
    if _MISSING.match(text) or _MISSING_WITH_UNIT.match(text) or text.lower() in SCALES[kind]:
        return NAN  # a unit alone ("W", "MiB"): the number itself is missing
    m = _NUMBER.match(text)
    if not m:
        raise fail(tool, cell, f"expected a number for {kind}, got {text!r}")
    unit = (m.group(2) or cell.header_unit or DEFAULT_UNIT[kind]).lower()
    scale = SCALES[kind].get(unit)
    if scale is None:
        raise fail(tool, cell, f"unknown unit {unit!r} for {kind} in {text!r}")
    return float(m.group(1)) * scale


_NA_WORD = re.compile(r"\bN/A\b", re.I)
_PAIR = re.compile(r"^(.*?)\s*[/(]\s*(.*?)\)?\s*$")


def pair(tool: str, cell: Cell, kind: str) -> tuple[float, float]:
    """``"19818MiB / 81559MiB"``, ``"858/65536 MiB"`` (unit written once, at the end),
    ``"0MiB(81920MiB)"`` or ``"N/A / N/A"`` -> the two quantities."""
    m = _PAIR.match(_NA_WORD.sub("NA", cell.text.strip()))
    if not m:
        raise fail(tool, cell, f"expected 'a / b' for {kind}, got {cell.text!r}")
    first, second = m.group(1), m.group(2)
    first_unit, second_unit = _NUMBER.match(first), _NUMBER.match(second)
    if first_unit and second_unit and not first_unit.group(2) and second_unit.group(2):
        first += " " + second_unit.group(2)
    return quantity(tool, cell, kind, first), quantity(tool, cell, kind, second)


def first_of_pair(text: str) -> str:
    """``"69W / 700W"`` -> ``"69W"`` (power usage before its cap); other text unchanged."""
    return _NA_WORD.sub("NA", text).split("/")[0].strip()


def pick(fields: Mapping[str, Cell], quantity_name: str) -> Cell | None:
    """The cell of the first header that names ``quantity_name`` (see SYNONYMS)."""
    for header in SYNONYMS[quantity_name]:
        if header in fields:
            return fields[header]
    return None


_MEASURED = frozenset(
    h
    for q in ("memory_pair", "memory_used", "utilization", "power", "temperature")
    for h in SYNONYMS[q]
)


def knows_any(headers: list[str]) -> bool:
    """Whether a header row names at least one measured quantity (memory, power, ...)."""
    return not _MEASURED.isdisjoint(headers)


def build_sample(tool: str, fields: Mapping[str, Cell], position: int) -> DeviceSample:
    """The DeviceSample for one device's ``{normalised header: Cell}``; ``position`` (0-based
    order in the output) is the index when the output has no index column."""
    index = pick(fields, "index")
    device = index.text.strip() if index is not None else str(position)
    chip = pick(fields, "chip")
    if chip is not None:
        device += f".{chip.text.strip()}"
    name = pick(fields, "name")
    used = total = NAN
    memory = pick(fields, "memory_pair")
    if memory is not None:
        used, total = pair(tool, memory, "bytes")
    used_cell, total_cell = pick(fields, "memory_used"), pick(fields, "memory_total")
    if used_cell is not None:
        used = quantity(tool, used_cell, "bytes")
    if total_cell is not None:
        total = quantity(tool, total_cell, "bytes")
    util, power, temp = (
        pick(fields, "utilization"),
        pick(fields, "power"),
        pick(fields, "temperature"),
    )
    return DeviceSample(
        probe=tool,
        device=f"{tool}:{device}",
        device_name=name.text.strip() if name is not None else "",
        memory_used_bytes=used,
        memory_total_bytes=total,
        utilization_pct=quantity(tool, util, "pct") if util is not None else NAN,
        power_w=quantity(tool, power, "w", first_of_pair(power.text)) if power is not None else NAN,
        temperature_c=quantity(tool, temp, "c") if temp is not None else NAN,
    )


# --- columns found by header text -------------------------------------------------------------

_HEADER_NAME = re.compile(r"\S+(?: \S+)*")  # names are separated by two or more spaces
_TOKEN = re.compile(r"\S+")


@dataclass(frozen=True)
class Column:
    """One name of a header line: its character span, normalised name and unit."""

    start: int
    end: int
    name: str
    unit: str


def columns(header: str, units: Mapping[str, str] | None = None) -> list[Column]:
    """The columns a header line (or table cell) names, left to right. ``units`` maps a name to
    its unit when the tool writes units on a line of their own (nvidia-smi dmon)."""
    out = []
    for m in _HEADER_NAME.finditer(header):
        name, unit = split_header(m.group())
        out.append(Column(m.start(), m.end(), name, (units or {}).get(name, unit)))
    return out


def header_names(text: str) -> list[str]:
    """The normalised names in one header line (or table cell), left to right."""
    return [c.name for c in columns(text)]


def _phrases(row: str) -> list[tuple[int, int, str]]:
    """Words of ``row`` joined into phrases: words one space apart ("NVIDIA H100 80GB HBM3"),
    words a slash is attached to ("30750/ 32768") and a unit with the "NA" / "-"
    before it, however far ("-    W/ 8.25 W" where cnmon printed no power)."""
    out: list[tuple[int, int, str]] = []
    for token in _TOKEN.finditer(row):
        start, end = token.span()
        word = token.group()
        if out:
            last_start, last_end, text = out[-1]
            last = text.rsplit(" ", 1)[-1]
            attached = last.endswith("/") and last != "/"
            attached = attached or (word.startswith("/") and word != "/")
            unit = word.rstrip("/").lower() in _UNITS and bool(_GAP.match(last))
            if start - last_end == 1 or attached or unit:
                out[-1] = (last_start, end, f"{text} {word}")
                continue
        out.append((start, end, word))
    return out


def _overlap(start: int, end: int, col: Column) -> int:
    return min(end, col.end) - max(start, col.start)


def assign_columns(
    cols: Sequence[Column], row: str, line_number: int, *, line: str | None = None
) -> dict[str, Cell]:
    """Cut ``row`` into ``cols`` (a header with the same horizontal alignment).

    Each phrase of ``row`` (words one space apart, or joined by a slash; a value that lies
    under no column joins a "/ total" after it) goes to the column it overlaps most; a phrase
    that overlaps none continues the nearest column to its left (or belongs to the first
    column when nothing is to its left). A column with no phrase under it is absent, so an
    empty field never shifts the next one. Phrases of one column are joined with single
    spaces. ``line`` is the whole line ``row`` was cut from (for error messages; default
    ``row``).
    """
    if not cols:
        return {}
    phrases = _phrases(row)
    # A pair printed far apart ("0          / 970"): the phrase that starts with the slash
    # takes the value before it when that value lies under no column of its own.
    for k in range(len(phrases) - 1, 0, -1):
        start, end, text = phrases[k]
        before = phrases[k - 1]
        if text.startswith("/") and all(_overlap(before[0], before[1], c) <= 0 for c in cols):
            phrases[k - 1 : k + 1] = [(before[0], end, f"{before[2]} {text}")]
    words: dict[int, list[str]] = {}
    for start, end, text in phrases:
        overlap, best = max((_overlap(start, end, c), i) for i, c in enumerate(cols))
        if overlap <= 0:
            left = [i for i, c in enumerate(cols) if c.start <= start]
            best = left[-1] if left else 0
        words.setdefault(best, []).append(text)
    cells: dict[str, Cell] = {}
    for i, parts in sorted(words.items()):
        col = cols[i]
        cells.setdefault(col.name, Cell(" ".join(parts), line_number, line or row, col.unit))
    return cells
