"""`perfkit export`: finished and killed runs to the Parquet dataset (read back by pandas,
pyarrow and DuckDB, the query of docs/analysis.md), to TensorBoard and to MLflow; and load()
of many runs against the files they wrote."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from perfkit.analysis import export, load
from perfkit.analysis._parquet import SCHEMA, TABLES
from perfkit.cli import main
from tests.test_analysis import infer_run, partial_run, train_run

DOCS = Path(__file__).resolve().parents[1] / "docs" / "analysis.md"


def rid(run_dir: Path) -> str:
    """The run id in a run directory's meta.json."""
    return str(json.loads((run_dir / "meta.json").read_text())["run_id"])


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("export")
    return {
        "slow": train_run(out / "a", "slow"),
        "fast": train_run(out / "b", "fast", compute_s=0.5, seed=3),
        "infer": infer_run(out / "c"),
        "killed": partial_run(out / "d"),
    }


def test_parquet_dataset_read_back_by_pandas_and_pyarrow(runs, tmp_path, capsys):
    import pyarrow.dataset as ds

    paths = [str(p) for p in runs.values()]
    assert main(["export", *paths, "--to", "parquet", str(tmp_path / "pq")]) == 0
    assert capsys.readouterr().out == f"exported 4 runs to parquet {tmp_path / 'pq'}\n"
    for table in TABLES[:-1]:  # no run here has probe samples
        dataset = ds.dataset(tmp_path / "pq" / table, format="parquet", partitioning="hive")
        names = [n for n, _ in SCHEMA[table]]
        assert dataset.schema.names == [*names, "run"]
    steps = pd.read_parquet(tmp_path / "pq" / "steps")
    slow = steps[steps["run_id"] == rid(runs["slow"])]
    # 2 epochs of 4 train steps (0.5 s IO + 1.5 s compute) and 2 val steps (0.25 + 0.25 s)
    assert sorted(slow["step_time"]) == [0.5] * 4 + [2.0] * 8
    assert set(slow.loc[slow["phase"] == "train", "ordinal"]) == {0, 2}
    killed = steps[steps["run_id"] == rid(runs["killed"])]
    assert len(killed) == 4 + 2 + 2  # the killed run's second train phase: 2 steps on disk
    summaries = pd.read_parquet(tmp_path / "pq" / "summaries").set_index(["run_id", "key"])
    assert summaries.loc[(rid(runs["slow"]), "p_train"), "value"] == 4.0  # 64 / 16 s
    assert summaries.loc[(rid(runs["killed"]), "status"), "text"] == "partial"
    assert summaries.loc[(rid(runs["fast"]), "config.seed"), "value"] == 3
    phases = pd.read_parquet(tmp_path / "pq" / "phases")
    assert list(phases.loc[phases["run_id"] == rid(runs["slow"]), "wall_s"]) == [8, 1, 8, 1]
    events = pd.read_parquet(tmp_path / "pq" / "events")
    logged = events[(events["run_id"] == rid(runs["slow"])) & (events["name"] == "mAP")]
    assert list(logged["value"]) == [0.3461] * 2
    # exported again: the run's partitions are replaced, not added to
    assert main(["export", paths[0], "--to", "parquet", str(tmp_path / "pq")]) == 0
    assert len(pd.read_parquet(tmp_path / "pq" / "steps")) == len(steps)


def test_the_docs_duckdb_query_runs_on_the_dataset(runs, tmp_path):
    duckdb = pytest.importorskip("duckdb")
    export(list(runs.values()), "parquet", str(tmp_path / "pq"))
    text = DOCS.read_text()
    query = re.search(r"```sql\n(.*?)```", text, re.S)
    assert query is not None, "docs/analysis.md shows a DuckDB query in a sql block"
    sql = query.group(1).replace("runs.parquet/", f"{tmp_path / 'pq'}/")
    rows = {(r[0], r[1]): r[2:] for r in duckdb.sql(sql).fetchall()}
    # per run and phase kind, median step seconds and steps: slow's train steps take 0.5 + 1.5
    # s, fast's 0.5 + 0.5 s; val steps 0.25 + 0.25 s; the killed run kept 4 + 2 train steps
    assert rows[(rid(runs["slow"]), "train")] == (2.0, 8)
    assert rows[(rid(runs["fast"]), "train")] == (1.0, 8)
    assert rows[(rid(runs["slow"]), "val")] == (0.5, 4)
    assert rows[(rid(runs["killed"]), "train")] == (2.0, 6)


def test_export_to_tensorboard_and_mlflow(runs, tmp_path, mlflow_store, capsys):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    slow = str(runs["slow"])
    assert main(["export", slow, "--to", "tensorboard", str(tmp_path / "tb")]) == 0
    events = EventAccumulator(str(tmp_path / "tb" / rid(runs["slow"])))
    events.Reload()
    train = events.Scalars("perfkit/train/samples_per_s")
    assert [(e.step, e.value) for e in train] == [(0, 4.0), (1, 4.0)]
    # event times are the run's: the train phases ended at 10 s and 21 s after its start
    assert train[1].wall_time - train[0].wall_time == pytest.approx(11.0)
    started = json.loads((runs["slow"] / "meta.json").read_text())["started_at"]
    assert train[0].wall_time == pytest.approx(pd.Timestamp(started).timestamp() + 10.0)
    uri = mlflow_store
    killed = str(runs["killed"])
    assert main(["export", slow, killed, "--to", "mlflow", uri]) == 0
    client = MlflowClient(uri)
    found = {}
    for name in ("slow", "killed"):
        experiment = client.get_experiment_by_name(name)
        (found[name],) = client.search_runs([experiment.experiment_id])
    assert found["slow"].info.status == "FINISHED" and found["killed"].info.status == "FAILED"
    assert found["slow"].data.metrics["summary/e2e_time"] == 26.0
    capsys.readouterr()
    assert main(["export", slow, "--to", "wandb", "x"]) == 2
    assert "`to` to be one of ('parquet', 'tensorboard', 'mlflow')" in capsys.readouterr().err


def test_load_of_many_runs_matches_their_files(runs):
    """Every run's rows in load() of all four: its events in records.jsonl order, then its
    steps in time order, with its own config (NaN where another run's key is missing)."""
    frame = load(list(runs.values()))
    assert list(frame["run_dir"].unique()) == [str(p) for p in runs.values()]
    for path in runs.values():
        rows = frame[frame["run_dir"] == str(path)]
        lines = (path / "records.jsonl").read_text().splitlines()
        records = []
        for line in lines:
            try:
                records.append(json.loads(line))
            except ValueError:  # the killed run's torn last line
                continue
        events = rows[rows["name"] != "step"]
        assert list(events["name"]) == [r["name"] for r in records]
        values = [math.nan if r["value"] is None else r["value"] for r in records]
        np.testing.assert_array_equal(events["value"].to_numpy(), np.asarray(values, float))
        steps = rows[rows["name"] == "step"]
        assert steps["t"].is_monotonic_increasing
        assert set(rows["status"]) == {"partial" if path == runs["killed"] else "ok"}
    assert frame["config.seed"].dtype == float  # only fast has a seed
    assert set(frame.loc[frame["config.seed"].notna(), "run_dir"]) == {str(runs["fast"])}
    assert frame["rank"].dtype == np.int64
    wide_steps = frame[frame["name"] == "step"]
    # 2 x (4 + 2) steps per train run, 3 of the inference run, 4 + 2 + 2 of the killed one
    assert len(wide_steps) == 12 + 12 + 3 + 8
    assert (load(list(runs.values()), long=True)["name"] == "samples").sum() == 35
