"""Analyses of recordings: identification and the analyses of a run, each a module that
registers itself (:func:`simlab.analysis.analyses.register_analysis`).

Importing the package registers simlab's own classifiers and analyses.
"""

# in this order: the order in which protocols and error messages list the analyses
from simlab.analysis import classifiers, controls, generalization, trajectory, robustness, confound  # noqa: F401  isort: skip
