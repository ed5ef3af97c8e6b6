"""The oldest supported Python (3.10: ROS 2 Humble on Ubuntu 22.04) is said in four places that
must agree: setup.py's ``python_requires``, ruff's ``target-version``, mypy's ``python_version``
and the version that ``make lint`` holds every project Python file to with vermin. Only the files
are read."""

from __future__ import annotations

import ast
import os
import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OLDEST = (3, 10)
# Folders that hold no project source: build outputs of every environment (build/,
# install-jazzy/ ...), logs.
NOT_SOURCE = {"build", "install", "log"}


def setup_python_requires() -> str:
    tree = ast.parse((ROOT / "setup.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setup":
            for keyword in node.keywords:
                if keyword.arg == "python_requires":
                    return ast.literal_eval(keyword.value)
    raise AssertionError("setup.py's setup() has no python_requires")


def setup_classifiers() -> list[str]:
    tree = ast.parse((ROOT / "setup.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setup":
            for keyword in node.keywords:
                if keyword.arg == "classifiers":
                    return ast.literal_eval(keyword.value)
    return []


def pyproject_string(table: str, key: str) -> str:
    # tomllib is Python 3.11+, so read the one string key of the table by hand.
    section = None
    for line in (ROOT / "pyproject.toml").read_text(encoding="utf-8").splitlines():
        header = re.fullmatch(r"\s*\[+([^\]]+)\]+\s*(#.*)?", line)
        if header:
            section = header.group(1).strip()
            continue
        match = re.fullmatch(rf'\s*{re.escape(key)}\s*=\s*"([^"]*)"\s*(#.*)?', line)
        if section == table and match:
            return match.group(1)
    raise AssertionError(f"pyproject.toml's [{table}] has no {key}")


def ruff_target_version() -> str:
    return pyproject_string("tool.ruff", "target-version")


def make_recipe(target: str) -> list[str]:
    """The commands of a Makefile target, backslash-continued lines joined."""
    lines = (ROOT / "Makefile").read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(rf"{target}\s*:", line))
    commands: list[str] = []
    pending = ""
    for line in lines[start + 1 :]:
        if not line.startswith("\t") and not pending:
            break
        text = pending + " " + line.strip() if pending else line.strip()
        if text.endswith("\\"):
            pending = text[:-1].rstrip()
            continue
        pending = ""
        commands.append(text.lstrip("@-+"))
    return commands


def vermin_arguments() -> list[str]:
    commands = [c for c in make_recipe("lint") if re.search(r"\bvermin\b", c)]
    assert len(commands) == 1, f"make lint runs vermin {len(commands)} times, expected once"
    words = shlex.split(commands[0])
    return words[words.index("vermin") + 1 :]


def version(text: str) -> tuple[int, int]:
    major, minor = text.split(".")
    return int(major), int(minor)


def test_setup_requires_the_oldest_supported_python():
    requires = setup_python_requires()
    match = re.fullmatch(r">=\s*(\d+\.\d+)", requires)
    assert match, f"python_requires {requires!r} should be a plain '>=3.x'"
    assert version(match.group(1)) == OLDEST


def test_setup_classifiers_start_at_the_oldest_supported_python():
    listed = sorted(
        version(c.rsplit("::", 1)[1].strip())
        for c in setup_classifiers()
        if re.fullmatch(r"Programming Language :: Python :: \d+\.\d+", c)
    )
    assert listed, "setup.py names no Python versions in its classifiers"
    assert listed[0] == OLDEST


def test_ruff_targets_the_oldest_supported_python():
    target = ruff_target_version()
    match = re.fullmatch(r"py(\d)(\d+)", target)
    assert match, f"unexpected ruff target-version {target!r}"
    assert (int(match.group(1)), int(match.group(2))) == OLDEST


def test_mypy_checks_against_the_oldest_supported_python():
    assert version(pyproject_string("tool.mypy", "python_version")) == OLDEST
    commands = [c for c in make_recipe("lint") if re.search(r"\bmypy\b", c)]
    assert commands, "make lint runs no mypy"


def test_make_lint_holds_the_code_to_the_oldest_supported_python():
    args = vermin_arguments()
    targets = [a.split("=", 1)[1] for a in args if a.startswith(("--target=", "-t="))]
    assert targets == [f"{OLDEST[0]}.{OLDEST[1]}-"], targets
    # Fail on violations; count annotations; no `# novm` comment or backport may hide one.
    for flag in ("--violations", "--eval-annotations", "--no-parse-comments"):
        assert flag in args, f"vermin in make lint lacks {flag}"
    assert not any(a.startswith("--backport") or a.startswith("--exclude") for a in args)


def test_make_lint_checks_every_project_python_file():
    paths = [a for a in vermin_arguments() if not a.startswith("-")]
    covered: set[Path] = set()
    for pattern in paths:
        matches = sorted(ROOT.glob(pattern))
        assert matches, f"vermin path {pattern!r} in make lint matches nothing"
        for match in matches:
            covered.update(match.rglob("*") if match.is_dir() else [match])

    def is_python(path: Path) -> bool:
        if path.suffix == ".py":
            return True
        if path.suffix:
            return False
        with path.open("rb") as stream:
            first = stream.read(128).split(b"\n", 1)[0]
        return first.startswith(b"#!") and b"python" in first

    missed = []
    for folder, subfolders, files in os.walk(ROOT):
        here = Path(folder)
        # Prune build outputs, hidden folders (.venv, .git) and caches in place.
        subfolders[:] = [
            d
            for d in subfolders
            if not d.startswith(".")
            and d != "__pycache__"
            and not (here == ROOT and d.split("-")[0] in NOT_SOURCE)
        ]
        for name in files:
            path = here / name
            if path not in covered and path.is_file() and is_python(path):
                missed.append(str(path.relative_to(ROOT)))
    assert not missed, f"make lint's vermin does not check: {missed}"
