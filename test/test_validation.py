"""The shared validator: every rule, the Section base and the flat (dotted) view."""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest

from endoarss_ros.validation import (
    Boolean,
    Choice,
    Integer,
    ListOf,
    MappingOf,
    Number,
    Pattern,
    Rule,
    Section,
    Text,
    ValidationError,
    check,
    flat_fields,
    from_flat,
    setting,
    to_flat,
)

NAN, INF = float("nan"), float("inf")


def _refuses(rule: Rule, value: Any) -> str:
    with pytest.raises(ValidationError) as info:
        check("x", value, rule)
    assert info.value.field == "x"
    return info.value.detail


@pytest.mark.parametrize(
    ("rule", "value", "converted"),
    [
        (Integer(), -3, -3),
        (Integer(1), 1, 1),
        (Integer(0, 10), 10, 10),
        (Integer(1, optional=True), None, None),
        (Number(), 2, 2.0),
        (Number(0, low_open=True), 1e-9, 1e-9),
        (Number(0, 1), 1, 1.0),
        (Number(0, optional=True), None, None),
        (Boolean(), False, False),
        (Choice(("a", "b")), "b", "b"),
        (Choice(("mono",), fold_case=True), " MONO ", "mono"),
        (Text(), "", ""),
        (Text(non_empty=True, strip=True), " x ", "x"),
        (Text(optional=True), None, None),
        (Pattern("an even-length word", lambda s: s if len(s) % 2 == 0 else None), "ab", "ab"),
        (ListOf(Integer()), [1, 2], (1, 2)),
        (ListOf(Integer(), length=2), (1, 2), (1, 2)),
        (ListOf(ListOf(Integer(), length=2)), [[1, 2]], ((1, 2),)),
        (ListOf(Choice(("a", "b")), unique=True), ["a", "b"], ("a", "b")),
        (MappingOf(), {"k": [1]}, {"k": [1]}),
        (MappingOf(("a", "b"), Number()), {"a": 1}, {"a": 1.0}),
    ],
)
def test_rules_accept_and_normalise(rule: Rule, value: Any, converted: Any) -> None:
    result = check("x", value, rule)
    assert result == converted
    assert type(result) is type(converted)


@pytest.mark.parametrize(
    ("rule", "value", "detail"),
    [
        (Integer(), True, "must be an integer, got True"),
        (Integer(), 1.0, "must be an integer, got 1.0"),
        (Integer(), "1", "must be an integer, got '1'"),
        (Integer(), None, "must be an integer, got None"),
        (Integer(1), 0, "must be a positive integer, got 0"),
        (Integer(1), False, "must be a positive integer, got False"),
        (Integer(0), -1, "must be a non-negative integer, got -1"),
        (Integer(0, 10), 11, "must be an integer in [0, 10], got 11"),
        (Integer(1, optional=True), 0, "must be a positive integer or null, got 0"),
        (Number(), NAN, "must be a finite number, got nan"),
        (Number(), INF, "must be a finite number, got inf"),
        (Number(), -INF, "must be a finite number, got -inf"),
        (Number(), True, "must be a finite number, got True"),
        (Number(), "1.0", "must be a finite number, got '1.0'"),
        (Number(0, low_open=True), 0, "must be a positive number, got 0"),
        (Number(0, low_open=True), NAN, "must be a positive number, got nan"),
        (Number(0), -0.5, "must be a non-negative number, got -0.5"),
        (Number(0, 1, high_open=True), 1.0, "must be a number in [0, 1), got 1.0"),
        (Number(0, 1, low_open=True, high_open=True), 0, "must be a number in (0, 1), got 0"),
        (Number(0, 1), 1.5, "must be a number in [0, 1], got 1.5"),
        (Number(0, 1000, low_open=True, unit="ms"), 0, "must be a number in (0, 1000] ms, got 0"),
        (Number(0, optional=True), INF, "must be a non-negative number or null, got inf"),
        (Boolean(), 1, "must be true or false, got 1"),
        (Boolean(), "true", "must be true or false, got 'true'"),
        (Choice(("a", "b")), "c", "must be one of a, b, got 'c'"),
        (Choice(("a", "b")), "A", "must be one of a, b, got 'A'"),
        (Choice(("a",)), None, "must be one of a, got None"),
        (Text(), 3, "must be a string, got 3"),
        (Text(), None, "must be a string, got None"),
        (Text(non_empty=True, strip=True), "  ", "must be a non-empty string, got '  '"),
        (Text(non_empty=True, optional=True), "", "must be a non-empty string or null, got ''"),
        (Pattern("a word", lambda s: None), "ab", "must be a word, got 'ab'"),
        (Pattern("a word", lambda s: s), 3, "must be a word, got 3"),
    ],
)
def test_scalar_rules_refuse_with_their_expectation(rule: Rule, value: Any, detail: str) -> None:
    assert _refuses(rule, value) == detail


@pytest.mark.parametrize(
    ("rule", "value", "detail"),
    [
        (ListOf(Integer()), "12", "must be a list, each an integer, got '12'"),
        (ListOf(Integer()), {1: 2}, "must be a list, each an integer, got {1: 2}"),
        (ListOf(Integer()), [1, True], "must be a list, each an integer, got [1, True]"),
        (ListOf(Number()), [1, NAN], "must be a list, each a finite number, got [1, nan]"),
        (
            ListOf(Integer(), length=2),
            [1, 2, 3],
            "must be a list of 2 items, each an integer, got [1, 2, 3]",
        ),
        (ListOf(Integer(), min_length=1), [], "must be a non-empty list, each an integer, got []"),
        (
            ListOf(Integer(), length=2, what="two integers (H, W)"),
            [1],
            "must be two integers (H, W), got [1]",
        ),
        (
            ListOf(Choice(("a", "b")), unique=True),
            ["a", "b", "a", "a"],
            "must be a list, each one of a, b, no repeats, got ['a', 'b', 'a', 'a'] "
            "(repeated: ['a'])",
        ),
        (
            ListOf(Choice(("a", "b")), unique=True),
            ["a", "c", "a"],
            "must be a list, each one of a, b, no repeats, got ['a', 'c', 'a']",
        ),
        (MappingOf(), [1], "must be a mapping, got [1]"),
        (MappingOf(what="a mapping of sections"), 3, "must be a mapping of sections, got 3"),
        (
            MappingOf(("a", "b"), Number()),
            {"c": 1},
            "must be a mapping with keys from a, b, each value a finite number, got {'c': 1}",
        ),
    ],
)
def test_collection_rules_refuse_with_their_expectation(
    rule: Rule, value: Any, detail: str
) -> None:
    assert _refuses(rule, value) == detail


def test_unique_compares_normalised_items() -> None:
    rule = ListOf(Choice(("mono",), fold_case=True), unique=True)
    assert "(repeated: ['mono'])" in _refuses(rule, ["mono", " MONO"])
    assert "(repeated: [1.0])" in _refuses(ListOf(Number(), unique=True), [1, 1.0])


def test_a_mapping_value_is_reported_under_its_key() -> None:
    with pytest.raises(ValidationError) as info:
        check("loss.weights", {"a": 1, "b": 0}, MappingOf(("a", "b"), Number(0, low_open=True)))
    assert info.value.field == "loss.weights.b"
    assert str(info.value) == "loss.weights.b must be a positive number, got 0"
    nested = MappingOf(value=MappingOf(value=Integer()))
    with pytest.raises(ValidationError, match=r"^m\.x\.y must be an integer, got 'z'$"):
        check("m", {"x": {"y": "z"}}, nested)


def test_check_raises_the_given_error_class() -> None:
    class Mine(ValidationError):
        pass

    with pytest.raises(Mine, match=r"^n must be an integer, got None$"):
        check("n", None, Integer(), Mine)


def test_validation_error_forms() -> None:
    error = ValidationError("a.b", "must be odd, got 2")
    assert (str(error), error.field, error.detail, error.source) == (
        "a.b must be odd, got 2",
        "a.b",
        "must be odd, got 2",
        "",
    )
    assert isinstance(error, ValueError)
    whole = ValidationError("the file is empty")
    assert (str(whole), whole.field, whole.detail) == ("the file is empty", "", "the file is empty")
    located = error.located("run.yaml")
    assert type(located) is ValidationError
    assert str(located) == "run.yaml: a.b must be odd, got 2"
    assert (located.field, located.detail, located.source) == (
        "a.b",
        "must be odd, got 2",
        "run.yaml",
    )
    sourced = ValidationError("no such file", source="x.safetensors")
    assert str(sourced) == "x.safetensors: no such file"
    assert str(pickle.loads(pickle.dumps(error))) == str(error)


@dataclass(frozen=True)
class Inner(Section):
    SECTION: ClassVar[str] = "outer.inner"

    size: tuple[int, int] = setting(
        (2, 4), ListOf(Integer(1), length=2, what="two positive integers"), doc="h, w"
    )
    mode: str = setting("a", Choice(("a", "b")), doc="a | b")

    def validate(self) -> None:
        if self.size[0] > self.size[1]:
            self.fail("size", f"must not be taller than wide, got {list(self.size)}")


@dataclass(frozen=True)
class Outer(Section):
    NESTED: ClassVar = {"inner": Inner}

    count: int = setting(1, Integer(0), doc="how many")
    ratio: float = setting(0.5, Number(0, 1), doc="how much")
    names: tuple[str, ...] = setting(("x",), ListOf(Text(non_empty=True)), doc="labels")
    extra: Mapping[str, Any] = setting(rule=MappingOf(), default_factory=dict, doc="free-form")
    inner: Inner = field(default_factory=Inner)


def test_section_checks_and_normalises_on_construction() -> None:
    outer = Outer(count=3, ratio=1, names=["y", "z"])
    assert outer.ratio == 1.0 and isinstance(outer.ratio, float)
    assert outer.names == ("y", "z")
    with pytest.raises(ValidationError, match=r"^count must be a non-negative integer, got -1$"):
        Outer(count=-1)
    with pytest.raises(ValidationError, match=r"^count must be a non-negative integer, got True$"):
        Outer(count=True)
    with pytest.raises(ValidationError, match=r"^ratio must be a number in"):
        Outer(ratio=NAN)
    with pytest.raises(ValidationError, match=r"^outer.inner.size must be two positive integers"):
        Inner(size=(0, 1))
    with pytest.raises(ValidationError, match=r"^outer.inner.size must not be taller.*\[5, 4\]$"):
        Inner(size=(5, 4))
    with pytest.raises(ValidationError, match=r"^inner must be a Inner, got dict$"):
        Outer(inner={})  # type: ignore[arg-type]


def test_from_dict_reads_nested_sections_and_refuses_unknown_keys() -> None:
    outer = Outer.from_dict({"count": 2, "names": ["a"], "inner": {"size": [3, 3]}})
    assert outer == Outer(count=2, names=("a",), inner=Inner(size=(3, 3)))
    assert Outer.from_dict(None) == Outer()
    assert Outer.from_dict({"inner": None}) == Outer()
    with pytest.raises(ValidationError) as info:
        Outer.from_dict({"cuont": 2})
    assert str(info.value) == (
        "unknown field(s) in the configuration: cuont (known: count, ratio, names, extra, inner)"
    )
    with pytest.raises(ValidationError, match=r"^unknown field\(s\) in outer.inner: colour "):
        Outer.from_dict({"inner": {"colour": 1}})
    with pytest.raises(ValidationError, match=r"^outer.inner must be a mapping, got list$"):
        Outer.from_dict({"inner": [1]})
    with pytest.raises(ValidationError, match=r"^the configuration must be a mapping, got int$"):
        Outer.from_dict(3)
    with pytest.raises(ValidationError, match=r"^outer.inner.mode must be one of a, b, got 'c'$"):
        Outer.from_dict({"inner": {"mode": "c"}})


def test_to_dict_is_plain_data_and_round_trips() -> None:
    outer = Outer(names=("a", "b"), extra={"k": (1, 2)}, inner=Inner(size=(3, 5)))
    data = outer.to_dict()
    assert data == {
        "count": 1,
        "ratio": 0.5,
        "names": ["a", "b"],
        "extra": {"k": [1, 2]},
        "inner": {"size": [3, 5], "mode": "a"},
    }
    assert Outer.from_dict(data) == Outer(names=("a", "b"), extra={"k": [1, 2]}, inner=outer.inner)


def test_flat_view_names_nested_fields_and_round_trips() -> None:
    fields = flat_fields(Outer)
    assert [f.name for f in fields] == [
        "count",
        "ratio",
        "names",
        "extra",
        "inner.size",
        "inner.mode",
    ]
    assert fields[3].default == {} and fields[4].default == (2, 4)
    assert all(f.doc for f in fields)
    outer = Outer(count=4, inner=Inner(mode="b"))
    flat = to_flat(outer)
    assert flat["inner.mode"] == "b" and flat["count"] == 4
    assert from_flat(Outer, flat) == outer
    assert from_flat(Outer, {"inner.mode": "b", "elsewhere.x": 1}) == Outer(inner=Inner(mode="b"))
    assert Outer.rules()["count"] == Integer(0)
