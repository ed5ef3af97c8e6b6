"""`pip install .` of the ROS-free core (model, data, training, inference) and the CLI.

ROS 2 users build the whole package, messages and node included, with colcon instead; both
install the same Python package.
"""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def read_version() -> str:
    text = (HERE / "endoarss_ros" / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r'^__version__ = "([^"]+)"', text, re.MULTILINE)
    if match is None:
        raise RuntimeError("endoarss_ros/__init__.py defines no __version__")
    return match.group(1)


def read_requirements(name: str) -> list[str]:
    """Requirement lines of requirements/NAME, following its `-r` includes."""
    requirements = []
    for line in (HERE / "requirements" / name).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line.startswith("-r "):
            requirements += read_requirements(line[3:].strip())
        elif line and not line.startswith("#"):
            requirements.append(line)
    return requirements


setup(
    name="endoarss_ros",
    version=read_version(),
    description="EndoARSS surgical activity recognition and segmentation, with a ROS 2 node",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    classifiers=[
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
    ],
    packages=find_packages(include=["endoarss_ros", "endoarss_ros.*"]),
    install_requires=read_requirements("core.txt"),
    extras_require={"dev": read_requirements("dev.txt")},
    entry_points={"console_scripts": ["endoarss = endoarss_ros.cli:main"]},
)
