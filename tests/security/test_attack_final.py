"""Red-team pass 3 (attack-final): what is left of "reviewed = signed" in the newest code.

Each test is written as the attacker's pull request, then what CI runs. Each asserts
the secure behaviour: it fails while the attack works.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.register_assert_rewrite("seclib")  # before importing it: its asserts explain themselves
from seclib import T1, T_OCSP, assert_applied, assert_refused, edit_spec, read_state  # noqa: E402
from test_reviewed import _reviewed_pr, _spec  # noqa: E402 - the same pull-request machinery

pytest_plugins = ["seclib"]  # the forge, template and local fixtures


EDGE = ("  edge-ca:\n    issuer: root-ca\n    subject: {CN: Example Edge CA}\n    lifetime: 3y\n    path_length: 0\n"
        "    name_constraints: {permitted_dns: [example.com]}\n")
EDGE_LEAF = "  edge:\n    issuer: edge-ca\n    dns: [edge.example.com]\n"


def _add_edge(a: Path) -> None:
    text = (a / "pki.yaml").read_text()
    text = text.replace("\ncertificates:\n", "\n" + EDGE + "\ncertificates:\n", 1)
    (a / "pki.yaml").write_text(edit_spec(text, add=EDGE_LEAF))


# --------------------------------------------------------------------------- 1. settings of an authority added later
#
# The state's lifecycle settings are written only by a `settings` op, and apply emits
# one only when settings_diff() found a change. An authority added by a (reviewed) pull
# request changes no recorded setting: settings_diff skips it ("a new entry is
# spec-driven anyway", `if name in was`), so the op is never written and the state never
# records that authority's settings. From then on settings_diff skips it forever: a later
# pull request raising its ocsp_lifetime to ten years plans no setting change, needs no
# review, and the scheduled `--reviewed none` job signs ten-year "good" OCSP responses.


@pytest.mark.slow
def test_settings_of_an_authority_added_after_the_first_record_are_recorded_and_bound(forge):
    reviewed = _reviewed_pr(forge, "edge", _add_edge)
    assert_applied(forge.ci(T1, plan=False, args=("--reviewed", reviewed)))
    recorded = (read_state(forge.main).get("settings") or {}).get("authorities") or {}
    # the raise, merged with a plan that showed nothing spec-driven
    forge.pull_request("long-lived", _spec(lambda t: t.replace(
        "    subject: {CN: Example Edge CA}\n", "    subject: {CN: Example Edge CA}\n    ocsp_lifetime: 3650d\n", 1)))
    body = json.loads(forge.pkic("plan", "--json", "--now", T_OCSP, cwd=forge.clone("view")).stdout)
    run = forge.ci(T_OCSP, plan=False, args=("--reviewed", "none"))
    assert "edge-ca" in recorded, "the state never recorded edge-ca's lifecycle settings"
    assert any("edge-ca: ocsp_lifetime" in c for c in body["settings_changes"]), body["settings_changes"]
    assert body["needs_review"], "a ten-year OCSP lifetime is spec-driven"
    assert_refused(run, "no reviewed plan")


def _rename_services_ca(a: Path) -> None:
    text = (a / "pki.yaml").read_text().replace("  services-ca:\n", "  svc-ca:\n", 1).replace("issuer: services-ca", "issuer: svc-ca")
    (a / "pki.yaml").write_text(text.rstrip("\n") + "\n\nmoved:\n  - {from: services-ca, to: svc-ca}\n")


@pytest.mark.slow
def test_settings_of_a_moved_authority_stay_bound_after_the_move(forge):
    """The same gap through `moved:`: the state's settings stay under the old name, and
    settings_diff skips the new one (`if name in was`) from then on."""
    reviewed = _reviewed_pr(forge, "rename", _rename_services_ca)
    assert_applied(forge.ci(T1, plan=False, args=("--reviewed", reviewed)))
    forge.pull_request("long-lived", _spec(lambda t: t.replace(
        "    subject: {CN: Example Services CA}\n", "    subject: {CN: Example Services CA}\n    ocsp_lifetime: 3650d\n", 1)))
    body = json.loads(forge.pkic("plan", "--json", "--now", T_OCSP, cwd=forge.clone("view")).stdout)
    run = forge.ci(T_OCSP, plan=False, args=("--reviewed", "none"))
    assert any("svc-ca: ocsp_lifetime" in c for c in body["settings_changes"]), body["settings_changes"]
    assert body["needs_review"], "a ten-year OCSP lifetime is spec-driven"
    assert_refused(run, "no reviewed plan")
