"""perfkit.environment: versions from install files and NVML, the recorded environment variables,
and the git revision of real repositories made in tmp dirs (and a git that hangs)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from perfkit import environment as env


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True)
    git(root, "init", "-q", "-b", "bench")
    (root / "scripts" / "train.py").write_text("print('hi')\n")
    git(root, "add", ".")
    git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    return root


def test_git_revision_of_the_scripts_repository(repo: Path) -> None:
    found = env.git_revision(repo / "scripts" / "train.py")
    assert found == {
        "commit": git(repo, "rev-parse", "HEAD"),
        "branch": "bench",
        "dirty": False,
        "root": str(repo.resolve()),
    }
    (repo / "scripts" / "train.py").write_text("print('changed')\n")
    assert env.git_revision(repo / "scripts")["dirty"] is True  # type: ignore[index]


def test_no_repository_and_no_git_give_none(
    tmp_path: Path, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outside = tmp_path / "plain"
    outside.mkdir()
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    assert env.git_revision(outside) is None
    assert env.git_revision(tmp_path / "missing" / "x.py") is None
    monkeypatch.setenv("PATH", str(outside))  # no git executable at all
    assert env.git_revision(repo) is None


def test_hanging_git_is_cut_off(
    tmp_path: Path, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "git"
    fake.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(30)\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    started = time.monotonic()
    assert env.git_revision(repo, timeout_s=0.3) is None
    assert time.monotonic() - started < 10


def test_relevant_env_names_and_prefixes() -> None:
    environ = {
        "CUDA_VISIBLE_DEVICES": "0,1",
        "ASCEND_RT_VISIBLE_DEVICES": "4",
        "MLU_VISIBLE_DEVICES": "2",
        "HIP_VISIBLE_DEVICES": "3",
        "NCCL_DEBUG": "INFO",
        "HCCL_CONNECT_TIMEOUT": "1200",
        "BKCL_TIMEOUT": "100",
        "NCCL_IB_SECRET_KEY": "x",  # looks like a credential: never recorded
        "HOME": "/root",
        "PATH": "/bin",
    }
    assert env.relevant_env(environ) == {
        "ASCEND_RT_VISIBLE_DEVICES": "4",
        "BKCL_TIMEOUT": "100",
        "CUDA_VISIBLE_DEVICES": "0,1",
        "HCCL_CONNECT_TIMEOUT": "1200",
        "HIP_VISIBLE_DEVICES": "3",
        "MLU_VISIBLE_DEVICES": "2",
        "NCCL_DEBUG": "INFO",
    }


def test_relevant_env_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HCCL_BUFFSIZE", "200")
    assert env.relevant_env()["HCCL_BUFFSIZE"] == "200"


def test_install_versions_from_files(tmp_path: Path) -> None:
    files = {
        "opt/rocm/.info/version": "6.2.4-120\n",
        "usr/local/Ascend/driver/version.info": "Version=23.0.3\nascendhal_version=7.35.19\n",
        "usr/local/Ascend/ascend-toolkit/latest/aarch64-linux/ascend_toolkit_install.info": (
            "package_name=Ascend-cann-toolkit\nversion=8.0.RC1\ninnerversion=V100R001C17\n"
        ),
    }
    for relative, text in files.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(text)
    assert env.install_versions(tmp_path) == {
        "rocm": "6.2.4-120",
        "cann": "8.0.RC1",
        "ascend_driver": "23.0.3",
    }
    assert env.install_versions(tmp_path / "nothing") == {}


def test_nvidia_driver_through_nvml_and_without_it() -> None:
    nvml = SimpleNamespace(
        nvmlSystemGetDriverVersion=lambda: "550.54.15",
        nvmlSystemGetCudaDriverVersion_v2=lambda: 12040,  # 12.4
    )
    assert env.nvidia_driver(nvml) == {"nvidia_driver": "550.54.15", "cuda_driver": "12.4"}

    def no_driver() -> str:
        raise RuntimeError("NVML Shared Library Not Found")

    assert env.nvidia_driver(SimpleNamespace(nvmlSystemGetDriverVersion=no_driver)) == {}


def test_environment_in_one_call(repo: Path, tmp_path: Path) -> None:
    import torch

    nvml = SimpleNamespace(
        nvmlSystemGetDriverVersion=lambda: b"535.1", nvmlSystemGetCudaDriverVersion_v2=lambda: 12020
    )
    meta = env.environment(
        repo / "scripts" / "train.py", environ={"NCCL_ALGO": "Ring"}, root=tmp_path, nvml=nvml
    )
    assert meta["env"] == {"NCCL_ALGO": "Ring"}
    assert meta["accelerator"] == {}  # no accelerator here
    assert meta["git"]["branch"] == "bench"
    assert meta["versions"]["torch"] == torch.__version__
    assert meta["versions"]["nvidia_driver"] == "535.1"
    assert meta["versions"]["cuda_driver"] == "12.2"


def test_accelerator_info_names_cuda_compatible_vendors() -> None:
    cuda = SimpleNamespace(
        is_available=lambda: True,
        is_initialized=lambda: True,
        get_device_name=lambda index: "Iluvatar BI-V150",
    )
    torch = SimpleNamespace(cuda=cuda, version=SimpleNamespace(hip=None))
    assert env.accelerator_info(torch) == {
        "type": "cuda",
        "name": "Iluvatar BI-V150",
        "vendor": "iluvatar",
    }
    cuda.is_initialized = lambda: False  # not initialised by the program: the name is not read
    assert env.accelerator_info(torch) == {"type": "cuda"}


def test_accelerator_info_without_one_or_with_a_broken_backend() -> None:
    assert env.accelerator_info(SimpleNamespace()) == {}

    def broken() -> bool:
        raise RuntimeError("driver gone")

    assert env.accelerator_info(SimpleNamespace(npu=SimpleNamespace(is_available=broken))) == {}


def test_run_writes_the_environment_into_meta_json(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    import torch

    import perfkit

    monkeypatch.setattr(sys, "argv", [str(repo / "scripts" / "train.py")])
    monkeypatch.setenv("NCCL_ALGO", "Tree")
    with perfkit.Run("env", out_dir=tmp_path / "runs", device="cpu", probes=None) as run:
        pass
    meta = json.loads((run.run_dir / "meta.json").read_text())
    assert meta["env"]["NCCL_ALGO"] == "Tree"
    assert meta["versions"]["torch"] == torch.__version__
    assert meta["git"]["branch"] == "bench"
    assert meta["git"]["commit"] == git(repo, "rev-parse", "HEAD")
