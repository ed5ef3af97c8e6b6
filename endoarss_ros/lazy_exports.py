"""Lazy public names for packages whose modules import PyTorch.

`import endoarss_ros.model` or `.inference` must stay cheap (configuration and CLI help need no
torch), yet users expect `from endoarss_ros.model import create_model`. A package lists its public
names and the submodule defining each; this builds the module-level `__getattr__`/`__dir__`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, namespace: dict[str, Any], exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`exports` maps a public name to its submodule (relative to `package`)."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{module}", package), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *exports})

    return __getattr__, __dir__
