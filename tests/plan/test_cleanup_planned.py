"""Everything apply does is in the plan (issue 14): the published files an apply renames
or removes while signing nothing (``Plan.cleanup``) are listed by the plan, as JSON and
as text, before apply touches them; apply does them only when its plan lists them; once
applied, the next plan is empty.

* a renamed certificate's response follows it (``moved_response_renamed``);
* a replaced certificate's response keeps its serial's name (``replaced_response_renamed``);
* an expired certificate's response is removed (``expired_response_removed``);
* an authority removed from pki.yaml takes its CRL files along (``crl_of_removed_authority``).

Cleanup counts in ``Plan.digest`` (a saved plan without it is stale) but not in the
reviewed digest: like CRL and OCSP re-signing it is time-driven, or follows from a change
the reviewed digest already binds.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from conftest import NOW, write_spec
from helpers import cleanup_only_plans, state
from rich.console import Console

from compiler.cli.render import plan_text

NO_CHANGES = "No changes."


def spec_text(repo: Path) -> str:
    return (repo / "pki.yaml").read_text()


def plan_json(pkic, repo: Path, now: str = NOW) -> dict:
    return json.loads(pkic.ok("plan", "--json", "--now", now, cwd=repo).stdout)


def text_of(pkic, repo: Path, now: str = NOW) -> str:
    return pkic.ok("plan", "--now", now, cwd=repo).stdout


def items(plan: dict) -> list[tuple[str, str, str, str | None, list[str]]]:
    """The plan's cleanup as (kind, name, file, to, reason codes)."""
    return [(c["kind"], c["name"], c["file"], c["to"], [r["code"] for r in c["reasons"]]) for c in plan["cleanup"]]


def later(days: int, base: str = NOW) -> str:
    return (datetime.fromisoformat(base.replace("Z", "+00:00")) + timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.slow
def test_a_moved_certificates_response_is_renamed_as_planned(applied, pkic):
    write_spec(applied, spec_text(applied).replace("  web:\n", "  website:\n") + "moved:\n  - {from: web, to: website}\n")
    plan = plan_json(pkic, applied)
    assert items(plan) == [("ocsp", "website", "out/ocsp/web.der", "out/ocsp/website.der", ["moved_response_renamed"])]
    text = text_of(pkic, applied)
    assert "cleanup  rename out/ocsp/web.der -> out/ocsp/website.der" in text
    assert "1 file(s) to clean up (1 to rename)" in text
    assert (applied / "out/ocsp/web.der").exists() and not (applied / "out/ocsp/website.der").exists()

    pkic.ok("apply", "--yes", "--now", NOW, cwd=applied)
    assert (applied / "out/ocsp/website.der").exists() and not (applied / "out/ocsp/web.der").exists()
    assert state(applied)["certificates"]["website"][0]["ocsp"]["file"] == "out/ocsp/website.der"
    assert NO_CHANGES in text_of(pkic, applied)
    assert plan_json(pkic, applied)["cleanup"] == []


@pytest.mark.slow
def test_a_replaced_certificates_response_keeps_its_serials_name_as_planned(applied, pkic):
    old = state(applied)["certificates"]["web"][0]["serial"]
    write_spec(applied, spec_text(applied).replace("dns: [web.example.com, www.example.com]", "dns: [web.example.com, app.example.com]"))
    plan = plan_json(pkic, applied)
    assert [(c["name"], c["action"]) for c in plan["changes"]] == [("web", "reissue")]
    renamed = f"out/ocsp/web.{old}.der"
    assert items(plan) == [("ocsp", "web", "out/ocsp/web.der", renamed, ["replaced_response_renamed"])]
    assert f"rename out/ocsp/web.der -> {renamed}" in text_of(pkic, applied)

    pkic.ok("apply", "--yes", "--now", NOW, cwd=applied)
    recs = state(applied)["certificates"]["web"]
    assert recs[0]["ocsp"]["file"] == "out/ocsp/web.der" and recs[1]["ocsp"]["file"] == renamed
    assert (applied / renamed).exists() and (applied / "out/ocsp/web.der").exists()
    assert NO_CHANGES in text_of(pkic, applied)


def _expired_payments(pkic, repo: Path) -> str:
    """payments removed (revoked, its response says so), then a time past its notAfter."""
    write_spec(repo, spec_text(repo).split("  payments:\n")[0])
    pkic.ok("apply", "--yes", "--now", NOW, cwd=repo)
    assert NO_CHANGES in text_of(pkic, repo)
    not_after = state(repo)["certificates"]["payments"][0]["not_after"]
    return later(1, not_after)


@pytest.mark.slow
def test_an_expired_certificates_response_is_removed_as_planned(applied, pkic):
    when = _expired_payments(pkic, applied)
    plan = plan_json(pkic, applied, when)
    gone = ("ocsp", "payments", "out/ocsp/payments.der", None, ["expired_response_removed"])
    assert gone in items(plan)
    assert "cleanup  remove out/ocsp/payments.der" in text_of(pkic, applied, when)
    assert (applied / "out/ocsp/payments.der").exists()

    pkic.ok("apply", "--yes", "--now", when, cwd=applied)
    assert not (applied / "out/ocsp/payments.der").exists()
    rec = state(applied)["certificates"]["payments"][0]
    assert rec["status"] == "revoked" and rec["ocsp"]["file"] is None  # the state keeps the record
    assert NO_CHANGES in text_of(pkic, applied, when)


EXTRA_CA = """  extra-ca:
    issuer: root-ca
    subject: {CN: Example Extra CA}
    lifetime: 2y
"""


@pytest.mark.slow
def test_the_crl_of_a_removed_authority_is_removed_as_planned(applied, pkic):
    with_extra = spec_text(applied).replace("\ncertificates:\n", "\n" + EXTRA_CA + "\ncertificates:\n", 1)
    write_spec(applied, with_extra)
    pkic.ok("apply", "--yes", "--now", NOW, cwd=applied)
    crl, crl_pem = applied / "out/crl/extra-ca.crl", applied / "out/crl/extra-ca.crl.pem"
    assert crl.exists() and crl_pem.exists() and b"BEGIN X509 CRL" in (applied / "out/trust/crls.pem").read_bytes()
    bundle_before = (applied / "out/trust/crls.pem").read_bytes()

    write_spec(applied, with_extra.replace(EXTRA_CA, ""))
    plan = plan_json(pkic, applied)
    assert [(c["name"], c["action"]) for c in plan["changes"]] == [("extra-ca", "revoke")]
    assert items(plan) == [
        ("crl", "extra-ca", "out/crl/extra-ca.crl", None, ["crl_of_removed_authority"]),
        ("crl", "extra-ca", "out/crl/extra-ca.crl.pem", None, ["crl_of_removed_authority"]),
    ]
    text = text_of(pkic, applied)
    assert "cleanup  remove out/crl/extra-ca.crl " in text and "cleanup  remove out/crl/extra-ca.crl.pem" in text
    assert "2 file(s) to clean up (2 to remove)" in text

    pkic.ok("apply", "--yes", "--now", NOW, cwd=applied)
    assert not crl.exists() and not crl_pem.exists()
    assert (applied / "out/trust/crls.pem").read_bytes() != bundle_before  # without extra-ca's CRL
    info = state(applied)["crls"]["extra-ca"]
    assert info["removed_at"] == NOW and info["number"] >= 1  # the number is kept
    assert NO_CHANGES in text_of(pkic, applied)
    pkic.ok("verify", "--now", NOW, cwd=applied)


# --------------------------------------------------------------------------- not in the plan: not done

PLAN_WITHOUT_CLEANUP = """
import sys
from pathlib import Path
from compiler import spec as spec_mod
from compiler.apply.command import reviewed_inputs
from compiler.plan import make_plan
from compiler.state import load_state, parse_ts

repo = Path(".")
spec = spec_mod.load(repo, caches=None)
reviewed_inputs(repo, spec)
state = load_state(repo)
now = parse_ts(sys.argv[1])
plan = make_plan(spec, state, now)
assert plan.cleanup, "the plan should list a cleanup"
full = (plan.digest, plan.reviewed_digest)
plan.cleanup = []
if sys.argv[2] == "digest":
    print(json.dumps({"full": full[0], "without": plan.digest, "reviewed": [full[1], plan.reviewed_digest]}))
else:
    from compiler.apply.run import execute
    from compiler.keys.keystore import Keystore
    execute(repo, plan, spec, state, Keystore(repo), now)
"""


def _without_cleanup(pkic, repo: Path, when: str, what: str) -> subprocess.CompletedProcess:
    """The plan pkic makes now, with its cleanup taken out: its digests, or applied."""
    proc = subprocess.run(
        [sys.executable, "-c", "import json\n" + PLAN_WITHOUT_CLEANUP, when, what], cwd=repo, env=pkic.env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@pytest.mark.slow
def test_a_saved_plan_without_the_cleanup_is_stale_and_does_nothing(applied, pkic):
    when = _expired_payments(pkic, applied)
    digests = json.loads(_without_cleanup(pkic, applied, when, "digest").stdout)
    assert digests["full"] != digests["without"]
    reviewed, reviewed_without = digests["reviewed"]
    assert reviewed == reviewed_without  # cleanup is not what a reviewer approves (see the module docstring)

    saved = plan_json(pkic, applied, when)
    saved["digest"] = digests["without"]  # as a pkic that did not plan the cleanup saved it
    saved["cleanup"] = []
    (applied / "saved.json").write_text(json.dumps(saved))
    before = (applied / "out/ocsp/payments.der").read_bytes()
    proc = pkic("apply", "saved.json", "--yes", "--now", when, cwd=applied)
    assert proc.returncode == 1 and "stale plan" in proc.stdout + proc.stderr
    assert (applied / "out/ocsp/payments.der").read_bytes() == before


@pytest.mark.slow
def test_apply_does_no_cleanup_its_plan_does_not_list(applied, pkic):
    write_spec(applied, spec_text(applied).replace("  web:\n", "  website:\n") + "moved:\n  - {from: web, to: website}\n")
    _without_cleanup(pkic, applied, NOW, "apply")
    assert (applied / "out/certs/website.pem").exists()  # the move itself was in the plan
    assert (applied / "out/ocsp/web.der").exists() and not (applied / "out/ocsp/website.der").exists()
    assert state(applied)["certificates"]["website"][0]["ocsp"]["file"] == "out/ocsp/web.der"


# --------------------------------------------------------------------------- the plan's renderings

_only_cleanup = cleanup_only_plans


def test_a_plan_with_only_cleanup_is_not_no_changes_and_needs_no_review():
    bare, plan = _only_cleanup()
    assert bare.empty and not plan.empty
    assert not plan.needs_review
    assert plan.reviewed_digest == bare.reviewed_digest and plan.digest != bare.digest
    console = Console(width=200, record=True, color_system=None)
    console.print(plan_text(plan, None))
    text = console.export_text()
    assert NO_CHANGES not in text
    assert "cleanup  remove out/ocsp/old.der  (the certificate expired at 2026-11-01T00:00:00Z)" in text
    assert "; 1 file(s) to clean up (1 to remove)." in text
    assert plan.to_json()["cleanup"] == [
        {
            "kind": "ocsp",
            "name": "old",
            "reasons": [{"code": "expired_response_removed", "message": "the certificate expired at 2026-11-01T00:00:00Z"}],
            "serial": "0a",
            "file": "out/ocsp/old.der",
            "to": None,
        }
    ]
