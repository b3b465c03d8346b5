"""The record schema: records.py, perfkit/record.schema.json and what runs write agree; the
binary step log's torn tail; schema-1 runs still read."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import numpy as np
import pytest

import perfkit
from perfkit.analysis import load, seed_tables, step_times, summaries
from perfkit.analysis._read import read_run
from perfkit.analysis._rebuild import rebuild_summary
from perfkit.records import (
    RECORD_FIELDS,
    RECORD_NAMES,
    SCHEMA_VERSION,
    STEP_COLUMNS,
    RecordError,
    json_schema,
    read_records,
)
from perfkit.steplog import MAGIC, ROW_BYTES, read_step_log
from tests.test_run_probes import BrokenProbe, CardProbe

REPO = Path(__file__).resolve().parents[1]
SCHEMA = json_schema()  # the package's record.schema.json, as a wheel ships it
SCHEMA1_RUN = REPO / "tests" / "fixtures_schema1" / "schema1-20261201-215638-6810"


def test_the_json_schema_names_the_fields_and_units_of_records_py() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert set(SCHEMA["properties"]) == set(RECORD_FIELDS)
    assert {unit for unit, _ in RECORD_NAMES.values()} <= set(SCHEMA["properties"]["unit"]["enum"])
    header = SCHEMA["$defs"]["steps_header"]["properties"]
    assert header["columns"]["const"] == [name for name, _ in STEP_COLUMNS]
    assert header["units"]["const"] == [unit for _, unit in STEP_COLUMNS]
    assert header["schema_version"]["const"] == SCHEMA_VERSION


@pytest.fixture(scope="module")
def probed_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    with perfkit.Run(
        "schema",
        out_dir=out,
        device="cpu",
        probes=[CardProbe(), BrokenProbe(), "host"],
        sample_interval_s=0.01,
    ) as run:
        with run.phase("train") as train:
            for _ in train.iterate([np.zeros((2, 1))] * 3):
                with perfkit.timed("body"):
                    pass
        run.log(acc=0.5)
    assert run.run_dir is not None
    return run.run_dir


def test_every_line_a_run_writes_validates(probed_run: Path) -> None:
    validator = jsonschema.Draft202012Validator(SCHEMA)
    records = list(read_records(probed_run / "records.jsonl"))
    names = {r["name"] for r in records}
    assert {"phase_start", "phase_wall", "probe_error", "region/body", "acc"} <= names
    for line in (probed_run / "records.jsonl").read_text().splitlines():
        validator.validate(json.loads(line))
    header, rows = read_step_log(probed_run / "steps.bin")
    jsonschema.validate(header, SCHEMA["$defs"]["steps_header"])
    assert rows.shape == (3, len(STEP_COLUMNS))
    meta = json.loads((probed_run / "meta.json").read_text())
    assert meta["schema_version"] == SCHEMA_VERSION == 2


def test_a_torn_step_row_is_skipped_and_a_foreign_file_refused(probed_run, tmp_path) -> None:
    path = tmp_path / "steps.bin"
    whole = (probed_run / "steps.bin").read_bytes()
    path.write_bytes(whole + b"\x01" * (ROW_BYTES - 1))  # a kill mid-row
    _, rows = read_step_log(path)
    assert rows.shape[0] == 3
    path.write_bytes(whole[: len(whole) - 1])  # the last row torn
    assert read_step_log(path)[1].shape[0] == 2
    path.write_bytes(b"not a step log")
    with pytest.raises(RecordError, match="not a perfkit step log"):
        read_step_log(path)
    assert whole.startswith(MAGIC)


def test_schema1_run_validates_and_loads() -> None:
    validator = jsonschema.Draft202012Validator(SCHEMA)
    for line in (SCHEMA1_RUN / "records.jsonl").read_text().splitlines():
        validator.validate(json.loads(line))
    frame = load(SCHEMA1_RUN)
    steps = frame[frame["name"] == "step"]
    assert len(steps) == 2 * (5 + 2)  # 2 epochs of 5 train and 2 val steps
    assert (load(SCHEMA1_RUN, long=True)["name"] == "step_time").sum() == len(steps)
    table = step_times(SCHEMA1_RUN)
    assert list(table.groupby("phase")["step"].count()) == [10, 4]
    assert set(table["kind"]) == {"train", "val"}
    (row,) = seed_tables(SCHEMA1_RUN)["train"].to_dict(orient="records")
    assert row["status"] == "ok" and row["acc"] == "60.0"


def test_schema1_run_rebuilt_without_its_summary(tmp_path) -> None:
    """The rebuilt summary of the schema-1 run has the live summary's keys; its numbers agree
    to the 9 decimals schema 1 wrote step times with."""
    copy = tmp_path / SCHEMA1_RUN.name
    shutil.copytree(SCHEMA1_RUN, copy)
    live = json.loads((copy / "summary.json").read_text())
    (copy / "summary.json").unlink()
    rebuilt = json.loads(json.dumps(rebuild_summary(read_run(copy))))
    aside = {"e2e_time", "status"}
    newer = {"mem_source"}  # said by this perfkit: what a CPU run's mem measures
    assert set(rebuilt) - aside - newer == set(live) - aside
    for key in set(live) - aside - {"phases", "meta"}:
        expected = live[key]
        if isinstance(expected, float):
            assert rebuilt[key] == pytest.approx(expected, rel=1e-6, abs=1e-8), key
        else:
            assert rebuilt[key] == expected, key
    assert rebuilt["mem"] == live["mem"]  # a CPU run's mem: the host's RAM
    assert "system" in rebuilt["mem_source"]  # schema 1 recorded no process-tree RSS
    (row,) = summaries(copy).to_dict(orient="records")
    assert row["status"] == "partial" and row["train_samples"] == 40
