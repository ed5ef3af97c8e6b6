"""One way to validate configuration: model config, training config, checkpoint metadata and
the perception node's parameters all describe their fields with the rules below.

In-house rather than pydantic because one rule must serve three readers: the validator (a
message that names the field, e.g. ``lora.rank must be a positive integer, got 0``), the ROS 2
parameter descriptor (type, ``IntegerRange``/``FloatingPointRange``, allowed values, shown by
``ros2 param describe``), and the documentation tables. A rule is a small frozen dataclass
that checks a value, says what it expects and exposes its bounds; :class:`Section` runs the
rules of a frozen config dataclass on construction and reads/writes plain YAML/JSON data.
Collections are rules too (:class:`ListOf`, :class:`MappingOf`), and their messages point at
the offending entry (``loss.task_weights.activity``, repeated names), so no config needs a
hand-written check beside its rules.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NoReturn, Protocol, TypeVar

# typing.Self is Python 3.11+; these bound TypeVars say the same and work on 3.10 (ROS 2 Humble).
_E = TypeVar("_E", bound="ValidationError")
S = TypeVar("S", bound="Section")


class ValidationError(ValueError):
    """A value that cannot be used; ``field`` is its dotted name, which the message starts
    with. Subclasses tell which kind of input was bad (config, checkpoint, parameter).

    With one argument the error concerns no single field (``field`` is empty), so code that
    raised a plain ``ValueError`` subclass with a whole message keeps working. ``source``
    names where the value came from (a file), and then starts the message: ``path: field ...``.
    """

    def __init__(self, field: str, message: str | None = None, *, source: str = "") -> None:
        if message is None:
            field, message = "", field
        text = self.format(field, message)
        super().__init__(f"{source}: {text}" if source else text)
        self.field = field
        self.detail = message
        """The message without the field name, to re-word for another audience."""
        self.source = source

    @staticmethod
    def format(field: str, message: str) -> str:
        return f"{field} {message}" if field else message

    def located(self: _E, source: str) -> _E:
        """The same error (class, field, detail), said of ``source``."""
        return type(self)(self.field, self.detail, source=source)


def is_integer(value: object) -> bool:
    """An int that is not a bool (YAML ``true`` must not pass as 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_finite_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class Rule(Protocol):
    """What a field accepts. ``convert`` returns the normalised value or None when the value
    is not acceptable; ``expectation`` completes "must be ..."."""

    @property
    def expectation(self) -> str: ...

    def convert(self, value: Any) -> Any: ...


_REJECT = object()


def check(
    field: str, value: Any, rule: Rule, error: type[ValidationError] = ValidationError
) -> Any:
    """``value`` normalised by ``rule``, or ``error`` naming ``field``.

    A rule with an ``explain(value)`` method may name a more precise culprit: it returns
    ``(suffix, message)`` (e.g. ``(".activity", "must be a positive number, got 0")``) or None
    for the generic message."""
    converted = rule.convert(value)
    if converted is _REJECT:
        raise error(*_rejection(field, value, rule))
    return converted


def _rejection(field: str, value: Any, rule: Rule) -> tuple[str, str]:
    explain = getattr(rule, "explain", None)
    precise = explain(value) if explain is not None else None
    if precise is not None:
        suffix, message = precise
        return field + suffix, message
    return field, f"must be {rule.expectation}, got {value!r}"


def _or_null(text: str, optional: bool) -> str:
    return f"{text} or null" if optional else text


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _interval(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    left = "(" if low_open or low is None else "["
    right = ")" if high_open or high is None else "]"
    low_text = "-inf" if low is None else _number_text(low)
    high_text = "inf" if high is None else _number_text(high)
    return f"{left}{low_text}, {high_text}{right}"


@dataclass(frozen=True)
class Integer:
    """An int, not a bool, within ``[low, high]``; ``optional`` also accepts None (YAML
    ``null``)."""

    low: int | None = None
    high: int | None = None
    optional: bool = False

    @property
    def expectation(self) -> str:
        return _or_null(self._expectation(), self.optional)

    def _expectation(self) -> str:
        if self.high is None and self.low == 1:
            return "a positive integer"
        if self.high is None and self.low == 0:
            return "a non-negative integer"
        if self.low is None and self.high is None:
            return "an integer"
        return f"an integer in {_interval(self.low, self.high, False, False)}"

    def convert(self, value: Any) -> Any:
        if value is None and self.optional:
            return None
        if not is_integer(value):
            return _REJECT
        if (self.low is not None and value < self.low) or (
            self.high is not None and value > self.high
        ):
            return _REJECT
        return int(value)


@dataclass(frozen=True)
class Number:
    """A finite number (an integer is accepted and becomes a float); ``optional`` also accepts
    None (YAML ``null``)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    unit: str = ""
    optional: bool = False

    @property
    def expectation(self) -> str:
        return _or_null(self._expectation(), self.optional)

    def _expectation(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        if self.high is None and self.low == 0:
            return ("a positive number" if self.low_open else "a non-negative number") + unit
        if self.low is None and self.high is None:
            return "a finite number" + unit
        interval = _interval(self.low, self.high, self.low_open, self.high_open)
        return f"a number in {interval}{unit}"

    def convert(self, value: Any) -> Any:
        if value is None and self.optional:
            return None
        if not is_finite_number(value):
            return _REJECT
        number = float(value)
        if self.low is not None and (number <= self.low if self.low_open else number < self.low):
            return _REJECT
        if self.high is not None and (
            number >= self.high if self.high_open else number > self.high
        ):
            return _REJECT
        return number


@dataclass(frozen=True)
class Pattern:
    """A string that ``normalise`` maps to its canonical form, or to None when it is not
    acceptable (e.g. device names: ``auto``, ``cpu``, ``cuda``, ``cuda:N``)."""

    describe: str
    normalise: Callable[[str], str | None]

    @property
    def expectation(self) -> str:
        return self.describe

    def convert(self, value: Any) -> Any:
        if not isinstance(value, str):
            return _REJECT
        text = self.normalise(value)
        return _REJECT if text is None else text


@dataclass(frozen=True)
class Boolean:
    @property
    def expectation(self) -> str:
        return "true or false"

    def convert(self, value: Any) -> Any:
        return value if isinstance(value, bool) else _REJECT


@dataclass(frozen=True)
class Choice:
    """One of fixed strings; ``fold_case`` accepts ``MONO`` for ``mono`` (and strips blanks)."""

    choices: tuple[str, ...]
    fold_case: bool = False

    @property
    def expectation(self) -> str:
        return f"one of {', '.join(self.choices)}"

    def convert(self, value: Any) -> Any:
        if not isinstance(value, str):
            return _REJECT
        text = value.strip().lower() if self.fold_case else value
        return text if text in self.choices else _REJECT


@dataclass(frozen=True)
class Text:
    """A string; ``optional`` also accepts None (YAML ``null``)."""

    non_empty: bool = False
    optional: bool = False
    strip: bool = False

    @property
    def expectation(self) -> str:
        text = "a non-empty string" if self.non_empty else "a string"
        return f"{text} or null" if self.optional else text

    def convert(self, value: Any) -> Any:
        if value is None and self.optional:
            return None
        if not isinstance(value, str):
            return _REJECT
        text = value.strip() if self.strip else value
        if self.non_empty and not text:
            return _REJECT
        return text


@dataclass(frozen=True)
class ListOf:
    """A list of items that each pass ``item``; held as a tuple. ``length`` fixes the count,
    ``min_length`` bounds it; ``unique`` refuses repeats."""

    item: Rule
    length: int | None = None
    min_length: int = 0
    unique: bool = False
    what: str = ""
    """Replaces the generated expectation (e.g. "two positive integers [height, width]")."""

    @property
    def expectation(self) -> str:
        if self.what:
            return self.what
        each = f"each {self.item.expectation}"
        unique = ", no repeats" if self.unique else ""
        if self.length is not None:
            return f"a list of {self.length} items, {each}{unique}"
        size = "a non-empty list" if self.min_length else "a list"
        return f"{size}, {each}{unique}"

    def convert(self, value: Any) -> Any:
        if isinstance(value, str | bytes) or not isinstance(value, Sequence):
            return _REJECT
        if self.length is not None and len(value) != self.length:
            return _REJECT
        if len(value) < self.min_length:
            return _REJECT
        items = tuple(self.item.convert(v) for v in value)
        if any(v is _REJECT for v in items):
            return _REJECT
        if self.unique and _repeated(items):
            return _REJECT
        return items

    def explain(self, value: Any) -> tuple[str, str] | None:
        """Names the repeated items when repeats are all that is wrong."""
        if not self.unique or isinstance(value, str | bytes) or not isinstance(value, Sequence):
            return None
        items = tuple(self.item.convert(v) for v in value)
        repeated = _repeated(items) if not any(v is _REJECT for v in items) else []
        if not repeated:
            return None
        return "", f"must be {self.expectation}, got {value!r} (repeated: {repeated})"


def _repeated(items: tuple[Any, ...]) -> list[Any]:
    seen: list[Any] = []
    repeated: list[Any] = []
    for item in items:
        if item in seen and item not in repeated:
            repeated.append(item)
        seen.append(item)
    return repeated


@dataclass(frozen=True)
class MappingOf:
    """A mapping (held as a dict copy). ``keys`` limits the keys; ``value`` checks each value,
    and a bad one is reported under its key (``loss.task_weights.activity``)."""

    keys: tuple[str, ...] | None = None
    value: Rule | None = None
    what: str = ""
    """Replaces the generated expectation (e.g. "a mapping of model config sections")."""

    @property
    def expectation(self) -> str:
        if self.what:
            return self.what
        text = "a mapping"
        if self.keys is not None:
            text += f" with keys from {', '.join(self.keys)}"
        if self.value is not None:
            text += f", each value {self.value.expectation}"
        return text

    def convert(self, value: Any) -> Any:
        if not isinstance(value, Mapping):
            return _REJECT
        if self.keys is not None and any(k not in self.keys for k in value):
            return _REJECT
        if self.value is None:
            return dict(value)
        out = {k: self.value.convert(v) for k, v in value.items()}
        return _REJECT if any(v is _REJECT for v in out.values()) else out

    def explain(self, value: Any) -> tuple[str, str] | None:
        """Names the first key whose value is refused, when the keys are fine."""
        if self.value is None or not isinstance(value, Mapping):
            return None
        if self.keys is not None and any(k not in self.keys for k in value):
            return None
        for key, item in value.items():
            if self.value.convert(item) is _REJECT:
                return _rejection(f".{key}", item, self.value)
        return None


def setting(
    default: Any = dataclasses.MISSING,
    rule: Rule | None = None,
    *,
    default_factory: Any = dataclasses.MISSING,
    doc: str = "",
    runtime: bool = False,
    read_only: bool = False,
) -> Any:
    """A dataclass field that :class:`Section` checks with ``rule`` on construction.

    ``runtime``: the owner can apply a new value while it runs (e.g. smoothing); the others
    take effect when it is (re)configured. ``read_only``: set once, when the process starts.
    """
    return dataclasses.field(
        default=default,
        default_factory=default_factory,
        metadata={"rule": rule, "doc": doc, "runtime": runtime, "read_only": read_only},
    )


class Section:
    """Base of the frozen config dataclasses.

    Fields made with :func:`setting` are checked (and normalised, e.g. lists to tuples) in
    ``__post_init__``; cross-field rules go in :meth:`validate`. A field whose type is another
    Section (named in ``NESTED``) is read recursively. ``SECTION`` is the dotted prefix of
    every field name in messages; ``ERROR`` the exception raised.
    """

    SECTION: ClassVar[str] = ""
    ERROR: ClassVar[type[ValidationError]] = ValidationError
    NESTED: ClassVar[Mapping[str, type[Section]]] = {}

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            rule = f.metadata.get("rule")
            if rule is not None:
                value = check(self.path(f.name), getattr(self, f.name), rule, self.ERROR)
                object.__setattr__(self, f.name, value)
        for name, section in self.NESTED.items():
            value = getattr(self, name)
            if not isinstance(value, section):
                self.fail(name, f"must be a {section.__name__}, got {type(value).__name__}")
        self.validate()

    def validate(self) -> None:
        """Rules between fields; raise with :meth:`fail`."""

    @classmethod
    def path(cls, name: str) -> str:
        return f"{cls.SECTION}.{name}" if cls.SECTION else name

    def fail(self, name: str, message: str) -> NoReturn:
        raise self.ERROR(self.path(name), message)

    @classmethod
    def from_dict(cls: type[S], data: object) -> S:
        """Build from parsed YAML/JSON; unknown keys are an error naming the known ones."""
        where = cls.SECTION or "the configuration"
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            message = f"must be a mapping, got {type(data).__name__}"
            raise cls.ERROR(cls.SECTION, message if cls.SECTION else f"{where} {message}")
        names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        unknown = sorted(str(k) for k in data if k not in names)
        if unknown:
            raise cls.ERROR(
                "",
                f"unknown field(s) in {where}: {', '.join(unknown)} (known: {', '.join(names)})",
            )
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            nested = cls.NESTED.get(key)
            if nested is not None:
                kwargs[key] = nested.from_dict(value)
            elif isinstance(value, list):
                kwargs[key] = tuple(value)
            else:
                kwargs[key] = value
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML/JSON data; ``from_dict(to_dict())`` gives an equal section."""
        return {
            f.name: _plain(getattr(self, f.name))
            for f in dataclasses.fields(self)  # type: ignore[arg-type]
        }

    @classmethod
    def rules(cls) -> dict[str, Rule]:
        """Each checked field's rule, by name (for documentation and descriptors)."""
        return {
            f.name: f.metadata["rule"]
            for f in dataclasses.fields(cls)  # type: ignore[arg-type]
            if f.metadata.get("rule") is not None
        }


def _plain(value: Any) -> Any:
    if isinstance(value, Section):
        return value.to_dict()
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True)
class FieldInfo:
    """One checked field of a (possibly nested) section, under its dotted name."""

    name: str
    rule: Rule
    default: Any
    doc: str
    runtime: bool = False
    read_only: bool = False


def flat_fields(cls: type[Section], prefix: str = "") -> list[FieldInfo]:
    """Every checked field of ``cls`` and its nested sections, in declaration order, named
    ``prefix + field`` (nested: ``smoothing.method``)."""
    out: list[FieldInfo] = []
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        nested = cls.NESTED.get(f.name)
        if nested is not None:
            out += flat_fields(nested, f"{prefix}{f.name}.")
        elif f.metadata.get("rule") is not None:
            default = f.default
            if default is dataclasses.MISSING and f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            meta = f.metadata
            out.append(
                FieldInfo(
                    prefix + f.name,
                    meta["rule"],
                    default,
                    meta["doc"],
                    meta.get("runtime", False),
                    meta.get("read_only", False),
                )
            )
    return out


def from_flat(cls: type[S], values: Mapping[str, Any], prefix: str = "") -> S:
    """Build ``cls`` from dotted names (``smoothing.method``); names of other sections are
    ignored, missing ones keep their defaults."""
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        nested = cls.NESTED.get(f.name)
        if nested is not None:
            kwargs[f.name] = from_flat(nested, values, f"{prefix}{f.name}.")
        elif prefix + f.name in values:
            kwargs[f.name] = values[prefix + f.name]
    return cls(**kwargs)


def to_flat(section: Section, prefix: str = "") -> dict[str, Any]:
    """Dotted names and values, the inverse of :func:`from_flat`."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(section):  # type: ignore[arg-type]
        value = getattr(section, f.name)
        if isinstance(value, Section):
            out.update(to_flat(value, f"{prefix}{f.name}."))
        else:
            out[prefix + f.name] = value
    return out
