"""The record schema: records.py, perfkit/record.schema.json and what runs write agree; the
binary step log's torn tail; a run of another schema version is refused."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest

import perfkit
from perfkit.analysis._read import read_run
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


def test_a_run_of_another_schema_version_is_refused_by_name(tmp_path) -> None:
    run = tmp_path / "old-run"
    run.mkdir()
    (run / "meta.json").write_text(json.dumps({"schema_version": 1, "name": "old"}))
    (run / "records.jsonl").write_text("")
    with pytest.raises(RecordError, match=r"old-run has records of schema_version 1; .* 2 only"):
        read_run(run)
