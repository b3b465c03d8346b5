"""What a benchmark report needs to be reproduced, for meta.json (pure; never raises).

``environment(script)`` returns the accelerator in use (and whose chip a "cuda" device is),
software versions (torch and its CUDA / HIP build, the vendor
torch extensions, the NVIDIA driver and its CUDA version through NVML when it loads, ROCm / DTK
and CANN / Ascend driver versions from their install files), the environment variables that
choose devices and tune collectives, and the git revision of the script's directory. Every part
that cannot be read is None (or absent), never an exception; git runs with a time limit.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from perfkit.devices import cuda_vendor, current_accelerator

#: Variables recorded by exact name: device visibility and allocator / determinism settings.
ENV_NAMES = (
    "CUDA_VISIBLE_DEVICES",
    "CUDA_DEVICE_ORDER",
    "NVIDIA_VISIBLE_DEVICES",
    "HIP_VISIBLE_DEVICES",
    "ROCR_VISIBLE_DEVICES",
    "ASCEND_RT_VISIBLE_DEVICES",
    "ASCEND_VISIBLE_DEVICES",
    "MLU_VISIBLE_DEVICES",
    "XPU_VISIBLE_DEVICES",
    "MUSA_VISIBLE_DEVICES",
    "ZE_AFFINITY_MASK",
    "OMP_NUM_THREADS",
    "PYTORCH_CUDA_ALLOC_CONF",
    "CUBLAS_WORKSPACE_CONFIG",
)
#: Variables recorded by prefix: collective libraries (NCCL, RCCL, Ascend HCCL, Cambricon CNCL,
#: Kunlunxin BKCL, Moore Threads MCCL) and torch's distributed settings.
ENV_PREFIXES = ("NCCL_", "RCCL_", "HCCL_", "CNCL_", "BKCL_", "MCCL_", "TORCH_DISTRIBUTED_")
# Never recorded, whatever the prefix: names that look like credentials.
_SECRET = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|_KEY\b|CREDENTIAL", re.I)

#: Vendor torch extensions whose versions are recorded when installed.
VENDOR_PACKAGES = ("torch_npu", "torch_mlu", "torch_musa", "torch_xmlir", "torch_gcu")

#: Install files read for versions, relative to ``root`` ("/" unless testing).
VERSION_FILES = {
    "rocm": ("opt/rocm/.info/version",),
    "dtk": ("opt/dtk/.info/version",),
    "cann": (
        "usr/local/Ascend/ascend-toolkit/latest/version.cfg",
        "usr/local/Ascend/ascend-toolkit/latest/aarch64-linux/ascend_toolkit_install.info",
        "usr/local/Ascend/ascend-toolkit/latest/x86_64-linux/ascend_toolkit_install.info",
    ),
    "ascend_driver": ("usr/local/Ascend/driver/version.info",),
}

GIT_TIMEOUT_S = 2.0


def relevant_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The device-visibility and collective-library variables that are set, sorted by name."""
    env = os.environ if environ is None else environ
    return {
        name: env[name]
        for name in sorted(env)
        if (name in ENV_NAMES or name.startswith(ENV_PREFIXES)) and not _SECRET.search(name)
    }


def _version_in(text: str) -> str | None:
    """The version in an install file: ``version=8.0.RC1``, ``Version=23.0.3``,
    ``toolkit_installed_version=[8.0.RC1:...]`` or a bare ``6.2.4-120`` line."""
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and "version" in key.lower():
            value = value.strip().strip("[]").split(":")[0].strip()
            if value:
                return value
    first = text.strip().splitlines()[0].strip() if text.strip() else ""
    return first if re.fullmatch(r"\d[\w.+-]*", first) else None


def install_versions(root: str | Path = "/") -> dict[str, str]:
    """ROCm, DTK, CANN and Ascend driver versions from their install files, where present."""
    out = {}
    for name, candidates in VERSION_FILES.items():
        for relative in candidates:
            try:
                version = _version_in((Path(root) / relative).read_text(errors="replace"))
            except OSError:
                continue
            if version:
                out[name] = version
                break
    return out


@functools.cache
def package_version(package: str) -> str | None:
    """The installed version of ``package``, None when it is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def torch_versions() -> dict[str, str]:
    """torch's version and its CUDA / HIP build, if torch is already imported (never imports
    it), and the installed vendor extensions' versions."""
    out: dict[str, str] = {}
    torch = sys.modules.get("torch")
    if torch is not None:
        out["torch"] = str(getattr(torch, "__version__", ""))
        build = getattr(torch, "version", None)
        for key in ("cuda", "hip"):
            value = getattr(build, key, None)
            if value:
                out[f"torch_{key}"] = str(value)
    for package in VENDOR_PACKAGES:
        version = package_version(package)
        if version:
            out[package] = version
    return out


def accelerator_info(torch: Any = None) -> dict[str, str]:
    """The accelerator torch uses: ``type`` ("cuda", "npu", ...), and once the program has
    initialised it, device 0's ``name`` and, for "cuda", the ``vendor`` (``cuda_vendor``:
    Iluvatar, MetaX and Hygon run as "cuda"). Empty when torch is not imported or sees none;
    never initialises a device."""
    torch = sys.modules.get("torch") if torch is None else torch
    try:
        kind = current_accelerator(torch) if torch is not None else None
        if kind is None:
            return {}
        out = {"type": kind}
        module: Any = getattr(torch, kind, None)
        initialized = getattr(module, "is_initialized", None)
        if callable(initialized) and initialized():
            out["name"] = str(module.get_device_name(0))
            if kind == "cuda":
                hip = bool(getattr(getattr(torch, "version", None), "hip", None))
                out["vendor"] = cuda_vendor(out["name"], hip=hip)
        return out
    except Exception:  # a broken backend must not cost the rest of meta.json
        return {}


def nvidia_driver(nvml: Any = None) -> dict[str, str]:
    """The NVIDIA driver version and the CUDA version it supports, through NVML; empty when
    NVML does not load (no NVIDIA driver). ``nvml``: an initialised pynvml (tests)."""
    try:
        if nvml is None:
            from perfkit.probes.nvml import nvml as load

            nvml = load()
        driver = nvml.nvmlSystemGetDriverVersion()
        cuda = int(nvml.nvmlSystemGetCudaDriverVersion_v2())
    except Exception:  # no driver, old library: the rest of meta.json still matters
        return {}
    driver = driver.decode() if isinstance(driver, bytes) else str(driver)
    return {"nvidia_driver": driver, "cuda_driver": f"{cuda // 1000}.{cuda % 1000 // 10}"}


def _git(directory: Path, *args: str, timeout_s: float) -> str | None:
    """git's stdout, None when git fails, is missing or takes over ``timeout_s`` seconds. An
    interrupt (Ctrl-C) is raised only once git is started and then killed: never leaves it
    running, unowned."""
    try:
        with _interrupt_held() as interrupted:
            process = subprocess.Popen(
                ["git", "-C", str(directory), *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
    except (OSError, subprocess.SubprocessError):
        return None
    with process:
        try:
            if interrupted:
                raise KeyboardInterrupt
            out, _err = process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            return None
        except BaseException:
            process.kill()
            raise
    return out.strip() if process.returncode == 0 else None


@contextlib.contextmanager
def _interrupt_held() -> Iterator[list[int]]:
    """Hold Ctrl-C (SIGINT) back while a child process starts - where this is the main thread
    and the handler is Python's default one, which is put back after: an interrupt in the middle
    of the start would leave the child running with no one to stop it. Yields a list that holds
    the signal when one came."""
    came: list[int] = []
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield came
        return
    signal.signal(signal.SIGINT, lambda signum, _frame: came.append(signum))
    try:
        yield came
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def git_revision(path: str | Path, *, timeout_s: float = GIT_TIMEOUT_S) -> dict[str, Any] | None:
    """``{"commit", "branch", "dirty", "root"}`` of the repository holding ``path`` (a file or a
    directory), or None outside a repository, without git, or when git takes over
    ``timeout_s`` per call."""
    try:
        directory = Path(path).resolve()
        if not directory.is_dir():
            directory = directory.parent
    except OSError:
        return None
    commit = _git(directory, "rev-parse", "HEAD", timeout_s=timeout_s)
    if not commit:
        return None
    status = _git(directory, "status", "--porcelain", "--untracked-files=no", timeout_s=timeout_s)
    return {
        "commit": commit,
        "branch": _git(directory, "rev-parse", "--abbrev-ref", "HEAD", timeout_s=timeout_s),
        "dirty": None if status is None else bool(status),
        "root": _git(directory, "rev-parse", "--show-toplevel", timeout_s=timeout_s),
    }


def script_path() -> Path | None:
    """The running script (``sys.argv[0]``), or None in an interactive session."""
    argv0 = sys.argv[0] if sys.argv else ""
    return Path(argv0) if argv0 and argv0 not in ("-c", "-m", "-") else None


def environment(
    script: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    root: str | Path = "/",
    nvml: Any = None,
) -> dict[str, Any]:
    """``{"versions", "accelerator", "env", "git"}`` for meta.json. ``script`` defaults to
    ``sys.argv[0]`` (its directory's git revision; the working directory's without a script)."""
    versions = {**torch_versions(), **nvidia_driver(nvml), **install_versions(root)}
    where = script if script is not None else script_path() or Path.cwd()
    return {
        "versions": versions,
        "accelerator": accelerator_info(),
        "env": relevant_env(environ),
        "git": git_revision(where),
    }
