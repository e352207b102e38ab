"""The conda environment files (envs/) are ones conda and pip accept.

Structure: channels, a pinned Python, pip, one pip section of plain requirements (pip refuses
per-requirement options such as ``--no-deps`` in a requirements file, and a relative path would
point into .snakemake/conda/, where Snakemake copies the file before ``conda env create``); the
header cites files and channels that exist; the post-deploy script is valid bash and installs
what the YAML cannot. Resolution: ``pip install --dry-run --no-deps`` of the pip section and of
the no-deps file against PyPI (skipped when PyPI cannot be reached). tests/test_workflow.py keeps
the pins in step with pyproject.toml.
"""

from __future__ import annotations

import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml
from conftest import ROOT
from packaging.requirements import InvalidRequirement, Requirement

ENVS = ROOT / "envs"
ENV_FILES = sorted(ENVS.glob("*.yaml"))
INDEX = "https://pypi.org/simple"


def pip_section(env: dict) -> list[str]:
    sections = [item["pip"] for item in env["dependencies"] if isinstance(item, dict)]
    assert len(sections) == 1 and set(next(i for i in env["dependencies"] if isinstance(i, dict))) == {"pip"}
    return [str(line) for line in sections[0]]


def python_version(env: dict) -> str:
    (spec,) = [d for d in env["dependencies"] if isinstance(d, str) and re.match(r"python[=<>]", d)]
    return re.search(r"(\d+\.\d+)", spec).group(1)


def test_there_is_an_environment_file():
    assert ENVS / "medvisionllama.yaml" in ENV_FILES


@pytest.mark.parametrize("path", ENV_FILES, ids=lambda p: p.name)
def test_structure(path: Path):
    env = yaml.safe_load(path.read_text())
    assert isinstance(env, dict) and set(env) <= {"name", "channels", "dependencies"}, env.keys()
    channels = env["channels"]
    assert channels and all(isinstance(c, str) for c in channels)
    assert "defaults" not in channels  # Anaconda's channel has licence terms; conda-forge only
    conda_deps = [d for d in env["dependencies"] if isinstance(d, str)]
    assert "pip" in conda_deps
    assert re.fullmatch(r"3\.\d+", python_version(env))
    for line in pip_section(env):
        try:
            Requirement(line)
        except InvalidRequirement as exc:
            pytest.fail(f"{path.name}: pip section line {line!r} is not a plain requirement ({exc})")
    # the header names only files and channels that exist
    header = "\n".join(line for line in path.read_text().splitlines() if line.startswith("#"))
    for cited in re.findall(r"\b((?:tests|docs|envs)/[\w./-]+\.\w+)", header):
        assert (ROOT / cited).is_file(), f"{path.name} cites {cited}, which does not exist"
    for channel in re.findall(r"(?:the )?([\w-]+) channel\b", header):
        assert channel in channels, f"{path.name} mentions the {channel} channel but does not list it"
    for sibling in re.findall(r"\b(medvisionllama\.[\w.-]+)", header):
        assert (ENVS / sibling).is_file() or sibling.endswith(".yaml"), f"{path.name} cites envs/{sibling}"


def test_post_deploy_script_installs_what_the_yaml_cannot():
    script = ENVS / "medvisionllama.post-deploy.sh"  # Snakemake finds it by this name next to the YAML
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    assert "pip install --no-deps -r envs/medvisionllama.no-deps.txt" in text
    assert "pip install --no-deps -e ." in text
    for line in (ENVS / "medvisionllama.no-deps.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            Requirement(line)


def test_post_deploy_script_refuses_outside_the_repository(tmp_path):
    result = subprocess.run(["bash", str(ENVS / "medvisionllama.post-deploy.sh")], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "repository root" in result.stderr


def _pypi_reachable() -> bool:
    try:
        with urllib.request.urlopen(f"{INDEX}/pip/", timeout=10):
            return True
    except OSError:
        return False


@pytest.mark.parametrize("path", ENV_FILES, ids=lambda p: p.name)
def test_pip_part_resolves_on_pypi(path: Path, tmp_path: Path):
    if not _pypi_reachable():
        pytest.skip(f"{INDEX} cannot be reached")
    env = yaml.safe_load(path.read_text())
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("\n".join(pip_section(env)) + "\n")
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--ignore-installed",
               "--isolated", "--index-url", INDEX, "--python-version", python_version(env),
               "--only-binary=:all:", "-r", str(requirements)]
    no_deps = path.with_suffix(".no-deps.txt")
    if no_deps.is_file():
        command += ["-r", str(no_deps)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Would install" in result.stdout
    for line in pip_section(env):
        name = Requirement(line).name.lower().replace("_", "-")
        installs = result.stdout.lower().replace("_", "-")
        assert re.search(rf"\b{re.escape(name)}-\d", installs), f"{name} missing from: {result.stdout[-500:]}"


def _stated_cuda(text: str) -> set[str]:
    """The CUDA versions a text says the default torch build is for ("built for CUDA 13.0")."""
    return set(re.findall(r"built for\s+(?:\*\*)?CUDA (\d+\.\d+)", text))


def test_env_file_makefile_and_docs_name_the_same_cuda_build():
    header = "\n".join(line.lstrip("# ") for line in (ENVS / "medvisionllama.yaml").read_text().splitlines()
                       if line.startswith("#"))
    docs = (ROOT / "docs" / "slurm.md").read_text()
    makefile = (ROOT / "Makefile").read_text()
    for text in (header, docs, makefile.replace("\n# ", " ")):
        assert "13.0" in _stated_cuda(text) and _stated_cuda(text) <= {"13.0", "12.8"}, _stated_cuda(text)
    for text in (header, docs, makefile):
        assert "CUDA 12 build;" not in text and "whl/cu126" not in text  # the claims that were wrong
        assert "580" in text  # the driver that CUDA 13.0 needs


def test_the_env_files_torch_is_the_cuda_build_its_header_names(tmp_path):
    """What pip would install for the env file's torch requirement, read from PyPI's metadata of
    that wheel (no download of the wheel itself): its CUDA toolkit is the header's."""
    if not _pypi_reachable():
        pytest.skip(f"{INDEX} cannot be reached")
    env = yaml.safe_load((ENVS / "medvisionllama.yaml").read_text())
    torch_lines = [line for line in pip_section(env) if Requirement(line).name == "torch"]
    report = tmp_path / "report.json"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "--isolated", "install", "--dry-run", "--no-deps", "--ignore-installed",
         "--quiet", "--index-url", INDEX, "--report", str(report), *torch_lines],
        capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr[-3000:]
    import json

    metadata = json.loads(report.read_text())["install"][0]["metadata"]
    if not (sys.platform == "linux" and __import__("platform").machine() == "x86_64"):
        pytest.skip("PyPI's CUDA builds of torch are the Linux x86_64 wheels")
    toolkit = [d for d in metadata.get("requires_dist", []) if re.match(r"(cuda-toolkit|nvidia-cuda-runtime)", d)]
    assert toolkit, metadata.get("requires_dist")
    found = re.search(r"==(\d+)\.(\d+)", toolkit[0])
    header = (ENVS / "medvisionllama.yaml").read_text()
    assert found and f"CUDA {found.group(1)}.0" in header.replace("\n# ", " "), (metadata["version"], toolkit[0])
