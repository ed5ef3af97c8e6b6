"""Command-line options generated from validated sections (:mod:`endoarss_ros.validation`), so
a command's option and the node parameter of the same field share name, default, rule and
description: ``smoothing.ema_alpha`` becomes ``--smoothing-ema-alpha``.

Options are read as text and checked by the field's rule only after parsing, so a bad value
gets the same message as a bad parameter (``must be one of auto, cpu, cuda, cuda:N, got
'tpu'``), in one line that names the option, rather than argparse's usage text.
"""

from __future__ import annotations

import argparse
from collections.abc import Collection, Mapping, Sequence
from typing import Any, TypeVar

from endoarss_ros.validation import (
    Boolean,
    Choice,
    Integer,
    Number,
    Rule,
    Section,
    ValidationError,
    flat_fields,
    from_flat,
)

S = TypeVar("S", bound=Section)


def option_name(field: str) -> str:
    """``smoothing.ema_alpha`` -> ``--smoothing-ema-alpha``."""
    return "--" + field.replace(".", "-").replace("_", "-")


def _dest(field: str) -> str:
    return field.replace(".", "__")


def _metavar(name: str, rule: Rule) -> str:
    if isinstance(rule, Choice):
        return "{" + ",".join(rule.choices) + "}"
    return name.rsplit(".", 1)[-1].upper()


def _shown(default: Any) -> str:
    if isinstance(default, str):
        return default or repr(default)
    return str(default).lower() if isinstance(default, bool) else f"{default:g}"


def add_section_options(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    section: type[Section],
    *,
    aliases: Mapping[str, Sequence[str]] | None = None,
    required: Collection[str] = (),
) -> None:
    """One option per checked field of ``section`` (nested sections included); ``aliases``
    adds older spellings of a field's option, ``required`` names fields without default."""
    aliases = aliases or {}
    for info in flat_fields(section):
        names = [option_name(info.name), *aliases.get(info.name, ())]
        doc = info.doc.replace("%", "%%")
        help_text = doc if info.name in required else f"{doc} (default: {_shown(info.default)})"
        if isinstance(info.rule, Boolean):
            parser.add_argument(
                *names,
                dest=_dest(info.name),
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text,
            )
        else:
            parser.add_argument(
                *names,
                dest=_dest(info.name),
                default=None,
                required=info.name in required,
                metavar=_metavar(info.name, info.rule),
                help=help_text,
            )


def given_values(args: argparse.Namespace, section: type[Section]) -> dict[str, Any]:
    """The options of ``section`` that were given, by dotted field name, typed for their rule
    (text that is no number stays text, for the rule to reject by name)."""
    values: dict[str, Any] = {}
    for info in flat_fields(section):
        value = getattr(args, _dest(info.name), None)
        if value is not None:
            values[info.name] = _typed(value, info.rule)
    return values


def _typed(value: Any, rule: Rule) -> Any:
    if not isinstance(value, str):
        return value
    kind = int if isinstance(rule, Integer) else float if isinstance(rule, Number) else None
    if kind is None:
        return value
    try:
        return kind(value)
    except ValueError:
        return value


def section_from_options(
    args: argparse.Namespace, section: type[S], overrides: Mapping[str, Any] | None = None
) -> S:
    """``section`` from the given options (defaults for the others) and ``overrides``; a bad
    value raises :class:`OptionError` naming the option."""
    values = {**given_values(args, section), **(overrides or {})}
    try:
        return from_flat(section, values)
    except ValidationError as exc:
        raise OptionError(option_name(exc.field) if exc.field else "", exc.detail) from exc


class OptionError(ValidationError):
    """A command-line value that cannot be used; ``field`` is the option (``--device``)."""


def frame_size(minimum: int = 16) -> Any:
    """The argparse type of every frame-size option: ``WIDTHxHEIGHT`` as image tools and ROS
    write it (``640x480``), or one number for a square; returns ``(height, width)``, the order
    of numpy shapes."""

    def parse(text: str) -> tuple[int, int]:
        width, separator, height = text.strip().lower().partition("x")
        if not separator:
            height = width
        if not (width.strip().isdigit() and height.strip().isdigit()):
            raise argparse.ArgumentTypeError(
                f"size must be WIDTHxHEIGHT (e.g. 640x480) or one number, got {text!r}"
            )
        size = int(height), int(width)
        if min(size) < minimum:
            raise argparse.ArgumentTypeError(
                f"size must be at least {minimum}x{minimum}, got {text!r}"
            )
        return size

    return parse
