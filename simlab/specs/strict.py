"""Values as the user wrote them: the base of every settings model.

pydantic's lax mode reads ``true`` as the integer 1, ``1`` as true and ``"3"`` as 3; a
protocol that says ``width: true`` almost certainly means something else, so the settings
models refuse those instead (``expected an integer, got true``; ``expected a number, got the
string '3'``). Numbers must be finite (``allow_inf_nan=False``) unless a field says otherwise
with ``Field(allow_inf_nan=True)``. Everything else keeps pydantic's rules: an integer is a
number, ``1e3`` is the integer 1000, a list is a tuple, numpy's integers are integers.
"""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

__all__ = ["MAX_SEED", "MAX_STEPS", "Seed", "StrictSpec"]

MAX_SEED = 2**32 - 1
"""Seeds are 32-bit, as numpy's and JAX's generators take them: 0 to 2**32 - 1."""
MAX_STEPS = 100_000_000
"""The most training steps a protocol may ask (a small network trains ~10^4 steps a minute)."""

Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]

_NUMBER = {int: "an integer", float: "a number"}


def _members(tp: Any) -> list:
    """The alternatives of a type: a Union's members, an Annotated's base, else the type."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _members(typing.get_args(tp)[0])
    if origin is Union or origin is types.UnionType:
        return [m for arg in typing.get_args(tp) for m in _members(arg)]
    return [tp]


def _scalar_kinds(members: list) -> set | None:
    """The scalar types (bool, int, float, str) the alternatives accept; None where one of
    them accepts anything else a scalar could be read as (Any, a custom type), so nothing is
    checked."""
    kinds: set = set()
    for m in members:
        if m is Any or m is object:
            return None
        if typing.get_origin(m) is Literal:
            kinds |= {"literal"}
        elif m in (bool, int, float, str):
            kinds.add(m)
        elif m is type(None) or typing.get_origin(m) in (list, tuple, dict, set, frozenset) or (
            isinstance(m, type) and issubclass(m, BaseModel)
        ):
            continue
        else:
            return None
    return kinds


def _problem(value: Any, kinds: set) -> str | None:
    """What is wrong with a scalar ``value`` for a field of ``kinds``; None if nothing."""
    numbers = [k for k in (float, int) if k in kinds]
    wanted = _NUMBER[numbers[0]] if numbers else None
    if isinstance(value, bool):
        if bool not in kinds and wanted:
            return f"expected {wanted}, got {'true' if value else 'false'} (true and false are not numbers)"
    elif isinstance(value, (int, float)):
        if kinds == {bool}:
            return f"expected true or false, got {value!r}"
    elif isinstance(value, str) and str not in kinds:
        if wanted and _numeric(value):  # another string pydantic refuses by itself
            return f"expected {wanted}, got the string {value!r} (write numbers without quotes)"
        if bool in kinds and "literal" not in kinds and not wanted:
            return f"expected true or false, got the string {value!r}"
    return None


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _check(value: Any, tp: Any, loc: tuple, errors: list) -> None:
    members = _members(tp)
    containers = {typing.get_origin(m) or m: m for m in members if typing.get_origin(m) in (list, tuple, dict)}
    if isinstance(value, (list, tuple)) and (containers.keys() & {list, tuple}):
        container = containers.get(list) or containers.get(tuple)
        args = typing.get_args(container)
        if typing.get_origin(container) is tuple and args and args[-1] is not Ellipsis:
            if len(args) == len(value):
                for i, (item, arg) in enumerate(zip(value, args)):
                    _check(item, arg, (*loc, i), errors)
            return
        if args:
            for i, item in enumerate(value):
                _check(item, args[0], (*loc, i), errors)
        return
    if isinstance(value, dict) and dict in containers:
        args = typing.get_args(containers[dict])
        if len(args) == 2:
            for key, item in value.items():
                _check(item, args[1], (*loc, key), errors)
        return
    if isinstance(value, (bool, int, float, str)):
        literals = [v for m in members if typing.get_origin(m) is Literal for v in typing.get_args(m)]
        if any(type(v) is type(value) and v == value for v in literals):
            return
        kinds = _scalar_kinds(members)
        message = _problem(value, kinds) if kinds else None
        if message:
            errors.append(InitErrorDetails(type=PydanticCustomError("strict_value", message), loc=loc, input=value))


class StrictSpec(BaseModel):
    """A settings model that refuses booleans as numbers, numbers as booleans, strings as
    numbers and non-finite numbers (module docstring), reporting them with pydantic's own
    problems of the same model, each at its field."""

    model_config = ConfigDict(allow_inf_nan=False)

    @model_validator(mode="wrap")
    @classmethod
    def _strict_values(cls, data: Any, handler):
        if not isinstance(data, dict):
            return handler(data)
        errors: list = []
        for name, field in cls.model_fields.items():
            key = field.alias or name
            if key in data:
                _check(data[key], field.annotation, (key,), errors)
        if not errors:
            return handler(data)
        seen = {tuple(e["loc"]) for e in errors}
        try:
            handler(data)
        except ValidationError as exc:  # the model's other problems, reported at once
            errors += [
                InitErrorDetails(type=PydanticCustomError(e["type"], e["msg"], e.get("ctx")), loc=e["loc"],
                                 input=e["input"])
                for e in exc.errors(include_url=False)
                if not any(tuple(e["loc"])[: len(s)] == s for s in seen)
            ]
        raise ValidationError.from_exception_data(cls.__name__, errors)
