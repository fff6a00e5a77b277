"""wgns.profile.frozen: the dataclass(frozen=True) behaviour the profile model relies on."""

from __future__ import annotations

import dataclasses

import pytest

from wgns.profile.frozen import FrozenInstanceError, frozen, replace
from wgns.profile.model import Endpoint, Peer


@frozen
class Point:
    """A record for these tests."""

    x: int
    y: int = 0
    tags: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class DataPoint:
    """The same as a real frozen dataclass, to compare against."""

    x: int
    y: int = 0
    tags: tuple[str, ...] = ()


def test_fields_by_position_keyword_and_default_as_a_dataclass_takes_them() -> None:
    for args, kwargs in [((1,), {}), ((1, 2), {}), ((), {"x": 1, "tags": ("a",)})]:
        p, d = Point(*args, **kwargs), DataPoint(*args, **kwargs)
        assert (p.x, p.y, p.tags) == (d.x, d.y, d.tags)
        assert repr(p) == repr(d).replace("DataPoint", "Point")


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((), {}, "missing required argument 'x'"),
        ((1, 2, (), 4), {}, "takes 3 positional arguments"),
        ((1,), {"x": 2}, "multiple values for argument 'x'"),
        ((1,), {"z": 2}, "unexpected keyword argument 'z'"),
    ],
)
def test_wrong_arguments_are_type_errors(
    args: tuple[object, ...], kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(TypeError, match=message):
        Point(*args, **kwargs)


def test_equal_by_fields_hashable_and_never_equal_to_another_class() -> None:
    assert Point(1, 2) == Point(x=1, y=2)
    assert Point(1, 2) != Point(1, 3)
    assert hash(Point(1, 2, ("a",))) == hash(Point(1, 2, ("a",)))
    assert len({Point(1), Point(1), Point(2)}) == 2
    assert Point(1) != DataPoint(1)
    assert Point(1) != (1, 0, ())


def test_fields_cannot_be_changed_or_deleted() -> None:
    p = Point(1)
    with pytest.raises(FrozenInstanceError):
        p.x = 2  # type: ignore[misc]
    with pytest.raises(FrozenInstanceError):
        del p.x  # type: ignore[misc]
    with pytest.raises(AttributeError):  # as dataclasses: FrozenInstanceError is one
        p.other = 1  # type: ignore[attr-defined]
    assert p.x == 1


def test_replace_makes_a_changed_copy_and_refuses_unknown_fields() -> None:
    p = Point(1, 2)
    q = replace(p, y=5)
    assert (p.y, q.y, q.x) == (2, 5, 1)
    with pytest.raises(TypeError, match="no field"):
        replace(p, z=1)


def test_definitions_a_dataclass_refuses_are_refused() -> None:
    with pytest.raises(TypeError, match="mutable default"):

        @frozen
        class Bad:
            """Shared mutable default."""

            items: list[int] = []

    with pytest.raises(TypeError, match="without a default follows"):

        @frozen
        class Order:
            """A required field after an optional one."""

            a: int = 0
            b: int  # type: ignore[misc]


def test_the_model_uses_it() -> None:
    e = Endpoint("vpn.example.test", 51820)
    assert str(e) == "vpn.example.test:51820"
    peer = Peer("key", endpoint=e)
    assert replace(peer, endpoint=Endpoint("198.18.0.1", 1)).endpoint == Endpoint("198.18.0.1", 1)
    with pytest.raises(FrozenInstanceError):
        peer.public_key = "other"  # type: ignore[misc]
