"""A run survives the process it lives in (issue 23): forked children and DataLoader workers,
runs never stopped, interrupts in start() and stop(), the SIGTERM handler. Each case runs in a
subprocess with a timeout and checks what is on disk and that no thread or fd is left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import perfkit
from tests.conftest import read_step_rows

ROOT = Path(__file__).resolve().parents[1]

#: Lines a script prints last: the threads, fds and child processes it holds beyond those it had
#: at the start.
LEAKS = """
import threading as _threading, time as _time
_deadline = _time.monotonic() + 2.0  # a thread whose join was interrupted may take a moment
while len(_threading.enumerate()) > 1 and _time.monotonic() < _deadline:
    _time.sleep(0.01)
import psutil as _psutil
print(json.dumps({
    "threads": [t.name for t in _threading.enumerate() if t is not _threading.main_thread()],
    "fds": sorted(set(os.listdir("/proc/self/fd")) - FDS_BEFORE),
    "children": [p.pid for p in _psutil.Process().children() if p.status() != "zombie"],
}))
"""


def run_script(
    tmp_path: Path, body: str, timeout_s: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``body`` (with json, os, sys, perfkit imported and FDS_BEFORE taken) as a script in
    ``tmp_path``; a hang fails the test after ``timeout_s``."""
    script = tmp_path / "script.py"
    head = "import json, os, sys\nimport perfkit\nFDS_BEFORE = set(os.listdir('/proc/self/fd'))\n"
    script.write_text(head + textwrap.dedent(body))
    environ = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    try:
        return subprocess.run(
            [sys.executable, str(script), str(tmp_path / "runs")],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=environ,
            cwd=tmp_path,
        )
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"the script hung (over {timeout_s} s): {err.stderr!r:.2000}")


def last_json(done: subprocess.CompletedProcess[str]) -> dict:
    assert done.stdout.strip(), done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def only_run(tmp_path: Path) -> Path:
    (run_dir,) = (tmp_path / "runs").iterdir()
    return run_dir


def names(run_dir: Path) -> list[str]:
    lines = (run_dir / "records.jsonl").read_text().splitlines()
    return [json.loads(line)["name"] for line in lines]


# ----------------------------------------------------------------------------- 1: fork


LOADER = """
import torch
from torch.utils.data import DataLoader, Dataset


class Items(Dataset):
    def __len__(self):
        return 32

    @perfkit.timed("getitem")  # runs in the workers: a no-op there
    def __getitem__(self, i):
        return torch.tensor([i])


if __name__ == "__main__":
    method, epochs = sys.argv[2], int(sys.argv[3])
    loader = DataLoader(
        Items(), batch_size=4, num_workers=2, multiprocessing_context=method,
        persistent_workers=method != "fork",
    )
    run = perfkit.Run(
        "loader", out_dir=sys.argv[1], device="cpu", flush_interval_s=0.01, probes=["host"],
        sample_interval_s=0.01,
    )
    with run:
        for _ in range(epochs):
            with run.phase("train") as train:
                for batch in train.iterate(loader):
                    with perfkit.timed("parent"):
                        pass
    del loader
"""


@pytest.mark.parametrize(
    ("method", "epochs"),
    [
        ("fork", 20),
        pytest.param("forkserver", 2, marks=pytest.mark.slow),
        pytest.param("spawn", 2, marks=pytest.mark.slow),
    ],
)
def test_dataloader_workers_with_timed_never_hang_and_record_in_the_parent_only(
    tmp_path, method, epochs
):
    # Before issue 23, fork hung within about 13 epochs: a worker forked while the flusher or
    # the sampler held the record writer's lock, and perfkit.timed in the worker waited on it.
    script = tmp_path / "loader.py"
    script.write_text("import json, os, sys\nimport perfkit\n" + textwrap.dedent(LOADER))
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "runs"), method, str(epochs)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    run_dir = only_run(tmp_path)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "ok"
    assert summary["train_steps"] == epochs * 8  # 32 items / batches of 4, every epoch
    assert len(read_step_rows(run_dir / "steps.bin")) == epochs * 8
    found = names(run_dir)
    assert found.count("region/parent") == epochs * 8
    assert "region/getitem" not in found  # the workers' perfkit is a documented no-op


FORKS = (
    """
import signal, time
run = perfkit.Run("forks", out_dir=sys.argv[1], device="cpu", flush_interval_s=0.01,
                  probes=["host"], sample_interval_s=0.01)
run_dir = None
with run:
    run_dir = run.run_dir
    for i in range(20):
        pid = os.fork()
        if pid == 0:  # the child uses the parent's run, then leaves its with block
            with perfkit.timed("child"):
                run.log(child=1.0)
            with run.phase("val") as val:
                for _ in val.iterate(range(3), samples=1):
                    pass
            sys.exit(0)  # stop() in the child: a no-op; atexit: the run is not the child's
        deadline = time.monotonic() + 20
        while os.waitpid(pid, os.WNOHANG) == (0, 0):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                print(json.dumps({"hung": i}))
                sys.exit(3)
            time.sleep(0.001)
        assert not (run_dir / "summary.json").exists(), "a child wrote the summary"
        with perfkit.timed("parent"):
            pass
    run.log(acc=0.5)
"""
    + LEAKS
)


FORK_WHILE_SAMPLER_HOLDS_LOCKS = """
import threading
run = perfkit.Run("held", out_dir=sys.argv[1], device="cpu", probes=None)
with run:
    # What the sampler thread holds while it folds a sample in: the memory tracker's and the
    # power log's locks (held here by a thread that keeps them over the fork).
    held, release = threading.Event(), threading.Event()

    def hold():
        with run._memory._lock, run._power._lock:
            held.set()
            release.wait()

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait()
    pid = os.fork()
    if pid == 0:
        with run.phase("val") as val:
            for _ in val.iterate(range(3), samples=1):
                pass
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    release.set()
    holder.join()
    print(json.dumps({"child": status}))
"""


def test_a_forked_child_never_waits_on_the_samplers_locks(tmp_path):
    # Before: the child's phase waited forever on the tracker's lock (child 9 of 20 hung in
    # test_forked_children_never_block... in one full-suite run, where the sampler held it).
    done = run_script(tmp_path, FORK_WHILE_SAMPLER_HOLDS_LOCKS, timeout_s=30)
    assert done.returncode == 0, done.stderr[-2000:]
    assert last_json(done) == {"child": 0}


def test_forked_children_never_block_and_never_write_the_parent_files(tmp_path):
    # Before issue 23: 1 child in 13-22 hung on the writer's lock, and a child leaving the
    # with block wrote the parent's summary.json (status failed) while the parent still ran.
    done = run_script(tmp_path, FORKS)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert last_json(done) == {"threads": [], "fds": [], "children": []}
    run_dir = only_run(tmp_path)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["acc"] == 0.5 and "child" not in summary
    found = names(run_dir)
    assert found.count("region/parent") == 20
    assert "region/child" not in found and "child" not in found and "phase_start" not in found
    assert read_step_rows(run_dir / "steps.bin") == []


def test_a_child_may_start_a_run_of_its_own(tmp_path):
    body = """
    with perfkit.Run("parent", out_dir=sys.argv[1], device="cpu") as parent:
        pid = os.fork()
        if pid == 0:
            with perfkit.Run("child", out_dir=sys.argv[1], device="cpu") as child:
                child.log(acc=0.25)
            os._exit(0)
        assert os.waitpid(pid, 0)[1] == 0
        parent.log(acc=0.75)
    """
    done = run_script(tmp_path, body)
    assert done.returncode == 0, done.stderr[-2000:]
    runs = {p.name.split("-")[0]: p for p in (tmp_path / "runs").iterdir()}
    for name, acc in (("parent", 0.75), ("child", 0.25)):
        summary = json.loads((runs[name] / "summary.json").read_text())
        assert (summary["status"], summary["acc"]) == ("ok", acc)


def test_a_timed_region_pickles_by_its_label_for_spawned_workers():
    import pickle

    region = pickle.loads(pickle.dumps(perfkit.timed("load")))
    assert isinstance(region, perfkit.timed) and region.label == "load"
    with region:  # no active run: a no-op
        pass


# ------------------------------------------------------------------ 2: runs never stopped


NEVER_STOPPED = """
run = perfkit.Run("open", out_dir=sys.argv[1], device="cpu", flush_interval_s=60)
run.start()
train = run.phase("train").__enter__()
for _ in train.iterate(range(100), samples=1):
    pass
run.log(acc=0.5)
if os.environ.get("RAISE"):
    raise RuntimeError("boom")
"""


@pytest.mark.parametrize(
    ("env", "status", "error", "returncode"),
    [({}, "unfinished", None, 0), ({"RAISE": "1"}, "failed", "RuntimeError: boom", 1)],
)
def test_a_run_never_stopped_is_closed_at_exit(tmp_path, env, status, error, returncode):
    # Before issue 23: 0 of the 100 steps and no logged value on disk, no summary (flush
    # interval 60 s: nothing was flushed before the exit).
    done = run_script(tmp_path, NEVER_STOPPED, env=env)
    assert done.returncode == returncode, done.stderr[-2000:]
    run_dir = only_run(tmp_path)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == status and summary.get("error") == error
    assert summary["acc"] == 0.5 and summary["train_steps"] == 100
    assert len(read_step_rows(run_dir / "steps.bin")) == 100
    assert "acc" in names(run_dir)
    assert "closed at exit" in done.stderr


NEVER_STOPPED_INSIDE_EVALUATION = """
run = perfkit.Run("open", out_dir=sys.argv[1], device="cpu", flush_interval_s=60)
run.start()
train = run.phase("train").__enter__()
for step in train.iterate(range(4), samples=2):
    if step == 3:  # an evaluation inside the last train step, never ended
        val = run.phase("val").__enter__()
        for _ in val.iterate(range(5), samples=1):
            pass
        break
"""


def test_a_run_never_stopped_inside_an_evaluation_closes_both_phases(tmp_path):
    # The open val phase is ended first, then the train phase it paused: 3 whole train steps of
    # 2 samples (the 4th was cut short by the exit) and 5 val steps of 1 sample.
    done = run_script(tmp_path, NEVER_STOPPED_INSIDE_EVALUATION)
    assert done.returncode == 0, done.stderr[-2000:]
    run_dir = only_run(tmp_path)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "unfinished"
    assert (summary["train_samples"], summary["val_samples"]) == (6, 5)
    records = [json.loads(line) for line in (run_dir / "records.jsonl").read_text().splitlines()]
    ended = [r["phase"] for r in records if r["name"] == "phase_samples"]
    assert ended == ["val", "train"]  # both phases' ends on disk, the inner one first


# ------------------------------------------------------------------------ 3: interrupts


INTERRUPTED_STOP = (
    """
import signal
from perfkit.probes import Probe


class Interrupting(Probe):
    # The second Ctrl-C (SIGINT to its own process) while the sampler stops: the main thread
    # is then inside stop(), joining this thread.
    name = "interrupting"
    kind = "host"

    def sample(self):
        return []

    def close(self):
        os.kill(os.getpid(), signal.SIGINT)


run = perfkit.Run("stopping", out_dir=sys.argv[1], device="cpu", probes=[Interrupting()],
                  sample_interval_s=0.01, flush_interval_s=60)
try:
    with run:
        run.log(acc=0.5)
        with run.phase("train") as train:
            for step in train.iterate(range(10), samples=1):
                if step == 9:  # the first Ctrl-C, in the loop's last step
                    os.kill(os.getpid(), signal.SIGINT)
except KeyboardInterrupt:
    print("interrupted")
again = run.stop()
print(json.dumps(again))
"""
    + LEAKS
)


def test_ctrl_c_twice_while_the_run_stops_still_writes_everything(tmp_path):
    # Before issue 23: no summary.json, acc never written, status ok, the flusher thread and 2
    # fds leaked, and the second stop() raised "was never started".
    done = run_script(tmp_path, INTERRUPTED_STOP)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert lines[0] == "interrupted"
    assert last_json(done) == {"threads": [], "fds": [], "children": []}
    summary = json.loads((only_run(tmp_path) / "summary.json").read_text())
    assert json.loads(lines[1]) == summary  # stop() again: the same summary, no error
    assert summary["status"] == "failed" and summary["error"].startswith("KeyboardInterrupt")
    assert summary["acc"] == 0.5 and summary["train_steps"] == 9  # the step that raised: not
    assert "acc" in names(only_run(tmp_path))
    assert len(read_step_rows(only_run(tmp_path) / "steps.bin")) == 9


INTERRUPTED_START = (
    """
run = perfkit.Run("starting", out_dir=sys.argv[1], device="cpu")
try:
    run.start()
except KeyboardInterrupt:
    print("interrupted")
assert perfkit.run.active_run() is None
with perfkit.Run("after", out_dir=sys.argv[1] + "-after", device="cpu") as after:
    after.log(acc=0.5)
print(json.dumps(after.summary()["status"]))
"""
    + LEAKS
)


def test_ctrl_c_while_start_collects_metadata_leaves_nothing_behind(tmp_path):
    # A slow git (a fake on PATH) sends Ctrl-C to perfkit's process while start() collects
    # the metadata. Before issue 23: a run directory without meta.json, and 2 fds leaked.
    tools = tmp_path / "bin"
    tools.mkdir()
    git = tools / "git"
    git.write_text(
        f"#!/bin/sh\n[ -e {tools}/once ] && exit 1\ntouch {tools}/once\nkill -INT $PPID\nsleep 5\n"
    )
    git.chmod(0o755)
    done = run_script(tmp_path, INTERRUPTED_START, env={"PATH": f"{tools}:{os.environ['PATH']}"})
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert lines[:2] == ["interrupted", '"ok"']
    assert last_json(done) == {"threads": [], "fds": [], "children": []}
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


INTERRUPTED_SAMPLER_START = (
    """
import signal
from perfkit.probes import Probe


class Interrupting(Probe):
    name = "interrupting"
    kind = "host"

    def set_interval(self, interval_s):  # called by start() as it starts the sampler
        os.kill(os.getpid(), signal.SIGINT)

    def sample(self):
        return []


run = perfkit.Run("starting", out_dir=sys.argv[1], device="cpu", probes=[Interrupting()])
try:
    run.start()
except KeyboardInterrupt:
    print("interrupted")
assert perfkit.run.active_run() is None
print(json.dumps(run.stop()["status"]))
"""
    + LEAKS
)


def test_ctrl_c_while_start_starts_the_sampler_ends_the_run_as_failed(tmp_path):
    done = run_script(tmp_path, INTERRUPTED_SAMPLER_START)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert lines[:2] == ["interrupted", '"failed"']
    assert last_json(done) == {"threads": [], "fds": [], "children": []}
    run_dir = only_run(tmp_path)
    assert json.loads((run_dir / "meta.json").read_text())["name"] == "starting"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["error"].startswith("KeyboardInterrupt")


def test_a_failure_inside_stop_still_deactivates_the_run(tmp_path):
    broken = []

    def clock() -> float:  # a clock that breaks once the run stops
        return "later" if broken else 1.0  # type: ignore[return-value]

    run = perfkit.Run("broken-clock", out_dir=tmp_path, device="cpu", clock=clock, probes=None)
    run.start()
    broken.append(True)
    with pytest.raises(TypeError):
        run.stop()
    assert perfkit.run.active_run() is None
    assert run.stop() == run.stop()  # idempotent after the failure
    with perfkit.Run("next", out_dir=tmp_path, device="cpu", probes=None) as nxt:
        nxt.log(acc=1.0)
    assert nxt.summary()["status"] == "ok"


def test_the_clock_is_checked_at_start_with_the_argument_named(tmp_path):
    run = perfkit.Run("clock", out_dir=tmp_path, device="cpu", clock=lambda: "12")  # type: ignore[arg-type, return-value]
    with pytest.raises(TypeError, match="Expected argument `clock` to return seconds"):
        run.start()
    assert perfkit.run.active_run() is None and not list(tmp_path.iterdir())


# ---------------------------------------------------------------------- 4: signal handlers


def test_a_sigterm_handler_installed_during_the_run_stays(tmp_path):
    def handler(signum, frame):  # pragma: no cover - never called
        pass

    before = signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        with perfkit.Run("handler", out_dir=tmp_path, device="cpu", probes=None):
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL  # perfkit's
            signal.signal(signal.SIGTERM, handler)
        assert signal.getsignal(signal.SIGTERM) is handler  # before issue 23: SIG_DFL
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        with perfkit.Run("default", out_dir=tmp_path, device="cpu", probes=None):
            pass
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # perfkit's own: undone
    finally:
        signal.signal(signal.SIGTERM, before)
