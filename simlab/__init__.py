"""simlab: a virtual neuroscience laboratory for identifying learning rules.

The flow of data follows the package layout: ``protocol`` (validate a YAML file and plan the
cohort) -> ``subjects`` and ``rules`` (what is trained and how) -> ``training`` (populations as
compiled programs, snapshots) -> ``recording`` (rigs turn snapshots into NetCDF recordings) ->
``analysis`` (identify the learning rule).
"""

from simlab._version import __version__

# registered extensions: every built-in is registered by the module that implements it
from simlab.analysis import classifiers as _classifiers  # noqa: E402,F401

# rig types (simlab.recording.rigs registers the built-in ones)
from simlab.recording import rigs as _rigs  # noqa: E402,F401
