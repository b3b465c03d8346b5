"""What a Run sets up when it starts: the device and its timer, the run directory, the config
check and the metadata (versions, host, device name; :mod:`perfkit.environment` gives the
reproducibility record in it)."""

from __future__ import annotations

import json
import math
import os
import platform
import secrets
import socket
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from perfkit import checks, distributed
from perfkit.devices import device_name
from perfkit.environment import environment, package_version
from perfkit.records import SCHEMA_VERSION
from perfkit.run._errors import RunError
from perfkit.timing import Clock, EventTimer, HostTimer, SyncingHostTimer, WindowTimer


def check_config(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """``config`` as a dict, checked to be JSON-serialisable; {} for None. The error names the
    first bad entry (``config['opt']['lr']``), not the whole config."""
    if config is None:
        return {}
    expected = "a JSON-serialisable mapping (str/number/bool/list/dict values)"
    if not isinstance(config, Mapping):
        raise checks.wrong_type("config", expected, config)
    try:
        json.dumps(dict(config), allow_nan=False)
    except (TypeError, ValueError, RecursionError) as err:
        where, value = _first_bad_entry(dict(config), "config", 0) or ("config", config)
        message = f"Expected argument `config` to be {expected} but got {where} = "
        message += f"{checks.short_repr(value)} ({type(value).__name__}): {err!s:.200}"
        raise TypeError(message) from None
    return dict(config)


def _first_bad_entry(value: Any, where: str, depth: int) -> tuple[str, Any] | None:
    """(where, value) of the first entry of ``value`` JSON cannot hold, None if none."""
    if depth > 64:  # nested this deep: a cycle, or as good as one
        return where, value
    if isinstance(value, dict):
        for key, item in value.items():
            if not (key is None or isinstance(key, (str, int, float))):
                return f"{where} key {checks.short_repr(key, 60)}", key
            if not _plain(item):
                found = _first_bad_entry(item, f"{where}[{checks.short_repr(key, 60)}]", depth + 1)
                if found is not None:
                    return found
        return None
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            if not _plain(item):
                found = _first_bad_entry(item, f"{where}[{index}]", depth + 1)
                if found is not None:
                    return found
        return None
    return None if _plain(value) else (where, value)


def _plain(value: Any) -> bool:
    """A JSON scalar: None, a str, an int, a finite float."""
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, (str, int))


#: Longest run name, bytes of UTF-8: the run id adds the time, pid and a random suffix and must
#: stay within a file name's 255 bytes.
MAX_NAME_BYTES = 200


def check_name(name: object) -> str:
    """``name`` if it is a usable run name: TypeError / ValueError naming ``name`` if not."""
    checks.non_empty_str("name", name, forbidden="/\\\0")
    assert isinstance(name, str)
    expected = f"a run name of at most {MAX_NAME_BYTES} bytes of UTF-8, not '.' or '..'"
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate: no file name can hold it
        raise checks.wrong_value("name", expected, name) from None
    if name in (".", "..") or size > MAX_NAME_BYTES:
        raise checks.wrong_value("name", expected, name)
    return name


def check_out_dir(out_dir: Any) -> Path:
    """``out_dir`` as a Path: a str or os.PathLike naming a folder path without NUL."""
    expected = "a folder path (str or os.PathLike)"
    checks.check_type("out_dir", out_dir, (str, os.PathLike), expected)
    text = os.fspath(out_dir)
    if not isinstance(text, str):
        raise checks.wrong_type("out_dir", expected, out_dir)
    if "\0" in text or not text:
        raise checks.wrong_value("out_dir", f"{expected}, not empty, without NUL", out_dir)
    return Path(text)


def new_run_id(name: str, started: datetime) -> str:
    """``<name>-<UTC time>-<pid>-<random hex>``: unique even for two processes with the same pid
    (pid 1 in two containers) on one shared volume."""
    return f"{name}-{started:%Y%m%d-%H%M%S}-{os.getpid()}-{secrets.token_hex(3)}"


def make_run_dir(out_dir: Path, run_id: str, *, exclusive: bool = True) -> Path:
    """Create ``out_dir/run_id`` and check it is writable (RunError if not). ``exclusive``: the
    directory must not exist yet (FileExistsError otherwise: the caller picks another id);
    False for the ranks that join rank 0's directory."""
    run_dir = out_dir / run_id
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # a file, or a link to one, by that name
        raise checks.wrong_value(
            "out_dir", "a folder, or a path where one can be made (not a file)", str(out_dir)
        ) from None
    except OSError as err:
        raise RunError(f"out_dir {str(out_dir)!r} is not writable: {err}") from err
    try:
        if exclusive:
            os.mkdir(run_dir)
        else:
            run_dir.mkdir(exist_ok=True)
    except FileExistsError:
        if exclusive:
            raise
    except OSError as err:
        raise RunError(f"out_dir {str(out_dir)!r} is not writable: {err}") from err
    try:
        probe = run_dir / f".write-test-{os.getpid()}-{secrets.token_hex(3)}"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise RunError(f"run directory {str(run_dir)!r} is not writable: {err}") from err
    return run_dir


def create_run_dir(out_dir: Path, name: str, started: datetime) -> tuple[str, Path]:
    """A new run id and its directory, created exclusively (a fresh suffix on a clash)."""
    for _ in range(100):
        run_id = new_run_id(name, started)
        try:
            return run_id, make_run_dir(out_dir, run_id)
        except FileExistsError:
            continue
    raise RunError(f"could not create a new run directory in {str(out_dir)!r}")


def make_timer(device: str, sync: str, clock: Clock) -> WindowTimer:
    """The window timer for ``device`` and the ``sync`` mode ("phase" or "step")."""
    device_type = device.split(":")[0]
    if device_type == "cpu":
        return HostTimer(clock)
    if sync == "step":
        from perfkit.timing import device_synchronizer

        return SyncingHostTimer(device_synchronizer(device_type), clock)
    if device_type == "cuda":
        import torch

        torch.cuda.set_device(int(device.split(":")[1]))
    return EventTimer(device_type)


def metadata(
    *,
    run_id: str,
    name: str,
    started: datetime,
    device: str,
    rank: int,
    world_size: int,
    config: Mapping[str, Any],
    e2e_from: str,
    sync: str,
    timer: WindowTimer,
) -> dict[str, Any]:
    """The run's meta.json; rank 0's also has :func:`perfkit.environment.environment`'s
    versions, accelerator, environment variables and git revision."""
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "name": name,
        "started_at": started.isoformat(),
        "perfkit_version": package_version("perfkit"),
        "torch_version": package_version("torch"),
        "python_version": platform.python_version(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "device": device,
        "device_name": device_name(device),
        "rank": rank,
        "world_size": world_size,
        "layout": distributed.layout(),
        "config": dict(config),
        "e2e_from": e2e_from,
        "sync": sync,
        "timer": type(timer).__name__,
        **(environment() if rank == 0 else {}),
    }
