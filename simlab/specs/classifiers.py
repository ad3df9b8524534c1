"""Classifiers as a protocol or the command line names them, checked before anything is fitted.

A classifier entry is a registered name (``linear_svm``, ``random_forest``, ``conv1d``: see
:mod:`simlab.analysis.classifiers`), an sklearn alias (``logistic_regression``, ``knn``, ...)
or an import path (``sklearn.ensemble.ExtraTreesClassifier``), or a mapping ``{name, params,
grid, label}``. A registered classifier's entry in :data:`simlab.registry.CLASSIFIERS` has
``estimator`` (the class whose parameters an entry may set) and ``extra_params`` (settings of
its pipeline that are not the estimator's, such as the linear SVM's ``pca``).

Importing a module runs its code, and a protocol is a file people email each other, so an
import path outside :data:`TRUSTED_PACKAGES` (sklearn) is refused where settings are
validated unless the user consents: ``--allow-imports`` on the command line,
``allow_imports=True`` in the Python API, or a ``with allowing_imports():`` block
(docs/trust.md). Once validated, a setting's classifiers resolve anywhere (joblib workers
included) without asking again.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Mapping

from simlab.errors import SimlabError
from simlab.registry import CLASSIFIERS

__all__ = [
    "SKLEARN_ALIASES",
    "TRUSTED_PACKAGES",
    "ClassifierChoice",
    "allowing_imports",
    "check_import_consent",
    "classifier_label",
    "estimator_class",
    "imports_allowed",
    "parse_classifier",
]

TRUSTED_PACKAGES = ("sklearn",)
"""Packages whose classes a protocol may name by import path without the user's consent."""

_IMPORTS_ALLOWED: ContextVar[bool] = ContextVar("simlab_imports_allowed", default=False)
_IMPORT_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+")


def imports_allowed() -> bool:
    """Whether the user has consented to importing classifiers from any module."""
    return _IMPORTS_ALLOWED.get()


@contextmanager
def allowing_imports(allowed: bool = True) -> Iterator[None]:
    """Within the block, settings may name classifiers by any import path: the user's consent
    (importing a module runs its code; docs/trust.md).

    Parameters
    ----------
    allowed : bool
        Consent (True); False adds none and takes none away, so an inner call keeps an outer
        consent.

    Returns
    -------
    A context manager.

    Examples
    --------
    >>> with simlab.allowing_imports():                 # doctest: +SKIP
    ...     simlab.generalize("runs/mine")              # its protocol names mypackage.MyClassifier
    """
    token = _IMPORTS_ALLOWED.set(bool(allowed) or _IMPORTS_ALLOWED.get())
    try:
        yield
    finally:
        _IMPORTS_ALLOWED.reset(token)


def _import_path(name: str) -> str | None:
    """The import path a classifier name stands for; None for a registered name."""
    if name in CLASSIFIERS:
        return None
    return SKLEARN_ALIASES.get(name, name)


def check_import_consent(entry) -> None:
    """Refuse a classifier entry naming a module outside :data:`TRUSTED_PACKAGES` unless the
    user consented (:func:`allowing_imports`); a malformed path is refused either way."""
    name = entry.get("name") if isinstance(entry, Mapping) else getattr(entry, "name", entry)
    if not isinstance(name, str) or isinstance(entry, ClassifierChoice):
        return  # not a name (parse_classifier says so), or built by code
    path = _import_path(name)
    if path is None:
        return
    _check_path(path)
    if path.split(".")[0] not in TRUSTED_PACKAGES and not imports_allowed():
        raise SimlabError(
            f"classifier {name!r} names module {path.rpartition('.')[0]!r}, outside "
            f"{', '.join(TRUSTED_PACKAGES)}: importing it runs its code, so simlab imports it only with "
            "--allow-imports (allow_imports=True in Python) for files you trust (docs/trust.md)"
        )


def _check_path(path: str) -> None:
    if not _IMPORT_PATH.fullmatch(path):
        raise SimlabError(
            f"unknown classifier {path!r}; expected one of {', '.join(CLASSIFIERS)}, an alias "
            f"({', '.join(SKLEARN_ALIASES)}) or an import path such as "
            "sklearn.ensemble.ExtraTreesClassifier (dotted Python names)"
        )

SKLEARN_ALIASES = {
    "logistic_regression": "sklearn.linear_model.LogisticRegression",
    "knn": "sklearn.neighbors.KNeighborsClassifier",
    "extra_trees": "sklearn.ensemble.ExtraTreesClassifier",
    "gradient_boosting": "sklearn.ensemble.HistGradientBoostingClassifier",
    "rbf_svm": "sklearn.svm.SVC",
    "lda": "sklearn.discriminant_analysis.LinearDiscriminantAnalysis",
    "naive_bayes": "sklearn.naive_bayes.GaussianNB",
    "mlp": "sklearn.neural_network.MLPClassifier",
}

@dataclass(frozen=True)
class ClassifierChoice:
    """A classifier as named in a protocol or on the command line."""

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)
    grid: Mapping[str, list] | None = None  # None: the preset's grid (built-ins) or none
    label: str = ""  # the name results use; defaults to ``name``

    @property
    def key(self) -> str:
        return self.label or self.name


def _import_class(path: str):
    _check_path(path)  # '.foo', '../.', 'a..b' are no module names (the import machinery's TypeError)
    module_name, _, attr = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SimlabError(f"classifier {path!r}: cannot import module {module_name!r} ({exc})") from None
    cls = getattr(module, attr, None)
    if cls is None:
        raise SimlabError(f"classifier {path!r}: module {module_name!r} has no {attr!r}")
    if not (isinstance(cls, type) and hasattr(cls, "fit") and hasattr(cls, "predict")):
        raise SimlabError(f"classifier {path!r} is not an estimator class with fit and predict")
    return cls


def estimator_class(name: str):
    """The class behind a classifier name: a registered classifier's estimator (the final
    step of its pipeline), an alias's sklearn class, or the class at an import path (a name
    from data passes :func:`check_import_consent` first: the settings models' validators)."""
    if name in CLASSIFIERS:
        return CLASSIFIERS[name].estimator
    return _import_class(SKLEARN_ALIASES.get(name, name))


def parse_classifier(entry) -> ClassifierChoice:
    """A classifier from a protocol entry: a name, or ``{name, params, grid, label}``.

    Unknown names, unimportable paths and parameters the estimator does not take are refused
    here, with a message that names them, before anything is fitted.
    """
    if isinstance(entry, ClassifierChoice):
        return entry
    if isinstance(entry, str):
        entry = {"name": entry}
    if not isinstance(entry, Mapping):
        raise SimlabError(f"a classifier is a name or a mapping with 'name'; got {entry!r}")
    unknown = set(entry) - {"name", "params", "grid", "label"}
    if unknown:
        raise SimlabError(
            f"classifier entry has unknown key(s) {', '.join(sorted(map(str, unknown)))}; "
            "expected name, params, grid, label"
        )
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise SimlabError(f"classifier entry needs a 'name'; got {dict(entry)!r}")
    params = entry.get("params")
    if params is None:
        params = {}
    if not isinstance(params, Mapping) or not all(isinstance(k, str) for k in params):
        raise SimlabError(f"classifier {name!r}: params must map parameter names to values; got {params!r}")
    params = dict(params)
    grid = entry.get("grid")
    if grid is not None:
        if not isinstance(grid, Mapping) or not all(
            isinstance(v, (list, tuple)) and len(v) > 0 for v in grid.values()
        ):
            raise SimlabError(f"classifier {name!r}: grid must map parameter names to non-empty lists")
        grid = {str(k): list(v) for k, v in grid.items()}
    cls = estimator_class(name)
    try:
        accepted = set(cls().get_params(deep=False))
    except Exception as exc:  # noqa: BLE001 - any failure means it is not a usable estimator
        raise SimlabError(f"classifier {name!r} cannot be built without arguments ({exc})") from None
    extra = set(getattr(CLASSIFIERS.get(name), "extra_params", ()))
    accepted |= extra
    for what, names in (("params", params), ("grid", grid or {})):
        bad = sorted(set(names) - accepted)
        if bad:
            raise SimlabError(
                f"classifier {name!r}: {what} {', '.join(bad)} not accepted; "
                f"its parameters are: {', '.join(sorted(accepted))}"
            )
    _check_values(name, cls, {k: v for k, v in params.items() if k not in extra})
    label = entry.get("label") or ""
    if label and not isinstance(label, str):
        raise SimlabError(f"classifier {name!r}: label must be text; got {label!r}")
    return ClassifierChoice(name=name, params=params, grid=grid, label=label)


def _check_values(name: str, cls, params: Mapping[str, Any]) -> None:
    """Refuse parameter values the estimator would refuse at fit time (sklearn's own
    constraints: ``C: -1`` for an SVM), now, before anything is trained."""
    if not params:
        return
    try:
        estimator = cls(**params)
        if hasattr(estimator, "_parameter_constraints") and hasattr(estimator, "_validate_params"):
            estimator._validate_params()  # sklearn's declared constraints
    except Exception as exc:  # noqa: BLE001 - sklearn raises InvalidParameterError (a ValueError) and TypeError
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SimlabError(f"classifier {name!r}: params {dict(params)!r} refused ({first})") from None


def classifier_label(entry) -> str:
    """The name a classifier has in results: its label, or its name plus any params."""
    choice = parse_classifier(entry)
    if choice.label:
        return choice.label
    if not choice.params:
        return choice.name
    settings = ",".join(f"{k}={v}" for k, v in sorted(choice.params.items()))
    return f"{choice.name}({settings})"
