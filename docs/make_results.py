"""Rewrite the measured tables of docs/results.md from the run directories that produced them.

    python docs/make_results.py --quickstart runs/quickstart --zoo runs/zoo --nayebi2020 runs/nayebi2020

Each table of docs/results.md sits between ``<!-- table:NAME -->`` and ``<!-- /table -->``.
A table whose run is given is rewritten from that run's outputs with simlab's own format
functions, under a stamp that says the command that makes the run, the date and the machine
this script runs on; a table whose run is not given is left as it is.

- ``quickstart``: ``RUN/analyses/identify.nc``, as ``simlab identify`` prints it;
- ``quickstart-targets``: each ``RUN/analyses/identify-<target>.nc`` (made by the commands in
  the stamp), accuracy with all measures per target and classifier; left as it is when the run
  has none;
- ``zoo`` and ``fa-learning-rate``: ``RUN/subjects.nc``, as ``simlab info RUN --health``
  prints it;
- ``nayebi2020``: the verdicts the claim notebooks (``analyses/claim*.ipynb``,
  ``analyses/reviewer_questions.ipynb``) print on the run, which they compute from
  ``RUN/analyses/*.nc`` (and, for what ``simlab run`` does not write, in memory).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import os
import platform
import re
import shlex
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results.md"
BLOCK = re.compile(r"(<!-- table:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /table -->)", re.S)


class Unchanged(Exception):
    """A run lacks what one of its tables needs: that table is left as it is."""


# --------------------------------------------------------------------------- the stamp


def cpu_name() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what the platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    """Where the tables are made: OS, CPU, CPU count, JAX version and backend (and device)."""
    import jax

    backend = jax.default_backend()
    device = "" if backend == "cpu" else f", {jax.devices()[0].device_kind}"
    return (f"{platform.system()} {platform.machine()}, {cpu_name()}, {os.cpu_count()} CPUs, "
            f"JAX {jax.__version__} ({backend}{device})")


def stamp(commands: list[str], invocation: str, today: datetime.date) -> str:
    made = " && ".join(f"`{command}`" for command in commands)
    return (f"Command: {made}. Measured {today.isoformat()} on {machine()}. "
            f"Table written by `{invocation}`.\n\n")


# --------------------------------------------------------------------------- the tables


def fenced(text: str) -> str:
    return f"```\n{text.rstrip()}\n```\n"


def accuracy_cell(result, classifier: str, feature_set: str = "all") -> str:
    """``mean ± s.e.m. [Wilson low, high]`` of one classifier and feature set."""
    cell = result.sel(classifier=classifier, feature_set=feature_set)
    low, high = cell["accuracy_mean_ci"].values
    return f"{float(cell['accuracy_mean']):.3f} ± {float(cell['accuracy_sem']):.3f} [{low:.2f}, {high:.2f}]"


def identify_table(run: Path) -> str:
    from simlab.analysis.analyses import load_result
    from simlab.analysis.identify import format_table

    return fenced(format_table(load_result(run / "analyses" / "identify.nc")))


TARGET_ORDER = ("learning_rule", "credit_mechanism", "optimizer", "task_family", "architecture")


def targets_table(run: Path) -> str:
    """One row per ``identify-<target>.nc``: the target (chance) and, per classifier, the
    accuracy with all measures together."""
    from simlab.analysis.analyses import load_result

    results = {}
    for path in sorted((run / "analyses").glob("identify-*.nc")):
        result = load_result(path)
        if path.stem == f"identify-{result.attrs.get('target')}":
            results[result.attrs["target"]] = result
    if not results:
        raise Unchanged(f"{run}/analyses has no identify-<target>.nc")
    targets = sorted(results, key=lambda t: (TARGET_ORDER.index(t) if t in TARGET_ORDER else len(TARGET_ORDER), t))
    classifiers = list(dict.fromkeys(str(c) for t in targets for c in results[t]["classifier"].values))
    lines = ["| target (chance) | " + " | ".join(classifiers) + " |", "|---|" + "---|" * len(classifiers)]
    for target in targets:
        result = results[target]
        cells = [accuracy_cell(result, c) if c in result["classifier"].values else "" for c in classifiers]
        lines.append(f"| {target} ({float(result.attrs['chance']):.2f}) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def health(run: Path) -> str:
    import xarray as xr

    from simlab.info import health_table

    path = run / "subjects.nc"
    if not path.is_file():
        raise SystemExit(f"make_results: {path}: no subject table (train the run first)")
    with xr.open_dataset(path) as table:
        return health_table(table.load()) + "\n"


# the claim notebooks in the order of the reference's claims
CLAIM_NOTEBOOKS = (
    ("1. Rules separable from weights, activations or activity changes alone", "claim1_separability"),
    ("2. Generalizes to limited trajectory access and to held-out architectures and tasks", "claim2_generalization"),
    ("3. Weight medians and norms carry much of the predictive power", "claim3_weight_medians_and_norms"),
    ("4. Activities more robust than weights to unit undersampling and noise", "claim4_robustness"),
    ("5. Several hundred units at wide intervals may suffice", "claim5_practical_advice"),
    ("Reviewers: (a) performance confound, (b) task families, (c) rule vs architecture", "reviewer_questions"),
)


# what simlab.analysis.notebooks.load_or_compute prints about where a result came from
LOADED = re.compile(r"^(loaded \S+\.nc|\S+\.nc not found: computing it now .*)$")


def verdict(notebook) -> str:
    """What an executed notebook's last code cell printed: the verdict computed from the numbers."""
    cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    if not cells:
        raise ValueError("the notebook has no code cell")
    text = "".join(output.get("text", "") for output in cells[-1].get("outputs", [])
                   if output.get("output_type") == "stream" and output.get("name") == "stdout")
    lines = [line for line in text.splitlines() if not LOADED.match(line)]
    if not "".join(lines).strip():
        raise ValueError("the notebook's last cell printed no verdict")
    return "\n".join(lines).strip()


def claims_table(verdicts: list[tuple[str, str, str]]) -> str:
    """(claim, notebook, verdict text) rows as a Markdown table, verdict lines kept apart."""
    lines = ["| claim of the reference | notebook | verdict, as the notebook prints it |", "|---|---|---|"]
    for claim, notebook, text in verdicts:
        cell = "<br>".join(line.strip().replace("|", "\\|") for line in text.splitlines() if line.strip())
        lines.append(f"| {claim} | `{notebook}.ipynb` | {cell} |")
    return "\n".join(lines) + "\n"


def execute_notebook(name: str, run: Path, timeout: int):
    import nbclient
    import nbformat

    path = ROOT / "analyses" / f"{name}.ipynb"
    notebook = nbformat.read(path, as_version=4)
    environment = {"SIMLAB_RUN": str(run.resolve()), "SIMLAB_FIGURES": tempfile.mkdtemp(prefix="make-results-")}
    saved = {key: os.environ.get(key) for key in environment}
    os.environ.update(environment)  # the kernel inherits this process's environment
    try:
        nbclient.NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                                resources={"metadata": {"path": str(path.parent)}}).execute()
    finally:
        for key, value in saved.items():
            os.environ.pop(key) if value is None else os.environ.update({key: value})
    return notebook


def notebook_claims(run: Path, timeout: int) -> str:
    rows = []
    for claim, name in CLAIM_NOTEBOOKS:
        print(f"make_results: executing analyses/{name}.ipynb on {run}", file=sys.stderr)
        rows.append((claim, name, verdict(execute_notebook(name, run, timeout))))
    return claims_table(rows)


# --------------------------------------------------------------------------- blocks and runs


@dataclass(frozen=True)
class Table:
    """A table of results.md: the run option it is made from, how, and the commands that make
    that run (``{run}`` stands for the run directory given)."""

    option: str
    make: Callable[[Path], str]
    commands: tuple[str, ...]


def tables(notebook_timeout: int = 3600) -> dict[str, Table]:
    """Every table the script can make, by its name in the page's markers."""
    return {
        "quickstart": Table("quickstart", identify_table, ("simlab run protocols/quickstart.yaml --out {run}",)),
        "quickstart-targets": Table("quickstart", targets_table, (
            "simlab run protocols/quickstart.yaml --out {run}",
            "simlab identify {run} --classifier random_forest --classifier linear_svm --classifier conv1d "
            "--classifier logistic_regression --importance --out {run}/analyses/identify-learning_rule.nc",
            "simlab identify {run} --target credit_mechanism --out {run}/analyses/identify-credit_mechanism.nc",
            "simlab identify {run} --target optimizer --out {run}/analyses/identify-optimizer.nc",
        )),
        "zoo": Table("zoo", health, ("simlab run protocols/zoo.yaml --out {run}", "simlab info {run} --health")),
        "fa-learning-rate": Table("fa_learning_rate", health, (
            "simlab run protocols/zoo_fa_learning_rate.yaml --out {run}", "simlab info {run} --health")),
        "nayebi2020": Table("nayebi2020", functools.partial(notebook_claims, timeout=notebook_timeout),
                            ("simlab run protocols/nayebi2020.yaml --out {run}",)),
    }


def regenerate(text: str, runs: dict[str, Path], invocation: str, today: datetime.date,
               notebook_timeout: int = 3600) -> str:
    """``text`` with every table whose run is in ``runs`` (option -> run directory) rewritten."""
    known = tables(notebook_timeout)
    present = {match["name"] for match in BLOCK.finditer(text)}
    for option in runs:
        if not any(table.option == option and name in present for name, table in known.items()):
            raise SystemExit(f"make_results: the results page has no table made from --{option.replace('_', '-')}")

    def rewrite(match: re.Match) -> str:
        table = known.get(match["name"])
        if table is None or table.option not in runs:
            return match[0]
        run = runs[table.option]
        try:
            body = table.make(run)
        except Unchanged as why:
            print(f"make_results: table {match['name']} left as it is: {why}", file=sys.stderr)
            return match[0]
        commands = [command.format(run=run) for command in table.commands]
        return match[1] + stamp(commands, invocation, today) + body + match[4]

    return BLOCK.sub(rewrite, text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=RESULTS, help="the page to rewrite (default docs/results.md)")
    parser.add_argument("--quickstart", type=Path, metavar="RUN", help="run of protocols/quickstart.yaml")
    parser.add_argument("--zoo", type=Path, metavar="RUN", help="run of protocols/zoo.yaml")
    parser.add_argument("--fa-learning-rate", type=Path, metavar="RUN", help="run of protocols/zoo_fa_learning_rate.yaml")
    parser.add_argument("--nayebi2020", type=Path, metavar="RUN", help="run of protocols/nayebi2020.yaml (executes the claim notebooks on it)")
    parser.add_argument("--notebook-timeout", type=int, default=3600, help="seconds per notebook cell (default 3600)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    runs = {option: getattr(args, option) for option in ("quickstart", "zoo", "fa_learning_rate", "nayebi2020")
            if getattr(args, option) is not None}
    for option, run in runs.items():
        if not (run / "protocol.yaml").is_file():
            raise SystemExit(f"make_results: --{option.replace('_', '-')} {run}: not a simlab run directory")
    if not args.results.is_file():  # before the notebooks run, so no work is lost
        raise SystemExit(f"make_results: --results {args.results}: no such file (the page whose tables to rewrite)")
    invocation = "python docs/make_results.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    text = args.results.read_text()
    args.results.write_text(regenerate(text, runs, invocation.strip(), datetime.date.today(), args.notebook_timeout))
    print(f"make_results: wrote {args.results}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
