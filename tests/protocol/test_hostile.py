"""Protocols and files as a hostile user writes them: alias bombs, huge and deep files, code
named by import path, crafted pickles, values of the wrong kind. Each must end in a clean,
one-line error, quickly, and nothing must run."""

from __future__ import annotations

import os
import pickle
import sys
import textwrap

import numpy as np
import pytest

from simlab.cli.main import main
from simlab.errors import SimlabError
from simlab.protocol import ProtocolError, load_protocol, parse_protocol
from simlab.protocol.loader import MAX_BYTES, MAX_DEPTH, MAX_NODES, YamlLimitError
from simlab.specs.classifiers import allowing_imports, parse_classifier
from simlab.specs.strict import MAX_SEED, MAX_STEPS

MINIMAL = """\
name: tiny
cohort:
  architecture: mlp
  task: mnist1d
  learning_rule: sgdm
  batch_size: 32
"""


def refused(text: str) -> str:
    """The one-line message of a YAML-limit refusal of ``text``."""
    with pytest.raises(YamlLimitError) as info:
        parse_protocol(text, source="hostile.yaml")
    message = str(info.value)
    assert "\n" not in message and message.startswith("hostile.yaml: ")
    return message


def laughs(levels: int = 9, width: int = 9) -> str:
    """The "billion laughs": each anchor repeats the one before ``width`` times (9**9 values)."""
    names = [f"l{i}" for i in range(levels)]
    lines = [f"{names[0]}: &{names[0]} [{', '.join(['lol'] * width)}]"]
    lines += [f"{n}: &{n} [{', '.join([f'*{p}'] * width)}]" for p, n in zip(names, names[1:])]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- YAML limits


def test_billion_laughs_is_refused_by_the_expanded_value_count():
    assert f"more than {MAX_NODES:,} values" in refused(MINIMAL + laughs())


def test_alias_bomb_under_an_anchor_that_is_never_used():
    # no alias ever names the last anchor, and the bomb sits under a key the schema does not know
    text = MINIMAL + "unused: &never\n" + textwrap.indent(laughs(), "  ")
    assert "values" in refused(text)


def test_alias_bomb_through_merge_keys():
    text = MINIMAL + "a: &a {x: [1, 2, 3, 4, 5, 6, 7, 8]}\n" + "".join(
        f"{n}: &{n} {{<<: *{p}, {', '.join(f'k{i}: *{p}' for i in range(8))}}}\n"
        for p, n in zip("abcdefg", "bcdefgh")
    )
    assert "values" in refused(text)


@pytest.mark.parametrize("text", ["name: &a [*a]\n", "name: x\ncohort: &c {a: 1, b: *c}\n"])
def test_self_referential_alias(text):
    assert "inside the node it names" in refused(text)


def test_200000_keys():
    assert f"{MAX_BYTES // 1024} KiB" in refused(MINIMAL + "".join(f"k{i}: 1\n" for i in range(200_000)))


def test_many_keys_within_the_size_limit():
    assert "values" in refused(MINIMAL + "extra:\n" + "".join(f"  k{i}: 1\n" for i in range(MAX_NODES + 1)))


def test_a_1000000_item_flow_list():
    assert "KiB" in refused(MINIMAL + "seeds: [" + ",".join(["1"] * 1_000_000) + "]\n")


@pytest.mark.parametrize("open_, close", [("[", "]"), ("{a: ", "}")])
def test_nesting_10000_deep(open_, close):
    text = MINIMAL + "deep: " + open_ * 10_000 + ("1" if open_ != "[" else "") + close * 10_000 + "\n"
    assert f"nested deeper than {MAX_DEPTH}" in refused(text)


def test_shipped_nesting_and_aliases_are_fine():
    text = MINIMAL + "rigs:\n  a: &rig {type: synapse, units: 4}\n  b: *rig\n"
    assert set(parse_protocol(text).rigs) == {"a", "b"}


def test_a_huge_file_is_not_read_whole(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text(MINIMAL + "#" * (MAX_BYTES + 10))
    with pytest.raises(YamlLimitError, match=f"{path}: the file is larger than"):
        load_protocol(path)
    if os.path.exists("/dev/zero"):  # endless: only MAX_BYTES + 1 bytes are read
        with pytest.raises(YamlLimitError):
            load_protocol("/dev/zero")


def test_integer_of_too_many_digits():
    with pytest.raises(ProtocolError, match="an integer of more than"):
        parse_protocol(MINIMAL + "seed: 1" + "1" * 5000 + "\n")


def test_rig_files_have_the_same_limits(tmp_path):
    from simlab.recording.rigfiles import resolve_rig

    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("type: synapse\n" + laughs())
    with pytest.raises(YamlLimitError, match=f"{bomb}: more than"):
        resolve_rig(str(bomb), parse_protocol(MINIMAL))
    named = tmp_path / "named.yaml"
    named.write_text('name: "a\\nb"\ntype: synapse\n')
    with pytest.raises(SimlabError, match="name: expected a name of at most 64"):
        resolve_rig(str(named), parse_protocol(MINIMAL))


def test_cli_validate_prints_one_line(tmp_path, capsys):
    path = tmp_path / "bomb.yaml"
    path.write_text(MINIMAL + laughs())
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(path) in err and "values" in err


# --------------------------------------------------------------------------- imports


@pytest.fixture
def evil_module(tmp_path, monkeypatch):
    """A module on the path whose import leaves a mark; its class is a working estimator."""
    mark = tmp_path / "imported"
    (tmp_path / "evilmod.py").write_text(textwrap.dedent(f"""\
        import pathlib
        pathlib.Path({str(mark)!r}).write_text("ran")
        from sklearn.linear_model import LogisticRegression as Cls
        """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "evilmod", raising=False)
    yield mark
    sys.modules.pop("evilmod", None)


def with_classifier(name: str) -> str:
    return MINIMAL + f"analyses:\n  identify:\n    classifiers: [{name!r}]\n"


def test_a_protocol_cannot_import_code_without_consent(evil_module, tmp_path, capsys):
    with pytest.raises(ProtocolError, match="names module 'evilmod', outside sklearn.*--allow-imports"):
        parse_protocol(with_classifier("evilmod.Cls"))
    path = tmp_path / "p.yaml"
    path.write_text(with_classifier("evilmod.Cls"))
    assert main(["validate", str(path)]) == 2
    assert "--allow-imports" in capsys.readouterr().err
    assert not evil_module.exists() and "evilmod" not in sys.modules


def test_consent_lets_the_import_happen(evil_module, tmp_path):
    protocol = parse_protocol(with_classifier("evilmod.Cls"), allow_imports=True)
    assert protocol.analyses["identify"].classifiers == ["evilmod.Cls"] and evil_module.exists()
    # the consent lasts for the call only; a block consents for everything inside it
    with pytest.raises(ProtocolError, match="outside sklearn"):
        parse_protocol(with_classifier("evilmod.Cls"))
    with allowing_imports():
        with allowing_imports(False):  # an inner call without consent keeps the outer one
            parse_protocol(with_classifier("evilmod.Cls"))
    path = tmp_path / "p.yaml"
    path.write_text(with_classifier("evilmod.Cls"))
    assert main(["validate", str(path), "--allow-imports"]) == 0


def test_settings_given_in_python_need_consent_too(evil_module):
    import simlab

    with pytest.raises(SimlabError, match="outside sklearn"):
        simlab.api.settings_model(simlab.api.IdentifySpec, {"classifiers": ["evilmod.Cls"]})
    assert not evil_module.exists()


def test_sklearn_paths_need_no_consent():
    protocol = parse_protocol(with_classifier("sklearn.linear_model.LogisticRegression"))
    assert protocol.analyses["identify"].classifiers == ["sklearn.linear_model.LogisticRegression"]


@pytest.mark.parametrize("name", [".foo", "../.", "a..b", "os.", "sklearn..svm.SVC"])
def test_malformed_import_paths_are_a_clean_error(name):
    for allow in (False, True):
        with pytest.raises(ProtocolError, match=f"unknown classifier {name!r}.*dotted Python names"):
            parse_protocol(with_classifier(name), allow_imports=allow)


# --------------------------------------------------------------------------- CIFAR-10 pickles


class _System:
    """Unpickling this runs ``command`` in a shell (what a crafted pickle does)."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_cifar10_reader_refuses_a_pickle_that_runs_code(tmp_path):
    from simlab.subjects.tasks import _unpickle

    mark = tmp_path / "pwned"
    crafted = tmp_path / "data_batch_1"
    crafted.write_bytes(pickle.dumps({b"data": _System(f"touch {mark}"), b"labels": [0]}, protocol=2))
    with pytest.raises(SimlabError, match=rf"cannot read {crafted}.*refused (posix|nt)\.system"):
        _unpickle(crafted)
    assert not mark.exists()


@pytest.mark.parametrize("protocol", [2, 5])
def test_cifar10_reader_reads_the_official_format(tmp_path, protocol):
    from simlab.subjects.tasks import _unpickle

    data = np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072)
    batch = {b"batch_label": b"training batch 1 of 5", b"labels": [3, 7], b"data": data,
             b"filenames": [b"a.png", b"b.png"]}
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps(batch, protocol=protocol))
    read = _unpickle(path)
    np.testing.assert_array_equal(read[b"data"], data)
    assert read[b"labels"] == [3, 7] and read[b"filenames"] == [b"a.png", b"b.png"]


# --------------------------------------------------------------------------- strict values


def problem(extra: str, base: str = MINIMAL) -> tuple[str, str]:
    """(location, message) of the one problem of a protocol."""
    with pytest.raises(ProtocolError) as info:
        parse_protocol(base + textwrap.dedent(extra))
    (found,) = info.value.problems
    return found.location, found.message


def test_true_is_not_a_width():
    where, message = problem("architectures:\n  mlp: {type: mlp, hidden: [true]}\n")
    assert where == "architectures.mlp.hidden[0]" and message.startswith("expected an integer, got true")


def test_a_string_is_not_a_number():
    where, message = problem("training: {steps: '3'}\n")
    assert where == "training.steps" and message.startswith("expected an integer, got the string '3'")
    assert problem("rigs:\n  synapse: {noise: '0.5'}\n")[1].startswith("expected a number, got the string '0.5'")


def test_a_number_is_not_a_boolean():
    where, message = problem("training:\n  spread: {overlap: 1}\n")
    assert where == "training.spread.overlap" and message == "expected true or false, got 1"


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_learning_rates_are_finite(value):
    where, message = problem(f"training:\n  rules:\n    sgdm: {{learning_rate: {value}}}\n")
    assert where == "training.rules.sgdm.learning_rate" and "finite" in message


def test_seeds_are_non_negative_32_bit():
    assert problem("seed: -1\n")[0] == "seed"
    assert f"<= {MAX_SEED}" in problem(f"seed: {10**30}\n")[1]
    assert problem("rigs:\n  synapse: {seed: -1}\n")[0] == "rigs.synapse.seed"
    assert problem("analyses:\n  identify: {seed: -2}\n")[0] == "analyses.identify.seed"


def test_steps_have_a_documented_maximum():
    where, message = problem(f"training: {{steps: {10**30}}}\n")
    assert where == "training.steps" and f"<= {MAX_STEPS}" in message


@pytest.mark.parametrize("name", ['"tiny\\n"', "x" * 300, "'.hidden'", "'a/b'"])
def test_names_that_become_file_names(name):
    where, message = problem("", base=MINIMAL.replace("name: tiny", f"name: {name}"))
    assert where == "name" and message.startswith("expected a name of at most 64 letters")


@pytest.mark.parametrize("params, expected", [("[1, 2]", "params must map"), ("true", "params must map"),
                                              ("{C: -1}", "refused")])
def test_classifier_params(params, expected):
    where, message = problem(f"analyses:\n  identify:\n    classifiers: [{{name: linear_svm, params: {params}}}]\n")
    assert where == "analyses.identify.classifiers" and expected in message
    with pytest.raises(SimlabError, match=expected):
        parse_classifier({"name": "linear_svm", "params": __import__("yaml").safe_load(params)})


def test_rigs_named_by_analyses_are_checked_before_training():
    where, message = problem("analyses:\n  generalization: {rigs: [ephys]}\n")
    assert where == "analyses.generalization.rigs[0]" and "unknown rig of the protocol 'ephys'" in message
    assert "did you mean 'electrophysiology'" not in message or "known: electrophysiology" in message
    extra = "rigs:\n  s: {type: synapse}\nanalyses:\n  robustness: {rigs: [s, electrophysiology, nope]}\n"
    assert problem(extra)[0] == "analyses.robustness.rigs[2]"  # a rig type is fine for the grid


def test_an_empty_cifar10_path_is_refused():
    base = MINIMAL.replace("architecture: mlp", "architecture: knet").replace("task: mnist1d", "task: c")
    where, message = problem("tasks:\n  c: {type: cifar10, path: ''}\n", base=base)
    assert where == "tasks.c.path" and "at least 1 character" in message
