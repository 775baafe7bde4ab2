"""Red-team attacks on "reviewed = signed" (issue 11, parts 1-3): the content-bound
reviewed digest, what the reviewer sees, and .sops.yaml as planned intent.

Each test is written as the attacker's pull request, then what CI runs. Each asserts
the secure behaviour: it fails while the attack works.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyrage
import pytest

pytest.register_assert_rewrite("seclib")  # before importing it: its asserts explain themselves
from seclib import API, T1, T_WEB, assert_refused, edit_spec  # noqa: E402

pytest_plugins = ["seclib"]  # the forge, template and local fixtures


def _spec(edit):
    def change(a: Path) -> None:
        (a / "pki.yaml").write_text(edit((a / "pki.yaml").read_text()))
    return change


def _add_api(a: Path) -> None:
    (a / "pki.yaml").write_text(edit_spec((a / "pki.yaml").read_text(), add=API))


def _services_ca(extra: str):
    """services-ca gains settings (lines under it, indented by four)."""
    return _spec(lambda t: edit_spec(t, replace=(("    path_length: 0\n", "    path_length: 0\n" + extra),)))


def _reviewed_pr(forge, branch: str, change, after=None, now: str = T1) -> str:
    """A pull request: its plan is reviewed (the digest taken), then ``after`` (if any)
    is pushed on top of it, and the pull request is merged. Returns the reviewed digest."""
    a = forge.branch(branch, change)
    p = forge.pkic("plan", "--json", "--now", now, cwd=a)
    assert p.returncode == 0, p.stderr
    reviewed = json.loads(p.stdout)["reviewed_digest"]
    if after is not None:
        after(a)
        forge.git(a, "add", "-A")
        forge.git(a, "commit", "-q", "-m", f"{branch}: one more thing")
        forge.git(a, "push", "-q", "origin", branch)
    forge.merge(branch)
    return reviewed


# --------------------------------------------------------------------------- 1. what the digest leaves out
#
# An authority's publication settings are not part of the effective spec (they are
# CaSettings), so they are in neither the reviewed digest nor needs_review. Raising
# them makes pkic sign, at once (the refresh window is half the lifetime), OCSP
# responses "good" for ten years (replayable long after a revocation), CRLs whose
# nextUpdate is ten years away (a replayed old CRL hides every later revocation), and
# a delegated OCSP-signing certificate of the new lifetime.

LONG_LIVED = {
    "ocsp_lifetime": "    ocsp_lifetime: 3650d\n",
    "crl_lifetime": "    crl_lifetime: 3650d\n",
    "ocsp_responder_lifetime": "    ocsp_responder_lifetime: 1000d\n",
}


@pytest.mark.parametrize("setting", sorted(LONG_LIVED))
def test_a_publication_lifetime_raised_after_review_makes_the_digest_stale(forge, setting):
    reviewed = _reviewed_pr(forge, "api", _add_api, _services_ca(LONG_LIVED[setting]))
    run = forge.ci(T1, plan=False, args=("--reviewed", reviewed))
    assert_refused(run, "not the reviewed one")


@pytest.mark.parametrize("setting", sorted(LONG_LIVED))
def test_a_publication_lifetime_raised_is_not_time_driven_work(forge, setting):
    """Merged with no reviewed plan (or a reviewed plan that showed nothing spec-driven):
    the scheduled `--reviewed none` job must not sign ten-year OCSP responses or CRLs."""
    forge.pull_request("long-lived", _services_ca(LONG_LIVED[setting]))
    body = json.loads(forge.pkic("plan", "--json", "--now", T1, cwd=forge.clone("view")).stdout)
    run = forge.ci(T1, plan=False, args=("--reviewed", "none"))
    assert_refused(run, "no reviewed plan")
    assert body["needs_review"], "a changed publication lifetime is spec-driven"
