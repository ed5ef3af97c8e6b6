"""Delivery of camera-sized messages over Fast DDS, the default ROS 2 middleware.

Measured between two processes on one machine: with Fast DDS's default transports a
best-effort 640x480 or 1280x1024 rgb8 image at 30 Hz is almost never delivered (0-2 of 150),
because the writer's 512 KiB shared-memory segment cannot hold it and the UDP fragments that
carry it instead overflow the receiver's socket buffer. Two known remedies differ in what
they break:

- ``FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA`` delivers (142 of 150), but a participant using it
  does not discover participants that do not, and ROS ignores it under
  ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``;
- a participant profile with a larger shared-memory segment (config/fastdds_large_images.xml)
  delivers every frame (150 of 150 at 1280x1024 and 1920x1080, with or without LOCALHOST)
  and stays compatible with default participants. The segment belongs to the writer, so the
  camera process needs it for the input images and this node for its masks and overlays.

The node applies the profile to itself unless the environment already configures Fast DDS;
the camera side must set the same file (README). Fast DDS 3 (Kilted) reads
``FASTDDS_DEFAULT_PROFILES_FILE`` and warns that the old name is deprecated; Fast DDS 2 (Humble,
Jazzy) reads only the old name, ``FASTRTPS_DEFAULT_PROFILES_FILE``: with the new name a Jazzy
participant keeps its 512 KiB segment and loses best-effort 640x480 frames (2-5 of 30
delivered, measured; 30 of 30 with the old name).
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import MutableMapping
from pathlib import Path
from typing import Final

PROFILE_FILE: Final = "fastdds_large_images.xml"
PROFILE_VARIABLES: Final = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")
"""Where Fast DDS 3 and Fast DDS 2 read their XML profile."""
FAST_DDS_3_RMW_MAJOR: Final = 9
"""rmw_fastrtps's major version from which it runs on Fast DDS 3 (Kilted: 9.x; Jazzy 8.x,
Humble 6.x run Fast DDS 2)."""
# Variables with which a user has already chosen a Fast DDS configuration.
_USER_CONFIGURATION: Final = (*PROFILE_VARIABLES, "FASTDDS_BUILTIN_TRANSPORTS")


def _package_share(package: str) -> Path | None:
    """``package``'s installed share folder, or None without ament_index or the package."""
    try:
        from ament_index_python.packages import (
            PackageNotFoundError,
            get_package_share_directory,
        )
    except ImportError:
        return None
    try:
        return Path(get_package_share_directory(package))
    except PackageNotFoundError:
        return None


def large_image_profile() -> Path | None:
    """The installed profile, or None when the package is not installed (e.g. pip only)."""
    share = _package_share("endoarss_ros")
    profile = share / "config" / PROFILE_FILE if share is not None else None
    return profile if profile is not None and profile.is_file() else None


@functools.cache
def rmw_fastrtps_major() -> int | None:
    """The installed rmw_fastrtps_cpp's major version (from its package.xml), None if unknown;
    read once per process (the node's input watchdog asks again at each silence)."""
    share = _package_share("rmw_fastrtps_cpp")
    try:
        manifest = (share / "package.xml").read_text(encoding="utf-8") if share else ""
    except OSError:
        return None
    match = re.search(r"<version>\s*(\d+)\.", manifest)
    return int(match.group(1)) if match else None


def profile_variables(rmw_major: int | None) -> tuple[str, ...]:
    """The variable(s) through which this Fast DDS takes the profile: the one its version
    reads, both when the version is unknown."""
    if rmw_major is None:
        return PROFILE_VARIABLES
    return PROFILE_VARIABLES[:1] if rmw_major >= FAST_DDS_3_RMW_MAJOR else PROFILE_VARIABLES[1:]


def configure_large_image_transport(environ: MutableMapping[str, str] = os.environ) -> str:
    """Select the large-image profile for this process unless the user configured Fast DDS.

    Must run before ``rclpy.init()``: Fast DDS reads its profile when the participant is
    created. Returns what was decided, for the log.
    """
    rmw = environ.get("RMW_IMPLEMENTATION") or "rmw_fastrtps_cpp"
    if not rmw.startswith("rmw_fastrtps"):
        return f"middleware {rmw}: its transport configuration is left as it is"
    for variable in _USER_CONFIGURATION:
        if environ.get(variable):
            return f"Fast DDS configured by the environment: {variable}={environ[variable]}"
    profile = large_image_profile()
    if profile is None:
        return (
            f"Fast DDS large-image profile {PROFILE_FILE} not found (package not installed): "
            "best-effort images above ~0.5 MB may be lost"
        )
    variables = profile_variables(rmw_fastrtps_major())
    for variable in variables:
        environ[variable] = str(profile)
    return f"Fast DDS large-image profile: {' and '.join(variables)}={profile}"
