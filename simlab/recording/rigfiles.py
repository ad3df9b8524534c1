"""Find the rig a user asks for: a rig of the run's protocol, a rig type, or a rig YAML file.

A rig file holds the fields of one rig (``type`` required, ``name`` optional), e.g.::

    name: ephys_poisson
    type: electrophysiology
    units: 300
    noise_model: poisson
    rate_gain: 20
    count_window: 0.5
    schedule: {count: 6, spacing: log}

Settings given as overrides (on the command line, or by a caller) override the base rig's;
the result is validated as a whole, and every problem is reported with where it came from.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from simlab.errors import SimlabError, parameter
from simlab.protocol import Protocol
from simlab.protocol.loader import check_yaml_limits, read_yaml_text
from simlab.specs.protocol import name_problem
from simlab.specs.rigs import RIG_TYPES, RigSpec


def _merge(base: dict, overrides: dict) -> dict:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _override_at(overrides: Mapping, loc: tuple) -> tuple[str, Any] | None:
    """The override that set the field at ``loc`` (or a setting above it, such as ``units``
    for pydantic's ``units.int``): its dotted parameter name and value; None if none did."""
    node, path = overrides, []
    for part in loc:
        if not isinstance(node, Mapping) or part not in node:
            break
        node, path = node[part], [*path, part]
    return (".".join(path), node) if path else None


def _problems(exc: ValidationError, overrides: Mapping, origin: str) -> str:
    """One clause per problem, naming the override that set the field, else the field in ``origin``."""
    clauses = []
    for error in exc.errors():
        loc = tuple(str(part) for part in error["loc"])
        override = _override_at(overrides, loc)
        where = parameter(*override) if override else f"{'.'.join(loc) or 'rig'} ({origin})"
        clauses.append(f"{where}: {error['msg'].removeprefix('Value error, ')}")
    return "; ".join(clauses)


def _read_rig_file(path: Path) -> tuple[str, dict]:
    text = read_yaml_text(path, "rig file")
    check_yaml_limits(text, str(path))  # the protocol loader's limits: no alias bomb, no deep nesting
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise SimlabError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(data, dict):
        raise SimlabError(f"{path}: a rig file holds a mapping of rig settings, got {type(data).__name__}")
    name = data.pop("name", path.stem)
    if problem := name_problem(name):  # the recording's file name
        raise SimlabError(f"{path}: name: {problem}")
    if "type" not in data:
        raise SimlabError(f"{path}: type: missing (expected one of: {', '.join(RIG_TYPES)})")
    return name, data


def resolve_rig(
    rig: str, protocol: Protocol, overrides: Mapping[str, Any] | None = None
) -> tuple[str, RigSpec]:
    """(name, settings) of the rig called or stored at ``rig``, with ``overrides`` applied.

    ``rig`` is a rig of the protocol, a rig type (its default settings) or a rig YAML file.
    ``overrides`` are settings by field (``{"units": 20, "schedule": {"count": 6}}``).
    Errors name what set a bad value as a parameter (:func:`simlab.errors.parameter`):
    ``rig='ephys'``, ``units=0``, ``schedule.count=50`` from Python; the command line shows
    its flags instead (``--sessions 50``).
    """
    overrides = overrides or {}
    path = Path(rig)
    if rig in protocol.rigs:
        name, base, origin = rig, protocol.rigs[rig].model_dump(), f"rig {rig!r} of the protocol"
    elif rig in RIG_TYPES:
        name, base, origin = rig, {"type": rig}, f"rig type {rig!r}"
    elif path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise SimlabError(f"{path}: no such rig file")
        (name, base), origin = _read_rig_file(path), str(path)
    else:
        known = ", ".join([*protocol.rigs, *(t for t in RIG_TYPES if t not in protocol.rigs)])
        raise SimlabError(
            f"{parameter('rig', rig)}: not a rig of the protocol, a rig type or a rig file (known rigs: {known})"
        )
    try:
        return name, RigSpec(**_merge(base, overrides))
    except ValidationError as exc:
        raise SimlabError(f"bad rig settings: {_problems(exc, overrides, origin)}") from None
