"""Point the ROS 2 wheels' CMake exports at this interpreter's include directories.

The PyPI wheels of ROS 2 are built in a manylinux image and their CMake config files name that
image's Python and numpy include directories, which do not exist here, so any package that
generates messages fails to configure. Rewriting the two paths makes them build.
"""

from __future__ import annotations

import argparse
import sys
import sysconfig
from pathlib import Path

import numpy

BUILDER_PYTHON_INCLUDE = "/opt/python/cp311-cp311/include/python3.11"
BUILDER_NUMPY_INCLUDE = "/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include"


def repair(prefix: Path) -> int:
    replacements = {
        BUILDER_NUMPY_INCLUDE: numpy.get_include(),
        BUILDER_PYTHON_INCLUDE: sysconfig.get_paths()["include"],
    }
    changed = 0
    for path in (prefix / "share").rglob("*.cmake"):
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
        new = text
        for old, replacement in replacements.items():
            new = new.replace(old, replacement)
        if new != text:
            path.write_text(new, encoding="utf-8", errors="surrogateescape")
            changed += 1
    return changed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("prefix", type=Path, help="the virtual environment holding the wheels")
    args = parser.parse_args()
    changed = repair(args.prefix)
    print(f"repaired {changed} CMake file(s) under {args.prefix / 'share'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
