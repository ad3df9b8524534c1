"""Tests for the figures: every analysis of the tiny run is drawn as PNG, SVG and PDF; the
trajectory figure's numbers are the per-rule site means computed by hand; and the figures are
fit for a talk: every axis names its quantity and units, a rule keeps its colour and its name
from figure to figure, confusion matrices name their classifier and have a labelled colour
bar, accuracies show chance, and no label is cut short, clipped or drawn over another."""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

import matplotlib.colors
import matplotlib.image
import matplotlib.pyplot as plt
import matplotlib.text
import numpy as np
import pytest
import xarray as xr

from simlab.analysis import figures as F
from simlab.analysis.analyses import load_result
from simlab.analysis.common import open_run_recordings
from simlab.errors import SimlabError
from simlab.rundir import RunDirectory

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# the builder of each analysis's figure, by the result's schema (as draw_run_figures picks)
BUILDERS = {
    "simlab.identify": F.confusion_figure,
    "simlab.generalization": F.generalization_figure,
    "simlab.robustness": F.robustness_figure,
    "simlab.trajectory": F.trajectory_access_figure,
    "simlab.confound": F.confound_figure,
}


def _valid(figure) -> None:
    assert figure.png.read_bytes().startswith(PNG_SIGNATURE)
    assert matplotlib.image.imread(figure.png).ndim == 3
    assert ET.parse(figure.svg).getroot().tag.endswith("svg")
    assert figure.pdf.read_bytes().startswith(b"%PDF-")
    assert figure.pdf.read_bytes().rstrip().endswith(b"%%EOF")
    assert figure.paths == (figure.png, figure.svg, figure.pdf)


@pytest.fixture(scope="module")
def figures(analyzed_run):
    return F.draw_run_figures(RunDirectory(analyzed_run))


@pytest.fixture(scope="module")
def recording(analyzed_run):
    return open_run_recordings(RunDirectory(analyzed_run))


@pytest.fixture(scope="module")
def drawn(analyzed_run, recording):
    """Every figure of the run as matplotlib figures (drawn, so text has its extent), by name."""
    out = {"trajectories": F.trajectories_figure(recording)}
    for path in sorted((analyzed_run / "analyses").glob("*.nc")):
        result = load_result(path)
        schema = str(result.attrs["schema"]).split("/")[0]
        out[path.stem] = BUILDERS[schema](result)
    for fig in out.values():
        fig.canvas.draw()
    yield out
    for fig in out.values():
        plt.close(fig)


def _panels(fig):
    """The data axes of a figure (not its colour bars)."""
    return [ax for ax in fig.axes if ax.get_visible() and not hasattr(ax, "_colorbar")]


def _colorbars(fig):
    return [ax for ax in fig.axes if hasattr(ax, "_colorbar")]


# --------------------------------------------------------------------------- files


def test_every_analysis_is_drawn_as_png_svg_and_pdf(figures, analyzed_run):
    names = {f.png.stem for f in figures}
    analyses = {p.stem for p in (analyzed_run / "analyses").glob("*.nc")}
    assert names == analyses | {"trajectories"}
    for figure in figures:
        _valid(figure)
        assert figure.png.parent == figure.svg.parent == figure.pdf.parent == analyzed_run / "figures"


def test_vector_files_are_reproducible_and_keep_text_as_text(recording, tmp_path):
    first = F.plot_trajectories(recording, tmp_path / "a")
    second = F.plot_trajectories(recording, tmp_path / "b")
    assert first.pdf.read_bytes() == second.pdf.read_bytes()
    assert first.svg.read_bytes() == second.svg.read_bytes()
    # text stays text in the SVG (editable on a slide): the legend's rule names are in it
    assert "feedback alignment" in first.svg.read_text()


def test_the_cli_names_every_file_it_wrote(analyzed_run, capsys):
    from simlab.cli.main import main

    assert main(["figures", str(analyzed_run)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.endswith("trajectories.png, trajectories.svg and trajectories.pdf") for line in lines), lines
    assert (analyzed_run / "figures" / "trajectories.pdf").read_bytes().startswith(b"%PDF-")


# --------------------------------------------------------------------------- numbers


def test_trajectory_numbers_are_site_means_by_rule(recording):
    ds = recording
    t = F.site_trajectories(ds, "weight_raw_norm")
    obs = ds["observation"].sel(observable="weight_raw_norm").values  # (subject, layer, session)
    real = ds["layer_name"].values != ""
    for rule in ("sgdm", "feedback_alignment"):
        mine = obs[(ds["learning_rule"].values == rule)[:, None] & real]  # (site, session)
        np.testing.assert_allclose(t["mean"].sel(label=rule).values, mine.mean(axis=0), rtol=1e-6)
        np.testing.assert_allclose(t["sem"].sel(label=rule).values,
                                   mine.std(axis=0, ddof=1) / np.sqrt(len(mine)), rtol=1e-5)


def test_trajectory_figure_refuses_an_unknown_observable(recording, tmp_path):
    with pytest.raises(SimlabError, match="weight_raw_nothing"):
        F.plot_trajectories(recording, tmp_path / "t", ["weight_raw_nothing"])
    _valid(F.plot_trajectories(recording, tmp_path / "t", ["activation_abs_mean"]))


def test_importance_figure(analyzed_run, tmp_path):
    from simlab.analysis.importance import importance_for
    from simlab.specs.analyses import IdentifySpec

    ds = open_run_recordings(RunDirectory(analyzed_run), ["synapse"])
    spec = IdentifySpec(splits=2, classifiers=[{"name": "random_forest", "params": {"n_estimators": 10}}])
    result = importance_for(ds, spec, n_jobs=1)
    _valid(F.plot_importance(result, tmp_path / "importance"))
    fig = F.importance_figure(result)
    fig.canvas.draw()
    for ax in _panels(fig):
        if ax.axison:
            assert "importance" in ax.get_xlabel() and "(" in ax.get_xlabel(), ax.get_xlabel()
            assert ax.get_ylabel() in ("measure", "statistic", "function") or ax.get_ylabel().startswith("observable")
    assert _layout_problems(fig) == []
    plt.close(fig)


# --------------------------------------------------------------------------- axes and units


def _is_categorical(axis) -> bool:
    """Tick labels that are words (rule names, levels), not numbers."""
    texts = [t.get_text().replace("−", "-") for t in axis.get_ticklabels() if t.get_text()]
    try:
        [float(t) for t in texts]
    except ValueError:
        return True
    return False


# a numeric axis states its units in parentheses, unless it counts or is a fraction of something
UNITS = re.compile(r"\([^)]+\)|^fraction of |^(units|sessions) recorded")


def test_every_axis_names_its_quantity_and_numeric_axes_their_units(drawn):
    for name, fig in drawn.items():
        for ax in _panels(fig):
            for axis, label in ((ax.xaxis, ax.get_xlabel()), (ax.yaxis, ax.get_ylabel())):
                assert label.strip(), f"{name}: an axis of {ax.get_title()!r} has no label"
                if not _is_categorical(axis):
                    assert UNITS.search(label), f"{name}: {label!r} has no units"
        for bar in _colorbars(fig):
            assert (bar.get_ylabel() or bar.get_xlabel()).strip(), f"{name}: unlabelled colour bar"


def test_observable_axes_say_what_is_measured_in_which_units(drawn, recording):
    axes = _panels(drawn["trajectories"])
    assert [ax.get_title() for ax in axes][:2] == ["weight raw median", "weight raw norm"]
    assert axes[0].get_ylabel() == "median of weights\n(dimensionless)"  # units "1" in the recording
    assert axes[0].get_xlabel() == "fraction of training steps"
    assert recording["observation"].attrs["units"] == "1"
    other_units = recording.copy()
    other_units["observation"].attrs["units"] = "mV"
    assert F.observable_label(other_units, "activation_abs_mean") == "mean of |activations|\n(mV)"
    assert F.observable_label(recording, "activation_sq_var") == "variance of (activations)²\n(dimensionless)"
    assert F.observable_label(recording, "activity_change_raw") == "activity change\n(dimensionless)"


def _chance_lines(ax):
    return [line for line in ax.get_lines() if line.get_label() == "chance"]


def test_accuracy_axes_show_chance_at_the_results_chance_level(drawn, analyzed_run):
    checked = 0
    for path in sorted((analyzed_run / "analyses").glob("*.nc")):
        chance = float(load_result(path).attrs["chance"])
        for ax in _panels(drawn[path.stem]):
            vertical = ax.get_xlabel().startswith(F.ACCURACY_LABEL)
            if not (vertical or ax.get_ylabel() == F.ACCURACY_LABEL):
                continue
            lines = _chance_lines(ax)
            assert len(lines) == 1, f"{path.stem}: {ax.get_title()!r} has no chance line"
            data = lines[0].get_xdata() if vertical else lines[0].get_ydata()
            np.testing.assert_allclose(data, chance)
            checked += 1
    assert checked >= 5  # generalization, trajectory access, three robustness panels, confound


def test_robustness_session_axis_ticks_are_the_session_counts(drawn, analyzed_run):
    grid = load_result(analyzed_run / "analyses" / "robustness.nc")
    sessions = [ax for ax in _panels(drawn["robustness"]) if ax.get_xlabel() == F.SESSIONS_LABEL]
    assert len(sessions) == 1
    ticks = [t.get_text() for t in sessions[0].get_xticklabels()]
    assert ticks == [str(int(s)) for s in grid["sessions"].values]


# --------------------------------------------------------------------------- confusion matrices


def test_confusion_matrices_name_classifier_and_feature_set_and_have_a_colour_bar(drawn, analyzed_run):
    fig = drawn["identify"]
    results = load_result(analyzed_run / "analyses" / "identify.nc")
    classifier = str(results["classifier"].values[0])
    panels = _panels(fig)
    assert len(panels) == len(F._confusion_sets(results))
    for ax, feature_set in zip(panels, F._confusion_sets(results)):
        assert classifier in ax.get_title() and F.class_label(feature_set) in ax.get_title()
        assert ax.get_ylabel() == "true learning rule" and ax.get_xlabel() == "predicted learning rule"
    (bar,) = _colorbars(fig)
    assert bar.get_ylabel() == "fraction of true class"
    # the colour scale is the full range of a fraction
    assert panels[0].images[0].get_clim() == (0.0, 1.0)


def _identify_result(classes, feature_sets=("weight", "activation", "activity_change", "all")):
    """A hand-made identification result: confusion counts that make each class's row known."""
    k = len(classes)
    counts = np.arange(1, k * k + 1, dtype=np.int64).reshape(k, k)
    confusion = np.broadcast_to(counts, (1, len(feature_sets), k, k))
    return xr.Dataset(
        {"confusion": (("classifier", "feature_set", "true_class", "predicted_class"), confusion),
         "accuracy_mean": (("classifier", "feature_set"), np.full((1, len(feature_sets)), 0.5))},
        coords={"classifier": ["logistic_regression(C=0.1)"], "feature_set": list(feature_sets),
                "true_class": list(classes), "predicted_class": list(classes)},
        attrs={"chance": 1.0 / k, "target": "learning_rule", "title": "identification of learning_rule"},
    )


def test_confusion_cells_are_the_fraction_of_each_true_class():
    result = _identify_result(["sgdm", "hebbian"], ["all"])
    fig = F.confusion_figure(result)
    (ax,) = _panels(fig)
    # counts [[1, 2], [3, 4]]: rows divided by 3 and 7
    np.testing.assert_allclose(ax.images[0].get_array(), [[1 / 3, 2 / 3], [3 / 7, 4 / 7]])
    assert sorted(t.get_text() for t in ax.texts) == ["0.33", "0.43", "0.57", "0.67"]
    plt.close(fig)


# --------------------------------------------------------------------------- colours and names


def _line_colors(fig) -> dict[str, str]:
    ax = _panels(fig)[0]
    return {line.get_label(): matplotlib.colors.to_hex(line.get_color()) for line in ax.get_lines()}


def _bar_colors(ax) -> dict[str, str]:
    return {bars.get_label(): matplotlib.colors.to_hex(bars.patches[0].get_facecolor())
            for bars in ax.containers}


def test_a_rule_keeps_its_colour_whatever_other_rules_a_figure_shows(recording, analyzed_run):
    # the same recording with feedback_alignment's subjects relabelled: another set of rules
    renamed = recording["learning_rule"].str.replace("feedback_alignment", "my_rule")
    other = recording.assign_coords(learning_rule=renamed)
    one, two = F.trajectories_figure(recording), F.trajectories_figure(other)
    colors_one, colors_two = _line_colors(one), _line_colors(two)
    assert colors_one["sgdm"] == colors_two["sgdm"] == F.BUILTIN_RULE_COLORS["sgdm"].lower()
    assert colors_one["feedback alignment"] == F.BUILTIN_RULE_COLORS["feedback_alignment"].lower()
    assert colors_two["my rule"] == F.rule_color("my_rule") not in colors_one.values()
    # and in a figure of another kind (bars of the confound figure)
    confound = F.confound_figure(load_result(analyzed_run / "analyses" / "confound.nc"))
    bar_colors = _bar_colors(_panels(confound)[0])
    assert bar_colors == {"sgdm": colors_one["sgdm"], "feedback alignment": colors_one["feedback alignment"]}
    for fig in (one, two, confound):
        plt.close(fig)


def test_a_rule_has_the_same_name_in_legends_and_matrix_ticks(drawn):
    lines = _panels(drawn["trajectories"])[0].get_legend_handles_labels()[1]
    legend = {t.get_text() for t in drawn["trajectories"].legends[0].get_texts()}
    matrix = _panels(drawn["identify"])[0]
    ticks_x = {t.get_text() for t in matrix.get_xticklabels()}
    ticks_y = {t.get_text() for t in matrix.get_yticklabels()}
    confound = {t.get_text() for t in _panels(drawn["confound"])[0].get_legend().get_texts()}
    assert set(lines) == legend == ticks_x == ticks_y == confound == {"sgdm", "feedback alignment"}


def test_builtin_colours_are_distinct_and_fixed_by_name():
    from simlab.specs.rules import RULE_HYPERPARAMETERS

    # every name of the palette is a built-in rule (a new built-in without an entry gets a
    # colour derived from its name, like a user's rule: no second file to edit)
    assert set(F.BUILTIN_RULE_COLORS) <= set(RULE_HYPERPARAMETERS)
    colors = list(F.BUILTIN_RULE_COLORS.values())
    assert len(set(colors)) == len(colors)
    for a, b in itertools.combinations(colors, 2):
        assert np.linalg.norm(F._lab(a) - F._lab(b)) >= 25, (a, b)
    # a colour depends on the name, not on the other names drawn with it
    assert [F.rule_color(r) for r in ("hebbian", "sgdm")] == [F.BUILTIN_RULE_COLORS[r] for r in ("hebbian", "sgdm")]


def test_cielab_matches_known_values():
    np.testing.assert_allclose(F._lab("#ffffff"), [100, 0, 0], atol=0.05)
    np.testing.assert_allclose(F._lab("#000000"), [0, 0, 0], atol=1e-9)
    np.testing.assert_allclose(F._lab("#ff0000"), [53.24, 80.09, 67.20], atol=0.05)  # sRGB red, D65


def test_other_rules_get_a_colour_from_their_name_alone_far_from_the_builtins():
    names = ["fa_adam", "bp_sgd", "my_rule", "dfa_sgd", "x"]
    colors = [F.rule_color(n) for n in names]
    for color in colors:
        assert min(np.linalg.norm(F._lab(color) - F._lab(c)) for c in F.BUILTIN_RULE_COLORS.values()) >= 25
    assert len(set(colors)) == len(colors)
    # the same in a fresh interpreter with another string-hash seed: nothing depends on hash()
    code = f"from simlab.analysis.figures import rule_color; print([rule_color(n) for n in {names!r}])"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(colors)


# --------------------------------------------------------------------------- layout


def _drawn_texts(ax):
    """(kind, text artist) of each non-empty label drawn on an axes: ticks within the view, the
    title and the axis labels."""
    out = []
    for axis, limits in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
        low, high = sorted(limits)
        for tick in axis.get_major_ticks() + axis.get_minor_ticks():
            if tick.label1.get_visible() and tick.label1.get_text() and low <= tick.get_loc() <= high:
                out.append(("tick", tick.label1))
        out.append(("label", axis.label))
    out.append(("title", ax.title))
    return [(kind, t) for kind, t in out if t.get_text()]


def _layout_problems(fig) -> list[str]:
    """Labels cut short, outside the figure, on top of one another, or on another panel."""
    renderer = fig.canvas.get_renderer()
    canvas = fig.bbox
    problems = []
    axes = [ax for ax in fig.axes if ax.get_visible()]
    for ax in axes:
        texts = _drawn_texts(ax)
        boxes = [(kind, t, t.get_window_extent(renderer)) for kind, t in texts]
        for kind, t, box in boxes:
            if "…" in t.get_text():
                problems.append(f"cut short: {t.get_text()!r}")
            if not (box.x0 >= canvas.x0 - 1 and box.y0 >= canvas.y0 - 1
                    and box.x1 <= canvas.x1 + 1 and box.y1 <= canvas.y1 + 1):
                problems.append(f"outside the figure: {t.get_text()!r}")
            for other in axes:
                if other is not ax and box.overlaps(other.get_window_extent(renderer)):
                    problems.append(f"{kind} {t.get_text()!r} over another panel")
        ticks = [(t, box) for kind, t, box in boxes if kind == "tick"]
        for (a, box_a), (b, box_b) in itertools.combinations(ticks, 2):
            if box_a.overlaps(box_b):
                problems.append(f"ticks overlap: {a.get_text()!r} and {b.get_text()!r}")
    # the saved file is cropped to what is drawn (bbox_inches="tight"): all of it lies on the canvas
    drawn = fig.get_tightbbox(renderer)
    if not (drawn.x0 >= -0.02 and drawn.y0 >= -0.02 and drawn.x1 <= fig.get_figwidth() + 0.02
            and drawn.y1 <= fig.get_figheight() + 0.02):
        problems.append(f"drawn beyond the canvas: {drawn} vs {fig.get_size_inches()}")
    suptitle = fig._suptitle
    if suptitle is not None:
        box = suptitle.get_window_extent(renderer)
        problems += [f"suptitle over {ax.get_title()!r}" for ax in axes if box.overlaps(ax.get_window_extent(renderer))]
    return problems


def test_the_layout_check_sees_overlap_clipping_and_ellipses():
    fig, (left, right) = plt.subplots(1, 2, figsize=(2.0, 1.5))  # no layout engine, too small
    left.set_xticks([0, 1], ["direct feedback alignment", "information alignment"])
    left.set_yticks([0], ["information alignm…"])
    right.set_title("a title far wider than its panel, running off the canvas")
    fig.canvas.draw()
    problems = " | ".join(_layout_problems(fig))
    for expected in ("ticks overlap", "cut short", "over another panel", "outside the figure", "beyond the canvas"):
        assert expected in problems
    plt.close(fig)


def test_no_label_of_the_run_is_clipped_cut_short_or_overlapping(drawn):
    for name, fig in drawn.items():
        assert _layout_problems(fig) == [], name


@pytest.mark.parametrize("classes", [
    ["information_alignment", "direct_feedback_alignment"],  # long names in a 2 x 2 matrix
    ["sgdm", "adam", "feedback_alignment", "information_alignment", "kolen_pollack", "weight_mirror",
     "symmetric_alignment", "sign_symmetry", "direct_feedback_alignment", "node_perturbation", "hebbian"],
])
def test_long_rule_names_fit_in_a_confusion_matrix(classes, tmp_path):
    result = _identify_result(classes)
    fig = F.confusion_figure(result)
    fig.canvas.draw()
    assert _layout_problems(fig) == []
    for ax in _panels(fig):
        full = [F.class_label(c) for c in classes]
        assert [t.get_text() for t in ax.get_xticklabels()] == full
        assert [t.get_text() for t in ax.get_yticklabels()] == full
    _valid(F.save_figure(fig, tmp_path / "confusion", "confusion"))


def test_text_artists_have_no_ellipsis_anywhere(drawn):
    for name, fig in drawn.items():
        texts = [t.get_text() for t in fig.findobj(matplotlib.text.Text)]
        assert not any("…" in t for t in texts), name
