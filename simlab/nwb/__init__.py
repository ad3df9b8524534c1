"""NWB (Neurodata Without Borders) in and out: simulated rigs exported as NWB files, and
experimental NWB files imported as simlab recordings.

pynwb is an optional dependency (``pip install 'simlab[nwb]'``): it is imported only when a
function here is called, so ``import simlab`` works without it. The encoding is described in
docs/nwb.md.
"""

from __future__ import annotations

from simlab.errors import SimlabError

INSTALL = "pip install 'simlab[nwb]'"


def require_pynwb():
    """pynwb, or a SimlabError that says how to install it."""
    try:
        import pynwb
    except ImportError:
        raise SimlabError(f"NWB files need pynwb, which is not installed: {INSTALL}") from None
    return pynwb


def __getattr__(name):  # the two entry points, without importing pynwb on `import simlab.nwb`
    if name == "export_recording":
        from simlab.nwb.export import export_recording

        return export_recording
    if name == "import_files":
        from simlab.nwb.importer import import_files

        return import_files
    raise AttributeError(name)
