"""Images that follow the code, through the commands: ``tlops compile`` tags with the commit of ``TLOPS_GIT_COMMIT``,
and the commands of docker/README.md tag the images that the YAMLs they compile name.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from compiled import compiled_files as _files
from compiled import executor_images as _executor_images
from repository import REPO
from test_readme import BIN, TLOPS, Command, base_env, covers, readme_command, readme_commands, run, succeeded
from tlops import __version__
from tlops.pipeline.compile import PIPELINE_FILE
from tlops.pipeline.image import Images


def test_the_command_line_tags_with_the_commit_of_tlops_git_commit(tmp_path: Path) -> None:
    commit = "0123456789abcdef0123456789abcdef01234567"
    result = subprocess.run(
        [str(TLOPS), "compile", "--root", str(tmp_path)],
        env=base_env() | {"TLOPS_GIT_COMMIT": commit},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    succeeded(result)
    tagged = Images(tag=f"{__version__}-{commit}")
    assert set(_executor_images(tmp_path / "pipelines" / PIPELINE_FILE).values()) == {tagged.cpu, tagged.gpu}
    # --image-tag wins over the variable; a bad one is one line on stderr, exit status 2.
    result = subprocess.run(
        [str(TLOPS), "compile", "--root", str(tmp_path / "bad"), "--image-tag", "no good"],
        env=base_env() | {"TLOPS_GIT_COMMIT": commit},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "tlops: error: --image-tag 'no good' is not a Docker tag: use at most 128 letters, digits, '_', '.' and '-', "
        "not starting with '.' or '-'"
    ]
    assert not (tmp_path / "bad").exists()


# --- docker/README.md -----------------------------------------------------------------------------------------------

COMMIT_LINE = "COMMIT=$(git rev-parse HEAD)"
TAG_LINE = 'TAG=$(python -c "import tlops; print(tlops.__version__)")-$COMMIT'
COMPILE = "tlops compile --image-repository ghcr.io/my-org --image-tag $TAG --root build/kfp"


@covers(COMMIT_LINE, TAG_LINE, COMPILE)
def test_the_docker_readme_compiles_yamls_naming_the_images_it_builds(tmp_path: Path) -> None:
    shown = {s.text: s for s in readme_commands() if s.readme == "docker/README.md"}
    assert COMMIT_LINE in shown and TAG_LINE in shown, "update the test with docker/README.md"
    # The two shell lines run as written (bash, this checkout, the venv's python first on PATH).
    script = f'set -eu\n{COMMIT_LINE}\n{TAG_LINE}\necho "$COMMIT $TAG"'
    shell = Command(f"{COMMIT_LINE} && {TAG_LINE}", ["bash", "-c", script])
    commit, tag = succeeded(run(shell, REPO, env={"PATH": f"{BIN}:{base_env()['PATH']}"}, timeout=60)).split()
    assert re.fullmatch(r"[0-9a-f]{40}", commit) and tag == f"{__version__}-{commit}"
    compile_command = readme_command(COMPILE, {"$TAG": tag, "build/kfp": str(tmp_path / "kfp")})
    succeeded(run(compile_command, tmp_path, timeout=300))
    named = {
        image
        for path in _files(tmp_path / "kfp")
        if path.suffix == ".yaml"
        for image in _executor_images(tmp_path / "kfp" / path).values()
    }
    # What the docker build lines tag (with this TAG) is exactly what the compiled YAMLs name, each from its file.
    built = {}
    for text in shown:
        if text.startswith("docker build"):
            words = text.replace("$TAG", tag).split()
            assert "TLOPS_GIT_COMMIT=$COMMIT" in words, text
            built[words[words.index("-f") + 1]] = words[words.index("-t") + 1]
    assert built == {
        "docker/Dockerfile.cpu": f"ghcr.io/my-org/tlops:{tag}",
        "docker/Dockerfile.gpu": f"ghcr.io/my-org/tlops-gpu:{tag}",
    }
    assert named == set(built.values())
    pushed = {text.replace("$TAG", tag).split()[-1] for text in shown if text.startswith("docker push")}
    assert pushed == named
