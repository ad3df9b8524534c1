"""The docs pages cannot rot: every command they show parses with the current CLI, every
protocol and rig they show validates, every Python snippet compiles, every relative link
points at a file and every #anchor at a heading of that page."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parent.parent
PAGES = sorted((ROOT / "docs").glob("*.md"))
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
ENVIRONMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=\S*$")


def blocks(page: Path, language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(page.read_text()) if lang == language]


def shell_commands(script: str) -> list[list[str]]:
    """The commands of a bash block: continuation lines joined, comments dropped, split at
    ``&&``, ``||``, ``;`` and ``|``, leading ``VAR=value`` assignments and ``time`` removed."""
    commands = []
    for line in script.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        command: list[str] = []
        for word in [*words, "&&"]:
            if word in ("&&", "||", ";", "|"):
                while command and (ENVIRONMENT.match(command[0]) or command[0] in ("time", "nohup")):
                    command.pop(0)
                if command:
                    commands.append(command)
                command = []
            else:
                command.append(word)
    return commands


def simlab_commands() -> list[tuple[str, list[str]]]:
    return [
        (page.name, command)
        for page in PAGES
        for script in blocks(page, "bash")
        for command in shell_commands(script)
        if command[0] == "simlab"
    ]


def test_the_docs_show_simlab_commands():
    assert len(simlab_commands()) > 20


@pytest.mark.parametrize("page, command", simlab_commands(), ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_every_simlab_command_parses(page, command):
    from simlab.cli.main import build_parser

    try:
        build_parser().parse_args(command[1:])
    except SystemExit as exit:  # argparse's way of refusing
        pytest.fail(f"{page}: {' '.join(command)} does not parse (exit {exit.code})")


def test_every_python_script_the_docs_run_exists():
    scripts = [
        (page.name, command[1])
        for page in PAGES
        for script in blocks(page, "bash")
        for command in shell_commands(script)
        if command[0] in ("python", "python3") and command[1].endswith(".py")
    ]
    assert scripts
    missing = [(page, path) for page, path in scripts if not (ROOT / path).is_file()]
    assert not missing


def yaml_documents() -> list[tuple[str, dict]]:
    found = []
    for page in PAGES:
        for text in blocks(page, "yaml"):
            data = yaml.safe_load(text)
            found.append((page.name, text, data))
    return found


def test_every_protocol_in_the_docs_validates():
    from simlab.protocol import parse_protocol

    protocols = [(page, text) for page, text, data in yaml_documents() if isinstance(data, dict) and "cohort" in data]
    assert len(protocols) >= 4
    for page, text in protocols:
        parse_protocol(text, source=page)  # raises ProtocolError, listing every problem


def test_every_rig_file_in_the_docs_validates():
    from simlab.specs.rigs import RigSpec

    rigs = [(page, data) for page, _, data in yaml_documents() if isinstance(data, dict) and "type" in data and "cohort" not in data]
    assert rigs
    for page, data in rigs:
        RigSpec(**{key: value for key, value in data.items() if key != "name"})


def test_every_python_snippet_compiles():
    snippets = [(page.name, text) for page in PAGES for text in blocks(page, "python")]
    assert snippets
    for page, text in snippets:
        compile(text, page, "exec")


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    return {anchor(match) for match in re.findall(r"^#+ (.*)$", text, re.M)}


def test_every_relative_link_resolves():
    broken = []
    for page in PAGES:
        text = FENCE.sub("", page.read_text())
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue  # a web address
            path, _, fragment = target.partition("#")
            linked = page if not path else (page.parent / path)
            if not linked.exists():
                broken.append(f"{page.name}: {target} (no file)")
            elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert not broken
