"""Protocols: the YAML file a user writes, its schema and loader, and the cohort plan."""

from simlab.protocol.cohort import CohortPlan, Population, Subject, describe, plan_cohort
from simlab.protocol.loader import Problem, ProtocolError, load_protocol, parse_protocol
from simlab.specs.protocol import Cohort, Protocol, Recording, Training

__all__ = [
    "Cohort",
    "CohortPlan",
    "Population",
    "Problem",
    "Protocol",
    "ProtocolError",
    "Recording",
    "Subject",
    "Training",
    "describe",
    "load_protocol",
    "parse_protocol",
    "plan_cohort",
]
