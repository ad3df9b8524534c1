"""The recording data contract: build, write, open, combine and check NetCDF recordings.

A recording is an ``xarray.Dataset`` with one float32 data variable ``observation`` over
(``subject``, ``layer``, ``session``, ``observable``) and the coordinates and global attributes
that DESIGN.md "The recording data contract" lists (documented for users in
docs/recording-contract.md). Every stage after recording reads only this, so it is checked
when built and when opened.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
import yaml

from simlab._version import __version__
from simlab.errors import SimlabError
from simlab.fileio import atomic_path
from simlab.recording.observables import (
    ACTIVITY_CHANGE_STATISTIC,
    FUNCTIONS,
    MEASURES,
    STATISTICS,
    Observable,
)

SCHEMA = "simlab.recording/1"
DIMS = ("subject", "layer", "session", "observable")
SUBJECT_COORDS = (
    "learning_rule",
    "architecture",
    "task",
    "batch_size",
    "seed",
    "final_accuracy",
    "status",
)
LAYER_COORDS = ("layer_name", "depth", "n_units", "n_recorded")
SESSION_COORDS = ("step", "fraction")
OBSERVABLE_COORDS = ("measure", "function", "statistic")
ATTRS = ("schema", "simlab_version", "protocol", "rig", "created", "Conventions", "title", "history")
STATUSES = ("ok", "diverged")
DEPTHS = ("early", "middle", "deep")
CONVENTIONS = "CF-1.11"
# Per-site counts that belong to one rig; a combined recording keeps them per measure.
RIG_COUNTS = ("n_units", "n_recorded")


HEAD_PREFIX = "projection_"
"""Layers of a contrastive subject's projection head, which count as deep (as in the reference)."""


def depth_groups(n_layers: int, names=None) -> list[str]:
    """Depth group of each layer index: thirds by index, as ``np.array_split(range(n), 3)``.

    The first chunk is "early", the second "middle", the third "deep" (so 2 layers are
    early, middle; 4 layers are early, early, middle, deep). With layer ``names``, the layers
    of a projection head (``projection_*``, the last ones) are "deep" and the thirds are
    taken over the layers before them.
    """
    if n_layers < 0:
        raise ValueError(f"n_layers must be >= 0, got {n_layers}")
    head = 0 if names is None else sum(str(name).startswith(HEAD_PREFIX) for name in names[:n_layers])
    out: list[str] = []
    for name, chunk in zip(DEPTHS, np.array_split(np.arange(n_layers - head), 3)):
        out.extend([name] * len(chunk))
    return out + ["deep"] * head


def _utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _coord_values(name: str, values, length: int, where: str) -> np.ndarray:
    """A 1-D coordinate as a numpy array of numbers or of str (never None or objects)."""
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.shape[0] != length:
        raise ValueError(
            f"{where} coordinate {name!r}: expected a 1-D sequence of length {length}, "
            f"got shape {arr.shape}"
        )
    return _plain(arr, f"{where} coordinate {name!r}")


def _plain(arr: np.ndarray, what: str) -> np.ndarray:
    """Numbers stay numbers; strings become a numpy str array (as xarray reads them back)."""
    if arr.dtype.kind in "iuf":
        return arr
    if arr.dtype.kind == "b":
        raise ValueError(f"{what}: booleans cannot be stored in NetCDF; use 0/1 or strings")
    if arr.dtype.kind == "U":
        return arr
    if arr.dtype.kind == "O":
        flat = list(arr.ravel())
        if all(isinstance(v, str) for v in flat):
            return arr.astype(str)
        numbers = [isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in flat]
        if all(numbers):
            return arr.astype(np.float64 if any(isinstance(v, (float, np.floating)) for v in flat) else np.int64)
        odd = [v for v, ok in zip(flat, numbers) if not ok and not isinstance(v, str)]
        if odd:
            raise ValueError(
                f"{what}: expected strings or numbers, found {type(odd[0]).__name__} {odd[0]!r}"
            )
        raise ValueError(f"{what}: expected all strings or all numbers, not a mix")
    raise ValueError(f"{what}: expected strings or numbers, got dtype {arr.dtype}")


def _check_observables(observables: Sequence) -> list[Observable]:
    out = []
    for item in observables:
        try:
            obs = Observable(*item)
        except TypeError:
            raise ValueError(
                f"expected Observable(name, measure, function, statistic), got {item!r}"
            ) from None
        if obs.measure not in MEASURES:
            raise ValueError(f"observable {obs.name!r}: measure {obs.measure!r} not in {MEASURES}")
        if obs.function not in FUNCTIONS:
            raise ValueError(f"observable {obs.name!r}: function {obs.function!r} not in {FUNCTIONS}")
        allowed = (ACTIVITY_CHANGE_STATISTIC,) if obs.measure == "activity_change" else STATISTICS
        if obs.statistic not in allowed:
            raise ValueError(
                f"observable {obs.name!r}: statistic {obs.statistic!r} not in {allowed}"
            )
        expect = _observable_name(obs.measure, obs.function, obs.statistic)
        if obs.name != expect:
            raise ValueError(f"observable {obs.name!r} should be named {expect!r}")
        out.append(obs)
    names = [o.name for o in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"observables appear more than once: {dupes}")
    return out


def _observable_name(measure: str, function: str, statistic: str) -> str:
    return f"{measure}_{function}" if measure == "activity_change" else f"{measure}_{function}_{statistic}"


def build_recording(
    observation,
    *,
    subject_ids: Sequence[str],
    subject_coords: Mapping[str, Sequence],
    layer_coords: Mapping[str, np.ndarray],
    steps: Sequence[int],
    total_steps: int,
    observables: Sequence[Observable],
    protocol_text: str,
    rig_settings: Mapping,
    title: str,
    history: str,
) -> xr.Dataset:
    """Assemble a recording that satisfies the contract, or say what is wrong with the inputs.

    ``observation``: array [subject, layer, session, observable] (cast to float32; values that
    are not finite become NaN). ``subject_coords``: name -> 1-D values per subject; must hold
    the contract's subject coordinates and may hold any other factor. ``layer_coords``:
    name -> [subject, layer] arrays with ``layer_name`` ("" for padding layers, which must come
    after a subject's real layers and hold only NaN), ``n_units`` and ``n_recorded`` (integers,
    0 for padding); ``depth`` is derived here. ``steps``: the training step of each session.
    ``rig_settings`` is stored as YAML text in the ``rig`` attribute.
    """
    obs = _observation_array(observation)
    n_subj, n_layer, n_sess, n_obs = obs.shape
    ids = _subject_ids(subject_ids, n_subj)
    coords = _subject_coordinates(subject_coords, n_subj)
    coords.update(_layer_coordinates(layer_coords, coords, obs, ids))
    coords.update(_session_coordinates(steps, total_steps, n_sess))
    obs_list = _check_observables(observables)
    if len(obs_list) != n_obs:
        raise ValueError(
            f"observables: expected {n_obs} (observation's observable axis), got {len(obs_list)}"
        )
    for key, index in (("measure", 1), ("function", 2), ("statistic", 3)):
        coords[key] = ("observable", np.array([o[index] for o in obs_list], dtype=str))

    coords["subject"] = ("subject", np.array(ids, dtype=str))
    coords["layer"] = ("layer", np.arange(n_layer, dtype=np.int64))
    coords["session"] = ("session", np.arange(n_sess, dtype=np.int64))
    coords["observable"] = ("observable", np.array([o.name for o in obs_list], dtype=str))

    for name, value in (("protocol_text", protocol_text), ("title", title), ("history", history)):
        if not isinstance(value, str):
            raise ValueError(f"{name}: expected a string, got {type(value).__name__}")
    if not isinstance(rig_settings, Mapping):
        raise ValueError(f"rig_settings: expected a dict, got {type(rig_settings).__name__}")

    return xr.Dataset(
        {"observation": (DIMS, obs, {"long_name": "observable value", "units": "1"})},
        coords=coords,
        attrs=_global_attrs(protocol_text, _yaml(dict(rig_settings)), title, history),
    )


_RESERVED = set(DIMS) | set(LAYER_COORDS) | set(SESSION_COORDS) | set(OBSERVABLE_COORDS)
"""Names the contract gives its own coordinates: no subject or layer coordinate may take them."""


def _observation_array(observation) -> np.ndarray:
    """The observations as float32 [subject, layer, session, observable], NaN where not finite."""
    obs = np.asarray(observation)
    if obs.ndim != 4:
        raise ValueError(
            f"observation: expected 4 dims {DIMS}, got shape {obs.shape}"
        )
    if obs.dtype.kind not in "iuf":
        raise ValueError(f"observation: expected numbers, got dtype {obs.dtype}")
    with np.errstate(over="ignore"):
        obs = obs.astype(np.float32)
    return np.where(np.isfinite(obs), obs, np.float32(np.nan))


def _subject_ids(subject_ids: Sequence[str], n_subj: int) -> list[str]:
    ids = [str(s) if isinstance(s, np.str_) else s for s in subject_ids]
    if len(ids) != n_subj:
        raise ValueError(f"subject_ids: expected {n_subj} (observation's subject axis), got {len(ids)}")
    if not all(isinstance(s, str) and s for s in ids):
        raise ValueError(f"subject_ids: expected non-empty strings, got {ids!r}")
    if len(set(ids)) != len(ids):
        raise ValueError(f"subject_ids must be unique, got {ids!r}")
    return ids


def _subject_coordinates(subject_coords: Mapping[str, Sequence], n_subj: int) -> dict[str, tuple]:
    """The contract's subject coordinates (required) and any other factor, on ``subject``."""
    missing = [c for c in SUBJECT_COORDS if c not in subject_coords]
    if missing:
        raise ValueError(
            f"subject_coords lacks required coordinates {missing}; expected at least {list(SUBJECT_COORDS)}"
        )
    coords: dict[str, tuple] = {}
    for name, values in subject_coords.items():
        if name in _RESERVED:
            raise ValueError(f"subject_coords: {name!r} is reserved by the contract")
        coords[name] = ("subject", _coord_values(name, values, n_subj, "subject"))
    bad_status = sorted({str(v) for v in coords["status"][1]} - set(STATUSES))
    if bad_status:
        raise ValueError(f"status values {bad_status}: expected only {STATUSES}")
    return coords


def _layer_coordinates(
    layer_coords: Mapping[str, np.ndarray], subject_coords: Mapping, obs: np.ndarray, ids: list[str]
) -> dict[str, tuple]:
    """``layer_name``, the counts and any other per-site coordinate on (subject, layer), and
    ``depth`` derived from the names."""
    n_subj, n_layer = obs.shape[:2]
    missing = [c for c in ("layer_name", "n_units", "n_recorded") if c not in layer_coords]
    if missing:
        raise ValueError(f"layer_coords lacks {missing}; expected layer_name, n_units, n_recorded")
    if "depth" in layer_coords:
        raise ValueError("layer_coords: 'depth' is derived from layer_name; do not pass it")
    coords: dict[str, tuple] = {}
    for name, values in layer_coords.items():
        if name in _RESERVED - set(LAYER_COORDS) or name in subject_coords:
            raise ValueError(f"layer_coords: {name!r} is reserved or already a coordinate")
        arr = np.asarray(values)
        if arr.shape != (n_subj, n_layer):
            raise ValueError(
                f"layer coordinate {name!r}: expected shape (subject, layer) = "
                f"{(n_subj, n_layer)}, got {arr.shape}"
            )
        coords[name] = (("subject", "layer"), _plain(arr, f"layer coordinate {name!r}"))
    coords["depth"] = (("subject", "layer"), _depths(coords["layer_name"][1], obs, ids))
    for name in RIG_COUNTS:
        coords[name] = (("subject", "layer"), _counts(name, coords[name][1]))
    return coords


def _depths(names: np.ndarray, obs: np.ndarray, ids: list[str]) -> np.ndarray:
    """Each layer's depth group, after checking that padding layers ('' names) come last and
    hold only NaN."""
    if names.dtype.kind != "U":
        raise ValueError("layer_name: expected strings ('' for padding layers)")
    n_subj, n_layer = names.shape
    real = names != ""
    depth = np.full((n_subj, n_layer), "", dtype=f"<U{max(map(len, DEPTHS))}")
    for i, k in enumerate(real.sum(axis=1)):
        if not real[i, :k].all():
            raise ValueError(
                f"subject {ids[i]!r}: padding layers ('' names) must come after its real layers, "
                f"got layer_name {list(names[i])}"
            )
        depth[i, :k] = depth_groups(int(k), names[i, :k])
        if not np.isnan(obs[i, k:]).all():
            raise ValueError(f"subject {ids[i]!r}: padding layers {k}..{n_layer - 1} must hold only NaN")
    return depth


def _counts(name: str, arr: np.ndarray) -> np.ndarray:
    """A per-site count as int64, refused unless whole numbers >= 0."""
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError(f"{name}: expected integers (0 for padding layers), got {arr.tolist()}")
    if (arr < 0).any():
        raise ValueError(f"{name}: expected counts >= 0, got {arr.tolist()}")
    return arr.astype(np.int64)


def _session_coordinates(steps: Sequence[int], total_steps: int, n_sess: int) -> dict[str, tuple]:
    """``step`` and ``fraction`` of each session, after checking the steps."""
    step = np.asarray(steps)
    if step.shape != (n_sess,) or step.dtype.kind not in "iu":
        raise ValueError(
            f"steps: expected {n_sess} integers (observation's session axis), got {step.tolist()}"
        )
    if n_sess > 1 and not np.all(np.diff(step) > 0):
        raise ValueError(f"steps must increase, got {step.tolist()}")
    if isinstance(total_steps, bool) or not isinstance(total_steps, (int, np.integer)) or total_steps <= 0:
        raise ValueError(f"total_steps: expected a positive integer, got {total_steps!r}")
    if n_sess and (step.min() < 0 or step.max() > total_steps):
        raise ValueError(f"steps must lie in [0, total_steps={total_steps}], got {step.tolist()}")
    return {
        "step": ("session", step.astype(np.int64), {"long_name": "training step"}),
        "fraction": (
            "session",
            step.astype(np.float64) / float(total_steps),
            {"long_name": "fraction of training steps", "units": "1"},
        ),
    }


def _yaml(value) -> str:
    return yaml.safe_dump(value, sort_keys=False, default_flow_style=False)


def _global_attrs(protocol: str, rig: str, title: str, history: str) -> dict[str, str]:
    return {
        "schema": SCHEMA,
        "simlab_version": __version__,
        "protocol": protocol,
        "rig": rig,
        "created": _utc_now(),
        "Conventions": CONVENTIONS,
        "title": title,
        "history": history,
    }


def write_recording(ds: xr.Dataset, path, force: bool = False) -> Path:
    """Write ``ds`` to NetCDF at ``path`` atomically; an existing file needs ``force``.

    A dataset that breaks the contract (see :func:`problems`) is refused with ValueError, so
    every recording on disk is one the later stages can read. String coordinates are written
    as variable-length strings, so they read back as ``str``. Returns the path written.
    """
    path = Path(path)
    found = problems(ds)
    if found:
        raise ValueError("not a valid recording, refusing to write it: " + "; ".join(found))
    encoding = {name: {"dtype": str} for name, var in ds.variables.items() if var.dtype.kind in "UO"}
    with atomic_path(path, force) as tmp:
        ds.to_netcdf(tmp, engine="netcdf4", format="NETCDF4", encoding=encoding)
    return path


def open_recording(path) -> xr.Dataset:
    """Open a recording fully into memory (the file is closed on return).

    Raises :class:`SimlabError` naming the file when it is missing, is not NetCDF, or is not a
    simlab recording (no ``schema`` attribute starting with "simlab.recording").
    """
    path = Path(path)
    if not path.exists():
        raise SimlabError(f"recording {path} does not exist")
    if path.is_dir():
        raise SimlabError(f"recording {path} is a directory; expected a NetCDF file (.nc)")
    try:
        ds = xr.open_dataset(path, engine="netcdf4")
    except Exception as exc:  # netCDF4 raises OSError, ValueError, ... for non-NetCDF input
        raise SimlabError(f"{path} is not a NetCDF file readable by simlab ({exc})") from None
    try:
        schema = str(ds.attrs.get("schema", ""))
        if not schema.startswith("simlab.recording"):
            raise SimlabError(
                f"{path} is not a simlab recording: expected a global attribute schema "
                f"'simlab.recording/N', got {ds.attrs.get('schema')!r}"
            )
        if "observation" not in ds.data_vars:
            raise SimlabError(f"{path} is not a simlab recording: it has no variable 'observation'")
        ds.load()
    finally:
        ds.close()
    return ds


def combine_recordings(datasets: Sequence[xr.Dataset]) -> xr.Dataset:
    """Concatenate recordings of the same subjects, layers and sessions along ``observable``.

    The typical inputs are one recording per rig of one run. Everything off the observable
    axis must agree (subjects, layers, sessions and their coordinates, and the protocol);
    an observable may appear only once. Raises ValueError otherwise.

    Per-site counts belong to a rig, not to the site: a synapse rig counts synapses, an
    electrophysiology rig units. So when the inputs disagree on ``n_units`` or ``n_recorded``,
    the combined recording keeps them per measure, as coordinates ``n_units_{measure}`` and
    ``n_recorded_{measure}`` on (subject, layer) for every measure present, in place of
    ``n_units`` and ``n_recorded`` (:func:`problems` accepts this form). The ``rig`` attribute
    becomes a YAML list of the inputs' rig settings; ``title`` joins the distinct titles and
    ``history`` the inputs' histories.
    """
    datasets = list(datasets)
    if not datasets:
        raise ValueError("combine_recordings: expected at least one recording, got none")
    shared = _check_combinable(datasets)
    coords = {name: coord.variable for name, coord in shared.items()}
    coords.update(_rig_count_coords(datasets))
    obs_coords = {
        name: ("observable", np.concatenate([ds[name].values.astype(str) for ds in datasets]))
        for name in ("observable",) + OBSERVABLE_COORDS
    }
    data = np.concatenate(
        [ds["observation"].transpose(*DIMS).values.astype(np.float32) for ds in datasets], axis=-1
    )
    return xr.Dataset(
        {"observation": (DIMS, data, dict(datasets[0]["observation"].attrs))},
        coords={**coords, **obs_coords},
        attrs=_combined_attrs(datasets),
    )


def _coords_off_the_observable_axis(ds: xr.Dataset) -> dict:
    """The coordinates the recordings to combine must share (rig counts may differ)."""
    return {
        n: c for n, c in ds.coords.items()
        if "observable" not in c.dims and n not in RIG_COUNTS and not _per_measure_count(n)
    }


def _check_combinable(datasets: list[xr.Dataset]) -> dict:
    """Refuse recordings that do not combine; return the coordinates they share."""
    first = datasets[0]
    for i, ds in enumerate(datasets):
        if "observation" not in ds.data_vars or set(ds["observation"].dims) != set(DIMS):
            raise ValueError(f"recording {i}: expected a variable 'observation' over {DIMS}")
    observables = np.concatenate([ds["observable"].values.astype(str) for ds in datasets])
    names, counts = np.unique(observables, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"observables appear in more than one recording: {names[counts > 1].tolist()}")
    base = _coords_off_the_observable_axis(first)
    for i, ds in enumerate(datasets[1:], start=1):
        for dim in ("subject", "layer", "session"):
            if not np.array_equal(ds[dim].values, first[dim].values):
                raise ValueError(
                    f"recording {i} has {dim} {ds[dim].values.tolist()}, recording 0 has "
                    f"{first[dim].values.tolist()}; only recordings of the same {dim}s combine"
                )
        other = _coords_off_the_observable_axis(ds)
        if set(other) != set(base):
            raise ValueError(
                f"recording {i} has coordinates {sorted(other)}, recording 0 has {sorted(base)}"
            )
        for name, coord in base.items():
            if not _same(coord.values, other[name].values):
                raise ValueError(f"recording {i} disagrees with recording 0 on coordinate {name!r}")
        if ds.attrs.get("protocol") != first.attrs.get("protocol"):
            raise ValueError(f"recording {i} was made under a different protocol than recording 0")
    return base


def _rig_count_coords(datasets: list[xr.Dataset]) -> dict:
    """``n_units`` and ``n_recorded`` where all recordings agree on them, else one pair per
    measure (``n_units_{measure}``, ``n_recorded_{measure}``)."""
    first = datasets[0]
    counts_agree = all(
        name in ds.coords and _same(ds[name].values, first[name].values)
        for ds in datasets for name in RIG_COUNTS
    )
    if counts_agree:
        return {name: first[name].variable for name in RIG_COUNTS}
    coords = {}
    for ds in datasets:
        for name, coord in ds.coords.items():
            if _per_measure_count(name):
                coords[name] = coord.variable
        if all(name in ds.coords for name in RIG_COUNTS):
            for measure in np.unique(ds["measure"].values.astype(str)):
                for name in RIG_COUNTS:
                    coords[f"{name}_{measure}"] = ds[name].variable
    return coords


def rig_attribute(ds: xr.Dataset):
    """A recording's ``rig`` attribute read back, held to the protocol loader's YAML limits
    (a recording is a file people share)."""
    from simlab.protocol.loader import check_yaml_limits

    text = str(ds.attrs.get("rig", ""))
    if not text:
        return None
    check_yaml_limits(text, f"{ds.encoding.get('source', 'recording')} (attribute 'rig')")
    return yaml.safe_load(text)


def _combined_attrs(datasets: list[xr.Dataset]) -> dict[str, str]:
    """The inputs' rig settings as a YAML list, their distinct titles and their histories."""
    rigs: list = []
    for ds in datasets:
        rig = rig_attribute(ds)
        rigs.extend(rig if isinstance(rig, list) else [rig])  # a list: already combined
    titles = list(dict.fromkeys(str(ds.attrs.get("title", "")) for ds in datasets))
    history = "\n".join(str(ds.attrs.get("history", "")) for ds in datasets if ds.attrs.get("history"))
    history = (history + "\n" if history else "") + f"{_utc_now()} simlab combine_recordings ({len(datasets)} recordings)"
    return _global_attrs(
        str(datasets[0].attrs.get("protocol", "")), _yaml(rigs), " + ".join(t for t in titles if t), history
    )


def _per_measure_count(name: str) -> bool:
    return any(name == f"{c}_{m}" for c in RIG_COUNTS for m in MEASURES)


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return False
    if a.dtype.kind == "f" and b.dtype.kind == "f":
        return bool(np.array_equal(a, b, equal_nan=True))
    if a.dtype.kind in "UO" or b.dtype.kind in "UO":
        return bool(np.array_equal(a.astype(str), b.astype(str)))
    return bool(np.array_equal(a, b))


def problems(ds) -> list[str]:
    """Every way ``ds`` (a Dataset, or a path to a NetCDF file) breaks the contract; [] if none.

    The same checks as ../shared/tools/check_recording.py, written independently, plus the
    attribute-type and MultiIndex rules. A combined recording may hold ``n_units_{measure}`` /
    ``n_recorded_{measure}`` for every measure present in place of ``n_units`` / ``n_recorded``
    (see :func:`combine_recordings`).
    """
    if not isinstance(ds, xr.Dataset):
        try:
            with xr.open_dataset(ds, engine="netcdf4") as opened:
                return problems(opened.load())
        except Exception as exc:
            return [f"cannot open {ds}: {exc}"]
    if "observation" not in ds.data_vars:
        return ["no data variable 'observation'"]
    return [
        *_observation_problems(ds["observation"]),
        *_coordinate_problems(ds),
        *_label_problems(ds),
        *_observable_name_problems(ds),
        *_attribute_problems(ds),
    ]


def _observation_problems(var: xr.DataArray) -> list[str]:
    out = []
    if set(var.dims) != set(DIMS) or len(var.dims) != len(DIMS):
        out.append(f"observation dims {var.dims}, expected {DIMS}")
    if var.dtype != np.float32:
        out.append(f"observation dtype {var.dtype}, expected float32")
    for key in ("long_name", "units"):
        if key not in var.attrs:
            out.append(f"observation lacks attribute {key!r}")
    if np.isinf(var.values).any():
        out.append("observation holds inf; statistics that are not finite are stored as NaN")
    return out


_WANTED_COORDS = {
    ("subject",): SUBJECT_COORDS,
    ("subject", "layer"): LAYER_COORDS,
    ("session",): SESSION_COORDS,
    ("observable",): OBSERVABLE_COORDS,
}
"""The contract's coordinates by the dims they may lie on."""


def _coordinate_problems(ds: xr.Dataset) -> list[str]:
    """Every required coordinate present, on the dims it belongs to (a rig count may be one
    per measure, as in a combined recording)."""
    out = []
    measures = set(np.unique(ds["measure"].values.astype(str))) if "measure" in ds.coords else set()
    for where, names in _WANTED_COORDS.items():
        for name in names:
            per_measure = [f"{name}_{m}" for m in sorted(measures)] if name in RIG_COUNTS else []
            if name in ds.coords:
                present = [name]
            elif per_measure and all(p in ds.coords for p in per_measure):
                present = per_measure  # a combined recording: one count per rig (measure)
            else:
                out.append(f"missing coordinate {name} (on {'+'.join(where)})")
                continue
            for found in present:
                dims = ds.coords[found].dims
                if not dims or not set(dims) <= set(where):
                    out.append(f"coordinate {found} has dims {dims}, expected {'+'.join(where)}")
    return out


def _label_problems(ds: xr.Dataset) -> list[str]:
    """Label coordinates hold only the values the contract allows."""
    out = []
    if "status" in ds.coords:
        bad = set(np.unique(ds["status"].values.astype(str))) - set(STATUSES)
        if bad:
            out.append(f"status values {sorted(bad)} not in ok/diverged")
    if "depth" in ds.coords:
        bad = set(np.unique(ds["depth"].values.astype(str))) - set(DEPTHS) - {""}
        if bad:
            out.append(f"depth values {sorted(bad)} not in early/middle/deep")
    allowed = {
        "measure": set(MEASURES),
        "function": set(FUNCTIONS),
        "statistic": set(STATISTICS) | {ACTIVITY_CHANGE_STATISTIC},
    }
    for name, values in allowed.items():
        if name in ds.coords:
            bad = set(np.unique(ds[name].values.astype(str))) - values
            if bad:
                out.append(f"{name} values {sorted(bad)} not allowed")
    return out


def _observable_name_problems(ds: xr.Dataset) -> list[str]:
    """Observables are named after their labels (the first misnamed one is reported), once each."""
    if "observable" not in ds.coords or not set(OBSERVABLE_COORDS) <= set(ds.coords):
        return []
    out = []
    for o, m, f, s in zip(*(ds[n].values.astype(str) for n in ("observable",) + OBSERVABLE_COORDS)):
        expect = _observable_name(m, f, s)
        if o != expect:
            out.append(f"observable {o} should be named {expect}")
            break
    names = ds["observable"].values.astype(str)
    if len(set(names)) != len(names):
        out.append("observable names are not unique")
    return out


def _attribute_problems(ds: xr.Dataset) -> list[str]:
    """The global attributes, attribute values NetCDF can hold, and no MultiIndex."""
    out = []
    for key in ATTRS:
        if key not in ds.attrs:
            out.append(f"missing global attribute {key}")
    schema = str(ds.attrs.get("schema", ""))
    if schema.split("/")[0] != "simlab.recording":
        out.append(f"schema attribute {ds.attrs.get('schema')!r}, expected simlab.recording/N")
    if ds.attrs.get("Conventions", CONVENTIONS) != CONVENTIONS:
        out.append(f"Conventions {ds.attrs.get('Conventions')!r}, expected {CONVENTIONS!r}")
    for owner, attrs in [("global", ds.attrs)] + [(n, v.attrs) for n, v in ds.variables.items()]:
        for key, value in attrs.items():
            if value is None or isinstance(value, (bool, np.bool_, dict, Mapping)):
                out.append(f"{owner} attribute {key} is {type(value).__name__}; NetCDF cannot hold it")
    for name, index in ds.indexes.items():
        if isinstance(index, pd.MultiIndex):
            out.append(f"index {name} is a MultiIndex; the contract never uses one")
    return out
