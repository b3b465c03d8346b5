"""Pure parsers for vendor monitoring tools' output: ``parse(tool, text) -> list[DeviceSample]``.

Layouts (each tool tries its layouts in order; columns are found by their header text):

- box tables drawn with ``|`` and ``+---+`` (nvidia-smi, ixsmi, cnmon, npu-smi, mx-smi,
  mthreads-gmi, xpu_smi): a header block of one or more lines, then one block of the same
  shape per device;
- ``--query-gpu ... --format=csv`` (nvidia-smi, ixsmi), with or without units;
- ``nvidia-smi -q`` (indented ``key : value`` sections) and ``nvidia-smi dmon``;
- whitespace-aligned column tables (rocm-smi / hy-smi default output, rocm-smi 6's "Concise
  Info" with its second header line of units, ``amd-smi monitor``);
- ``rocm-smi ... --json`` and rocm-smi's ``GPU[0] : key: value`` text.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable

from perfkit.probes._fields import (
    SYNONYMS,
    Cell,
    assign_columns,
    build_sample,
    columns,
    header_names,
    knows_any,
    split_header,
)
from perfkit.probes._sample import DeviceSample, ProbeParseError

Lines = list[str]
# A layout returns None when the text is not in its layout, else the samples (or raises
# ProbeParseError on a variant of its layout it does not know).
Layout = Callable[[str, Lines], "list[DeviceSample] | None"]


def _first_nonblank(lines: Lines) -> int | None:
    return next((i for i, line in enumerate(lines) if line.strip()), None)


# --- box tables --------------------------------------------------------------------------------

_BORDER = re.compile(r"^[\s+|]*[-=][-=+|\s]*$")


def _cells(line: str) -> list[str]:
    parts = line.rstrip().split("|")
    if line.lstrip().startswith("|"):
        parts = parts[1:]
    if line.rstrip().endswith("|"):
        parts = parts[:-1]
    return parts


def _groups(lines: Lines) -> list[list[int] | None]:
    """Runs of consecutive table rows (line indices); a border line separates runs, any other
    line (blank, text) ends the table and is marked None."""
    out: list[list[int] | None] = []
    current: list[int] = []
    for i, line in enumerate(lines):
        is_border = bool(_BORDER.match(line)) and len(line.strip()) >= 3
        if "|" in line and not is_border:
            current.append(i)
            continue
        if current:
            out.append(current)
            current = []
        if not is_border:
            out.append(None)
    if current:
        out.append(current)
    return out


def _header_names(lines: Lines, group: list[int]) -> list[str]:
    return [name for i in group for cell in _cells(lines[i]) for name in header_names(cell)]


def _box_table(tool: str, lines: Lines) -> list[DeviceSample] | None:
    groups = _groups(lines)
    start = next(
        (k for k, g in enumerate(groups) if g is not None and knows_any(_header_names(lines, g))),
        None,
    )
    if start is None:
        return None
    header = groups[start]
    assert header is not None
    header_cells = [[columns(cell) for cell in _cells(lines[i])] for i in header]
    shape = [len(cells) for cells in header_cells]
    samples: list[DeviceSample] = []
    for group in groups[start + 1 :]:
        if group is None:
            break
        n = len(shape)
        rows = [[_cells(lines[i]) for i in group[k : k + n]] for k in range(0, len(group), n)]
        if any([len(cells) for cells in row] != shape for row in rows):
            if not samples:
                first = group[0]
                raise ProbeParseError(
                    tool, first + 1, lines[first], "device rows do not match the table header"
                )
            break  # the next table (processes) starts here
        for k, row in enumerate(rows):
            fields: dict[str, Cell] = {}
            for offset, (cols_of_line, cells) in enumerate(zip(header_cells, row, strict=True)):
                i = group[k * n + offset]
                for cols, cell in zip(cols_of_line, cells, strict=True):
                    for name, value in assign_columns(cols, cell, i + 1, line=lines[i]).items():
                        fields.setdefault(name, value)
            samples.append(build_sample(tool, fields, len(samples)))
    return samples


# --- whitespace-aligned column tables ----------------------------------------------------------

_LEADING_NUMBER = re.compile(r"^\s*\d+\s")
# Between a column header and its rows: a second header line of units ("(DID, GUID)  (Edge)",
# perhaps behind a terminal escape as printed or pasted: "\x1b[3m", "^[3m", "[3m") or a border.
_HEADER_CONTINUATION = re.compile(r"^\s*(?:(?:\x1b|\^)?\[\d+m)?\s*\(|^\s*=+\s*$")


def _column_table(tool: str, lines: Lines) -> list[DeviceSample] | None:
    def is_header(line: str) -> bool:
        names = header_names(line)
        return bool(names) and names[0] in SYNONYMS["index"] and knows_any(names)

    start = next((i for i, line in enumerate(lines) if is_header(line)), None)
    if start is None:
        return None
    cols = columns(lines[start])
    first = start + 1
    while first < len(lines) and _HEADER_CONTINUATION.match(lines[first]):
        first += 1
    samples: list[DeviceSample] = []
    for j in range(first, len(lines)):
        if not _LEADING_NUMBER.match(lines[j]):
            break
        samples.append(build_sample(tool, assign_columns(cols, lines[j], j + 1), len(samples)))
    return samples


# --- nvidia-smi dmon ---------------------------------------------------------------------------

# dmon's own column names -> the shared header names (its "mem" is memory *utilisation*).
_DMON_NAMES = {
    "gpu": "index",
    "pwr": "power",
    "gtemp": "temp",
    "sm": "gpu-util",
    "fb": "memory.used",
}


def _dmon(tool: str, lines: Lines) -> list[DeviceSample] | None:
    first = _first_nonblank(lines)
    if first is None or not re.match(r"^#\s*gpu\s", lines[first]) or " pid " in lines[first]:
        return None
    header = lines[first].replace("#", " ", 1)
    units_line = lines[first + 1] if first + 1 < len(lines) else ""
    units = {}
    if units_line.startswith("#"):
        unit_cells = assign_columns(columns(header), units_line.replace("#", " ", 1), first + 2)
        units = {name: cell.text for name, cell in unit_cells.items()}
    cols = columns(header, units)
    samples: list[DeviceSample] = []
    for j in range(first + 1, len(lines)):
        if lines[j].startswith("#") or not lines[j].strip():
            continue  # dmon repeats its header every few rows
        if not _LEADING_NUMBER.match(lines[j]):
            raise ProbeParseError(tool, j + 1, lines[j], "expected a device row")
        raw = assign_columns(cols, lines[j], j + 1)
        fields = {_DMON_NAMES[k]: c for k, c in raw.items() if k in _DMON_NAMES}
        samples.append(build_sample(tool, fields, len(samples)))
    return samples


# --- nvidia-smi --query-gpu csv ----------------------------------------------------------------


def _csv_query(tool: str, lines: Lines) -> list[DeviceSample] | None:
    first = _first_nonblank(lines)
    if first is None or "," not in lines[first]:
        return None
    header = [split_header(h) for h in next(csv.reader([lines[first]], skipinitialspace=True))]
    if not any("." in name for name, _ in header) or not knows_any([n for n, _ in header]):
        return None
    samples: list[DeviceSample] = []
    for j in range(first + 1, len(lines)):
        line = lines[j]
        if not line.strip() or line == lines[first]:
            continue  # a looping nvidia-smi may repeat its header
        values = next(csv.reader([line], skipinitialspace=True))
        if len(values) != len(header):
            reason = f"{len(values)} values for {len(header)} columns"
            raise ProbeParseError(tool, j + 1, line, reason)
        fields = {
            name: Cell(value, j + 1, line, unit)
            for (name, unit), value in zip(header, values, strict=True)
        }
        samples.append(build_sample(tool, fields, len(samples)))
    return samples


# --- nvidia-smi -q -----------------------------------------------------------------------------

_Q_GPU = re.compile(r"^GPU [0-9A-Fa-f]{4,}:[0-9A-Fa-f]{2}:")
# (section, key) -> shared header name; power in order of preference.
_Q_KEYS = {
    ("Product Name",): "name",
    ("FB Memory Usage", "Total"): "memory.total",
    ("FB Memory Usage", "Used"): "memory.used",
    ("Utilization", "GPU"): "utilization.gpu",
    ("Temperature", "GPU Current Temp"): "temperature.gpu",
    ("GPU Power Readings", "Power Draw"): "power.draw",
    ("Power Readings", "Power Draw"): "power.draw",
    ("GPU Power Readings", "Average Power Draw"): "power.draw.average",
}


def _nvsmi_query(tool: str, lines: Lines) -> list[DeviceSample] | None:
    if not any(_Q_GPU.match(line) for line in lines):
        return None
    devices: list[dict[str, Cell]] = []
    sections: list[tuple[int, str]] = []
    for j, line in enumerate(lines):
        if _Q_GPU.match(line):
            devices.append({})
            sections = []
            continue
        if not devices or not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        while sections and sections[-1][0] >= indent:
            sections.pop()
        key, colon, value = line.strip().partition(":")
        if not colon:
            sections.append((indent, line.strip()))
            continue
        path = (*(name for _, name in sections), key.strip())
        header = _Q_KEYS.get(path)
        if header is not None:
            devices[-1].setdefault(header, Cell(value.strip(), j + 1, line))
    return [build_sample(tool, fields, k) for k, fields in enumerate(devices)]


# --- rocm-smi: --json and "GPU[0] : key: value" text ---------------------------------------------


def _rocm_json(tool: str, lines: Lines) -> list[DeviceSample] | None:
    text = "\n".join(lines)
    if not text.lstrip().startswith("{"):
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProbeParseError(tool, exc.lineno, lines[exc.lineno - 1], exc.msg) from exc
    samples: list[DeviceSample] = []
    for key, values in data.items():
        card = re.fullmatch(r"card(\d+)", key)
        if card is None:
            continue  # "system" and other non-card entries
        j = next(k for k, line in enumerate(lines) if f'"{key}"' in line)
        fields = {"index": Cell(card.group(1), j + 1, lines[j])}
        for name, value in values.items():
            header, unit = split_header(name)
            fields.setdefault(header, Cell(str(value), j + 1, lines[j], unit))
        samples.append(build_sample(tool, fields, len(samples)))
    return samples


_ROCM_LINE = re.compile(r"^GPU\[(\d+)\]\s*:\s*(.*?\S)\s*:\s+(.*?)\s*$")


def _rocm_text(tool: str, lines: Lines) -> list[DeviceSample] | None:
    devices: dict[str, dict[str, Cell]] = {}
    for j, line in enumerate(lines):
        m = _ROCM_LINE.match(line)
        if m is None:
            continue
        header, unit = split_header(m.group(2))
        fields = devices.setdefault(m.group(1), {"index": Cell(m.group(1), j + 1, line)})
        fields.setdefault(header, Cell(m.group(3), j + 1, line, unit))
    if not devices:
        return None
    return [build_sample(tool, fields, k) for k, fields in enumerate(devices.values())]


# --- dispatch ----------------------------------------------------------------------------------

_NVIDIA: tuple[Layout, ...] = (_csv_query, _nvsmi_query, _dmon, _box_table)
_ROCM: tuple[Layout, ...] = (_rocm_json, _rocm_text, _column_table)
TOOLS: dict[str, tuple[Layout, ...]] = {
    "nvidia-smi": _NVIDIA,
    "ixsmi": _NVIDIA,  # Iluvatar's nvidia-smi derivative
    "cnmon": (_box_table,),
    "npu-smi": (_box_table,),
    "mx-smi": (_box_table,),
    "mthreads-gmi": (_box_table,),
    "xpu-smi": (_box_table,),
    "xpu_smi": (_box_table,),
    "rocm-smi": _ROCM,
    "hy-smi": _ROCM,
    "amd-smi": (_column_table,),
}


def parse(tool: str, text: str) -> list[DeviceSample]:
    """The devices in one output of ``tool`` (one sample per device row).

    Raises ValueError for a tool it has no parser for (listing the supported ones) and
    :class:`ProbeParseError` (tool, 1-based line number, line, reason) for output in a layout
    it does not know.
    """
    layouts = TOOLS.get(tool)
    if layouts is None:
        raise ValueError(f"no parser for tool {tool!r}; supported tools: {', '.join(TOOLS)}")
    lines = text.splitlines()
    for layout in layouts:
        samples = layout(tool, lines)
        if samples is not None:
            return samples
    first = _first_nonblank(lines)
    if first is None:
        raise ProbeParseError(tool, 1, "", "empty output")
    names = ", ".join(layout.__name__.strip("_").replace("_", " ") for layout in layouts)
    raise ProbeParseError(
        tool, first + 1, lines[first], f"not a layout this parser knows ({names})"
    )
