"""CI's packaging check, offline: build the sdist from this tree and the wheel from the
unpacked sdist (the installed setuptools, no build isolation, so nothing is downloaded), check
that the sdist holds what its tests need and run one test file from it, then install the wheel
(no dependencies) into a fresh venv that sees this venv's packages (torch, numpy, ...) but not
the source tree, and run ``import perfkit``, ``perfkit --help`` and the README's quick start
there. Run by ``make package-check`` (.ci/run) with the dev venv's python."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: What an unpacked sdist must hold for its tests to run.
SDIST_NEEDS = (
    "tests/conftest.py", "tests/fixtures_probes", "examples/common.py", "docs/analysis.md",
    "perfkit/record.schema.json", "MANIFEST.in", "Makefile",
)  # fmt: skip
_BUILD = "from setuptools import build_meta as b; print(b.build_{}({!r}))"


def run(*args: object, cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run ``args`` in ``cwd``; print and return its stdout; raise on a non-zero exit."""
    proc = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr}")
    return proc.stdout


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        dist = tmp / "dist"
        egg_info = REPO / "perfkit.egg-info"
        made_egg_info = not egg_info.exists()
        built = run(sys.executable, "-c", _BUILD.format("sdist", str(dist)), cwd=REPO)
        if made_egg_info:  # setuptools' by-product in the tree, not ours to leave
            shutil.rmtree(egg_info, ignore_errors=True)
        sdist = dist / built.strip().splitlines()[-1]
        with tarfile.open(sdist) as archive:
            archive.extractall(tmp, filter="data")
        unpacked = tmp / sdist.name.removesuffix(".tar.gz")
        missing = [p for p in SDIST_NEEDS if not (unpacked / p).exists()]
        if missing:
            raise SystemExit(f"the sdist lacks {missing}")
        name = run(sys.executable, "-c", _BUILD.format("wheel", str(dist)), cwd=unpacked)
        wheel = dist / name.strip().splitlines()[-1]
        print(f"built {sdist.name} and {wheel.name}")

        venv = tmp / "venv"
        run(sys.executable, "-m", "venv", venv, cwd=tmp)
        python = venv / "bin" / "python"
        purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
        site = run(python, "-c", purelib, cwd=tmp)
        # this venv's packages after the fresh venv's own (a plain path: its .pth files, such
        # as the editable perfkit's, are not read)
        Path(site.strip(), "dev-venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
        run(python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", wheel, cwd=tmp)

        work = tmp / "work"
        work.mkdir()
        where = run(python, "-c", "import perfkit; print(perfkit.__file__)", cwd=work).strip()
        if not where.startswith(str(venv)):
            raise SystemExit(f"import perfkit found {where}, not the installed wheel")
        schema = "import perfkit.records as r; print(r.json_schema()['title'])"
        print(f"import perfkit: {where}; schema: {run(python, '-c', schema, cwd=work).strip()}")
        helped = run(venv / "bin" / "perfkit", "--help", cwd=work)
        if "exit status:" not in helped:
            raise SystemExit("perfkit --help does not list the exit statuses")
        found = re.search(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)
        assert found is not None, "README.md has no python block"
        print(run(python, "-c", found.group(1), cwd=work).strip())
        print(run(venv / "bin" / "perfkit", "report", "runs", cwd=work).strip())

        run(python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_public_api.py",
            cwd=unpacked)  # fmt: skip
        print("the sdist's tests run from it: tests/test_public_api.py passed")


if __name__ == "__main__":
    main()
