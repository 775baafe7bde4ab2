"""The plan: what an apply will do and why, decided from the effective spec, the
recorded state and a clock. Pure: no key is read, nothing is signed, no file is touched.

The package's public names; its modules are ``codes`` (the vocabulary), ``model`` (the
plan's data), ``entries``, ``revocation``, ``publications``, ``cleanup``, ``content`` and ``limits``
(the decisions) and ``planner`` (their order).
"""

from compiler.plan.codes import Action, Code, KeyDisposition, PublicationCode, PublicationKind, ReasonCode
from compiler.plan.content import lifecycle_settings, settings_diff
from compiler.plan.entries import spec_reasons
from compiler.plan.limits import LAST_X509_TIME, check_horizon, verifier_caveats
from compiler.plan.model import PLAN_FORMAT_VERSION, Change, Cleanup, Compromise, Plan, Publication, Reason, Reencrypt, Revocation
from compiler.plan.planner import blast_radius, make_plan

__all__ = [
    "LAST_X509_TIME",
    "PLAN_FORMAT_VERSION",
    "Action",
    "Change",
    "Cleanup",
    "Code",
    "Compromise",
    "KeyDisposition",
    "Plan",
    "Publication",
    "PublicationCode",
    "PublicationKind",
    "Reason",
    "ReasonCode",
    "Reencrypt",
    "Revocation",
    "blast_radius",
    "check_horizon",
    "lifecycle_settings",
    "make_plan",
    "settings_diff",
    "spec_reasons",
    "verifier_caveats",
]
