"""Learning rules, one function per rule (:mod:`simlab.rules.rules` has the registry API).

Importing the package registers simlab's own rules, family by family, in a fixed order (the
order in which the schema lists them).
"""

from simlab.rules import backprop, feedback, estimates  # noqa: F401  (each registers its rules)
from simlab.rules.rules import LearningRule, register_rule  # noqa: E402

__all__ = ["LearningRule", "register_rule"]
