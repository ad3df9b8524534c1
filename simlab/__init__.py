"""simlab: a virtual neuroscience laboratory for identifying learning rules.

The flow of data follows the package layout: ``protocol`` (validate a YAML file and plan the
cohort) -> ``subjects`` and ``rules`` (what is trained and how) -> ``training`` (populations as
compiled programs, snapshots) -> ``recording`` (rigs turn snapshots into NetCDF recordings) ->
``analysis`` (identify the learning rule).
"""

__version__ = "0.1.0"
