"""The documentation is the contract: every command and Python snippet it shows runs here as written, or is listed
in NOT_RUN with the reason.

Commands are taken from the fenced code blocks of README.md, docs/*.md, bench/README.md and docker/README.md, and
from their inline code spans that start with a program (``tlops``, ``python``, ``bash``, ...). ``&&`` chains are
split and trailing ``# comments`` dropped. Each ```python block is one snippet, run whole through
:func:`readme_snippet`. ``test_every_readme_command_is_run_or_excused`` fails for a command or snippet that no
test declares with ``@covers`` and that NOT_RUN does not excuse, and for entries that no page shows any more.

The tests take each command's text from the README through :func:`readme_command`, which asserts that the line
is there and returns its argv with only paths, hosts and bucket names substituted; the size of the data is the
only other thing that differs (small generated datasets, ``TLOPS_DEMO_IMAGES_PER_CLASS`` for the demo). Every
command runs as a subprocess of the installed console script (``.venv/bin/tlops``) in a temporary working
directory, so relative paths such as ``./my_images`` resolve there, with the options the README leaves out left
out. The wall time of each command is printed at the end of the module.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import hashlib
import io
import json
import math
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image, ImageDraw

from repository import REPO
from tlops.train.config import STRATEGIES

# Every page whose commands and snippets are run: the README, the docs/ pages, the benchmark and image READMEs.
READMES = (
    "README.md",
    *(path.relative_to(REPO).as_posix() for path in sorted((REPO / "docs").glob("*.md"))),
    "bench/README.md",
    "docker/README.md",
)
BIN = Path(sys.executable).parent
TLOPS = BIN / "tlops"
RUN_TIMEOUT_S = 1200
SHORT_TIMEOUT_S = 300
# Local `tlops run`s start together, this many at a time. Each keeps about one core busy; on 2 cores the five took
# 388 s one at a time, 229 s two and 200 s three at a time. TLOPS_TEST_PARALLEL_RUNS overrides.
# Under pytest-xdist another worker runs other test files meanwhile: one run a core then.
_SPARE = 0 if os.environ.get("PYTEST_XDIST_WORKER") else 1
PARALLEL_RUNS = int(os.environ.get("TLOPS_TEST_PARALLEL_RUNS", 0)) or (os.cpu_count() or 1) + _SPARE
DEMO_IMAGES_PER_CLASS = "15"  # 11 training images per class: enough for `auto` to consider fine-tuning a backbone

# --- reading the READMEs ----------------------------------------------------------------------------------------------

FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*([\w+-]*)")
INLINE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
SHELL_LANGUAGES = {"bash", "sh", "shell", "console", "zsh"}
PYTHON_LANGUAGES = {"python", "py"}
PROGRAMS = {
    "tlops", "python", "python3", "pip", "pip3", "bash", "sh", "source", "export", "docker", "kubectl", "helm",
    "mlflow", "git", "ruff", "lint-imports", "pytest", "curl", "make", "uv", "weed",
}  # fmt: skip
MENTION = re.compile(r"^tlops [a-z][a-z-]*$")  # `tlops promote` in prose names a subcommand; --help must work


@dataclass(frozen=True)
class Shown:
    """One command a README shows: where, and its text (whitespace collapsed, comment dropped).

    A Python snippet (a whole ```python block) has ``python`` set and its text as shown, line breaks kept.
    """

    readme: str
    line: int
    text: str
    inline: bool
    python: bool = False


def _outside_quotes(line: str) -> Iterator[tuple[int, str]]:
    quote = None
    for index, char in enumerate(line):
        if quote:
            if char == quote:
                quote = None
            continue
        if char in "'\"":
            quote = char
            continue
        yield index, char


def strip_comment(line: str) -> str:
    """The line without a trailing shell comment (a ``#`` after whitespace, outside quotes)."""
    for index, char in _outside_quotes(line):
        if char == "#" and (index == 0 or line[index - 1].isspace()):
            return line[:index].rstrip()
    return line.rstrip()


def split_chain(line: str) -> list[str]:
    """The commands of ``a && b || c ; d`` (separators outside quotes)."""
    parts, start, skip = [], 0, False
    for index, char in _outside_quotes(line):
        if skip:
            skip = False
            continue
        pair = line[index : index + 2]
        if pair in ("&&", "||") or char == ";":
            parts.append(line[start:index])
            start = index + (1 if char == ";" else 2)
            skip = char != ";"
    parts.append(line[start:])
    return [" ".join(part.split()) for part in parts if part.strip()]


def _words(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError:
        return text.split()


def is_command(text: str, shell_block: bool) -> bool:
    """Whether a segment runs something: any line of a shell block, else one starting with a known program."""
    words = _words(text.removeprefix("$ "))
    if shell_block:
        return bool(words)
    while words and ASSIGNMENT.match(words[0]):
        words.pop(0)
    if not words:
        return False
    first = words[0]
    if first.removeprefix(".venv/bin/") in PROGRAMS:
        return True
    return "/" in first and first.endswith((".sh", ".py")) and len(words) > 1  # a lone path names a file


def commands_in(markdown: str, readme: str = "README.md") -> list[Shown]:
    """Every command in the fenced blocks of ``markdown`` and in its inline code spans that start with a program,
    and every ```python block as one snippet."""
    shown: list[Shown] = []
    fence: str | None = None
    shell_block = False
    snippet: list[str] | None = None  # the lines of the open ```python block
    opened_at = 0
    for number, raw in enumerate(markdown.splitlines(), start=1):
        opened = FENCE.match(raw)
        if fence is None and opened:
            language = opened.group(2).lower()
            fence, shell_block = opened.group(1), language in SHELL_LANGUAGES
            snippet, opened_at = ([] if language in PYTHON_LANGUAGES else None), number
            continue
        if fence is not None:
            if raw.strip().startswith(fence[0] * len(fence)) and not raw.strip().strip(fence[0]):
                if snippet is not None and "".join(snippet).strip():
                    shown.append(Shown(readme, opened_at, "\n".join(snippet) + "\n", False, python=True))
                fence, snippet = None, None
                continue
            if snippet is not None:
                snippet.append(raw)
                continue
            line = strip_comment(raw.strip().removeprefix("$ "))
            if line.startswith("#"):
                continue
            shown += [Shown(readme, number, part, False) for part in split_chain(line) if is_command(part, shell_block)]
            continue
        for span in INLINE.findall(raw):
            shown += [Shown(readme, number, part, True) for part in split_chain(span) if is_command(part, False)]
    return shown


@functools.cache
def readme_commands() -> tuple[Shown, ...]:
    return tuple(shown for name in READMES for shown in commands_in((REPO / name).read_text(), name))


def normalize(text: str) -> str:
    return " ".join(text.split())


# --- what runs, and what does not -------------------------------------------------------------------------------------

COVERED: dict[str, list[str]] = {}  # command text -> tests that run it (filled by @covers)


def covers(*texts: str) -> Callable:
    """Declare that the decorated test runs these README commands (each through :func:`readme_command`)."""

    def mark(test: Callable) -> Callable:
        for text in texts:
            COVERED.setdefault(normalize(text), []).append(test.__name__)
        return test

    return mark


INSTALL_REASON = (
    "creates or installs the virtual environment these tests run in (PyPI downloads); done before the suite, "
    "and timed from a clean clone by `bash bench/readme_command.sh`"
)
NOT_RUN: dict[str, str] = {
    **dict.fromkeys(
        (
            "python bench/label_noise.py --workdir /tmp/tlops-bench-noise --sets digits,textures --noise 0.05,0.2 "
            "--seeds 0,1",
            "python bench/label_noise.py [--workdir DIR] [--sets digits,textures] [--noise 0.05,0.2] [--seeds 0,1] "
            "[--image-size 64] [--method prune_by_noise_rate] [--output FILE]",
        ),
        "the label-noise benchmark as it was measured (a backbone pass over 2,800 images, 8 minutes on 2 cores); its "
        "parts run in tests/unit/evaluation/test_audit_core.py and tests/integration/test_audit_command.py",
    ),
    "python3 -m venv .venv": INSTALL_REASON,
    ".venv/bin/pip install -e .": INSTALL_REASON,
    ".venv/bin/pip install -e '.[dev]'": INSTALL_REASON,
    ".venv/bin/python -m pytest -q": "the test suite itself, which holds this test: running it here would recurse",
    ".venv/bin/python -m pytest -q tests/unit": "the suite's everyday lane (tests/README.md); this test is in "
    "tests/e2e, and the lane runs on its own in CI's whole suite",
    "bash .ci/run": "CI's entry point: builds .venv from PyPI and runs this whole suite (recursion)",
    "tlops run --data ./my_images --export int8 --export-margin 0.01": "a full run on a user's folder; "
    "tests/integration/test_export.py runs the register step with --export int8 and onnx against the real MLflow "
    "server (accepted, refused, served as image bytes) and the CLI's step commands take the same flags",
    "OMP_NUM_THREADS=2 .venv/bin/python bench/export.py --workdir /tmp/tlops-bench-export --json "
    "/tmp/tlops-bench-export/export.json": "a benchmark run by hand (minutes of fine-tuning on the shared CPUs); "
    "its functions are the ones tests/integration/test_export.py and tests/unit/serving/test_onnx_export.py run",
    "bash bench/readme_command.sh": "a clean clone, a full install from PyPI and the full 1,797-image demo "
    "(about 6 minutes); a benchmark run by hand, its result quoted in README.md",
    "tests/support/services.py start|stop": "shorthand for two commands (`python tests/support/services.py start "
    "--workdir DIR --env-file FILE`, `... stop --workdir DIR`); tests/conftest.py's `services` fixture calls the same "
    "start_services/stop_services for every integration test here",
    "mlflow server --backend-store-uri sqlite:///mlflow.db --artifacts-destination s3://bucket/mlflow": "a server "
    "that runs until stopped; tests/support/services.py starts this same command (a temporary sqlite store, artifacts "
    "proxied to the test SeaweedFS) and the integration tests here track and register through it",
    **dict.fromkeys(
        (
            "export PYTHONPATH=$PWD/src OMP_NUM_THREADS=1 TRANSFORMERS_VERBOSITY=error",
            "python bench/text_transfer.py --workdir $W --json $W/frozen.json --arms tfidf,probe,probe-raw,mlp",
            "python bench/text_transfer.py --workdir $W --json $W/finetune10.json --arms lora,lp-ft --sizes 10 "
            "--seeds 0",
            "python bench/text_transfer.py --workdir $W --json $W/finetune10s1.json --arms lora,lp-ft --sizes 10 "
            "--seeds 1",
            "python bench/text_transfer.py --workdir $W --json $W/finetune30.json --arms lora,lp-ft --sizes 30 "
            "--seeds 0 \\",
            "python bench/text_transfer.py --arms none --merge $W/frozen.json --merge $W/finetune10.json \\",
            "python bench/text_transfer.py --workdir $W --json $W/auto.json --arms auto",
            "python bench/text_transfer.py --workdir $W --json $W/auto120.json --arms tfidf,probe,auto --sizes 120 "
            "--seeds 0 \\",
        ),
        "the text benchmark's full grid as it was measured (four sets of 1,000+ texts embedded by MiniLM, LoRA and "
        "LP-FT cells of a minute each: over an hour of CPU), two of its lines continued with a backslash; the script "
        "runs here in its usage form, the same options, on one set (test_readme_text.py::test_bench_text_transfer)",
    ),
    **dict.fromkeys(
        (
            "export PYTHONPATH=$PWD/src OMP_NUM_THREADS=1",
            "python bench/detection_transfer.py --workdir /tmp/tlops-bench-det --json /tmp/tlops-bench-det/shapes.json "
            "--sets shapes --throughput-batches 0",
            "python bench/detection_transfer.py --workdir /tmp/tlops-bench-det2 --json "
            "/tmp/tlops-bench-det2/digits.json --sets digits --no-rank",
            "python bench/detection_transfer.py --workdir /tmp/tlops-bench-det3 --json "
            "/tmp/tlops-bench-det3/ranking.json --sets shapes --sizes 24 --arms none --merge "
            "/tmp/tlops-bench-det3/grid24.json --rank-strategy frozen --throughput-batches 0",
        ),
        "the detection benchmark's grid as it was measured (18 Faster R-CNN trainings on one CPU thread each, three "
        "processes side by side for over half an hour); the script runs here in its usage form, the same options, "
        "at 8 images and one epoch (test_bench_detection.py::test_bench_detection_transfer)",
    ),
    **dict.fromkeys(
        (
            "docker build -f docker/Dockerfile.cpu --build-arg TLOPS_GIT_COMMIT=$COMMIT -t ghcr.io/my-org/tlops:$TAG .",
            "docker build -f docker/Dockerfile.gpu --build-arg TLOPS_GIT_COMMIT=$COMMIT "
            "-t ghcr.io/my-org/tlops-gpu:$TAG .",
            "docker push ghcr.io/my-org/tlops:$TAG",
            "docker push ghcr.io/my-org/tlops-gpu:$TAG",
        ),
        "no container engine or registry here; tests/unit/test_dockerfiles.py lints both Dockerfiles and runs their "
        "build-time Python, and tests/unit/pipeline/test_image_tags.py checks these tags are the images the "
        "compiled YAMLs name",
    ),
}


@dataclass
class Command:
    """A README command ready to run: argv, the environment it sets, and its README text."""

    text: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)


def readme_snippet(text: str) -> str:
    """The Python snippet ``text`` (a whole ```python block, shown exactly so and declared with @covers), to run."""
    shown = {s.text for s in readme_commands() if s.python}
    assert text in shown, f"no README or docs page shows this Python snippet any more; update the test:\n{text}"
    assert normalize(text) in COVERED, "a Python snippet is run by a test that does not declare it with @covers"
    return text


def readme_command(text: str, substitutions: dict[str, str] | None = None, rest: list[str] | None = None) -> Command:
    """The README command ``text`` (which must be shown and declared with @covers) as argv.

    Args:
        text: The command exactly as the README shows it (whitespace may differ).
        substitutions: Replacements in the text (paths, hosts, bucket names); each must occur in it.
        rest: Words that replace a ``...`` placeholder.
    """
    text = normalize(text)
    shown = {s.text for s in readme_commands() if not s.python}
    assert text in shown, f"no README or docs page shows `{text}` any more; update the test with the page"
    assert text in COVERED, f"`{text}` is run by a test that does not declare it with @covers"
    replaced = text
    for old, new in (substitutions or {}).items():
        assert old in replaced, f"{old!r} is not in `{text}`"
        replaced = replaced.replace(old, new)
    words = shlex.split(replaced)
    env: dict[str, str] = {}
    if words[0] == "export":
        for word in words[1:]:
            name, _, value = word.partition("=")
            env[name] = value
        return Command(text, [], env)
    while ASSIGNMENT.match(words[0]):
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    if "..." in words:
        assert rest is not None, f"`{text}` has a `...` placeholder: pass rest="
        index = words.index("...")
        words[index : index + 1] = rest
    program = words[0].removeprefix(".venv/bin/")
    if program in ("python", "python3"):
        words[0] = sys.executable
    elif program in ("tlops", "ruff", "mlflow"):
        words[0] = str(BIN / program)
    return Command(text, words, env)


TIMINGS: dict[str, list[float]] = {}


def base_env() -> dict[str, str]:
    """This environment without the tracking, S3 and KFP settings a developer may have exported."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_", "KFP_", "TLOPS_TEST_"))}
    no_proxy = ",".join(filter(None, [env.get("NO_PROXY", ""), "127.0.0.1", "localhost"]))
    return env | {"NO_PROXY": no_proxy, "no_proxy": no_proxy}


def run(
    command: Command, cwd: Path, env: dict[str, str] | None = None, timeout: float = RUN_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    """Run a README command in ``cwd`` and record its wall time."""
    start = time.perf_counter()
    result = subprocess.run(
        command.argv,
        cwd=cwd,
        env=base_env() | (env or {}) | command.env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    TIMINGS.setdefault(command.text, []).append(time.perf_counter() - start)
    return result


def succeeded(result: subprocess.CompletedProcess[str]) -> str:
    """Assert exit status 0, showing the command's output tail otherwise; return stdout."""
    assert result.returncode == 0, (
        f"`{shlex.join(map(str, result.args))}` exited {result.returncode}\n--- stdout (tail)\n{result.stdout[-3000:]}"
        f"\n--- stderr (tail)\n{result.stderr[-5000:]}"
    )
    return result.stdout


@pytest.fixture(scope="module", autouse=True)
def _report_wall_times(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or not TIMINGS:
        return
    reporter.write_line("")
    reporter.write_line(f"README command wall times ({PARALLEL_RUNS} local `tlops run`s at a time):")
    for text, seconds in TIMINGS.items():
        reporter.write_line(f"  {' + '.join(f'{s:6.1f}' for s in seconds)} s  {text}")


# --- the contract -----------------------------------------------------------------------------------------------------


def _uncovered(shown: list[Shown] | tuple[Shown, ...]) -> list[Shown]:
    return [
        s
        for s in shown
        if normalize(s.text) not in COVERED and normalize(s.text) not in NOT_RUN and not MENTION.match(s.text)
    ]


def _import_test_modules() -> None:
    """Import every test module, so that the @covers of README tests kept in other files are counted too."""
    import importlib

    for path in sorted(Path(__file__).parents[1].rglob("test_*.py")):  # tests/unit/*/, tests/integration, ...
        if str(path.parent) not in sys.path:
            sys.path.insert(0, str(path.parent))  # as pytest's prepend import mode puts it
        importlib.import_module(path.stem)


def test_every_readme_command_is_run_or_excused() -> None:
    _import_test_modules()
    shown = readme_commands()
    missing = _uncovered(shown)
    assert not missing, "commands and snippets that no test runs and NOT_RUN does not excuse:\n" + "\n".join(
        f"  {s.readme}:{s.line}: {s.text}" for s in missing
    )
    assert {"README.md", "docs/serving.md", "docs/kubeflow.md"} <= {s.readme for s in shown}  # docs/ is read
    texts = {normalize(s.text) for s in shown}
    stale = sorted((set(COVERED) | set(NOT_RUN)) - texts)
    assert not stale, f"entries for commands no README shows any more: {stale}"
    assert not set(COVERED) & set(NOT_RUN), "a command is both run and excused"
    assert all(len(reason) > 40 for reason in NOT_RUN.values())


def test_the_contract_reads_chains_comments_environment_lines_inline_commands_and_python() -> None:
    markdown = "\n".join(
        [
            "Run `tlops frobnicate --all` or `tlops promote`; see `src/tlops/`, `src/tlops/cli.py` and",
            "`AWS_ENDPOINT_URL=http://h:1`; `bench/x.py --fast` runs it.",
            "```bash",
            "python3 -m venv .venv && .venv/bin/tlops run --x 'a # b'   # comment",
            "export FOO_HOST=http://localhost:8080        # e.g. kubectl port-forward ...",
            "# a comment line",
            "```",
            "```",
            " [prepare data] ------ decode-check every image",
            "MLFLOW_TRACKING_URI=http://mlflow:5000 tlops run --data ./d",
            "```",
            "```python",
            "import mlflow",
            "",
            "print(mlflow.__version__)  # a comment stays",
            "```",
        ]
    )
    snippet = "import mlflow\n\nprint(mlflow.__version__)  # a comment stays\n"
    texts = [s.text for s in commands_in(markdown)]
    assert texts == [
        "tlops frobnicate --all",
        "tlops promote",
        "bench/x.py --fast",
        "python3 -m venv .venv",
        ".venv/bin/tlops run --x 'a # b'",
        "export FOO_HOST=http://localhost:8080",
        "MLFLOW_TRACKING_URI=http://mlflow:5000 tlops run --data ./d",
        snippet,
    ]
    assert [s.python for s in commands_in(markdown)] == [False] * 7 + [True]
    # A new command or snippet fails the contract until a test runs it or NOT_RUN gives the reason.
    assert [s.text for s in _uncovered(commands_in(markdown))] == [
        "tlops frobnicate --all",
        "bench/x.py --fast",
        ".venv/bin/tlops run --x 'a # b'",
        "export FOO_HOST=http://localhost:8080",
        "MLFLOW_TRACKING_URI=http://mlflow:5000 tlops run --data ./d",
        snippet,
    ]


# --- small real datasets ----------------------------------------------------------------------------------------------

SHAPES = ("circle", "square", "triangle")
PER_CLASS = 12  # tlops splits each class 8 / 2 / 2


def _shape(kind: str, rng: np.random.Generator, size: int = 64) -> Image.Image:
    """A dark circle, square or triangle of random size, place and colour on a light, noisy background."""
    image = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(150, 256, 3)))
    draw = ImageDraw.Draw(image)
    r = int(rng.integers(size // 5, size // 3))
    x, y = (int(v) for v in rng.integers(r + 2, size - r - 2, 2))
    fill = tuple(int(v) for v in rng.integers(0, 110, 3))
    if kind == "circle":
        draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)
    elif kind == "square":
        draw.rectangle((x - r, y - r, x + r, y + r), fill=fill)
    else:
        draw.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=fill)
    pixels = np.asarray(image, dtype=np.float32) + rng.normal(0, 8, (size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ImageFolder of 3 classes x 12 images (PNG and JPEG): shape/<class>/<file>."""
    root = tmp_path_factory.mktemp("shapes")
    rng = np.random.default_rng(0)
    for kind in SHAPES:
        (root / kind).mkdir()
        for index in range(PER_CLASS):
            image = _shape(kind, rng)
            if index % 3 == 2:
                image.save(root / kind / f"{kind}-{index:02d}.jpg", quality=92)
            else:
                image.save(root / kind / f"{kind}-{index:02d}.png")
    return root


def _images(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def write_imagefolder(shapes: Path, target: Path) -> dict[str, int]:
    shutil.copytree(shapes, target)
    return {"images": len(_images(target))}


def write_presplit(shapes: Path, target: Path) -> dict[str, int]:
    """train/ val/ test/ ImageFolders: 7 / 2 / 3 images per class."""
    counts = {"train": 0, "val": 0, "test": 0}
    for kind in SHAPES:
        for index, path in enumerate(sorted((shapes / kind).iterdir())):
            split = "train" if index < 7 else "val" if index < 9 else "test"
            (target / split / kind).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target / split / kind / path.name)
            counts[split] += 1
    return counts


def write_labels_csv(shapes: Path, csv_path: Path) -> dict[str, int]:
    """``labels.csv`` (path,label) beside an ``images/`` folder of flat, label-free file names."""
    (csv_path.parent / "images").mkdir()
    rows = []
    for index, path in enumerate(_images(shapes)):
        name = f"img-{index:03d}{path.suffix}"
        shutil.copyfile(path, csv_path.parent / "images" / name)
        rows.append((f"images/{name}", path.parent.name))
    with csv_path.open("w", newline="") as f:
        csv.writer(f).writerows([("path", "label"), *rows])
    return {"images": len(rows)}


def write_tar_gz(shapes: Path, archive: Path) -> dict[str, int]:
    """``flowers.tar.gz`` holding ``flowers/<class>/<file>``."""
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(shapes, arcname="flowers")
    return {"images": len(_images(shapes))}


def printed_json(stdout: str) -> Any:
    """The JSON document a step command prints as its result (after any human-readable lines)."""
    lines = stdout.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(("{", "["))), None)
    assert start is not None, f"no JSON on stdout:\n{stdout[-2000:]}"
    return json.loads("\n".join(lines[start:]))


def manifest_rows(output: Path) -> list[dict[str, str]]:
    (manifest,) = output.rglob("manifest.csv")
    with manifest.open(newline="") as f:
        return list(csv.DictReader(f))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_summary(output: Path, classes: list[str], layout: str) -> dict[str, Any]:
    """run_summary.json of a first run into a fresh registry: registered, both aliases, accuracy above chance."""
    summary = json.loads((output / "run_summary.json").read_text())
    dataset = summary["dataset"]
    assert dataset["classes"] == classes
    assert dataset["layout"] == layout
    assert len(dataset["digest"]) == 64
    assert dataset["quarantined"] == 0
    assert summary["registered_model"] == "tlops-classifier"
    assert summary["version"] == 1
    assert sorted(summary["aliases"]) == ["challenger", "champion"]
    assert summary["model_uri"] == "models:/tlops-classifier/1"
    assert summary["strategy"] in STRATEGIES and summary["strategy"] != "auto" and summary["strategy_reasons"]
    accuracy = summary["metrics"]["test_accuracy"]
    assert isinstance(accuracy, float) and 1 / len(classes) < accuracy <= 1.0, summary["metrics"]
    assert summary["metrics"]["test_images"] == dataset["num_test"]
    rows = manifest_rows(output / "pipeline_root")
    assert len(rows) == dataset["num_train"] + dataset["num_val"] + dataset["num_test"]
    assert {row["label"] for row in rows} == set(classes)
    assert all(len(row["sha256"]) == 64 for row in rows)
    for split in ("train", "val", "test"):
        assert sum(row["split"] == split for row in rows) == dataset[f"num_{split}"]
        assert {row["label"] for row in rows if row["split"] == split} == set(classes), split
    return summary


def check_local_registry(output: Path) -> None:
    assert (output / "mlflow.db").is_file()
    assert any((output / "mlartifacts").rglob("*"))


# --- local `tlops run`s, started together -----------------------------------------------------------------------------

DEMO = ".venv/bin/tlops run"
MY_IMAGES = "tlops run --data ./my_images"
LABELS_CSV = "tlops run --data ./labels.csv"
TAR_GZ = "tlops run --data ./flowers.tar.gz"
THREE_BACKBONES = "tlops run --data ./my_images --backbones efficientnet_lite0,efficientnet_lite1,efficientnet_lite2"
RUN_TWICE = {"test_three_backbones_are_ranked_and_a_second_run_reads_the_cache"}
USES_RUN = {"test_serve_the_demo_model": "test_demo_run"}  # a test that checks another test's run's output


@dataclass
class LocalRun:
    cwd: Path
    given: dict[str, int]
    result: subprocess.CompletedProcess[str] | None = None
    second: subprocess.CompletedProcess[str] | None = None


# test name -> (README command, dataset writer: (shapes, cwd) -> counts, extra environment)
LOCAL_RUNS: dict[str, tuple[str, Callable[[Path, Path], dict[str, int]], dict[str, str]]] = {
    "test_demo_run": (DEMO, lambda shapes, cwd: {}, {"TLOPS_DEMO_IMAGES_PER_CLASS": DEMO_IMAGES_PER_CLASS}),
    "test_run_on_an_imagefolder": (MY_IMAGES, lambda s, cwd: write_imagefolder(s, cwd / "my_images"), {}),
    "test_run_on_a_pre_split_folder": (MY_IMAGES, lambda s, cwd: write_presplit(s, cwd / "my_images"), {}),
    "test_run_on_a_csv_manifest": (LABELS_CSV, lambda s, cwd: write_labels_csv(s, cwd / "labels.csv"), {}),
    "test_run_on_an_archive": (TAR_GZ, lambda s, cwd: write_tar_gz(s, cwd / "flowers.tar.gz"), {}),
    "test_three_backbones_are_ranked_and_a_second_run_reads_the_cache": (
        THREE_BACKBONES,
        lambda s, cwd: write_imagefolder(s, cwd / "my_images"),
        {"TLOPS_CACHE_DIR": "{cwd}/cache"},  # a cache of its own: the first run misses, the second hits
    ),
}


@pytest.fixture(scope="module")
def local_runs(
    request: pytest.FixtureRequest, shapes: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, LocalRun]:
    """Every local `tlops run` the selected tests check, started together (PARALLEL_RUNS at a time)."""
    selected = {item.name for item in request.session.items if item.module is sys.modules[__name__]}
    selected |= {USES_RUN[name] for name in selected if name in USES_RUN}
    runs: dict[str, LocalRun] = {}
    jobs = []
    for name, (text, write, env) in LOCAL_RUNS.items():
        if name not in selected:
            continue
        cwd = tmp_path_factory.mktemp(name.removeprefix("test_"))
        runs[name] = LocalRun(cwd, write(shapes, cwd))
        jobs.append((name, readme_command(text), env))

    def start(job: tuple[str, Command, dict[str, str]]) -> None:
        name, command, env = job
        cwd = runs[name].cwd
        env = {key: value.format(cwd=cwd) for key, value in env.items()}
        runs[name].result = run(command, cwd, env)
        if name in RUN_TWICE and runs[name].result.returncode == 0:
            runs[name].second = run(command, cwd, env)

    with ThreadPoolExecutor(max_workers=PARALLEL_RUNS) as pool:
        list(pool.map(start, jobs))
    return runs


LOCAL_MODELS = "tlops models"
LOCAL_PROMOTE = "tlops promote --version 1"
CONFIG_RUN = "tlops run --config tlops-run/config.yaml --data ./my_images"
LIST = "tlops list strategies"


@pytest.mark.pipeline
@covers(DEMO, "tlops run", LOCAL_MODELS, LOCAL_PROMOTE, CONFIG_RUN)
def test_demo_run(local_runs: dict[str, LocalRun], shapes: Path) -> None:
    demo = local_runs["test_demo_run"]
    stdout = succeeded(demo.result)
    assert "no --data given: using the built-in demo data" in stdout
    output = demo.cwd / "tlops-run"
    digits = ["eight", "five", "four", "nine", "one", "seven", "six", "three", "two", "zero"]
    summary = check_summary(output, digits, "image-folder")
    per_class = int(DEMO_IMAGES_PER_CLASS)
    assert len(_images(output / "demo-data")) == 10 * per_class
    assert summary["dataset"]["num_train"] >= 10 * 10  # at least 10 training images per class
    # 11 training images a class of 8x8 digits: a linear probe on the raw pixels out-scores the ImageNet backbone's
    # features, so the no-transfer baseline is the model shipped, its head chosen by cross-validation, and the
    # summary says so with the estimates behind each decision.
    assert summary["backbone"] == "pixels", summary["selection"]["reasons"]
    assert "shipping the no-transfer baseline" in stdout and "paired by fold" in stdout
    reasons = summary["strategy_reasons"]
    assert reasons[0].startswith("evidence: smallest class 1"), reasons
    assert any(r.startswith("probe chosen by cross-validation") and "3 x 5-fold CV" in r for r in reasons), reasons
    assert "no backbone to fine-tune" in reasons[-1], reasons
    (training,) = (output / "pipeline_root").rglob("training.json")
    assert json.loads(training.read_text())["best_epoch"] == 0
    assert "tlops run finished" in stdout and f"accuracy {summary['metrics']['test_accuracy']:.4f}" in stdout
    check_local_registry(output)
    # Lineage: the version knows the KFP run (kfp.local resolves the run placeholders too) and the code.
    from mlflow import MlflowClient

    tags = MlflowClient(f"sqlite:///{output / 'mlflow.db'}").get_model_version("tlops-classifier", "1").tags
    (run_root,) = (output / "pipeline_root").iterdir()
    assert tags["kfp_run_name"] == run_root.name and tags["kfp_pipeline_name"] == "tlops-transfer-learning"
    assert tags["kfp_run_id"] and tags["gate.decision"] == "first"
    assert tags["dataset_digest"] == summary["dataset"]["digest"]
    # The README's registry commands in the demo's folder, no tracking URI: they read tlops-run/mlflow.db.
    from tlops.promotion.tracking import local_tracking_uri

    store = f"registry: {local_tracking_uri(output)}"
    listed = run(readme_command(LOCAL_MODELS), demo.cwd, timeout=SHORT_TIMEOUT_S)
    table = succeeded(listed).splitlines()
    assert table[0].split()[:3] == ["version", "aliases", "created"] and len(table) == 2, table
    version, aliases, *_ = table[1].split()
    assert version == "1" and sorted(aliases.split(",")) == ["challenger", "champion"] and "first" in table[1]
    assert store in listed.stderr, listed.stderr
    promoted = run(readme_command(LOCAL_PROMOTE), demo.cwd, timeout=SHORT_TIMEOUT_S)
    assert succeeded(promoted).strip() == "tlops-classifier: champion is version 1"  # it already was
    assert store in promoted.stderr, promoted.stderr
    # The demo's saved settings on other data: the settings file is the run's, the data and classes are new.
    saved = yaml.safe_load((output / "config.yaml").read_text())
    assert saved["train"]["strategy"] == "auto" and saved["selection"]["backbones"] == []  # the task's own
    assert saved["selection"]["image_size"] == 0 and saved["storage"]["checkpoint_uri"] == ""  # as given
    write_imagefolder(shapes, demo.cwd / "my_images")
    repeated = run(readme_command(CONFIG_RUN), demo.cwd)
    assert "tlops run finished" in succeeded(repeated)
    assert yaml.safe_load((output / "config.yaml").read_text()) == saved  # the same settings, written again
    (kept,) = [p for p in (output / "runs").glob("*/run_summary.json") if json.loads(p.read_text())["version"] == 2]
    second = json.loads(kept.read_text())
    assert second["dataset"]["digest"] != summary["dataset"]["digest"]


ACTIVATE = "source .venv/bin/activate"
SERVE = (
    "MLFLOW_TRACKING_URI=sqlite:///tlops-run/mlflow.db mlflow models serve -m models:/tlops-classifier@champion "
    "--env-manager local --port 5001"
)
CURL = (
    'curl -s localhost:5001/invocations -H \'Content-Type: application/json\' -d "{\\"dataframe_split\\": '
    '{\\"columns\\": [\\"image\\"], \\"data\\": [[\\"$(base64 -w0 tlops-run/demo-data/seven/0007.png)\\"]]}}"'
)


# docs/serving.md: the served model in process, MLFLOW_TRACKING_URI set as for `mlflow models serve`.
SERVING_SNIPPET = """\
import mlflow
import pandas as pd

model = mlflow.pyfunc.load_model("models:/tlops-classifier@champion")
image = open("tlops-run/demo-data/seven/0007.png", "rb").read()
print(model.predict(pd.DataFrame({"image": [image]}))[["label", "probability"]])
"""
# README.md, after the demo: the champion of the demo's local store, nothing set.
REGISTRY_SNIPPET = """\
import mlflow
import pandas as pd

mlflow.set_tracking_uri("sqlite:///tlops-run/mlflow.db")
model = mlflow.pyfunc.load_model("models:/tlops-classifier@champion")
image = open("tlops-run/demo-data/seven/0007.png", "rb").read()
print(model.predict(pd.DataFrame({"image": [image]}))[["label", "probability"]])
"""


def run_snippet(text: str, cwd: Path, env: dict[str, str] | None = None) -> tuple[str, float]:
    """Run a shown Python snippet in ``cwd``; the label and probability of the row it prints last."""
    result = subprocess.run(
        [sys.executable, "-c", readme_snippet(text)],
        cwd=cwd,
        env=base_env() | (env or {}),
        capture_output=True,
        text=True,
        timeout=SHORT_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    label, probability = result.stdout.splitlines()[-1].split()[1:]
    return label, float(probability)


@pytest.mark.pipeline
@covers(ACTIVATE, SERVE, CURL, SERVING_SNIPPET, REGISTRY_SNIPPET)
def test_serve_the_demo_model(local_runs: dict[str, LocalRun], tmp_path: Path) -> None:
    import base64

    import requests

    demo = local_runs["test_demo_run"]
    succeeded(demo.result)
    port = str(_unused_port())
    serve = readme_command(SERVE, {"5001": port})
    # `source .venv/bin/activate` puts the venv's bin first on PATH (mlflow starts `uvicorn` from there).
    assert readme_command(ACTIVATE).argv == ["source", ".venv/bin/activate"]
    path = {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    log = tmp_path / "serve.log"
    server = subprocess.Popen(
        serve.argv,
        cwd=demo.cwd,
        env=base_env() | path | serve.env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SHORT_TIMEOUT_S
        while True:
            assert server.poll() is None, log.read_text()[-3000:]
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        # The README's curl, through bash as a user types it (the port replaced).
        readme_command(CURL, {"5001": port})
        curl = subprocess.run(
            ["bash", "-c", normalize(CURL).replace("5001", port)],
            cwd=demo.cwd,
            capture_output=True,
            text=True,
            timeout=SHORT_TIMEOUT_S,
            check=False,
        )
        assert curl.returncode == 0, curl.stderr
        (served,) = json.loads(curl.stdout)["predictions"]
        digits = ["eight", "five", "four", "nine", "one", "seven", "six", "three", "two", "zero"]
        assert served["error"] is None and served["label"] in digits
        assert sorted(served["probabilities"]) == digits
        assert sum(served["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert served["probability"] == max(served["probabilities"].values())
        # The Python snippets: the same label and probability in process, with MLFLOW_TRACKING_URI set as for
        # the server (docs/serving.md) and with nothing set (the README's, which names the demo's store).
        snippets = [
            run_snippet(SERVING_SNIPPET, demo.cwd, {"MLFLOW_TRACKING_URI": "sqlite:///tlops-run/mlflow.db"}),
            run_snippet(REGISTRY_SNIPPET, demo.cwd),
        ]
        for label, probability in snippets:
            assert label == served["label"] and probability == pytest.approx(served["probability"], abs=1e-5)

        # Odd and bad rows: answered row by row; the server keeps serving.
        def invoke(images: list[bytes]) -> list[dict[str, Any]]:
            data = [[base64.b64encode(image).decode()] for image in images]
            answer = requests.post(
                f"{url}/invocations", json={"dataframe_split": {"columns": ["image"], "data": data}}, timeout=60
            )
            assert answer.status_code == 200, answer.text
            return answer.json()["predictions"]

        seven = (demo.cwd / "tlops-run" / "demo-data" / "seven" / "0007.png").read_bytes()
        picture = Image.open(io.BytesIO(seven)).convert("RGB")
        odd = [_png(picture.convert("L")), _png(picture.convert("RGBA")), _png(picture.convert("I;16"))]
        for row in invoke(odd):
            assert row["error"] is None and row["label"] in digits
        bad, good = invoke([b"%PDF-1.7 not an image", seven])
        assert bad["label"] is None and bad["error"].startswith("not an image")
        assert good["label"] == served["label"]
        assert invoke([]) == []
        assert requests.get(f"{url}/ping", timeout=5).status_code == 200
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=60)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.pipeline
@covers(MY_IMAGES)
def test_run_on_an_imagefolder(local_runs: dict[str, LocalRun]) -> None:
    run_ = local_runs["test_run_on_an_imagefolder"]
    succeeded(run_.result)
    output = run_.cwd / "tlops-run"
    summary = check_summary(output, list(SHAPES), "image-folder")
    assert summary["dataset"]["source"] == str(run_.cwd / "my_images")
    assert (summary["dataset"]["num_train"], summary["dataset"]["num_val"], summary["dataset"]["num_test"]) == (
        24,
        6,
        6,
    )
    assert summary["backbone"] == "efficientnet_lite0"
    gate = summary["gate"]
    assert gate["promote"] and gate["champion_version"] is None
    assert gate["reasons"] == ["no champion yet: the first becomes it"]
    assert gate["thresholds"].startswith("promote when accuracy improves: 95% paired-bootstrap CI lower bound > 0")
    # The accuracy is the evaluate step's predictions' accuracy, recomputed here on its output artifact.
    from predictions import read_predictions

    (predictions,) = (output / "pipeline_root").rglob("predictions.safetensors")
    probabilities, targets = read_predictions(predictions.parent)
    assert len(targets) == 6
    assert summary["metrics"]["test_accuracy"] == pytest.approx(float((probabilities.argmax(1) == targets).mean()))
    # One candidate backbone (the default): one iteration of the scoring loop.
    (run_root,) = (output / "pipeline_root").iterdir()
    tasks = {path.name for path in run_root.iterdir()}
    steps = {"prepare-data", "score-baseline", "select-backbone", "extract-features", "audit", "fine-tune"}
    steps |= {"evaluate"}
    # The first step lists the data (its fingerprint keys the cache); the exit handler runs last, writing nothing.
    # The extraction loop (for-loop-2) has one shard, or none when the feature cache already holds these images.
    loops = {"for-loop-3-iteration-0"} | ({"for-loop-2-iteration-0"} & tasks)
    assert tasks == steps | {"fingerprint-data", "plan-extraction", "register", "record-pipeline-status"} | loops
    assert (run_root / "for-loop-3-iteration-0" / "score-backbone" / "score" / "score.json").is_file()
    check_local_registry(output)


@pytest.mark.pipeline
@covers(THREE_BACKBONES)
def test_three_backbones_are_ranked_and_a_second_run_reads_the_cache(local_runs: dict[str, LocalRun]) -> None:
    run_ = local_runs["test_three_backbones_are_ranked_and_a_second_run_reads_the_cache"]
    first = succeeded(run_.result)
    kept = sorted((run_.cwd / "tlops-run" / "runs").glob("*/run_summary.json"))  # named by time: first run first
    assert len(kept) == 2
    summary = json.loads(kept[0].read_text())
    assert summary["version"] == 1 and summary["dataset"]["classes"] == list(SHAPES)
    selection = summary["selection"]
    names = [row["name"] for row in selection["ranking"]]
    assert sorted(names[:3]) == ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
    assert names[3] == "pixels" and selection["ranking"][3]["status"] == "baseline"
    chosen = [row for row in selection["ranking"] if row["status"] == "chosen"]
    assert [row["name"] for row in chosen] == [summary["backbone"]] == [selection["chosen"]]
    assert selection["reasons"][0].startswith(summary["backbone"])  # why it won
    assert any(reason.startswith("transfer") for reason in selection["reasons"])  # versus raw pixels
    # The table and the reasons are printed; this run extracted every candidate and cached it.
    assert "raw 32x32 pixels" in first and selection["reasons"][0] in first
    assert "efficientnet_lite2" in first and "extracted in" in first
    assert selection["feature_cache"]["hits"] == 0
    # The second, identical run reads every candidate and the chosen one's features from the cache.
    second = succeeded(run_.second)
    assert "cache hit for all 4 scored: no backbone ran" in second, second[-3000:]
    summary = json.loads(kept[1].read_text())
    assert summary == json.loads((run_.cwd / "tlops-run" / "run_summary.json").read_text())
    assert (
        summary["selection"]["feature_cache"]["hits"] == 4
        and summary["selection"]["feature_cache"]["saved_seconds"] > 0
    )
    assert summary["version"] == 2
    (entries,) = {len(list((run_.cwd / "cache" / "features").glob("*/*/index.json")))}
    assert entries == 4
    # The second run's gate compared it with version 1 (the same recipe: not measurably better) and says how.
    gate = summary["gate"]
    assert gate["champion_version"] == 1 and gate["promote"] == (summary["champion"]["version"] == 2)
    assert gate["thresholds"].startswith("promote when accuracy improves: 95% paired-bootstrap CI lower bound > 0")
    verdict = "passed: promote" if gate["promote"] else "did not pass: keep the champion"
    assert f"gate       {verdict} (against version 1)" in second
    assert f"thresholds: {gate['thresholds']}" in second
    assert [line.split()[0] for line in gate["reasons"]] == ["accuracy", "McNemar", "worst", "ECE"]
    assert "calibration " in second and "test ECE" in second


@pytest.mark.pipeline
@covers(MY_IMAGES)
def test_run_on_a_pre_split_folder(local_runs: dict[str, LocalRun]) -> None:
    run_ = local_runs["test_run_on_a_pre_split_folder"]
    succeeded(run_.result)
    output = run_.cwd / "tlops-run"
    summary = check_summary(output, list(SHAPES), "pre-split")
    dataset = summary["dataset"]
    assert {s: dataset[f"num_{s}"] for s in ("train", "val", "test")} == run_.given
    for row in manifest_rows(output / "pipeline_root"):
        assert row["relpath"].split("/")[0] == row["split"], row  # kept exactly as given
    check_local_registry(output)


@pytest.mark.pipeline
@covers(LABELS_CSV)
def test_run_on_a_csv_manifest(local_runs: dict[str, LocalRun]) -> None:
    run_ = local_runs["test_run_on_a_csv_manifest"]
    succeeded(run_.result)
    output = run_.cwd / "tlops-run"
    summary = check_summary(output, list(SHAPES), "csv-manifest")
    with (run_.cwd / "labels.csv").open(newline="") as f:
        labels = {row["path"]: row["label"] for row in csv.DictReader(f)}
    rows = manifest_rows(output / "pipeline_root")
    assert len(rows) == len(labels) == run_.given["images"]
    for row in rows:
        path = next(p for p in labels if row["uri"].endswith(p))
        assert row["label"] == labels[path]
        assert row["sha256"] == sha256(run_.cwd / path)
    assert summary["dataset"]["num_train"] == 24
    check_local_registry(output)


@pytest.mark.pipeline
@covers(TAR_GZ)
def test_run_on_an_archive(local_runs: dict[str, LocalRun], shapes: Path) -> None:
    run_ = local_runs["test_run_on_an_archive"]
    succeeded(run_.result)
    output = run_.cwd / "tlops-run"
    summary = check_summary(output, list(SHAPES), "image-folder")
    hashes = {sha256(p) for p in _images(shapes)}
    assert {row["sha256"] for row in manifest_rows(output / "pipeline_root")} == hashes
    assert summary["dataset"]["num_train"] + summary["dataset"]["num_val"] + summary["dataset"]["num_test"] == len(
        hashes
    )
    check_local_registry(output)


# --- the steps one by one, then the registry on the MLflow server -----------------------------------------------------

PREPARE = "tlops prepare-data --data ./my_images --output ./prepared"
STEPS = [
    PREPARE,
    "tlops select-backbone --dataset ./prepared --backbones efficientnet_lite0,efficientnet_lite1 --output ./selection",
    "tlops extract-features --dataset ./prepared --backbone efficientnet_lite0 --output ./features",
    "tlops fine-tune --dataset ./prepared --probe ./features/probe --output ./model",
    "tlops evaluate --dataset ./prepared --model ./model --output ./evaluation --tracking-uri http://mlflow:5000",
]
REGISTER = (
    "tlops register --dataset ./prepared --model ./model --evaluation ./evaluation --tracking-uri http://mlflow:5000"
)
PROMOTE = "tlops promote --tracking-uri http://mlflow:5000"
MODELS = "tlops models --tracking-uri http://mlflow:5000"
FORCE = 'tlops promote --tracking-uri http://mlflow:5000 --version 2 --force --reason "relabelled night images"'
COPY = "tlops promote --tracking-uri http://mlflow:5000 --copy-to tlops-classifier-prod"
PROMOTE_VERSION = "tlops promote --tracking-uri http://mlflow:5000 --version 3"
ROLLBACK = "tlops promote --tracking-uri http://mlflow:5000 --rollback"


@dataclass
class Steps:
    cwd: Path
    stdout: dict[str, str]


@pytest.fixture(scope="module")
def steps(shapes: Path, tmp_path_factory: pytest.TempPathFactory, services: Any) -> Steps:
    """The README's per-step commands up to evaluate, one after the other in one working directory.

    The gate in evaluate compares with the champion on the test MLflow server, where the README's model name is
    not registered yet.
    """
    cwd = tmp_path_factory.mktemp("steps")
    write_imagefolder(shapes, cwd / "my_images")
    _fresh_registered_model(services.mlflow_uri)
    server = {"http://mlflow:5000": services.mlflow_uri}
    stdout = {}
    for text in STEPS:
        substitutions = server if "http://mlflow:5000" in text else None
        stdout[text] = succeeded(run(readme_command(text, substitutions), cwd, timeout=SHORT_TIMEOUT_S))
    return Steps(cwd, stdout)


@pytest.mark.integration  # its fixture runs every README step command up to evaluate, the gate on the server
@pytest.mark.pipeline  # (a minute): not the fast lane
@covers(PREPARE)
def test_prepare_data(steps: Steps, shapes: Path) -> None:
    printed = printed_json(steps.stdout[PREPARE])
    prepared = steps.cwd / "prepared"
    assert (prepared / "report.md").is_file()
    rows = manifest_rows(prepared)
    assert len(rows) == PER_CLASS * len(SHAPES)
    assert printed["classes"] == list(SHAPES)
    assert printed["images"] == {"train": 24, "val": 6, "test": 6}
    assert printed["quarantined"] == 0 and len(printed["digest"]) == 64
    for row in rows:
        assert row["relpath"].split("/")[0] == row["label"]
        assert row["sha256"] == sha256(steps.cwd / "my_images" / row["relpath"])
        assert (int(row["width"]), int(row["height"])) == (64, 64)
    assert "circle" in (prepared / "report.md").read_text()


@pytest.mark.integration
@pytest.mark.pipeline
@covers(*STEPS[1:])
def test_per_step_commands(steps: Steps) -> None:
    cwd = steps.cwd
    ranking = printed_json(steps.stdout[STEPS[1]])
    assert {entry["name"] for entry in ranking} == {"efficientnet_lite0", "efficientnet_lite1"}
    assert all(0.0 <= entry[score] <= 1.0 for entry in ranking for score in ("probe_accuracy", "knn_accuracy"))
    selection = json.loads((cwd / "selection" / "selection.json").read_text())
    (chosen,) = [entry["name"] for entry in ranking if entry["status"] == "chosen"]
    assert selection["ranking"] == ranking and selection["chosen"] == chosen
    assert selection["baseline"]["name"] == "pixels"
    assert "| raw 32x32 pixels (no transfer) |" in steps.stdout[STEPS[1]]  # the table is printed
    # select-backbone scored (and cached) efficientnet_lite0: extract-features reads its features, runs no backbone.
    assert printed_json(steps.stdout[STEPS[2]])["cache_hit"] is True
    probe = printed_json(steps.stdout[STEPS[2]])
    assert probe["backbone"] == "efficientnet_lite0" and probe["val_accuracy"] > 1 / 3
    assert any((cwd / "features" / "features").iterdir()) and any((cwd / "features" / "probe").iterdir())
    tuned = printed_json(steps.stdout[STEPS[3]])
    assert tuned["requested_strategy"] == "auto" and tuned["strategy"] in STRATEGIES and tuned["strategy"] != "auto"
    assert (cwd / "model" / "model.safetensors").is_file()
    metrics = printed_json(steps.stdout[STEPS[4]])
    assert 1 / 3 < metrics["test_accuracy"] <= 1.0 and metrics["test_images"] == 6
    assert json.loads((cwd / "evaluation" / "evaluation.json").read_text())["metrics"] == metrics
    assert (cwd / "evaluation" / "confusion_matrix.png").is_file()


def _fresh_registered_model(tracking_uri: str, name: str = "tlops-classifier") -> Any:
    """An MlflowClient of the test server where the README's default model name is not registered yet."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri)
    with contextlib.suppress(MlflowException):
        client.delete_registered_model(name)
    return client


def comparison_digest(steps: Steps) -> str:
    """The digest of the prepared dataset the README's steps registered."""
    return json.loads((steps.cwd / "prepared" / "prepare_summary.json").read_text())["digest"]


def _aliases(client: Any, name: str = "tlops-classifier") -> dict[str, int]:
    return {alias: int(version) for alias, version in client.get_registered_model(name).aliases.items()}


@pytest.mark.integration
@pytest.mark.pipeline
@covers(REGISTER, PROMOTE, PROMOTE_VERSION, ROLLBACK, MODELS, FORCE, COPY)
def test_register_then_promote_and_roll_back(steps: Steps, mlflow_uri: str) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_uri)
    comparison = json.loads((steps.cwd / "evaluation" / "comparison.json").read_text())
    assert comparison["promote"] is True and comparison["champion_version"] is None  # the gate saw no champion
    server = {"http://mlflow:5000": mlflow_uri}
    registered = []
    for _ in range(3):  # three retrainings: versions 1, 2, 3
        registered.append(printed_json(succeeded(run(readme_command(REGISTER, server), steps.cwd))))
    assert [r["version"] for r in registered] == [1, 2, 3]
    assert sorted(registered[0]["aliases"]) == ["challenger", "champion"]
    assert registered[1]["aliases"] == registered[2]["aliases"] == ["challenger"]
    assert registered[0]["tracking_uri"] == mlflow_uri
    assert _aliases(client) == {"champion": 1, "challenger": 3}
    assert not (steps.cwd / "mlflow.db").exists()

    def promote(text: str) -> str:
        return succeeded(run(readme_command(text, server), steps.cwd, timeout=SHORT_TIMEOUT_S)).strip()

    assert promote(PROMOTE) == "tlops-classifier: champion is version 3 (was version 1)"
    assert _aliases(client) == {"champion": 3, "challenger": 3, "previous-champion": 1}
    assert promote(ROLLBACK) == "tlops-classifier: champion is version 1 (was version 3)"
    assert _aliases(client) == {"champion": 1, "challenger": 3, "previous-champion": 3}
    assert promote(PROMOTE_VERSION) == "tlops-classifier: champion is version 3 (was version 1)"
    assert _aliases(client) == {"champion": 3, "challenger": 3, "previous-champion": 1}

    # By hand with a reason: recorded on the version (the gate did not refuse version 2, so nothing is forced).
    assert promote(FORCE) == "tlops-classifier: champion is version 2 (was version 3); reason: relabelled night images"
    tags = client.get_model_version("tlops-classifier", "2").tags
    assert tags["promotion.reason"] == "relabelled night images" and tags["promotion.forced"] == "false"
    assert tags["promotion.by"] == "tlops promote" and tags["gate.decision"] == "first"
    # Lineage on every version, read back from the server.
    assert tags["dataset_digest"] == comparison_digest(steps) and len(tags["weights_sha256"]) == 64
    assert tags["tlops_version"] and tags["mlflow_run_id"] == registered[1]["run_id"]
    assert tags["backbone"] == "efficientnet_lite0" and tags["strategy"] in STRATEGIES
    assert float(tags["temperature"]) > 0 and tags["tensor_model_uri"].startswith("models:/m-")

    table = promote(MODELS).splitlines()
    assert table[0].split()[:3] == ["version", "aliases", "created"]
    rows = {line.split()[0]: line for line in table[1:]}
    assert sorted(rows) == ["1", "2", "3"] and "champion" in rows["2"] and "previous-champion" in rows["3"]
    assert all("first" in row for row in rows.values())

    _fresh_registered_model(mlflow_uri, "tlops-classifier-prod")
    prod_name = "tlops-classifier-prod"
    assert promote(COPY) == f"copied tlops-classifier version 2 to {prod_name} as version 1: champion of {prod_name}"
    assert _aliases(client, "tlops-classifier-prod") == {"champion": 1}
    prod = client.get_model_version("tlops-classifier-prod", "1").tags
    assert prod["promotion.copied_from"] == "models:/tlops-classifier/2"
    assert prod["dataset_digest"] == tags["dataset_digest"]


# --- S3 and the MLflow server -----------------------------------------------------------------------------------------

S3_RUN = (
    "tlops run --data s3://bucket/datasets/flowers --backbones efficientnet_lite0,efficientnet_lite1 --epochs 5 "
    "--feature-cache s3://bucket/tlops/features"
)
SERVER_RUN = "MLFLOW_TRACKING_URI=http://mlflow:5000 tlops run ..."


@pytest.mark.integration
@pytest.mark.pipeline
@covers(S3_RUN, SERVER_RUN)
def test_run_from_s3_tracked_on_the_mlflow_server(
    shapes: Path, s3_env: Any, s3_client: Any, bucket: str, mlflow_uri: str, tmp_path: Path
) -> None:
    for path in _images(shapes):
        s3_client.upload_file(str(path), bucket, f"datasets/flowers/{path.relative_to(shapes).as_posix()}")
    s3_run = readme_command(S3_RUN, {"s3://bucket/": f"s3://{bucket}/"})
    assert s3_run.argv[1] == "run"
    # The S3 command, tracked and registered on the server as README's `MLFLOW_TRACKING_URI=... tlops run ...`.
    command = readme_command(SERVER_RUN, {"http://mlflow:5000": mlflow_uri}, rest=s3_run.argv[2:])
    client = _fresh_registered_model(mlflow_uri)
    stdout = succeeded(run(command, tmp_path, s3_env.env()))

    summary = json.loads((tmp_path / "tlops-run" / "run_summary.json").read_text())
    dataset = summary["dataset"]
    assert dataset["source"] == f"s3://{bucket}/datasets/flowers"
    assert dataset["layout"] == "image-folder" and dataset["classes"] == list(SHAPES)
    assert dataset["num_train"] + dataset["num_val"] + dataset["num_test"] == PER_CLASS * len(SHAPES)
    assert summary["backbone"] in ("efficientnet_lite0", "efficientnet_lite1")
    assert summary["tracking_uri"] == mlflow_uri
    assert summary["version"] == 1 and sorted(summary["aliases"]) == ["challenger", "champion"]
    assert 1 / 3 < summary["metrics"]["test_accuracy"] <= 1.0
    assert "registered tlops-classifier version 1" in stdout
    assert not (tmp_path / "tlops-run" / "mlflow.db").exists()
    (selection,) = (tmp_path / "tlops-run" / "pipeline_root").rglob("selection.json")
    ranked = json.loads(selection.read_text())
    assert "efficientnet_lite1" in json.dumps(ranked) and "efficientnet_lite0" in json.dumps(ranked)
    (training,) = (tmp_path / "tlops-run" / "pipeline_root").rglob("training.json")
    assert json.loads(training.read_text())["config"]["epochs"] == 5
    # The features of both candidates and the baseline went to the S3 cache, each entry an index and its shards.
    cached = [item["Key"] for item in s3_client.list_objects_v2(Bucket=bucket, Prefix="tlops/features/")["Contents"]]
    assert sum(key.endswith("/index.json") for key in cached) == 3
    assert {row["cache_entry"].split("/")[2] for row in summary["selection"]["ranking"]} == {bucket}
    version = client.get_model_version_by_alias("tlops-classifier", "champion")
    assert version.version == "1" and version.tags["dataset_digest"] == dataset["digest"]


# --- Kubeflow Pipelines: a fake API server (tests/fake_kfp.py) driven by the real kfp.Client ------------------------

KFP_HOST = "export KFP_HOST=http://localhost:8080"
KFP_TOKEN = "export KFP_TOKEN=eyJhbGciOiJSUzI1NiIs..."
SUBMIT = "tlops submit --data s3://bucket/dataset --tracking-uri http://mlflow.mlflow:5000 --epochs 5 --wait"
SCHEDULE = "tlops schedule --data s3://bucket/dataset --tracking-uri http://mlflow.mlflow:5000 --cron '0 0 3 * * *'"
SCHEDULE_LIST = "tlops schedule --list"
SCHEDULE_DELETE = "tlops schedule --delete tlops-retrain"


def _unused_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@covers(KFP_HOST, KFP_TOKEN, SUBMIT, SCHEDULE, SCHEDULE_LIST, SCHEDULE_DELETE)
def test_kubeflow_commands_against_a_fake_kfp_server(tmp_path: Path) -> None:
    """The block as shown, the host the fake's; the fake wants the README's token, as multi-user Kubeflow would."""
    from fake_kfp import FakeKfp

    token = readme_command(KFP_TOKEN).env
    assert set(token) == {"KFP_TOKEN"}
    with FakeKfp(token=token["KFP_TOKEN"]) as fake:
        fake.run_states = ["RUNNING", "SUCCEEDED"]  # one --wait poll (5 s)
        environment = readme_command(KFP_HOST, {"http://localhost:8080": fake.url}).env | token
        assert environment == {"KFP_HOST": fake.url} | token

        def shown(text: str) -> str:
            result = run(readme_command(text), tmp_path, environment, timeout=SHORT_TIMEOUT_S)
            assert token["KFP_TOKEN"] not in result.stdout + result.stderr
            return succeeded(result)

        submitted = shown(SUBMIT)
        (run_,) = fake.runs.values()
        parameters = run_["runtime_config"]["parameters"]
        assert (parameters["data_uri"], parameters["tracking_uri"]) == (
            "s3://bucket/dataset",
            "http://mlflow.mlflow:5000",
        )
        assert parameters["epochs"] == 5 and "pipeline_root" not in run_["runtime_config"]
        assert f"{fake.url}/#/runs/details/{run_['run_id']}" in submitted
        assert [line.split(": ")[-1] for line in submitted.splitlines() if line.startswith("run ")] == [
            "RUNNING",
            "SUCCEEDED",
        ]

        scheduled = shown(SCHEDULE)
        (job,) = fake.recurring_runs.values()
        assert (job["display_name"], job["trigger"]["cron_schedule"]["cron"]) == ("tlops-retrain", "0 0 3 * * *")
        assert (job["max_concurrency"], job["no_catchup"], job["mode"]) == ("1", True, "ENABLE")
        assert job["pipeline_version_reference"] == run_["pipeline_version_reference"]  # the same code: reused
        assert "reusing (this code was uploaded before)" in scheduled

        listed = shown(SCHEDULE_LIST).splitlines()
        assert listed[0].split()[:3] == ["name", "cron", "enabled"]
        assert listed[1].startswith("tlops-retrain  0 0 3 * * *  yes") and job["recurring_run_id"] in listed[1]

        assert f"deleted recurring run 'tlops-retrain' ({job['recurring_run_id']}" in shown(SCHEDULE_DELETE)
        assert fake.recurring_runs == {}
        assert {request.authorization for request in fake.requests} == {f"Bearer {token['KFP_TOKEN']}"}

    # Nothing at the host: one line, before anything else happens.
    host = f"http://127.0.0.1:{_unused_port()}"
    result = run(readme_command(SCHEDULE_LIST), tmp_path, {"KFP_HOST": host}, timeout=SHORT_TIMEOUT_S)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"tlops: error: Kubeflow Pipelines at {host} does not answer")
    assert "Traceback" not in result.stderr and result.stdout == ""


# --- compile, help, lint ----------------------------------------------------------------------------------------------


@covers(LIST)
def test_list_the_strategies(tmp_path: Path) -> None:
    listed = succeeded(run(readme_command(LIST), tmp_path, timeout=SHORT_TIMEOUT_S)).splitlines()
    assert [line.split()[0] for line in listed] == list(STRATEGIES.names())
    assert "lp-ft (or full)" in "\n".join(listed) and all("-based: " in line or "decides: " in line for line in listed)


@covers("tlops compile")
def test_compile(tmp_path: Path) -> None:
    stdout = succeeded(run(readme_command("tlops compile"), tmp_path, timeout=SHORT_TIMEOUT_S))
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.suffix in (".yaml", ".md"))
    checked_in = sorted(
        p.relative_to(REPO)
        for d in ("pipelines", "components")
        for p in (REPO / d).glob("*")
        if p.suffix in (".yaml", ".md")
    )
    assert written == checked_in and Path("pipelines/transfer_learning.yaml") in written
    assert Path("components/README.md") in written  # the generated docs of the components, beside their YAMLs
    printed = {(tmp_path / line.removeprefix("wrote ")).resolve() for line in stdout.splitlines()}
    assert printed == {(tmp_path / p).resolve() for p in written}, stdout
    spec = next(yaml.safe_load_all((tmp_path / "pipelines" / "transfer_learning.yaml").read_text()))
    # The steps run inside an exit handler, which records a failed run in MLflow.
    assert set(spec["root"]["dag"]["tasks"]) == {"exit-handler-1", "record-pipeline-status"}
    assert set(spec["components"]["comp-exit-handler-1"]["dag"]["tasks"]) == {
        "fingerprint-data", "prepare-data", "plan-extraction", "for-loop-2", "for-loop-3", "score-baseline",
        "select-backbone", "extract-features", "audit", "fine-tune", "evaluate", "register",
    }  # fmt: skip
    assert set(spec["components"]["comp-for-loop-2"]["dag"]["tasks"]) == {"extract-shard"}
    assert set(spec["components"]["comp-for-loop-3"]["dag"]["tasks"]) == {"score-backbone"}


HELP = "tlops COMMAND --help"


def _commands_section() -> str:
    return (REPO / "docs" / "commands.md").read_text()


def _tlops_subcommand(text: str) -> tuple[str, set[str]] | None:
    """The subcommand and the options of a README `tlops ...` command (None for other programs)."""
    words = _words(text)
    while words and ASSIGNMENT.match(words[0]):
        words.pop(0)
    if len(words) < 2 or words[0].removeprefix(".venv/bin/") != "tlops" or words[1] == "COMMAND":
        return None
    return words[1], {word.split("=")[0] for word in words[2:] if word.startswith("--")}


@covers(HELP)
def test_every_subcommand_has_help_and_knows_the_readme_options(tmp_path: Path) -> None:
    listed = succeeded(subprocess.run([str(TLOPS), "--help"], capture_output=True, text=True, check=False))
    cli = set(re.findall(r"^    ([a-z][a-z-]*)\s", listed, flags=re.MULTILINE))
    spans = {span.removeprefix("tlops ") for span in INLINE.findall(_commands_section())}
    documented = {name for name in spans if re.fullmatch(r"[a-z][a-z-]*", name)}
    assert documented == cli, "docs/commands.md and `tlops --help` name different subcommands"
    used: dict[str, set[str]] = {}
    for shown in readme_commands():
        found = None if shown.python else _tlops_subcommand(shown.text)
        if found:
            used.setdefault(found[0], set()).update(found[1])
    assert set(used) <= cli, f"READMEs name subcommands that do not exist: {set(used) - cli}"
    for name in sorted(cli):
        helptext = succeeded(run(readme_command(HELP, {"COMMAND": name}), tmp_path, timeout=60))
        assert helptext.startswith(f"usage: tlops {name}")
        missing = {option for option in used.get(name, ()) if not re.search(rf"{re.escape(option)}\b", helptext)}
        assert not missing, f"README uses options that `tlops {name} --help` does not list: {missing}"


LINT = [".venv/bin/ruff check src tests", ".venv/bin/ruff format --check src tests", ".venv/bin/lint-imports"]


@covers(*LINT)
def test_lint_command() -> None:
    for text in LINT:
        succeeded(run(readme_command(text), REPO, timeout=SHORT_TIMEOUT_S))


# --- bench/ -----------------------------------------------------------------------------------------------------------

BENCH_LOCAL = "python bench/prepare_data.py --workdir /tmp/tlops-bench --skip-s3"
BENCH_S3 = "python bench/prepare_data.py --workdir /tmp/tlops-bench"
BENCH_USAGE = "python bench/prepare_data.py --workdir DIR [--output FILE]"
BENCH_SIZE = ["--images", "60", "--classes", "3"]  # instead of 20,000 images in 10 classes


READ_ONCE = "python bench/read_once.py --workdir /tmp/tlops-bench-read-once"
READ_ONCE_USAGE = "python bench/read_once.py --workdir DIR [--images N] [--skip-s3] [--output FILE]"


@pytest.mark.integration
@covers(READ_ONCE, READ_ONCE_USAGE)
def test_bench_read_once(tmp_path: Path) -> None:
    command = readme_command(READ_ONCE, {"/tmp/tlops-bench-read-once": str(tmp_path / "bench")})
    command.argv += ["--images", "30"]  # instead of 2,000
    succeeded(run(command, REPO, timeout=SHORT_TIMEOUT_S))
    report = json.loads((tmp_path / "bench" / "read_once.json").read_text())
    decoded = {(row["source"], row["case"]): row["decodes"] for row in report["runs"]}
    for source in ("local", "s3"):
        cases = [decoded[key] for key in decoded if key[0] == source]
        assert cases == [60, 30, 0], decoded  # twice before the cache, once with it, never on the next run


def _bench_rows(stdout: str) -> list[tuple[str, int, int]]:
    return [(m[0], int(m[1]), int(m[2])) for m in re.findall(r"^(local|s3)\s+(\d+)\s+(\d+)\s", stdout, re.MULTILINE)]


@covers(BENCH_LOCAL)
def test_bench_prepare_data_local(tmp_path: Path) -> None:
    command = readme_command(BENCH_LOCAL, {"/tmp/tlops-bench": str(tmp_path / "bench")})
    command.argv += BENCH_SIZE
    stdout = succeeded(run(command, REPO, timeout=SHORT_TIMEOUT_S))
    assert [(source, images) for source, _workers, images in _bench_rows(stdout)] == [("local", 60), ("local", 60)]
    report = json.loads((tmp_path / "bench" / "prepare_data.json").read_text())
    assert [row["source"] for row in report["runs"]] == ["local", "local"]
    assert all(row["images_per_s"] > 0 for row in report["runs"])


@pytest.mark.integration
@covers(BENCH_S3, BENCH_USAGE)
def test_bench_prepare_data_with_s3(tmp_path: Path) -> None:
    """Both S3 forms start their own SeaweedFS (tests/support/services.py) in WORKDIR/services and stop it."""
    usage = readme_command(
        BENCH_USAGE, {"DIR": str(tmp_path / "usage"), "[--output FILE]": f"--output {tmp_path / 'report.json'}"}
    )
    s3 = readme_command(BENCH_S3, {"/tmp/tlops-bench": str(tmp_path / "bench")})
    for command, report in ((s3, tmp_path / "bench" / "prepare_data.json"), (usage, tmp_path / "report.json")):
        command.argv += BENCH_SIZE
        stdout = succeeded(run(command, REPO, timeout=SHORT_TIMEOUT_S))
        assert [source for source, _w, images in _bench_rows(stdout) if images == 60] == ["local", "local", "s3", "s3"]
        assert set(json.loads(report.read_text())["speedup_default_over_1_worker"]) == {"local", "s3"}
    assert not (tmp_path / "bench" / "services" / "pids").exists()  # its services were stopped


EXTRACTION = (
    "python bench/extraction.py --workdir /tmp/tlops-bench-extraction "
    "--output /tmp/tlops-bench-extraction/extraction.json"
)
EXTRACTION_USAGE = (
    "python bench/extraction.py [--workdir DIR] [--images N] [--batch-size B] [--backbones LIST] [--output FILE]"
)
EXTRACTION_SIZE = ["--images", "8", "--batch-size", "4", "--stage-images", "4", "--repeats", "1"]
EXTRACTION_SIZE += ["--forward-batches", "1", "--paired-batches", "1"]  # instead of 256 images in batches of 64
RANKING = "python bench/ranking.py --workdir /tmp/tlops-bench-ranking --output /tmp/tlops-bench-ranking/ranking.json"
RANKING_USAGE = "python bench/ranking.py [--workdir DIR] [--per-class N] [--image-size S] [--output FILE]"


@covers(EXTRACTION, EXTRACTION_USAGE)
def test_bench_extraction(tmp_path: Path) -> None:
    shown = readme_command(EXTRACTION, {"/tmp/tlops-bench-extraction": str(tmp_path / "bench")})
    usage = readme_command(
        EXTRACTION_USAGE,
        {"[--workdir DIR]": f"--workdir {tmp_path / 'usage'}", "[--output FILE]": f"--output {tmp_path / 'usage.json'}"}
        | {"[--images N] [--batch-size B] [--backbones LIST]": "--backbones efficientnet_lite0"},
    )
    for command, report in ((shown, tmp_path / "bench" / "extraction.json"), (usage, tmp_path / "usage.json")):
        command.argv += EXTRACTION_SIZE
        stdout = succeeded(run(command, REPO, timeout=SHORT_TIMEOUT_S))
        assert "efficiency" in stdout
        result = json.loads(report.read_text())
        assert "efficientnet_lite0" in json.dumps(result)


@covers(RANKING, RANKING_USAGE)
def test_bench_ranking(tmp_path: Path) -> None:
    """Both forms on the digits alone, 5 images a class at 64 px (instead of three datasets at 40 and native size)."""
    shown = readme_command(RANKING, {"/tmp/tlops-bench-ranking": str(tmp_path / "bench")})
    usage = readme_command(
        RANKING_USAGE,
        {"[--workdir DIR]": f"--workdir {tmp_path / 'usage'}", "[--output FILE]": f"--output {tmp_path / 'usage.json'}"}
        | {"[--per-class N] [--image-size S]": "--per-class 5 --image-size 64"},
    )
    shown.argv += ["--per-class", "5", "--image-size", "64"]
    for command, report in ((shown, tmp_path / "bench" / "ranking.json"), (usage, tmp_path / "usage.json")):
        command.argv += ["--datasets", "digits"]
        stdout = succeeded(run(command, REPO, timeout=SHORT_TIMEOUT_S))
        assert "probe_accuracy" in stdout and "scoring / epoch" in stdout
        assert "pixels" in json.dumps(json.loads(report.read_text()))


# --- bench/strategies.py ----------------------------------------------------------------------------------------

STRATEGIES_BENCH = (
    "OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TLOPS_WORKERS=0 python bench/strategies.py "
    "--workdir /tmp/tlops-bench-strategies --json /tmp/tlops-bench-strategies/strategies.json"
)
# Instead of three datasets of 40 a class at 64 px, 3 epochs, every strategy: the digits, 15 a class (11 training
# images a class: enough for auto to fine-tune, then check the result against the probes), 32 px, one epoch.
TINY = ["--datasets", "digits", "--per-class", "15", "--image-size", "32", "--epochs", "1"]
TINY += ["--strategies", "linear-probe,mlp-probe,partial,auto"]
HEADER = "| strategy | applied | val acc | test acc ± SE | train img/s | fine-tune s |"


@covers(STRATEGIES_BENCH)
def test_bench_strategies(tmp_path: Path) -> None:
    command = readme_command(STRATEGIES_BENCH, {"/tmp/tlops-bench-strategies": str(tmp_path / "bench")})
    assert command.env == {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TLOPS_WORKERS": "0"}
    command.argv += TINY
    stdout = succeeded(run(command, REPO, timeout=SHORT_TIMEOUT_S))

    # The Markdown: one table for the dataset with a row per strategy, auto's line, and the summary table.
    lines = stdout.splitlines()
    assert lines[0].startswith("### digits (10 classes; train / val / test = ")
    table = lines[lines.index(HEADER) :]
    assert [row.split(" | ")[0].strip("| ") for row in table[2:6]] == ["linear-probe", "mlp-probe", "partial", "auto"]
    assert table[6] == ""
    assert table[7].startswith("auto decided **") and "within one SE of the best strategy's" in table[7]
    assert "### auto" in lines
    summary = lines[lines.index("### auto") + 2 :]
    assert summary[0].startswith("| dataset | auto decided | auto kept |") and summary[2].startswith("| digits | ")

    report = json.loads((tmp_path / "bench" / "strategies.json").read_text())
    assert (report["epochs"], report["image_size"], report["per_class"], report["workers"]) == (1, 32, 15, 0)
    [dataset] = report["datasets"]
    assert dataset["dataset"] == "digits" and dataset["classes"] == 10
    assert sum(dataset["counts"].values()) == 150
    rows = {row["strategy"]: row for row in dataset["strategies"]}
    assert list(rows) == ["linear-probe", "mlp-probe", "partial", "auto"]
    for name, row in rows.items():
        assert 0 <= row["val_accuracy"] <= 1 and 0 <= row["test_accuracy"] <= 1
        assert row["test_images"] == dataset["counts"]["test"]
        p, n = row["test_accuracy"], row["test_images"]
        assert math.isclose(row["test_std_error"], math.sqrt(p * (1 - p) / n))
        assert row["seconds"] >= 0
        if name in ("linear-probe", "mlp-probe"):
            assert row["applied"] == name and row["images_per_second"] is None and row["epochs_trained"] == 0
    assert rows["partial"]["applied"] == "partial" and rows["partial"]["epochs_trained"] == 1
    assert rows["partial"]["images_per_second"] > 0

    # auto's decision is reported: the rule's choice, what it kept, and both checks of its promise.
    verdict = dataset["auto"]
    assert verdict["decided"] in STRATEGIES and verdict["decided"] != "auto"
    assert verdict["kept"] in ("linear-probe", "mlp-probe", verdict["decided"])
    assert verdict["kept"] == rows["auto"]["applied"]
    assert isinstance(verdict["val_at_least_best_probe"], bool)  # estimates of different kinds (CV, validation)
    probes_val = max(rows["linear-probe"]["val_accuracy"], rows["mlp-probe"]["val_accuracy"])
    assert verdict["best_probe_val_accuracy"] >= probes_val
    assert verdict["best_strategy"] in ("linear-probe", "mlp-probe", "partial")
    assert isinstance(verdict["test_within_one_se_of_best"], bool)
    assert f"auto decided **{verdict['decided']}**, kept **{verdict['kept']}**" in stdout


# --- bench/transfer.py -----------------------------------------------------------------------------------------

TRANSFER_BENCH = "OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TLOPS_WORKERS=0 python bench/transfer.py --seeds {seed} " \
    "--workdir /tmp/tlops-bench-transfer --json /tmp/tlops-bench-transfer/seed{seed}.json"  # fmt: skip
TRANSFER_AUTO = "OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TLOPS_WORKERS=0 python bench/transfer.py --arms auto --seeds 0 " \
    "--workdir /tmp/tlops-bench-transfer --json /tmp/tlops-bench-transfer/after0.json"  # fmt: skip
TRANSFER_MERGE = (
    "python bench/transfer.py --arms none --merge /tmp/tlops-bench-transfer/seed0.json --merge "
    "/tmp/tlops-bench-transfer/seed1.json --json /tmp/tlops-bench-transfer/transfer.json"
)
TRANSFER_USAGE = (
    "python bench/transfer.py [--workdir DIR] [--sizes 5,10,30,100] [--seeds 0,1] [--arms LIST] [--json FILE] "
    "[--merge FILE]"
)
# Instead of six datasets at four sizes, two seeds, every arm: the digits at 5 a class, three arms, 32 px, 1 epoch.
TRANSFER_TINY = ["--datasets", "digits", "--sizes", "5", "--probe-sizes", "32", "--image-size", "32", "--epochs", "1"]


@covers(TRANSFER_BENCH.format(seed=0), TRANSFER_BENCH.format(seed=1), TRANSFER_AUTO, TRANSFER_MERGE, TRANSFER_USAGE)
def test_bench_transfer(tmp_path: Path) -> None:
    """One seed with two probe arms, auto re-run alone into its own JSON, the merge of both, the usage form."""
    bench = {"/tmp/tlops-bench-transfer": str(tmp_path / "bench")}
    first = readme_command(TRANSFER_BENCH.format(seed=0), bench)
    assert first.env == {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TLOPS_WORKERS": "0"}
    first.argv += [*TRANSFER_TINY, "--arms", "linear-probe,pixels"]
    stdout = succeeded(run(first, REPO, timeout=SHORT_TIMEOUT_S))
    assert "| dataset | n/class | val | linear-probe@32 | pixels |" in stdout
    auto = readme_command(TRANSFER_AUTO, bench)
    auto.argv += TRANSFER_TINY
    succeeded(run(auto, REPO, timeout=SHORT_TIMEOUT_S))
    (tmp_path / "bench" / "after0.json").rename(tmp_path / "bench" / "seed1.json")  # stands in for seed 1's rows
    merged = succeeded(run(readme_command(TRANSFER_MERGE, bench), REPO, timeout=SHORT_TIMEOUT_S))
    assert "| dataset | n/class | val | linear-probe@32 | pixels | auto | best arm | auto applied |" in merged
    rows = json.loads((tmp_path / "bench" / "transfer.json").read_text())["rows"]
    assert {row["arm"] for row in rows} == {"linear-probe@32", "pixels", "auto"}
    (auto_row,) = [row for row in rows if row["arm"] == "auto"]
    assert auto_row["applied"] in STRATEGIES and 0 <= auto_row["test_accuracy"] <= 1
    usage = readme_command(
        TRANSFER_USAGE,
        {"[--workdir DIR]": f"--workdir {tmp_path / 'bench'}", "[--json FILE]": f"--json {tmp_path / 'usage.json'}"}
        | {"[--sizes 5,10,30,100] [--seeds 0,1] [--arms LIST]": "--arms none"}
        | {"[--merge FILE]": f"--merge {tmp_path / 'bench' / 'transfer.json'}"},
    )
    assert "| digits | 5 |" in succeeded(run(usage, REPO, timeout=SHORT_TIMEOUT_S))
    assert json.loads((tmp_path / "usage.json").read_text())["rows"] == rows


GATE_BENCH = (
    "OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TLOPS_WORKERS=0 .venv/bin/python bench/gate.py "
    "--json /tmp/tlops-bench-gate/gate.json"
)
SERVING_BENCH = (
    "OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv/bin/python bench/serving.py --json /tmp/tlops-bench-serving/serving.json"
)


@covers(GATE_BENCH)
def test_bench_gate(tmp_path: Path) -> None:
    # Instead of 20 pairs a scenario, two power settings and the 13-a-class subset: 2 pairs, the 2-step champion.
    command = readme_command(GATE_BENCH, {"/tmp/tlops-bench-gate": str(tmp_path)})
    command.argv += ["--workdir", str(tmp_path / "work"), "--pairs", "2", "--champion-epochs", "0", "--small-test", "0"]
    stdout = succeeded(run(command, REPO, timeout=SHORT_TIMEOUT_S))
    assert "| scenario | test images | metric | class_drop_images | promoted |" in stdout
    report = json.loads((tmp_path / "gate.json").read_text())
    assert report["pairs"] == 2 and sum(report["counts"].values()) == 1797
    results = {(r["scenario"], r["metric"], r["class_drop_images"]): r["summary"] for r in report["results"]}
    assert len(results) == 8  # 2 scenarios x 2 metrics x with and without the image floor
    for (scenario, _, _), summary in results.items():
        assert summary["pairs"] == 2 and summary["wilson_low"] <= summary["rate"] <= summary["wilson_high"]
        if scenario.startswith("power"):  # 27 points better: always promoted
            assert summary["promoted"] == 2 and summary["mean_difference"] > 0.1, summary
        else:  # the same recipe, other seeds: not promoted here
            assert summary["promoted"] == 0, summary


@covers(SERVING_BENCH)
def test_bench_serving(tmp_path: Path) -> None:
    command = readme_command(SERVING_BENCH, {"/tmp/tlops-bench-serving": str(tmp_path)})
    command.argv += ["--workdir", str(tmp_path / "work"), "--requests", "3", "--batches", "1", "--batch-size", "4"]
    command.argv += ["--image-size", "64"]
    stdout = succeeded(run(command, REPO, timeout=SHORT_TIMEOUT_S))  # it puts the venv on PATH for the server
    assert "| request | client | calls | median ms/image |" in stdout
    report = json.loads((tmp_path / "serving.json").read_text())
    for kind, calls in (("single", 3), ("batch", 1)):
        timings = report["results"][kind]
        assert timings["in-process"]["calls"] == timings["server"]["calls"] == calls
        assert timings["in-process"]["labels"] == timings["server"]["labels"]  # both answer the same
        assert all(timings[client]["median_ms"] > 0 for client in ("in-process", "server"))
