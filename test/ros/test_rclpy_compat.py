"""endoarss_ros.ros.rclpy_compat: each rclpy difference among Humble, Jazzy and Kilted is chosen
by what rclpy provides. Humble cannot be installed here, so its branches are exercised by module
names (a stand-in ``rclpy.qos_event``, ``rclpy.event_handler`` hidden) and by a stand-in node
without post-set callbacks; the installed rclpy (Jazzy or Kilted) must take the Iron+ branches."""

from __future__ import annotations

import importlib
import sys
import types
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

pytestmark = pytest.mark.ros


@contextmanager
def compat_reloaded_with(modules: dict[str, types.ModuleType | None]) -> Iterator[types.ModuleType]:
    """rclpy_compat as it loads with ``modules`` in ``sys.modules`` (None: the module does not
    exist); reloaded as it really is afterwards."""
    from endoarss_ros.ros import rclpy_compat

    try:
        with pytest.MonkeyPatch.context() as patch:
            for name, module in modules.items():
                patch.setitem(sys.modules, name, module)
            yield importlib.reload(rclpy_compat)
    finally:
        importlib.reload(rclpy_compat)


def humble_qos_event() -> types.ModuleType:
    """What Humble's rclpy.qos_event provides of what the package uses: the class names."""
    module = types.ModuleType("rclpy.qos_event")
    module.__spec__ = importlib.machinery.ModuleSpec("rclpy.qos_event", None)

    class QoSRequestedIncompatibleQoSInfo:
        pass

    class SubscriptionEventCallbacks:
        pass

    module.QoSRequestedIncompatibleQoSInfo = QoSRequestedIncompatibleQoSInfo
    module.SubscriptionEventCallbacks = SubscriptionEventCallbacks
    return module


def test_humble_takes_the_event_classes_from_qos_event():
    qos_event = humble_qos_event()
    with compat_reloaded_with({"rclpy.event_handler": None, "rclpy.qos_event": qos_event}) as c:
        assert c.EVENT_HANDLER_MODULE == "rclpy.qos_event"
        assert c.SubscriptionEventCallbacks is qos_event.SubscriptionEventCallbacks
        assert c.QoSRequestedIncompatibleQoSInfo is qos_event.QoSRequestedIncompatibleQoSInfo


def test_the_installed_rclpy_takes_event_handler_without_the_deprecated_shim():
    import rclpy.event_handler

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with compat_reloaded_with({}) as c:
            assert c.EVENT_HANDLER_MODULE == "rclpy.event_handler"
            assert c.SubscriptionEventCallbacks is rclpy.event_handler.SubscriptionEventCallbacks
            assert (
                c.QoSRequestedIncompatibleQoSInfo
                is rclpy.event_handler.QoSRequestedIncompatibleQoSInfo
            )
    assert not [w for w in caught if "qos_event" in str(w.message)]


def test_module_selection_takes_the_first_existing_name_and_refuses_none():
    from endoarss_ros.ros.rclpy_compat import event_handler_module

    chosen = event_handler_module(("rclpy.no_such_module", "no_such_package.x", "rclpy.qos"))
    assert chosen.__name__ == "rclpy.qos"
    with pytest.raises(ImportError, match=r"rclpy\.no_such_module"):
        event_handler_module(("rclpy.no_such_module",))


class HumbleNode:
    """Humble's parameter callback registration: on-set callbacks only, newest first."""

    def __init__(self) -> None:
        self.on_set: list = []

    def add_on_set_parameters_callback(self, callback) -> None:
        self.on_set.insert(0, callback)

    def set(self, parameters: list):
        for callback in self.on_set:
            result = callback(parameters)
            if not result.successful:
                return result
        return result


def recorded_callbacks(accept: bool):
    from rcl_interfaces.msg import SetParametersResult

    calls: list = []

    def validate(parameters):
        calls.append(("validate", parameters))
        return SetParametersResult(successful=accept, reason="" if accept else "refused")

    def apply(parameters):
        calls.append(("apply", parameters))

    return calls, validate, apply


@pytest.mark.parametrize("accept", [True, False])
def test_humble_applies_a_change_only_when_it_was_accepted(accept):
    from endoarss_ros.ros.rclpy_compat import add_parameter_callbacks

    node = HumbleNode()
    calls, validate, apply = recorded_callbacks(accept)
    add_parameter_callbacks(node, validate, apply)
    assert len(node.on_set) == 1
    result = node.set(["p"])
    assert result.successful is accept
    expected = [("validate", ["p"]), ("apply", ["p"])] if accept else [("validate", ["p"])]
    assert calls == expected


def test_the_installed_rclpy_applies_after_the_values_are_stored():
    import rclpy
    from rclpy.node import Node
    from rclpy.parameter import Parameter

    from endoarss_ros.ros.rclpy_compat import (
        add_parameter_callbacks,
        has_post_set_parameters_callback,
    )

    assert has_post_set_parameters_callback(Node)
    assert not has_post_set_parameters_callback(HumbleNode())
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = rclpy.create_node("compat_probe", context=context)
        node.declare_parameter("gain", 1.0)
        calls, validate, _ = recorded_callbacks(True)
        seen: list[float] = []

        def apply(parameters) -> None:
            seen.append(node.get_parameter("gain").value)

        add_parameter_callbacks(node, validate, apply)
        assert node.set_parameters([Parameter("gain", value=2.0)])[0].successful
        assert [name for name, _ in calls] == ["validate"]
        assert seen == [2.0]  # post-set: rclpy stored the value before the callback ran
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)


def test_the_humble_path_on_a_real_node_applies_accepted_changes_only(monkeypatch):
    """The on-set-only registration Humble gets, run by the installed rclpy's on-set callbacks
    (which Humble's node runs the same way: after the type and range checks, newest first)."""
    import rclpy
    from rcl_interfaces.msg import SetParametersResult
    from rclpy.parameter import Parameter

    from endoarss_ros.ros import rclpy_compat

    monkeypatch.setattr(rclpy_compat, "has_post_set_parameters_callback", lambda node: False)
    applied: list[float] = []

    def validate(parameters):
        ok = all(p.value < 10.0 for p in parameters)
        return SetParametersResult(successful=ok, reason="" if ok else "too large")

    def apply(parameters):
        applied.extend(p.value for p in parameters)

    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = rclpy.create_node("compat_humble_path", context=context)
        node.declare_parameter("gain", 1.0)
        rclpy_compat.add_parameter_callbacks(node, validate, apply)
        assert node.set_parameters([Parameter("gain", value=2.0)])[0].successful
        assert not node.set_parameters([Parameter("gain", value=20.0)])[0].successful
        assert not node.set_parameters([Parameter("gain", value="text")])[0].successful
        assert applied == [2.0]
        assert node.get_parameter("gain").value == 2.0
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)


def test_rcl_errors_and_start_up_overrides_are_reachable():
    import rclpy
    from rclpy.parameter import Parameter

    from endoarss_ros.ros.rclpy_compat import RCLError, RCLInvalidROSArgsError, parameter_overrides

    assert issubclass(RCLInvalidROSArgsError, RCLError)
    with pytest.raises(RCLError):
        rclpy.init(args=["prog", "--ros-args", "-r", "nonsense"], context=rclpy.Context())
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = rclpy.create_node(
            "compat_overrides", context=context, parameter_overrides=[Parameter("x", value=3)]
        )
        overrides = parameter_overrides(node)
        assert overrides["x"].value == 3
        overrides["x"] = Parameter("x", Parameter.Type.DOUBLE, 3.0)
        assert node.declare_parameter("x", 0.0).value == 3.0
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)


def test_pre_set_parameter_callbacks_are_skipped_where_rclpy_has_none():
    from types import SimpleNamespace

    from endoarss_ros.ros.rclpy_compat import add_pre_set_parameters_callback

    registered = []
    jazzy = SimpleNamespace(add_pre_set_parameters_callback=registered.append)
    assert add_pre_set_parameters_callback(jazzy, list)
    assert registered == [list]
    humble = SimpleNamespace(add_on_set_parameters_callback=registered.append)
    assert not add_pre_set_parameters_callback(humble, list)
    assert registered == [list]
