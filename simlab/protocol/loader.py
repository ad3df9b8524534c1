"""Read a protocol file and report every problem in it at once, each with its line.

The YAML is composed into nodes (which keep their line numbers) and constructed into plain
data; the schema validates the data and every error location is mapped back to a node. Error
messages say what was expected and what was received.

A protocol is something people email each other, so before any of that the file is held to
limits (:func:`check_yaml_limits`: its size, nesting depth, node count with every alias
expanded, alias count): a file past one is refused with one line, cheaply, before a step that
an alias bomb or a deep nesting could make hang or overflow the stack.
"""

from __future__ import annotations

import re
import sys
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_core.core_schema import ErrorType
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from simlab.errors import SimlabError
from simlab.specs.classifiers import allowing_imports
from simlab.specs.protocol import Located, Protocol, locate, union_tags

TOP_LEVEL = "(top level)"

MAX_BYTES = 512 * 1024
"""The largest YAML file simlab reads (a shipped protocol with every default filled in: 6 kB)."""
MAX_DEPTH = 64
"""The deepest nesting of lists and mappings (shipped protocols: 5)."""
MAX_NODES = 20_000
"""The most values (scalars, lists, mappings) in one file, counting each alias as every value
of the node it repeats (shipped protocols: under 600)."""
MAX_ALIASES = 1_000
"""The most aliases (``*name``) in one file."""


@dataclass
class Problem:
    """One mistake in a protocol: where (a path such as ``cohort.batch_size[1]``), and what."""

    location: str
    line: int | None
    message: str


class ProtocolError(SimlabError):
    """Every problem found in one protocol, printed one per line as ``FILE:LINE: WHERE: WHAT``."""

    def __init__(self, source: str, problems: list[Problem]):
        self.source = source
        self.problems = sorted(problems, key=lambda p: (p.line is None, p.line or 0, p.location))
        super().__init__(str(self))

    def __str__(self) -> str:
        n = len(self.problems)
        lines = [f"{self.source}: {n} problem{'s' if n != 1 else ''} in protocol"]
        for p in self.problems:
            where = self.source if p.line is None else f"{self.source}:{p.line}"
            lines.append(f"{where}: {p.location}: {p.message}")
        return "\n".join(lines)


class YamlLimitError(ProtocolError):
    """A YAML file past one of simlab's limits (size, depth, values, aliases): one line."""

    def __str__(self) -> str:
        return f"{self.source}: {self.problems[0].message}"


def _limit(source: str, message: str) -> YamlLimitError:
    return YamlLimitError(source, [Problem(TOP_LEVEL, None, message)])


def read_yaml_text(path: str | Path, what: str = "protocol file") -> str:
    """The text of a YAML file, read no further than :data:`MAX_BYTES` (a huge file, or a
    device such as /dev/zero, is refused without reading it all)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise SimlabError(f"{what} not found: {path}") from None
    except OSError as exc:
        raise SimlabError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_BYTES:
        raise _limit(str(path), f"the file is larger than {MAX_BYTES // 1024} KiB, the limit for a {what}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SimlabError(f"cannot read {what} {path}: {exc}") from None


_EventParser = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml scans ~40x faster


def check_yaml_limits(text: str, source: str) -> None:
    """Refuse YAML past :data:`MAX_BYTES`, :data:`MAX_DEPTH`, :data:`MAX_NODES` (aliases
    expanded) or :data:`MAX_ALIASES`, and aliases inside the node they name, with a
    :class:`YamlLimitError`; a syntax error is left to the composer, which reports its line.

    It reads only the event stream, counting as it goes and stopping at the first limit
    passed, so a "billion laughs" costs a few hundred events, whether or not its last anchor
    is ever used: every alias adds the size of the node it repeats.
    """
    if len(text) > MAX_BYTES:
        raise _limit(source, f"the text is longer than {MAX_BYTES // 1024} KiB, the limit for a YAML file")
    try:
        _scan(yaml.parse(text, Loader=_EventParser), source)
    except yaml.YAMLError:
        # libyaml and PyYAML differ on a few oddities: scan what PyYAML will compose
        try:
            _scan(yaml.parse(text, Loader=yaml.SafeLoader), source)
        except yaml.YAMLError:
            pass  # everything before the error was within the limits; composing reports it


def _scan(events, source: str) -> None:
    sizes: dict[str, int] = {}  # anchor -> values in its node, aliases expanded
    open_: list[tuple[str | None, int]] = []  # the collections being read: (anchor, values before it)
    total = aliases = 0
    for event in events:
        if isinstance(event, yaml.AliasEvent):
            aliases += 1
            if aliases > MAX_ALIASES:
                raise _limit(source, f"more than {MAX_ALIASES} aliases (*name), the limit for a YAML file")
            if any(anchor == event.anchor for anchor, _ in open_):
                line = event.start_mark.line + 1
                raise _limit(source, f"line {line}: alias *{event.anchor} inside the node it names "
                             "(a structure that contains itself)")
            total += sizes.get(event.anchor, 0)  # an unknown anchor: composing reports it
        elif isinstance(event, yaml.ScalarEvent):
            total += 1
            if event.anchor is not None:
                sizes[event.anchor] = 1
        elif isinstance(event, yaml.CollectionStartEvent):
            open_.append((event.anchor, total))
            total += 1
            if len(open_) > MAX_DEPTH:
                line = event.start_mark.line + 1
                raise _limit(source, f"line {line}: lists and mappings nested deeper than {MAX_DEPTH}, "
                             "the limit for a YAML file")
        elif isinstance(event, yaml.CollectionEndEvent):
            anchor, before = open_.pop()
            if anchor is not None:
                sizes[anchor] = total - before
        if total > MAX_NODES:
            raise _limit(source, f"more than {MAX_NODES:,} values (keys, items; aliases counted as the values "
                         "they repeat), the limit for a YAML file")


class _Loader(yaml.SafeLoader):
    """YAML 1.2 scalars: only true/false are booleans (a rig named ``on`` stays a string), and
    ``1e-3`` is a number, as in JSON."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_protocol(path: str | Path, *, allow_imports: bool = False) -> Protocol:
    """Read and validate the protocol file at ``path`` (``allow_imports``: as in
    :func:`parse_protocol`)."""
    return parse_protocol(read_yaml_text(path), source=str(path), allow_imports=allow_imports)


def parse_protocol(text: str, source: str = "<string>", *, allow_imports: bool = False) -> Protocol:
    """Validate protocol YAML; raise :class:`ProtocolError` listing every problem in it.

    ``allow_imports``: the protocol may name classifiers by import paths outside sklearn
    (importing runs their code; see :func:`simlab.specs.classifiers.allowing_imports`).
    """
    with allowing_imports(allow_imports):
        return _parse(text, source)


def _parse(text: str, source: str) -> Protocol:
    check_yaml_limits(text, source)
    try:
        root = yaml.compose(text, Loader=_Loader)
        data = _Loader("").construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = " ".join(filter(None, [exc.context, exc.problem])) or "invalid YAML"
        line = mark.line + 1 if mark else None
        raise ProtocolError(source, [Problem(TOP_LEVEL, line, f"invalid YAML: {message}")]) from None
    except yaml.YAMLError as exc:
        raise ProtocolError(source, [Problem(TOP_LEVEL, None, f"invalid YAML: {exc}")]) from None
    except ValueError:  # Python reads no integer of more than sys.get_int_max_str_digits() digits
        message = f"invalid YAML: an integer of more than {sys.get_int_max_str_digits()} digits"
        raise ProtocolError(source, [Problem(TOP_LEVEL, None, message)]) from None
    if root is None:
        message = "the protocol is empty; expected a mapping with at least 'name' and 'cohort'"
        raise ProtocolError(source, [Problem(TOP_LEVEL, None, message)])
    if not isinstance(root, MappingNode):
        got = "a list" if isinstance(root, SequenceNode) else f"{root.value!r}"
        message = f"expected a mapping of sections (name, cohort, ...) at the top level, got {got}"
        raise ProtocolError(source, [Problem(TOP_LEVEL, _line(root), message)])

    problems = list(_duplicate_keys(root))
    try:
        protocol = Protocol.model_validate(data)
    except ValidationError as exc:
        problems += _problems(exc, root)
    if problems:
        raise ProtocolError(source, problems)
    return protocol


# --------------------------------------------------------------------------- locations and lines


def _line(node: Node) -> int:
    return node.start_mark.line + 1


def _line_of(root: MappingNode, path: tuple) -> int:
    """The line of the node at ``path``: the key's line for a mapping entry; the nearest
    existing parent where the node is absent (a missing key)."""
    node, line = root, _line(root)
    for part in path:
        if isinstance(node, MappingNode):
            # the last of duplicate keys wins, as in the constructed data
            match = [(k, v) for k, v in node.value if isinstance(k, ScalarNode) and k.value == str(part)]
            if not match:
                break
            key, node = match[-1]
            line = _line(key)
        elif isinstance(node, SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
            line = _line(node)
        else:
            break
    return line


def _location(path: tuple) -> str:
    """``('cohort', 'batch_size', 1)`` -> ``cohort.batch_size[1]``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or TOP_LEVEL


def _duplicate_keys(root: Node) -> Iterator[Problem]:
    """YAML keeps the last of repeated keys silently; a repeated key is almost always a slip.
    (A walk with a stack of its own: no file can drive it to the interpreter's recursion limit.)"""
    todo: list[tuple[Node, tuple]] = [(root, ())]
    while todo:
        node, path = todo.pop()
        children: list[tuple[Node, tuple]] = []
        if isinstance(node, MappingNode):
            first: dict[str, int] = {}
            for key, value in node.value:
                name = key.value if isinstance(key, ScalarNode) else None
                if name in first:
                    message = f"duplicate key {name!r} (first at line {first[name]})"
                    yield Problem(_location((*path, name)), _line(key), message)
                elif name is not None:
                    first[name] = _line(key)
                children.append((value, (*path, name)))
        elif isinstance(node, SequenceNode):
            children = [(item, (*path, i)) for i, item in enumerate(node.value)]
        todo.extend(reversed(children))


# --------------------------------------------------------------------------- messages

_PYDANTIC_TYPES = frozenset(typing.get_args(ErrorType))

_EXPECTED = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "finite_number": "a finite number",
}

_BOUNDS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}


def _show(value: Any) -> str:
    """A received value as the user wrote it in YAML, shortened."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        try:
            text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
        except yaml.YAMLError:
            text = repr(value)
    else:
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _expected(error: dict) -> str | None:
    """What a built-in pydantic error expected, in words; None when it is not of that form."""
    kind, ctx, value = error["type"], error.get("ctx") or {}, error["input"]
    if kind in _EXPECTED:
        return _EXPECTED[kind]
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        (bound, limit), = ((b, ctx[b]) for b in _BOUNDS if b in ctx)
        number = "integer" if isinstance(limit, int) and isinstance(value, int) else "number"
        if limit == 0 and bound in ("gt", "ge"):
            return f"a {'positive' if bound == 'gt' else 'non-negative'} {number}"
        return f"{'an' if number == 'integer' else 'a'} {number} {_BOUNDS[bound]} {limit}"
    if kind == "literal_error":
        return ctx["expected"]
    if kind in ("too_short", "too_long"):
        size = ctx.get("min_length") if kind == "too_short" else ctx.get("max_length")
        return f"{'at least' if kind == 'too_short' else 'at most'} {size} item{'s' if size != 1 else ''}"
    return None


def _message(error: dict, where: Located) -> str:
    """Say what was expected and what was received."""
    kind, value, msg = error["type"], error["input"], error["msg"]
    if kind not in _PYDANTIC_TYPES:  # simlab's own errors are worded already
        return msg
    if kind == "missing":
        return f"missing required key {error['loc'][-1]!r}"
    if kind == "extra_forbidden":
        key = error["loc"][-1]
        expected = f" (expected one of: {', '.join(where.holder.model_fields)})" if where.holder else ""
        return f"unknown key {key!r}{expected}"
    if kind == "union_tag_invalid":
        return f"unknown type {error['ctx']['tag']!r} (expected one of: {error['ctx']['expected_tags']})"
    if kind == "union_tag_not_found":
        tags = ", ".join(map(repr, union_tags(where.annotation)))
        return f"missing key {error['ctx']['discriminator']}" + (f" (one of: {tags})" if tags else "")
    if kind in ("too_short", "too_long"):
        return f"expected {_expected(error)}, got {len(value)}"
    expected = _expected(error)
    if expected is not None:
        return f"expected {expected}, got {_show(value)}"
    msg = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    return msg if "got" in msg else f"{msg}, got {_show(value)}"


def _problems(exc: ValidationError, root: MappingNode) -> list[Problem]:
    """One problem per location: the failures of a union's members merge into one."""
    merged: dict[tuple, list[str]] = {}
    for error in exc.errors(include_url=False):
        where = locate(error["loc"])
        message = _message(error, where)
        if message not in merged.setdefault(where.path, []):
            merged[where.path].append(message)
    return [
        Problem(_location(path), _line_of(root, path), _join(messages))
        for path, messages in merged.items()
    ]


def _join(messages: list[str]) -> str:
    """``expected A, got X`` and ``expected B, got X`` -> ``expected A or B, got X``."""
    forms = [re.fullmatch(r"expected (.*), got (.*)", m) for m in messages]
    if len(messages) > 1 and all(forms) and len({f.group(2) for f in forms}) == 1:
        return f"expected {' or '.join(f.group(1) for f in forms)}, got {forms[0].group(2)}"
    return "; ".join(messages)
