"""Red-team review of planned cleanup (plan/cleanup.py, apply/cleanup.py, CrlOp.removed,
OcspOp.moved_from/removed), of the rules given one home (state/revocation.py,
apply/bundle.py chain_names/root_names) and of the newest state checks
(state/store.py _check_names): attacks that got through, each a test that fails until
pkic handles it.

The PKI is `pkic init`'s example: root-ca > services-ca > web, payments. Every attack
here is a forged out/state.json, which only an unsealed repository takes as it stands
(a sealed one refuses any edit of out/ first); the state checks of store.py are meant to
hold there too ("a state whose names, serials or recorded OCSP files do not fit is
refused"; "a damaged state is an error naming the place, never a crash").
"""

from __future__ import annotations

import copy
import json
import resource
import subprocess
import sys

import pytest
from conftest import NOW

pytest.register_assert_rewrite("seclib")  # before importing it: its asserts explain themselves
from seclib import T1, T_WEB, no_crash, read_state, tree_snapshot, write_state  # noqa: E402

pytest_plugins = ["seclib"]  # the forge, template and local fixtures


# --------------------------------------------------------------------------- cleanup


def test_two_records_of_one_name_sharing_an_ocsp_file_let_cleanup_remove_the_live_response(local):
    """Attack (a forged out/state.json): web gets a second, superseded record (another
    serial) that expired yesterday and whose `ocsp.file` is `out/ocsp/web.der`, the file
    of web's current certificate's response.

    What happens: `_check_names` (state/store.py) refuses a file recorded by two
    *names*, but not by two records of the same name. `plan_cleanup` then plans
    "remove out/ocsp/web.der (the certificate expired at ...)", and apply deletes the
    live response of web's unexpired certificate while the state still records it at
    that path. Nothing notices afterwards: the next plan says "No changes", `check`
    says OK (3 OCSP responses checked), `verify` says every certificate verified; web's
    server has nothing to staple until the response is next due.

    Expected: the state is refused (a recorded OCSP file belongs to one record), exit 1,
    no traceback, and out/ is untouched; at least, apply never removes the file the
    current certificate's record names."""
    pk, repo = local
    body = read_state(repo)
    recs = body["certificates"]["web"]
    old = copy.deepcopy(recs[0])
    old.update(serial="abcdef0123456789abcd", status="superseded", not_after="2026-11-28T00:00:00Z", superseded_at=NOW)
    recs.append(old)  # same file as recs[0]: out/ocsp/web.der
    write_state(repo, body)
    live = (repo / "out" / "ocsp" / "web.der").read_bytes()
    plan = pk("plan", "--now", T1, cwd=repo)
    no_crash(plan)
    applied = pk("apply", "--yes", "--now", T1, cwd=repo)
    no_crash(applied)
    assert (repo / "out" / "ocsp" / "web.der").is_file(), (
        "apply removed the response of web's current certificate as an expired one's:\n" + applied.stdout + applied.stderr)
    assert (repo / "out" / "ocsp" / "web.der").read_bytes() == live
    # refused, or the file left to the newest record that names it (a killed apply can
    # leave an older record naming <name>.der after the new response took it: pkic itself
    # wrote such a state, so the plan never removes or renames a file a newer record names)
    assert (plan.returncode == 1 and "out/state.json" in plan.stderr) or "out/ocsp/web.der" not in plan.stdout, plan.stdout + plan.stderr


OVERWRITTEN = "its published response was replaced by a newer certificate's (an interrupted apply)"


def test_an_older_certificate_whose_response_a_newer_one_overwrote_gets_its_own_again(local):
    """The state an apply killed between signing a new certificate's response and
    renaming the old one's could leave (before the plan listed that rename): web's older,
    unexpired certificate records `out/ocsp/web.der`, which holds the newer one's
    response. The plan signs the older one a response of its own, at
    `web.<serial>.der`; web.der keeps the newer one's; verify is clean afterwards."""
    pk, repo = local
    body = read_state(repo)
    recs = body["certificates"]["web"]
    old = copy.deepcopy(recs[0])
    old.update(serial="abcdef0123456789abcd", status="superseded", superseded_at=NOW)
    recs.append(old)  # same file as recs[0], unexpired
    write_state(repo, body)
    live = (repo / "out" / "ocsp" / "web.der").read_bytes()
    plan = pk("plan", "--now", T1, "--json", cwd=repo)
    no_crash(plan)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    body = json.loads(plan.stdout)
    signed = [(p["name"], p["serial"], [r["message"] for r in p["reasons"]]) for p in body["ocsp"]]
    assert signed == [("web", "abcdef0123456789abcd", [OVERWRITTEN])], signed
    assert not body.get("cleanup"), body["cleanup"]  # web.der is the newer one's: not renamed, not removed
    applied = pk("apply", "--yes", "--now", T1, cwd=repo)
    no_crash(applied)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert (repo / "out" / "ocsp" / "web.der").read_bytes() == live
    assert (repo / "out" / "ocsp" / "web.abcdef0123456789abcd.der").is_file()
    after = read_state(repo)["certificates"]["web"]
    assert [r["ocsp"]["file"] for r in after] == ["out/ocsp/web.der", "out/ocsp/web.abcdef0123456789abcd.der"]
    verified = pk("verify", "--now", T1, cwd=repo)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "No changes" in pk("plan", "--now", T1, cwd=repo).stdout


def test_a_serial_twice_in_one_names_records_is_refused_not_a_crash_in_cleanup(local):
    """Attack (a forged out/state.json): web gets a second record with the *same serial*
    as its current one, superseded, expired, its response at
    `out/ocsp/web.<serial>.der` (where pkic puts an older response of that serial).

    What happens: `_check_names` checks each serial is hex but not that a name's serials
    are distinct. The plan lists "remove out/ocsp/web.<serial>.der"; apply's
    `cleanup._response` looks the record up by (name, serial), finds the current one
    (file `out/ocsp/web.der`) and its `assert info.get("file") == item.file` fails:
    "pkic crashed: AssertionError", exit 3, after the apply began (in a longer plan,
    after certificates and CRLs were signed: cleanup removals run last).

    Expected: the state is refused where it is loaded (a serial appears once per name),
    one clear error naming out/state.json, exit 1, no traceback, out/ untouched."""
    pk, repo = local
    body = read_state(repo)
    recs = body["certificates"]["web"]
    old = copy.deepcopy(recs[0])
    old.update(status="superseded", not_after="2026-11-28T00:00:00Z", superseded_at=NOW)
    old["ocsp"]["file"] = f"out/ocsp/web.{old['serial']}.der"
    (repo / old["ocsp"]["file"]).write_bytes((repo / "out" / "ocsp" / "web.der").read_bytes())
    recs.append(old)
    write_state(repo, body)
    before = tree_snapshot(repo)
    applied = pk("apply", "--yes", "--now", T1, cwd=repo)
    no_crash(applied)  # fails today: pkic crashed: AssertionError (apply/cleanup.py _response)
    plan = pk("plan", "--now", T1, cwd=repo)
    no_crash(plan)
    for p in (applied, plan):
        assert p.returncode == 1 and "out/state.json" in p.stderr, p.stdout + p.stderr
    assert tree_snapshot(repo) == before


# --------------------------------------------------------------------------- one rule, one home: bundle.py


def _limited() -> None:
    """The child may not take the machine down: 3 GiB of address space at most."""
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))


@pytest.mark.slow
def test_an_issuer_cycle_in_the_state_does_not_hang_apply_after_signing(local):
    """Attack (a forged out/state.json): services-ca's record names `web` as its issuer
    (`"issuer": "web"`; pki.yaml still says root-ca). Every name is valid, so
    `_check_names` accepts it; the planner compares the record's `spec`, not its
    `issuer`, so the plan is the ordinary one (at T_WEB: renew web and payments).

    What happens: apply signs the renewals, CRLs and OCSP responses, then writes web's
    chain file: `bundle.chain_names` follows `issuer` from record to record until a root
    (issuer None) and never meets one: web -> services-ca -> web -> ... An endless loop
    that appends to a list: the apply hangs, after signing, growing without bound until
    the runner kills it or runs out of memory (here: capped at 3 GiB, then killed after
    60 s). Nothing of what it signed is recorded.

    Expected: the state is refused where it is loaded (an issuer chain that does not end
    at a root), or at least before anything is signed: one clear error, exit 1."""
    pk, repo = local
    body = read_state(repo)
    body["certificates"]["services-ca"][0]["issuer"] = "web"
    write_state(repo, body)
    try:
        p = subprocess.run([sys.executable, "-m", "compiler.cli", "apply", "--yes", "--now", T_WEB], cwd=repo, env=pk.env,
                           capture_output=True, text=True, timeout=60, preexec_fn=_limited)
    except subprocess.TimeoutExpired:
        pytest.fail("apply never finished: bundle.chain_names loops on the state's issuer cycle (after signing)")
    no_crash(p)
    assert p.returncode == 1 and "out/state.json" in p.stderr, p.stdout + p.stderr


def test_a_state_that_makes_an_intermediate_a_root_is_not_a_clean_verify(local):
    """Attack (a forged out/state.json): services-ca's record says `"issuer": null`, and
    out/trust/bundle.pem holds root-ca's certificate followed by services-ca's.

    What happens: `bundle.root_names` takes every active authority record with no issuer
    as a root, whatever pki.yaml says and whatever its certificate is; `verify` checks
    the bundle against exactly that, so it accepts an intermediate (not self-signed,
    issued by root-ca) as a trust anchor: "✓ 4 certificates, chains and CRLs verified";
    `check` says OK; `plan` says "No changes" (it compares a record's `spec`, never its
    `issuer`), and every later apply writes services-ca into the trust bundle. A client
    that trusts out/trust/bundle.pem then trusts services-ca directly: revoking it on
    root-ca's CRL no longer stops anything it signs.

    Expected: verify reports the trust bundle (a root that is not self-signed, or an
    authority pki.yaml gives an issuer), exit 1; or the state is refused."""
    pk, repo = local
    body = read_state(repo)
    body["certificates"]["services-ca"][0]["issuer"] = None
    write_state(repo, body)
    certs = repo / "out" / "certs"
    (repo / "out" / "trust" / "bundle.pem").write_text((certs / "root-ca.pem").read_text() + (certs / "services-ca.pem").read_text())
    v = pk("verify", "--now", T1, cwd=repo)
    no_crash(v)
    assert v.returncode == 1, "verify accepts an intermediate as a root of the trust bundle:\n" + v.stdout + v.stderr


# --------------------------------------------------------------------------- the newest state checks


STATE_DAMAGE = {
    # serials must be a list, but its members are never checked: set() of them in the planner
    "crl-serials-unhashable": lambda b: b["crls"]["services-ca"].__setitem__("serials", [[1]]),
    # a record's ocsp is checked for its file only; its times are parsed by plan, check, verify
    "ocsp-next_update": lambda b: b["certificates"]["web"][0]["ocsp"].__setitem__("next_update", "soon"),
    "ocsp-this_update": lambda b: b["certificates"]["web"][0]["ocsp"].__setitem__("this_update", 7),
    # a record's spec is checked to be a mapping; its fields are compared with pki.yaml's
    "spec-dns": lambda b: b["certificates"]["web"][0]["spec"].__setitem__("dns", 5),
}


@pytest.mark.slow
@pytest.mark.parametrize("damage", list(STATE_DAMAGE.values()), ids=list(STATE_DAMAGE))
def test_a_damaged_field_the_new_checks_miss_is_one_clear_error_not_a_crash(local, damage):
    """Attack: an out/state.json edited by hand, one field of the wrong type that
    `_check_names` does not look at: a CRL's `serials` holding a list, an OCSP record's
    `next_update` or `this_update` that is not a time, a record's `spec.dns` that is not
    a list.

    What happens: `pkic plan`, `apply`, `check` or `verify` end in "pkic crashed:
    TypeError/ValueError" (exit 3): `set(crl["serials"])` in plan/publications.py,
    parsing the OCSP record's times (the planner's refresh point, verify, check), and
    comparing the record's spec with pki.yaml (plan, apply).

    Expected: "the state is damaged" naming out/state.json and the field, exit 1, no
    traceback, for every command; out/ untouched."""
    pk, repo = local
    body = read_state(repo)
    damage(body)
    write_state(repo, body)
    before = tree_snapshot(repo)
    for cmd in (("status",), ("plan", "--now", T_WEB), ("verify", "--now", T1), ("check", "--now", T1), ("apply", "--yes", "--now", T_WEB)):
        p = pk(*cmd, cwd=repo)
        no_crash(p)
    assert tree_snapshot(repo) == before
