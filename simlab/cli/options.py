"""Argument types of the ``simlab`` command's flags: each turns one flag's text into a value."""

from __future__ import annotations

import argparse

from simlab.errors import SimlabError, parameter


def units(text: str):
    """``all``, a count (``300``) or a fraction (``0.25``)."""
    if text == "all":
        return "all"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'all', a count or a fraction, got {text!r}") from None


def classifier_option(text: str):
    """``NAME`` or ``NAME:KEY=VALUE,...`` (values read as YAML: numbers, booleans, null)."""
    import yaml

    name, _, settings = text.partition(":")
    if not settings:
        return name
    params = {}
    for item in settings.split(","):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise SimlabError(f"{parameter('classifiers', text)}: expected NAME:KEY=VALUE,...; got {item!r}")
        params[key.strip()] = yaml.safe_load(value)
    return {"name": name, "params": params}


def window(text: str) -> tuple[float, float]:
    """``START:END`` fractions of training, e.g. ``0:0.2``."""
    try:
        start, end = (float(part) for part in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected START:END fractions of training such as 0:0.2, got {text!r}") from None
    return start, end


def message(error: dict) -> str:
    """pydantic's message without its 'Value error, ' prefix."""
    return error["msg"].removeprefix("Value error, ")


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction of training in (0, 1], got {text!r}") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction of training in (0, 1], got {text!r}")
    return value


def min_gain(text: str) -> dict:
    """``--min-gain G``: the identification's ``health`` setting ``{min_gain: G}``, G >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a gain in accuracy >= 0 such as 0.05, got {text!r}") from None
    if not value >= 0.0:
        raise argparse.ArgumentTypeError(f"expected a gain in accuracy >= 0 such as 0.05, got {text!r}")
    return {"min_gain": value}


def default(model, field: str) -> str:
    """A settings model's default, as help text shows it: one source of truth for defaults."""
    value = model.model_fields[field].get_default(call_default_factory=True)
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value) or "none"
    return str(value)


# identification flags shared by identify and every analysis of a run (dest = IdentifySpec field)
IDENTIFY_SETTINGS = ("splits", "target", "group_by", "preset", "features", "transform", "bootstrap", "importance",
                     "seed", "classifiers", "health", "matched_control", "matched_caliper", "report_transfer")

# parameters an error may name that no flag of the command sets by that name
EXTRA_FLAGS: dict[str, dict[str, str]] = {
    "record": {"rig": "--rig"},
    "robustness": {"seed": "--rig-seed"},
}


def given(args, names) -> dict:
    """The settings among ``names`` that flags set (None: not given, the model's default)."""
    settings = {name: getattr(args, name, None) for name in names}
    settings = {name: value for name, value in settings.items() if value is not None}
    if "classifiers" in settings:
        settings["classifiers"] = [classifier_option(text) for text in settings["classifiers"]]
    return settings
