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
    allowing_imports,
    calibrate,
    combine,
    confound,
    export_nwb,
    fit,
    generalize,
    identify,
    import_nwb,
    importance,
    load_protocol,
    matched_control,
    open_identifier,
    open_recording,
    open_run,
    plan,
    predict,
    record,
    robustness,
    run,
    save,
    summary,
    trajectory,
    transfer_table,
    validate,
)
from simlab.errors import SimlabError
from simlab.protocol import Protocol, ProtocolError

__all__ = [
    "Protocol",
    "ProtocolError",
    "Run",
    "SimlabError",
    "__version__",
    "allowing_imports",
    "calibrate",
    "combine",
    "confound",
    "export_nwb",
    "fit",
    "generalize",
    "identify",
    "import_nwb",
    "importance",
    "load_protocol",
    "matched_control",
    "open_identifier",
    "open_recording",
    "open_run",
    "plan",
    "predict",
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
    "transfer_table",
    "validate",
]

# The registration functions live with what they register (and import JAX or scikit-learn);
# they are imported when first used, so that ``import simlab`` stays light. The built-ins
# themselves are registered when a registry is first read (simlab.registry).
_REGISTER = {
    "register_analysis": "simlab.analysis.analyses",
    "register_architecture": "simlab.subjects.architectures",
    "register_rig": "simlab.recording.rigs",
    "register_rule": "simlab.rules.rules",
}


def __getattr__(name: str):
    if name in _REGISTER:
        import importlib

        return getattr(importlib.import_module(_REGISTER[name]), name)
    raise AttributeError(f"module 'simlab' has no attribute {name!r}")
