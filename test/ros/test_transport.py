"""The large-image Fast DDS profile is applied unless the user configured the middleware."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree

import pytest

from endoarss_ros.ros.transport import (
    PROFILE_VARIABLE,
    configure_large_image_transport,
    large_image_profile,
)


def test_the_installed_profile_exists_and_enlarges_shared_memory():
    profile = large_image_profile()
    assert profile is not None, "config/fastdds_large_images.xml is not installed"
    ns = {"dds": "http://www.eprosima.com"}
    root = ElementTree.parse(profile).getroot()
    segment = root.find(".//dds:transport_descriptor[dds:type='SHM']/dds:segment_size", ns)
    assert segment is not None and int(segment.text) >= 16 * 2**20
    participant = root.find(".//dds:participant", ns)
    assert participant is not None and participant.get("is_default_profile") == "true"
    kinds = {t.text for t in root.findall(".//dds:transport_descriptor/dds:type", ns)}
    assert kinds == {"SHM", "UDPv4"}, "must keep the default transport kinds to interoperate"


def test_profile_is_selected_for_fast_dds_by_default():
    environ: dict[str, str] = {}
    note = configure_large_image_transport(environ)
    assert environ[PROFILE_VARIABLE] == str(large_image_profile())
    assert "large-image profile" in note


@pytest.mark.parametrize(
    "variable",
    [PROFILE_VARIABLE, "FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_BUILTIN_TRANSPORTS"],
)
def test_a_user_configuration_is_respected(variable):
    environ = {variable: "mine"}
    note = configure_large_image_transport(environ)
    assert environ == {variable: "mine"}
    assert variable in note


def test_other_middlewares_are_left_alone():
    environ = {"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"}
    assert "rmw_cyclonedds_cpp" in configure_large_image_transport(environ)
    assert PROFILE_VARIABLE not in environ
