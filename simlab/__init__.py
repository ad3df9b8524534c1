"""simlab: a virtual neuroscience laboratory for identifying learning rules.

The flow of data follows the package layout: ``protocol`` (validate a YAML file and plan the
cohort) -> ``subjects`` and ``rules`` (what is trained and how) -> ``training`` (populations as
compiled programs, snapshots) -> ``recording`` (rigs turn snapshots into NetCDF recordings) ->
``analysis`` (identify the learning rule).
"""

from simlab._version import __version__

# registered extensions: every built-in is registered by the module that implements it
from simlab.analysis import classifiers as _classifiers  # noqa: E402,F401
from simlab.subjects import architectures as _architectures  # noqa: E402,F401
