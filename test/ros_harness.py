"""Cross-process ROS 2 testing: start nodes in their own processes and always stop them.

Processes inherit the test's environment (the built workspace and an isolated, localhost-only
ROS domain set in conftest.py), so what they run is what a user runs.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

TEST_NODES = Path(__file__).parent / "nodes"


class NodeProcess:
    """A node running in a child process, with its output captured line by line."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        env: dict[str, str] | None = None,
        *,
        cwd: Path | None = None,
        inherit_env: bool = True,
    ):
        """`env` is added to the test's environment, or with `inherit_env=False` is the whole
        environment."""
        self.name = name
        self.argv = list(argv)
        self._lines: list[str] = []
        self._changed = threading.Condition()
        self._popen = subprocess.Popen(
            self.argv,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env={**(os.environ if inherit_env else {}), **(env or {})},
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, name=f"{name}-output", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._popen.stdout is not None
        for line in self._popen.stdout:
            with self._changed:
                self._lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def output(self) -> str:
        with self._changed:
            return "\n".join(self._lines)

    @property
    def returncode(self) -> int | None:
        return self._popen.poll()

    @property
    def pid(self) -> int:
        """The process's id, also its process group's."""
        return self._popen.pid

    def wait(self, timeout: float) -> int | None:
        """The exit status, or None if the process still runs after `timeout` seconds."""
        try:
            return self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def wait_for_output(self, pattern: str, timeout: float = 30.0) -> str:
        """Wait for a line matching `pattern`; fail with the process output if it never comes."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        with self._changed:
            while True:
                for line in self._lines[seen:]:
                    if regex.search(line):
                        return line
                seen = len(self._lines)
                if self._popen.poll() is not None and not self._reader.is_alive():
                    raise AssertionError(
                        f"{self.name} exited with {self._popen.returncode} before printing "
                        f"{pattern!r}; output:\n{self.output}"
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"{self.name} did not print {pattern!r} within {timeout} s; "
                        f"output:\n{self.output}"
                    )
                self._changed.wait(min(remaining, 0.5))

    def stop(self, sig: int = signal.SIGINT, timeout: float = 15.0) -> int:
        """Ask the process to stop with `sig`; escalate to SIGKILL of its group if it hangs."""
        if self._popen.poll() is None:
            try:
                self._popen.send_signal(sig)
                self._popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self._popen.pid, signal.SIGKILL)
                self._popen.wait(timeout)
        self._reader.join(timeout)
        return self._popen.returncode

    def kill(self) -> None:
        if self._popen.poll() is None:
            os.killpg(self._popen.pid, signal.SIGKILL)
            self._popen.wait()
        self._reader.join(5.0)


def python_node(name: str, script: str | Path, *args: str, **kwargs) -> NodeProcess:
    """Start a Python script with the test's interpreter (the project's environment)."""
    return NodeProcess(name, [sys.executable, str(script), *args], **kwargs)


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


@contextlib.contextmanager
def spinning_node(name: str, threads: int = 1) -> Iterator:
    """An rclpy node in this process, in its own context, spun by a background executor."""
    import rclpy
    from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor

    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node(name, context=context)
    if threads > 1:
        executor = MultiThreadedExecutor(num_threads=threads, context=context)
    else:
        executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, name=f"{name}-executor", daemon=True)
    spinner.start()
    try:
        yield node
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
        spinner.join(5.0)
