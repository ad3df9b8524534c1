"""Find the rig a user asks for: a rig of the run's protocol, a rig type, or a rig YAML file.

A rig file holds the fields of one rig (``type`` required, ``name`` optional), e.g.::

    name: ephys_poisson
    type: electrophysiology
    units: 300
    noise_model: poisson
    rate_gain: 20
    count_window: 0.5
    schedule: {count: 6, spacing: log}

Settings given on the command line override the base rig's; the result is validated as a
whole, and every problem is reported with where it came from.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from simlab.errors import SimlabError
from simlab.protocol import Protocol
from simlab.specs.rigs import RIG_TYPES, RigSpec


def _merge(base: dict, overrides: dict) -> dict:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _problems(exc: ValidationError, flags: dict[tuple, str], origin: str) -> str:
    """One clause per problem, naming the flag that set the field, else the field in ``origin``."""
    clauses = []
    for error in exc.errors():
        loc = tuple(str(part) for part in error["loc"])
        where = flags.get(loc) or f"{'.'.join(loc) or 'rig'} ({origin})"
        clauses.append(f"{where}: {error['msg'].removeprefix('Value error, ')}")
    return "; ".join(clauses)


def _read_rig_file(path: Path) -> tuple[str, dict]:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise SimlabError(f"{path}: cannot read rig file ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise SimlabError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(data, dict):
        raise SimlabError(f"{path}: a rig file holds a mapping of rig settings, got {type(data).__name__}")
    name = str(data.pop("name", path.stem))
    if "type" not in data:
        raise SimlabError(f"{path}: type: missing (expected one of: {', '.join(RIG_TYPES)})")
    return name, data


def resolve_rig(
    rig: str, protocol: Protocol, overrides: dict[str, Any], flags: dict[tuple, str] | None = None
) -> tuple[str, RigSpec]:
    """(name, settings) of the rig called or stored at ``rig``, with ``overrides`` applied.

    ``flags`` maps a settings path (e.g. ``("schedule", "count")``) to the command-line flag
    that set it, so that an error names what the user typed.
    """
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
        raise SimlabError(f"--rig {rig!r}: not a rig of the protocol, a rig type or a rig file (known rigs: {known})")
    try:
        return name, RigSpec(**_merge(base, overrides))
    except ValidationError as exc:
        raise SimlabError(f"bad rig settings: {_problems(exc, flags or {}, origin)}") from None


def recording_name(name: str, spec: RigSpec) -> str:
    """A file name that says the main settings and, by a short digest, all the others."""
    digest = hashlib.sha1(spec.model_dump_json().encode()).hexdigest()[:6]
    noise = spec.noise_model if spec.noise_model == "poisson" else f"{spec.noise_model}{spec.noise:g}"
    return f"{name}-units{spec.units}-{noise}-seed{spec.seed}-{digest}"
