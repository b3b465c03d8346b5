"""MLflow sink: one MLflow run per perfkit run, through MLflow's tracking client (needs
``mlflow`` or ``mlflow-skinny``: ``pip install 'perfkit[mlflow]'``)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from perfkit import checks
from perfkit.sinks._base import Sink, numeric_items, text_items

#: MLflow's limit on a param value's length (characters); longer config values are cut.
_PARAM_LENGTH = 6000
#: Characters MLflow refuses in a metric, param or tag name (it takes letters, digits, _ - . /
#: and spaces); each becomes "_".
_NOT_IN_KEYS = re.compile(r"[^\w\-. /]")


def _key(name: str) -> str:
    return _NOT_IN_KEYS.sub("_", name)


class MLflow(Sink):
    """Logs a run to MLflow: an MLflow run named after the run id in ``experiment`` (default:
    the run's name), the config as params, per phase metrics ``<phase name>/<figure>`` at the
    phase's index, the summary's numbers as metrics (``summary/<key>``) and its texts as tags
    (``perfkit.<key>``); ends the MLflow run FINISHED or FAILED with the run's status.
    ``tracking_uri``: None for MLflow's own default (``MLFLOW_TRACKING_URI`` when set), or any
    URI MLflow takes (a server, ``sqlite:///mlflow.db``, a ``file:`` store)."""

    def __init__(
        self, tracking_uri: str | None = None, experiment: str | None = None, **kwargs: Any
    ) -> None:
        for arg, value in (("tracking_uri", tracking_uri), ("experiment", experiment)):
            if value is not None:
                checks.non_empty_str(arg, value)
        super().__init__(**kwargs)
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self._client: Any = None
        self._run_id: str | None = None

    def start(self, run_id: str, name: str, config: Mapping[str, Any]) -> None:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(self.tracking_uri)
        experiment = self.experiment or name
        found = client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else client.create_experiment(experiment)
        run = client.create_run(experiment_id, run_name=run_id, tags={"perfkit.run_id": run_id})
        self._client, self._run_id = client, run.info.run_id
        for key, value in config.items():
            text = value if isinstance(value, str) else json.dumps(value)
            client.log_param(self._run_id, _key(key), text[:_PARAM_LENGTH])

    def phase(self, figures: Mapping[str, float], step: int, wall_time: float) -> None:
        from mlflow.entities import Metric

        stamp = int(wall_time * 1000)
        metrics = [Metric(_key(k), value, stamp, step) for k, value in figures.items()]
        self._client.log_batch(self._run_id, metrics=metrics)

    def summary(self, summary: Mapping[str, Any], wall_time: float) -> None:
        from mlflow.entities import Metric, RunTag

        stamp = int(wall_time * 1000)
        numbers, texts = numeric_items(summary), text_items(summary)
        metrics = [Metric(_key(f"summary/{k}"), v, stamp, 0) for k, v in numbers.items()]
        tags = [RunTag(_key(f"perfkit.{k}"), v[:_PARAM_LENGTH]) for k, v in texts.items()]
        self._client.log_batch(self._run_id, metrics=metrics, tags=tags)
        status = "FINISHED" if summary.get("status") == "ok" else "FAILED"
        self._client.set_terminated(self._run_id, status=status, end_time=stamp)
        self._run_id = None

    def close(self) -> None:
        if self._client is not None and self._run_id is not None:  # ended before its summary
            self._client.set_terminated(self._run_id, status="FAILED")
        self._client, self._run_id = None, None
