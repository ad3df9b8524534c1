"""simlab: a virtual neuroscience laboratory for identifying learning rules.

The flow of data follows the package layout: ``protocol`` (validate a YAML file and plan the
cohort) -> ``subjects`` and ``rules`` (what is trained and how) -> ``training`` (populations as
compiled programs, snapshots) -> ``recording`` (rigs turn snapshots into NetCDF recordings) ->
``analysis`` (identify the learning rule).
"""

from simlab._version import __version__

# registered extensions: every built-in is registered by the module that implements it
from simlab.analysis import classifiers as _classifiers  # noqa: E402,F401
from simlab.analysis import identify as _identify  # noqa: E402,F401
from simlab.analysis import generalization as _generalization  # noqa: E402,F401
from simlab.analysis import trajectory as _trajectory  # noqa: E402,F401
from simlab.analysis import robustness as _robustness  # noqa: E402,F401
from simlab.analysis import confound as _confound  # noqa: E402,F401
