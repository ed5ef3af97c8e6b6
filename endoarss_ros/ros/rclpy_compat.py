"""Every rclpy difference among ROS 2 Humble, Jazzy and Kilted that this package runs into.

Supported: Humble (rclpy 3.3.x, Python 3.10), Jazzy (rclpy 7.1.x) and Kilted (rclpy 9.1.x).
Each item is chosen by what the installed rclpy provides (a module that exists, an attribute a
class has), never by a version string. The rest of the package imports these items from here
and nothing version-dependent from rclpy itself, so this file is the one place to look when a
distribution is added or dropped. Private rclpy names the package needs (the same on all three,
with no public equivalent) are reached only through here too.

Checked the same on all three, so used directly from rclpy elsewhere: ``rclpy.lifecycle``
(``LifecycleNode``, ``LifecycleState``, ``TransitionCallbackReturn``: rclpy 3.2, Humble);
``rclpy.signals.SignalHandlerOptions`` and ``rclpy.init(signal_handler_options=)`` (3.1);
``rclpy.executors.ExternalShutdownException`` (3.2); ``rclpy.qos_overriding_options``
(``QoSOverridingOptions.with_default_policies``, ``InvalidQosOverridesError``: 1.4);
``qos_check_compatible`` / ``QoSCompatibility`` (1.7); ``qos_policy_name_from_kind`` (taking an
int since 1.3); ``Node.resolve_topic_name`` (1.3), ``get_fully_qualified_name`` (1.2),
``add_on_set_parameters_callback``, ``create_subscription(event_callbacks=,
qos_overriding_options=)``, ``create_timer(clock=)``; ``Clock(clock_type=ClockType.STEADY_TIME)``;
the logger's ``warning`` (``warn`` is the deprecated alias); ``rclpy.try_shutdown``;
``rclpy.utilities.remove_ros_args``. ``with rclpy.init()`` (a context manager in Kilted only, not
in Jazzy 7.1 or Humble) is not used.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final

from rclpy.impl.implementation_singleton import rclpy_implementation

if TYPE_CHECKING:
    from rcl_interfaces.msg import SetParametersResult
    from rclpy.node import Node
    from rclpy.parameter import Parameter

EVENT_HANDLER_MODULES: Final = ("rclpy.event_handler", "rclpy.qos_event")
"""Where the QoS event classes live, newest first.

Humble has them in ``rclpy.qos_event`` only. rclpy 4.0 (Iron; ros2/rclpy#1058) moved them to
``rclpy.event_handler`` and left ``qos_event`` as a shim; Jazzy and Kilted still ship the shim,
but importing it warns "importing 'qos_event' is deprecated", so the new name is tried first
and the shim is never imported where the new name exists."""


def _module_exists(name: str) -> bool:
    if name in sys.modules:
        return sys.modules[name] is not None
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def event_handler_module(names: Sequence[str] = EVENT_HANDLER_MODULES) -> ModuleType:
    """The first module of ``names`` that the installed rclpy has, imported."""
    for name in names:
        if _module_exists(name):
            return importlib.import_module(name)
    raise ImportError(
        f"this rclpy has none of {', '.join(names)}: not the rclpy of Humble, Jazzy or Kilted"
    )


_events = event_handler_module()

EVENT_HANDLER_MODULE: Final[str] = _events.__name__
"""The module the QoS event classes below come from: ``rclpy.qos_event`` on Humble,
``rclpy.event_handler`` on Jazzy and Kilted."""

QoSRequestedIncompatibleQoSInfo = _events.QoSRequestedIncompatibleQoSInfo
"""What an incompatible-QoS subscription event carries (``last_policy_kind``, counts); same
name and fields on all three, module per :data:`EVENT_HANDLER_MODULES`."""

SubscriptionEventCallbacks = _events.SubscriptionEventCallbacks
"""``create_subscription(event_callbacks=...)``; same constructor (``incompatible_qos=``) on all
three, module per :data:`EVENT_HANDLER_MODULES`."""


def has_post_set_parameters_callback(node: Any) -> bool:
    """Whether ``node`` can run a callback after parameters were set: ``add_post_set_parameters
    _callback`` came with rclpy 3.7 (ros2/rclpy#966, released in Iron), so Jazzy and Kilted have
    it and Humble (3.3.x, which received no backport) does not."""
    return callable(getattr(node, "add_post_set_parameters_callback", None))


def add_parameter_callbacks(
    node: Node,
    validate: Callable[[list[Parameter]], SetParametersResult],
    apply: Callable[[list[Parameter]], None],
) -> None:
    """Have ``validate`` accept or refuse every parameter change of ``node`` and ``apply`` take
    each accepted one.

    Jazzy, Kilted: ``validate`` is an on-set callback and ``apply`` a post-set callback, run
    once rclpy has stored the new values.

    Humble has no post-set callbacks (:func:`has_post_set_parameters_callback`): one on-set
    callback runs ``validate`` and, when it accepts, ``apply`` with the same parameters. rclpy
    checks types, ranges and read-only flags before any on-set callback, and this one is
    registered last so it runs first; so ``apply`` sees exactly the changes that are then
    stored, unless an earlier-registered on-set callback refuses them afterwards (rclpy's own:
    ``use_sim_time`` of a wrong type, which the type check already refuses). ``apply`` runs
    before the values are stored: it must use the parameters it is given, not
    ``node.get_parameter``.
    """
    if has_post_set_parameters_callback(node):
        node.add_on_set_parameters_callback(validate)
        node.add_post_set_parameters_callback(apply)
        return

    def validate_then_apply(parameters: list[Parameter]) -> SetParametersResult:
        result = validate(parameters)
        if result.successful:
            apply(parameters)
        return result

    node.add_on_set_parameters_callback(validate_then_apply)


def add_pre_set_parameters_callback(
    node: Node, adjust: Callable[[list[Parameter]], list[Parameter]]
) -> bool:
    """Have ``adjust`` rewrite every requested parameter change of ``node`` before rclpy checks
    its type; returns False where rclpy cannot (Humble). ``add_pre_set_parameters_callback``
    came with rclpy 4.1 (ros2/rclpy#1083, Iron): Jazzy and Kilted have it, Humble does not, and
    there a change of the wrong type gets rclpy's own refusal ("Wrong parameter type ...")."""
    register = getattr(node, "add_pre_set_parameters_callback", None)
    if not callable(register):
        return False
    register(adjust)
    return True


RCLError: Final[type[Exception]] = rclpy_implementation.RCLError
"""The error rcl failures are raised as, e.g. by ``rclpy.init`` refusing its ROS arguments or
parameter file (``RCLInvalidROSArgsError`` is a subclass). Private on all three: rclpy has no
public name for it (Kilted's ``rclpy.subscription.RCLError`` is a module-level alias, absent
from Humble); ``rclpy.impl.implementation_singleton.rclpy_implementation`` (the C extension)
exists with this class in Humble, Jazzy and Kilted alike."""

RCLInvalidROSArgsError: Final[type[Exception]] = rclpy_implementation.RCLInvalidROSArgsError
"""The :data:`RCLError` subclass for ROS arguments rcl cannot parse (``-r nonsense``), e.g.
from ``create_node(cli_args=...)``. Private on all three, as :data:`RCLError`."""


def parameter_overrides(node: Node) -> dict[str, Parameter]:
    """The start-up values of ``node``'s parameters (``-p``, ``--params-file``, launch
    ``parameters``, ``parameter_overrides=``) by name, the dict ``declare_parameter`` reads, so
    a value replaced in it is the one declared. Private on all three (``Node._parameter_overrides``,
    filled in ``Node.__init__`` in Humble as in Kilted); no rclpy has a public accessor."""
    return node._parameter_overrides


def release_lifecycle_state_machine(node: Node) -> None:
    """Free a ``LifecycleNode``'s rcl state machine, which holds the node's handle.

    ``LifecycleNode.destroy_node`` (Humble, Jazzy and Kilted alike) leaves the state machine to
    the garbage collector, and it keeps the rcl node, so the DDS participant, alive until then:
    a process that exits without that collection (``os._exit``) is never announced as gone, and
    its node and services stay in every peer's graph for the participant lease (20 s with Fast
    DDS), where a fresh node of the same name is shadowed by them. Private on all three
    (``LifecycleNode._state_machine``, a ``Destroyable`` of the C extension on Jazzy and Kilted;
    where it is not one, the collector still frees it as before)."""
    destroy = getattr(getattr(node, "_state_machine", None), "destroy_when_not_in_use", None)
    if destroy is not None:
        destroy()
