"""The runs of a trainer callback: one per entry point (fit / train, validate, test, predict),
or the user's own run while it is running."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from perfkit.integrations._settings import apply_settings
from perfkit.integrations._steps import guarded
from perfkit.run import Run


class EntryRuns:
    """Starts a :class:`~perfkit.Run` per entry point of a trainer and stops it at its end.

    ``run`` is the latest Run (before any entry point, a new one the user may start and so
    own: the entry points then record into it and leave starting and stopping it to the user);
    ``runs`` every run recorded; ``summary`` the latest stopped run's summary."""

    def __init__(
        self,
        name: str,
        out_dir: str | os.PathLike[str],
        config: Mapping[str, Any] | None,
        run_kwargs: Mapping[str, Any],
    ) -> None:
        self.name = name
        self.user_config = dict(config or {})
        self._run_kwargs = {"out_dir": out_dir, **run_kwargs}
        self.run = Run(name, config=config, **self._run_kwargs)
        self.runs: list[Run] = []
        self.summary: dict[str, Any] | None = None
        self.owned = False

    def start(self, suffix: str, settings: Mapping[str, Any]) -> None:
        """An entry point starts: record it in the user's running run, else in a new run named
        ``name + suffix`` whose config holds the trainer's ``settings`` under the user's."""
        if self.run.status == "running" and not self.owned:  # the user's run
            guarded("reading the trainer's settings", lambda: self.apply(settings))
            if self.run not in self.runs:
                self.runs.append(self.run)
            return
        if self.run.status != "new" or suffix:

            def create() -> None:
                self.run = Run(self.name + suffix, config=self.user_config, **self._run_kwargs)

            if not guarded("creating the run", create):
                return
        guarded("reading the trainer's settings", lambda: self.apply(settings))
        self.owned = guarded("starting the run", self.run.start)
        if self.owned:
            self.runs.append(self.run)

    def apply(self, settings: Mapping[str, Any]) -> None:
        """Add the trainer's ``settings`` to the run's config (the user's config wins); with
        ``flops_per_sample`` given, MFU's peak is then that of the config's precision (the
        Run took it from the config it was made with)."""
        apply_settings(self.run, settings, self.user_config)
        flops, precision = self.run.meta.get("flops"), self.run.config.get("precision")
        if "flops_per_sample" in self._run_kwargs and flops and precision != flops["dtype"]:
            self.run.set_flops(
                flops["flops_per_sample"],
                dtype=str(precision or "fp32"),
                mfu_convention=flops["convention"],
                peak_flops=flops["peak_flops"],
                tf32=flops["tf32"],
            )

    def stop(self, exc: BaseException | None = None) -> None:
        """The entry point ended: stop the run it started (failed when ``exc`` is given)."""
        if self.owned and self.run.status == "running":

            def stop() -> None:
                self.summary = self.run.stop(exc)

            guarded("stopping the run", stop)
        self.owned = False


class RunsOf:
    """A trainer callback's ``run``, ``runs`` and ``summary``, those of its ``_runs``."""

    _runs: EntryRuns

    @property
    def run(self) -> Run:
        """The latest run (before any entry point: a new one the user may start)."""
        return self._runs.run

    @property
    def runs(self) -> list[Run]:
        """Every run the callback recorded, in order."""
        return self._runs.runs

    @property
    def summary(self) -> dict[str, Any] | None:
        """The latest stopped run's summary."""
        return self._runs.summary
