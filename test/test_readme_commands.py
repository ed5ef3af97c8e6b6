"""Every shell block of README.md runs, as written, in a test.

A command shown in the README is a promise. Each fenced shell block (```bash, ```sh, ```shell,
```console) carries its decision in the README itself, on the line before its fence:

    <!-- readme-test: fast -->            runs in the default suite
    <!-- readme-test: slow -->            runs with the tests marked slow (starts a ROS node,
                                          trains, or takes more than ~20 s)
    <!-- readme-test: skip: <reason> -->  cannot run on a CI machine, and why

A block without a decision fails `test_every_shell_block_has_a_decision`, so none is added
untested.

How a block runs: its text, unchanged, as a bash script (the project's environment from
scripts/env.sh, then `set -euo pipefail`) in a fresh directory holding a symlink to every
top-level entry of the checkout, so that `checkpoints/...` and `config/...` resolve as from the
repository root while what the commands write (`data/`, `clip/`, `run1/`, `report/`) lands in
that directory, not in the checkout; with a ROS domain of its own and a time limit. Fast DDS
profile variables that the test session may have set for itself are removed: a user's shell does
not have them. The README's "Run it" substitution of `demo/unseen/images` ("the frames
`make demo` renders ... by any folder of images") is made by providing that folder, rendered
the way `make demo` renders it (fewer frames); the checkpoint path is the shipped one, as written.

Terminals: a block whose first line is `# terminal N` runs until Ctrl-C, in a terminal of its
own (the README's convention). SESSIONS says which terminals a foreground block needs: they start
in order, each in its own process group, each awaited until it prints its ready line; then the
foreground block runs; then each terminal gets Ctrl-C (SIGINT to its process group, which the
README says stops them cleanly), escalated to SIGTERM and SIGKILL if it does not end.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
from ros_harness import NodeProcess

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

SHELL_LANGUAGES = frozenset({"bash", "sh", "shell", "console"})
FENCE = re.compile(r"^\s*```\s*([\w+-]*)")
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
DECISION_COMMENT = re.compile(r"^<!--\s*readme-test\b(.*?)-->\s*$")
DECISION = re.compile(r"^:\s*(fast|slow|skip)\s*(?::\s*(\S.*?))?\s*$")
TERMINAL = re.compile(r"^#\s*terminal\s+(\d+)\b")
# `<MTLESD folder>`, `<this repository>`: what only the user can supply (not `<<EOF`, `<file`).
PLACEHOLDER = re.compile(r"(?<![<\w])<[A-Za-z][^<>\n]*[^\s<>]>")

# Time limits (s). Slow blocks include the README's 5000-frame synthetic dataset (~75 s on two
# idle cores) and the ViT-B summary; a loaded CI machine takes several times that.
FAST_TIMEOUT = 60
SLOW_TIMEOUT = 900
FOREGROUND_TIMEOUT = 300
READY_TIMEOUT = 180
# After the terminals' Ctrl-C: how long they may take to end by themselves.
CTRL_C_GRACE = 30

# The README's "To substitute" paths that the tests provide rather than rewrite: the README
# must keep naming them there.
PROVIDED = {"demo/unseen/images": "the frames `make demo` renders"}

# Environment variables that select a Fast DDS profile: the test session may have set them for
# its own participants (test/ros/conftest.py); a user's shell has none of them.
FASTDDS_VARIABLES = (
    "FASTDDS_DEFAULT_PROFILES_FILE",
    "FASTRTPS_DEFAULT_PROFILES_FILE",
    "FASTDDS_BUILTIN_TRANSPORTS",
)


@dataclass(frozen=True)
class Block:
    heading: str  # the nearest heading above the block
    index: int  # its order among the shell blocks under that heading, from 0
    line: int  # line of the opening fence (1-based)
    language: str
    text: str
    decision: str | None  # fast, slow, skip; None when the block has none
    reason: str

    @property
    def ref(self) -> tuple[str, int]:
        return (self.heading, self.index)

    @property
    def name(self) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", self.heading.lower()).strip("-")
        return f"{slug}-{self.index}" if self.index else slug

    @property
    def where(self) -> str:
        return f"README.md:{self.line} (under '{self.heading}')"

    @property
    def terminal(self) -> int | None:
        first = self.text.lstrip("\n").split("\n", 1)[0]
        match = TERMINAL.match(first)
        return int(match.group(1)) if match else None

    @property
    def script(self) -> str:
        """The commands: the block's text; for ```console, the `$ ` lines and their
        continuations."""
        if self.language != "console":
            return self.text
        commands, continued = [], False
        for line in self.text.split("\n"):
            if continued or line.startswith("$ "):
                commands.append(line[2:] if not continued else line)
                continued = line.rstrip().endswith("\\")
        return "\n".join(commands)


@dataclass(frozen=True)
class Readme:
    blocks: tuple[Block, ...]
    errors: tuple[str, ...]  # what makes the README unreadable for these tests

    def block(self, ref: tuple[str, int]) -> Block | None:
        return next((b for b in self.blocks if b.ref == ref), None)


def parse_readme(text: str) -> Readme:
    lines = text.split("\n")
    blocks: list[Block] = []
    errors: list[str] = []
    heading = "(top)"
    per_heading: dict[str, int] = {}
    fence_start = None  # (line index, language) while inside a fenced block
    body: list[str] = []
    used_comments: set[int] = set()
    for number, line in enumerate(lines):
        match = FENCE.match(line)
        if fence_start is not None:
            if match and not match.group(1):
                start, language = fence_start
                if language in SHELL_LANGUAGES:
                    decision, reason = None, ""
                    comment = DECISION_COMMENT.match(lines[start - 1]) if start > 0 else None
                    if comment:
                        used_comments.add(start - 1)
                        parsed = DECISION.match(comment.group(1))
                        if parsed is None or (parsed.group(1) != "skip" and parsed.group(2)):
                            errors.append(
                                f"README.md:{start}: malformed decision {lines[start - 1]!r} "
                                "(readme-test: fast | slow | skip: <reason>)"
                            )
                        else:
                            decision, reason = parsed.group(1), parsed.group(2) or ""
                    index = per_heading.get(heading, 0)
                    per_heading[heading] = index + 1
                    text = "\n".join(body)
                    blocks.append(
                        Block(heading, index, start + 1, language, text, decision, reason)
                    )
                fence_start, body = None, []
            else:
                body.append(line)
            continue
        if match:
            fence_start, body = (number, match.group(1).lower()), []
            continue
        heading_match = HEADING.match(line)
        if heading_match:
            heading = heading_match.group(2)
    if fence_start is not None:
        errors.append(f"README.md:{fence_start[0] + 1}: fenced block never closed")
    # A decision is read only from the line just before a shell block's fence.
    for number, line in enumerate(lines):
        if "readme-test" in line and number not in used_comments:
            errors.append(
                f"README.md:{number + 1}: {line.strip()!r} is not on the line just before a "
                "shell block's fence"
            )
    return Readme(tuple(blocks), tuple(errors))


@cache
def readme() -> Readme:
    return parse_readme(README.read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Session:
    """A foreground block that needs terminal blocks running: each terminal starts in turn and
    is awaited until a line of its output matches `ready`."""

    name: str
    terminals: tuple[tuple[str, int], ...]
    foreground: tuple[str, int]
    check: str = ""  # shell run after the foreground block, in its shell (the test's own check)
    expect: tuple[str, ...] = ()  # patterns the foreground's output must contain
    ready: str = r"\bready:"  # the node and frame_publisher print "ready: ..." once running


ACTIVITY_LINE = r"(?m)^(idle|grasping|cautery|suturing|suction)$"  # the demo model's activities
LABELS = r"(?s)segmentation_names:.*tissue.*shaft"
SESSIONS = (
    Session(
        "node-and-camera",
        terminals=(("The node and a camera", 0), ("The node and a camera", 1)),
        foreground=("What comes out", 0),
        expect=(ACTIVITY_LINE, LABELS),
    ),
    Session(
        "dvrk-stereo",
        terminals=(("A dVRK stereo endoscope", 0), ("A dVRK stereo endoscope", 1)),
        foreground=("What comes out", 0),
        # "a mask and an overlay per eye (`/endoarss/left/segmentation/mask`, ...)"
        check="for eye in left right; do\n"
        "  ros2 topic echo --once /endoarss/$eye/segmentation/mask sensor_msgs/msg/Image \\\n"
        "    --field encoding\n"
        "done",
        expect=(ACTIVITY_LINE, LABELS, r"(?s)mono8.*mono8"),
    ),
    Session(
        "bags",
        terminals=(("Bags", 0),),
        foreground=("Bags", 1),
        check="test -s report/metrics.json && test -s report/report.md && ls report run1",
        # Outputs recorded for the played frames, and scored.
        expect=(r'"/endoarss/activity": [1-9]', r'"frames": 300, ', r"(?m)^metrics\.json$"),
    ),
)

# The test's own checks of blocks that run alone: shell run after the block, in its shell.
CHECKS = {
    ("Large images: the Fast DDS transport", 0): (
        'test -f "$FASTDDS_DEFAULT_PROFILES_FILE"\n'
        'test "$FASTRTPS_DEFAULT_PROFILES_FILE" = "$FASTDDS_DEFAULT_PROFILES_FILE"\n'
        'grep -q "<profiles" "$profile"\n'
        'echo "profile: $profile"'
    ),
    ("Training and evaluation", 0): (
        'test "$(find data/synthetic/images -name "*.png" | wc -l)" -eq 5000\n'
        'test "$(find data/synthetic/masks -name "*.png" | wc -l)" -eq 5000'
    ),
}
EXPECT = {
    ("Large images: the Fast DDS transport", 0): (r"profile: /\S+/fastdds_large_images\.xml",),
    ("Training and evaluation", 0): (r"wrote 5000 frames", r"trainable share"),
}


def session_refs() -> set[tuple[str, int]]:
    return {ref for s in SESSIONS for ref in (*s.terminals, s.foreground)}


# --- the README's structure ---------------------------------------------------------------


def test_readme_parses():
    assert not readme().errors, "\n".join(readme().errors)
    assert readme().blocks, "no shell block found in README.md"


def test_every_shell_block_has_a_decision():
    undecided = [b.where for b in readme().blocks if b.decision is None]
    assert not undecided, (
        "shell blocks without a decision; put one of <!-- readme-test: fast -->, "
        "<!-- readme-test: slow -->, <!-- readme-test: skip: <reason> --> on the line before "
        "each fence:\n" + "\n".join(undecided)
    )


def test_skipped_blocks_say_why_and_only_they_hold_placeholders():
    for block in readme().blocks:
        if block.decision == "skip":
            assert len(block.reason) >= 20, f"{block.where}: give the reason for the skip"
        else:
            placeholders = PLACEHOLDER.findall(block.script)
            assert not placeholders, (
                f"{block.where} holds {placeholders}, which only a user can supply: it cannot "
                "run in a test (mark it skip, with that reason)"
            )


def test_sessions_and_checks_name_readme_blocks():
    blocks = {b.ref: b for b in readme().blocks}
    for ref in {*session_refs(), *CHECKS, *EXPECT}:
        assert ref in blocks, f"the test names README block {ref}, which README.md lacks"
    for session in SESSIONS:
        for ref in session.terminals:
            assert blocks[ref].terminal is not None, f"{ref} is not a `# terminal N` block"
        assert blocks[session.foreground].terminal is None, f"{session.foreground} is a terminal"
        for ref in (*session.terminals, session.foreground):
            assert blocks[ref].decision == "slow", f"{blocks[ref].where}: starts a node: slow"
    for block in readme().blocks:
        if block.terminal is not None and block.decision != "skip":
            assert block.ref in session_refs(), (
                f"{block.where} is a terminal block (runs until Ctrl-C): add it, with the "
                "block that uses it, to SESSIONS in this file"
            )
        if block.decision == "fast":
            assert block.terminal is None, f"{block.where}: a terminal block cannot be fast"


def test_the_provided_paths_are_the_readme_substitutions():
    text = README.read_text(encoding="utf-8")
    substitute = text[text.index("**To substitute:**") :].split("\n\n", 1)[0]
    for path in PROVIDED:
        assert f"`{path}`" in substitute, f"README's 'To substitute' no longer names {path}"


# --- running blocks ------------------------------------------------------------------------


class Shell(NodeProcess):
    """A bash script in its own process group (ros_harness.NodeProcess: output captured line by
    line), in `cwd` with exactly the environment `env`."""

    def __init__(self, name: str, script: Path, cwd: Path, env: dict[str, str]):
        self.started = time.monotonic()
        super().__init__(name, ["bash", str(script)], env, cwd=cwd, inherit_env=False)

    def tail(self, chars: int = 4000) -> str:
        return f"--- {self.name} (exit {self.returncode}) ---\n{self.output[-chars:]}"

    def wait_for_line(self, pattern: str, timeout: float) -> bool:
        try:
            self.wait_for_output(pattern, timeout)
        except AssertionError:
            return False
        return True

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, sig)

    def finish(self) -> None:
        """Kill whatever of the group is left (e.g. a job the script put in the background)."""
        self.signal_group(signal.SIGKILL)
        self.wait(10)
        self._reader.join(10)

    def stop_like_ctrl_c(self) -> str:
        """Ctrl-C (SIGINT to the group, as a terminal sends it); SIGTERM, then SIGKILL, if the
        group does not end. Returns which signal ended it."""
        for sig, grace in (
            (signal.SIGINT, CTRL_C_GRACE),
            (signal.SIGTERM, 10),
            (signal.SIGKILL, 10),
        ):
            if self.returncode is not None:
                break
            self.signal_group(sig)
            if self.wait(grace) is not None:
                self.finish()
                return signal.Signals(sig).name
        self.finish()
        return "none (had ended)"


def block_script(block: Block, check: str = "") -> str:
    script = (
        f"# {block.where}, {block.decision}\n"
        f"source {ROOT}/scripts/env.sh\n"
        "set -euo pipefail\n"
        f"{block.script}\n"
    )
    if check:
        script += f"# the test's check\n{check}\n"
    return script


# A ROS domain per test, none of them the session's (conftest.py), so that no test sees another's
# nodes or the suite's.
_DOMAINS = iter(
    random.SystemRandom().sample(
        [d for d in range(1, 101) if str(d) != os.environ.get("ROS_DOMAIN_ID")], 99
    )
)


@pytest.fixture
def domain() -> int:
    return next(_DOMAINS)


@pytest.fixture
def run_dir(tmp_path: Path) -> Iterator[Path]:
    """A fresh directory that looks like the repository root to the commands: a symlink to each
    top-level entry of the checkout; what the commands write stays in it."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    for name in checkout_entries():
        (cwd / name).symlink_to(ROOT / name)
    yield cwd
    # Symlinks are removed, never followed; outputs (up to ~0.5 GB of synthetic data) go.
    shutil.rmtree(cwd, ignore_errors=True)


@cache
def checkout_entries() -> tuple[str, ...]:
    """Top-level names of the checkout: what git tracks, and the built workspaces."""
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, text=True, check=False
    )
    names = {p.split("/", 1)[0] for p in listed.stdout.split("\0") if p}
    if listed.returncode != 0 or not names:
        names = {p.name for p in ROOT.iterdir() if p.name != ".git"}
    names |= {p.name for p in ROOT.glob("install*") if p.is_dir()}
    return tuple(sorted(names))


@pytest.fixture(scope="session")
def demo_frames(tmp_path_factory) -> Path:
    """`demo/` as `make demo` leaves it for the README's commands: `unseen/images`, rendered with
    demo.sh's command (seed 1, 112x112), 30 frames instead of 300."""
    demo = tmp_path_factory.mktemp("readme") / "demo"
    result = subprocess.run(
        [
            "bash",
            "-c",
            f"source {ROOT}/scripts/env.sh && set -euo pipefail && endoarss synth {demo}/unseen "
            "--frames 30 --size 112x112 --seed 1 --val-fraction 0 --test-fraction 0.999",
        ],
        env=clean_environ(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert any((demo / "unseen" / "images").rglob("*.png"))
    return demo


def clean_environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in FASTDDS_VARIABLES}


def block_environ(cwd: Path, domain: int) -> dict[str, str]:
    return {
        **clean_environ(),
        "ROS_DOMAIN_ID": str(domain),
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "ROS_LOG_DIR": str(cwd.parent / "ros_log"),
        # What a terminal shows at once, a pipe would hold back: flush Python's output per line.
        "PYTHONUNBUFFERED": "1",
    }


@cache
def missing_ros2_tool(verb: str | None) -> str | None:
    """Why `ros2` (`ros2 VERB`) cannot run here, or None: the PyPI wheels lack the ros2 command
    and `launch` unless set-up found the ROS 2 tools."""
    where = "(docs/development.md: 'Without the ROS 2 tools')"
    if shutil.which("ros2") is None:
        return f"the ros2 command is not installed {where}"
    if verb is not None:
        result = subprocess.run(
            ["ros2", verb, "--help"], capture_output=True, timeout=120, check=False
        )
        if result.returncode != 0:
            return f"`ros2 {verb}` is not installed {where}"
    return None


def skip_without_ros2(*blocks: Block) -> None:
    """Skip, as test/ros/test_ros2_cli.py does, where the README's ros2 commands cannot run."""
    script = "\n".join(b.script for b in blocks)
    if re.search(r"(^|[\s;&|(])ros2\s", script):
        reason = missing_ros2_tool(None) or (
            missing_ros2_tool("launch") if re.search(r"\bros2\s+launch\b", script) else None
        )
        if reason:
            pytest.skip(reason)


def provide(cwd: Path, request, *blocks: Block) -> None:
    if any("demo/unseen/images" in b.script for b in blocks):
        (cwd / "demo").symlink_to(request.getfixturevalue("demo_frames"))


def stop_ros2_daemon(env: dict[str, str]) -> None:
    """`ros2 topic ...` starts a daemon for the domain, which would outlive the test."""
    subprocess.run(
        ["ros2", "daemon", "stop"], env=env, capture_output=True, timeout=60, check=False
    )


def assert_expected(output: str, patterns: tuple[str, ...], what: str, context: str) -> None:
    for pattern in patterns:
        assert re.search(pattern, output), f"{what}: no match for {pattern!r}\n{context}"


def standalone_params() -> list:
    params = []
    for block in readme().blocks:
        if block.decision not in ("fast", "slow") or block.ref in session_refs():
            continue
        marks = [pytest.mark.slow] if block.decision == "slow" else []
        params.append(pytest.param(block, marks=marks, id=block.name))
    return params


@pytest.mark.parametrize("block", standalone_params())
def test_readme_block_runs(block: Block, run_dir: Path, domain: int, request):
    """A block that needs nothing running: it must succeed, within its time limit."""
    skip_without_ros2(block)
    provide(run_dir, request, block)
    env = block_environ(run_dir, domain)
    script = run_dir.parent / f"{block.name}.sh"
    script.write_text(block_script(block, CHECKS.get(block.ref, "")), encoding="utf-8")
    timeout = FAST_TIMEOUT if block.decision == "fast" else SLOW_TIMEOUT
    shell = Shell(block.name, script, run_dir, env)
    try:
        status = shell.wait(timeout)
    finally:
        shell.finish()
        if "ros2 " in block.script:
            stop_ros2_daemon(env)
    elapsed = time.monotonic() - shell.started
    print(f"{block.where}: {elapsed:.1f} s\n{shell.tail()}")
    context = f"script:\n{script.read_text()}\n{shell.tail(8000)}"
    assert status is not None, f"{block.where} did not finish within {timeout} s\n{context}"
    assert status == 0, f"{block.where} failed with status {status}\n{context}"
    assert_expected(shell.output, EXPECT.get(block.ref, ()), block.where, context)


@pytest.mark.slow
@pytest.mark.ros
@pytest.mark.parametrize("session", SESSIONS, ids=[s.name for s in SESSIONS])
def test_readme_session_runs(session: Session, run_dir: Path, domain: int, request):
    """Terminal blocks started in order and awaited, then the foreground block; then Ctrl-C
    must stop every terminal by itself, cleanly."""
    terminals = [readme().block(ref) for ref in session.terminals]
    foreground = readme().block(session.foreground)
    if foreground is None or None in terminals:
        pytest.fail(f"README.md lacks a block of session {session.name}")
    blocks = [*terminals, foreground]
    if any(b.decision != "slow" for b in blocks):
        pytest.skip("a block of this session is not marked slow (see test_sessions_...)")
    skip_without_ros2(*blocks)
    provide(run_dir, request, *blocks)
    env = block_environ(run_dir, domain)
    started: list[tuple[Block, Shell]] = []
    shell = None
    stopped: dict[str, str] = {}
    timings: list[str] = []

    def context() -> str:
        parts = [s.tail() for _, s in started]
        if shell is not None:
            parts.append(f"script:\n{block_script(foreground, session.check)}\n{shell.tail(8000)}")
        return "\n".join(parts)

    try:
        for block in terminals:
            script = run_dir.parent / f"{block.name}.sh"
            script.write_text(block_script(block), encoding="utf-8")
            terminal = Shell(f"terminal {block.terminal}: {block.where}", script, run_dir, env)
            started.append((block, terminal))
            ready = terminal.wait_for_line(session.ready, READY_TIMEOUT)
            assert ready, (
                f"{block.where} printed no line matching {session.ready!r} within "
                f"{READY_TIMEOUT} s\n{context()}"
            )
            timings.append(f"{block.where} ready after {time.monotonic() - terminal.started:.1f} s")
        script = run_dir.parent / f"{foreground.name}.sh"
        script.write_text(block_script(foreground, session.check), encoding="utf-8")
        shell = Shell(foreground.name, script, run_dir, env)
        status = shell.wait(FOREGROUND_TIMEOUT)
        shell.finish()
        timings.append(f"{foreground.where}: {time.monotonic() - shell.started:.1f} s")
        print(shell.tail())
        assert status is not None, (
            f"{foreground.where} did not finish within {FOREGROUND_TIMEOUT} s\n{context()}"
        )
        assert status == 0, f"{foreground.where} failed with status {status}\n{context()}"
        assert_expected(shell.output, session.expect, foreground.where, context())
        for block, terminal in started:
            assert terminal.returncode is None, (
                f"{block.where} ended before Ctrl-C (it runs until Ctrl-C)\n{context()}"
            )
    finally:
        for block, terminal in reversed(started):
            stopped[block.where] = terminal.stop_like_ctrl_c()
        if shell is not None:
            shell.finish()
        stop_ros2_daemon(env)
        print("\n".join(timings))
    # "Ctrl-C stops both cleanly": each terminal ended on SIGINT alone, with status 0.
    for block, terminal in started:
        assert stopped[block.where] == "SIGINT", (
            f"{block.where}: Ctrl-C did not stop it within {CTRL_C_GRACE} s "
            f"({stopped[block.where]} did)\n{context()}"
        )
        assert terminal.returncode == 0, (
            f"{block.where}: Ctrl-C ended it with status {terminal.returncode}\n{context()}"
        )
        assert "Traceback" not in terminal.output, f"{block.where}\n{context()}"
