"""simlab: a virtual neuroscience laboratory for identifying learning rules.

    import simlab
    run = simlab.run("protocols/quickstart.yaml")                      # train, record, analyze
    ephys = simlab.record(run, "electrophysiology", units=20, noise=0.5)
    print(simlab.summary(simlab.identify(ephys)))

The flow of data follows the package layout: ``specs`` (what a protocol may say) ->
``protocol`` (validate a YAML file and plan the cohort) -> ``subjects`` and ``rules`` (what is
trained and how) -> ``training`` (populations as compiled programs, snapshots) ->
``recording`` (rigs turn snapshots into NetCDF recordings) -> ``analysis`` (identify the
learning rule). docs/python-api.md describes every function exported here.
"""

from simlab._version import __version__
from simlab.api import (
    Run,
    combine,
    confound,
    generalize,
    identify,
    importance,
    load_protocol,
    open_recording,
    open_run,
    plan,
    record,
    robustness,
    run,
    save,
    summary,
    trajectory,
    validate,
)
from simlab.analysis.analyses import register_analysis
from simlab.errors import SimlabError
from simlab.protocol import Protocol, ProtocolError
from simlab.recording.rigs import register_rig
from simlab.rules.rules import register_rule
from simlab.subjects.architectures import register_architecture

# Every built-in extension is registered by the module that implements it; importing the
# stages here registers them before any protocol is validated (importing any simlab module
# runs this file first).
from simlab import analysis as _analysis  # noqa: E402,F401  isort: skip
from simlab import rules as _rules  # noqa: E402,F401  isort: skip
from simlab.recording import rigs as _rigs  # noqa: E402,F401  isort: skip
from simlab.subjects import architectures as _architectures  # noqa: E402,F401  isort: skip

__all__ = [
    "Protocol",
    "ProtocolError",
    "Run",
    "SimlabError",
    "__version__",
    "combine",
    "confound",
    "generalize",
    "identify",
    "importance",
    "load_protocol",
    "open_recording",
    "open_run",
    "plan",
    "record",
    "register_analysis",
    "register_architecture",
    "register_rig",
    "register_rule",
    "robustness",
    "run",
    "save",
    "summary",
    "trajectory",
    "validate",
]
