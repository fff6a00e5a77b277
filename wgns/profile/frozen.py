"""Frozen records: what ``@dataclass(frozen=True)`` gave the profile model, without its cost.

`wgns up` parses a profile into these on every start. ``import dataclasses`` pulls in inspect,
ast, dis and tokenize, and every decorated class execs generated methods: together ~9 ms of each
`wgns up`, measured with ``python3.11 -IS -c 'import dataclasses'`` against ``-c pass`` (19.3 vs
5.9 ms on the CI machine, before the classes are even made). The profile model needs only the
dataclass basics, so they are here: fields are the class's annotations in order, a class
attribute is a field's default, ``__init__`` takes fields by position or keyword, and instances
compare, hash and print by their fields and cannot be changed (:func:`replace` makes a changed
copy). Type checkers see these classes as frozen dataclasses (``dataclass_transform``).
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up time)
if TYPE_CHECKING:
    from typing import Any, TypeVar

    from typing_extensions import dataclass_transform

    T = TypeVar("T")
else:

    def dataclass_transform(**_kw):
        return lambda decorated: decorated


class FrozenInstanceError(AttributeError):
    """Assigning to a field of a frozen record (as dataclasses.FrozenInstanceError)."""


_MISSING = object()


@dataclass_transform(frozen_default=True)
def frozen(cls: type[T]) -> type[T]:
    """Make CLS a frozen record of its annotated fields."""
    # not inspect.get_annotations: importing inspect is most of what this module saves
    fields: tuple[str, ...] = tuple(cls.__dict__.get("__annotations__", {}))  # noqa: RUF063
    defaults = {n: cls.__dict__[n] for n in fields if n in cls.__dict__}
    seen_default = False
    for n in fields:
        if n in defaults:
            if isinstance(defaults[n], list | dict | set):
                raise TypeError(f"{cls.__name__}.{n}: mutable default {defaults[n]!r}")
            seen_default = True
        elif seen_default:
            raise TypeError(f"{cls.__name__}: field {n} without a default follows one with")
    name = cls.__name__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if len(args) > len(fields):
            raise TypeError(f"{name}() takes {len(fields)} positional arguments, got {len(args)}")
        values = dict(zip(fields, args, strict=False))
        for k, v in kwargs.items():
            if k not in defaults and k not in fields:
                raise TypeError(f"{name}() got an unexpected keyword argument {k!r}")
            if k in values:
                raise TypeError(f"{name}() got multiple values for argument {k!r}")
            values[k] = v
        for n in fields:
            v = values.get(n, _MISSING)
            if v is _MISSING:
                v = defaults.get(n, _MISSING)
                if v is _MISSING:
                    raise TypeError(f"{name}() missing required argument {n!r}")
            object.__setattr__(self, n, v)

    def _values(self: Any) -> tuple[Any, ...]:
        return tuple(getattr(self, n) for n in fields)

    def __eq__(self: Any, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return bool(_values(self) == _values(other))

    def __hash__(self: Any) -> int:
        return hash(_values(self))

    def __repr__(self: Any) -> str:
        return f"{name}({', '.join(f'{n}={getattr(self, n)!r}' for n in fields)})"

    def __setattr__(self: Any, attr: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {attr!r} of {name}")

    def __delattr__(self: Any, attr: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {attr!r} of {name}")

    for method in (__init__, __eq__, __hash__, __repr__, __setattr__, __delattr__):
        method.__qualname__ = f"{cls.__qualname__}.{method.__name__}"
        setattr(cls, method.__name__, method)
    cls.__record_fields__ = fields  # type: ignore[attr-defined]
    return cls


def replace(obj: T, **changes: Any) -> T:
    """A copy of the record OBJ with CHANGES (as dataclasses.replace)."""
    fields: tuple[str, ...] = obj.__record_fields__  # type: ignore[attr-defined]
    unknown = set(changes) - set(fields)
    if unknown:
        raise TypeError(f"{type(obj).__name__} has no field(s) {', '.join(sorted(unknown))}")
    values = {n: getattr(obj, n) for n in fields}
    values.update(changes)
    return type(obj)(**values)
