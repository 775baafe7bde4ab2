"""Red-team review of the typed records and parsed times (state/records.py TypedDicts,
model/stamp.py Stamp, store.py load_state converting times in place, ops.py
JournalOp.from_json) and of the new cleanup planning (plan/cleanup.py
_responses_renamed looking at every name, plan/publications.py _overwritten
re-signing an older certificate's response): attacks that got through, each a test
that fails until pkic handles it.

The PKI is `pkic init`'s example: root-ca > services-ca > web, payments. The attacks
are a forged out/state.json (only an unsealed repository takes one as it stands) and a
damaged .pkic/journal.jsonl in a repository git does not track (a tracked journal is
refused before it is read). The promises under test: a damaged state is one error
naming the place, exit 1, never a crash; apply touches no file the plan did not list.
"""

from __future__ import annotations

import copy
import hashlib
import json

import pytest
from conftest import NOW

pytest.register_assert_rewrite("seclib")  # before importing it: its asserts explain themselves
from seclib import T1, no_crash, read_state, write_state  # noqa: E402

pytest_plugins = ["seclib"]  # the forge, template and local fixtures

AB = "  web.ab:\n    issuer: services-ca\n    profile: server\n    dns: [ab.example.com]\n"


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _with_web_ab(pk, repo) -> None:
    """A legitimate second certificate named `web.ab` (a valid name: a name may not end
    in '.' and 16 or more hex digits, but 'ab' is two), applied: its response is
    out/ocsp/web.ab.der, the very path pkic gives web's older certificate of serial `ab`."""
    (repo / "pki.yaml").write_text((repo / "pki.yaml").read_text() + AB)
    applied = pk("apply", "--yes", "--now", NOW, cwd=repo)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert (repo / "out" / "ocsp" / "web.ab.der").is_file()


def _old_web(body: dict, serial: str) -> dict:
    """web's current record, copied as an older, superseded, unexpired certificate."""
    old = copy.deepcopy(body["certificates"]["web"][0])
    old.update(serial=serial, status="superseded", superseded_at=NOW)
    body["certificates"]["web"].append(old)
    return old


# --------------------------------------------------------------------------- the new cleanup


def test_overwritten_re_sign_writes_over_another_names_live_response(local):
    """Attack (a forged out/state.json): web gets an older, unexpired record with the
    short serial `ab` whose `ocsp.file` is `out/ocsp/web.der` (web's current file: the
    state of an apply killed before it renamed). A certificate `web.ab` is in pki.yaml
    and applied; its live response is `out/ocsp/web.ab.der`.

    What happens: `_overwritten` (plan/publications.py) plans a fresh response for web's
    serial ab; the plan says only "ocsp 1 response (1 new): web". Apply writes it at
    `layout.ocsp_path(dir, "web", "ab")` = `out/ocsp/web.ab.der`, replacing web.ab's
    live response with one for another certificate (a file the plan never named), and
    records two names at that file: every later plan, status and apply refuses the state
    ("certificates.web.ab records an OCSP response at 'out/ocsp/web.ab.der', which
    certificates.web records too").

    Expected: the state is refused up front (a serial shorter than the 16 hex digits
    that keep `<name>.<serial>` from being a name), or the planner never writes a
    response at a path another record names; web.ab's response is untouched."""
    pk, repo = local
    _with_web_ab(pk, repo)
    body = read_state(repo)
    _old_web(body, "ab")  # same file as web's current record: out/ocsp/web.der
    write_state(repo, body)
    live = _sha(repo / "out" / "ocsp" / "web.ab.der")
    plan = pk("plan", "--now", T1, cwd=repo)
    no_crash(plan)
    applied = pk("apply", "--yes", "--now", T1, cwd=repo)
    no_crash(applied)
    assert _sha(repo / "out" / "ocsp" / "web.ab.der") == live, "web.ab's live response was overwritten:\n" + plan.stdout
    after = pk("plan", "--now", T1, cwd=repo)
    no_crash(after)
    assert after.returncode == 0 or plan.returncode == 1, after.stdout + after.stderr


def test_replaced_response_renamed_onto_another_names_response(local):
    """Attack (a forged out/state.json): web's current record has no response file
    (`ocsp.file: null`); an older, unexpired record of web with the short serial `ab`
    records `out/ocsp/web.der`. `web.ab` is a certificate in pki.yaml, its response at
    `out/ocsp/web.ab.der`. web is neither issued nor moved by the plan.

    What happens: the new all-names pass of `_responses_renamed` (plan/cleanup.py)
    plans "rename out/ocsp/web.der -> out/ocsp/web.ab.der (web was replaced...)", a
    target that is another name's live response. Apply's rename finds the target there
    and silently does nothing (layout.rename), yet journals the record as moved; the new
    response for web's current certificate is then written over `out/ocsp/web.der` (the
    old certificate's response, never renamed). The state now records web@ab at
    web.ab's file: every later plan refuses it ("... which certificates.web records too").

    Expected: refused up front (a state whose rename target is another record's file,
    or a short serial), or no rename to a path another record names; either way apply
    leaves a state pkic can read, and does what the plan listed."""
    pk, repo = local
    _with_web_ab(pk, repo)
    body = read_state(repo)
    _old_web(body, "ab")  # records out/ocsp/web.der
    body["certificates"]["web"][0]["ocsp"]["file"] = None
    write_state(repo, body)
    live = _sha(repo / "out" / "ocsp" / "web.ab.der")
    plan = pk("plan", "--now", T1, cwd=repo)
    no_crash(plan)
    if plan.returncode == 1:
        assert "out/state.json" in plan.stderr, plan.stderr
        return
    assert "-> out/ocsp/web.ab.der" not in plan.stdout, "plan renames onto web.ab's response:\n" + plan.stdout
    applied = pk("apply", "--yes", "--now", T1, cwd=repo)
    no_crash(applied)
    assert _sha(repo / "out" / "ocsp" / "web.ab.der") == live
    after = pk("plan", "--now", T1, cwd=repo)
    assert after.returncode == 0, after.stdout + after.stderr


# --------------------------------------------------------------------------- times the loader lets through


def _refused_or_fine(proc) -> None:
    """One clear error naming the state, or a normal answer: never a crash."""
    no_crash(proc)
    if proc.returncode == 1 or (proc.returncode == 3 and proc.stdout.startswith("PKIC UNKNOWN")):
        assert "out/state.json" in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def test_an_ocsp_record_with_a_null_next_update_crashes_plan_and_check(local):
    """Attack (a forged out/state.json): web's `ocsp.next_update` is null. `_check_names`
    accepts a null this/next update (`info.get(k) is None or stamp(...)`), and
    `cert_record` leaves a non-string as it is.

    What happens: `pkic plan` (publications.ocsp_reasons -> refresh_point:
    `None - timedelta`) and `pkic check` crash with "pkic crashed: TypeError". (As at
    495cffc; the change's "every time the code reads was checked above" does not hold.)

    Expected: the state is refused naming out/state.json (exit 1), or the response is
    treated as missing (re-signed); no crash."""
    pk, repo = local
    body = read_state(repo)
    body["certificates"]["web"][0]["ocsp"]["next_update"] = None
    write_state(repo, body)
    for args in (("plan",), ("check",), ("check", "--json")):
        _refused_or_fine(pk(*args, "--now", T1, cwd=repo))


@pytest.mark.parametrize("how", ["null", "missing"])
def test_an_ocsp_record_without_a_this_update_crashes_check(local, how):
    """Attack (a forged out/state.json): web's `ocsp.this_update` is null, or absent.
    The loader lets both through.

    What happens: `pkic check` (and --json, --format prometheus: what monitoring runs)
    crashes: TypeError (`None` compared with a datetime in check._level) or KeyError
    (`info["this_update"]`). (As at 495cffc.)

    Expected: refused naming out/state.json, or the response reported as damaged; never
    a crash (check's UNKNOWN, exit 3, is acceptable)."""
    pk, repo = local
    body = read_state(repo)
    info = body["certificates"]["web"][0]["ocsp"]
    if how == "null":
        info["this_update"] = None
    else:
        del info["this_update"]
    write_state(repo, body)
    for args in (("check",), ("check", "--json")):
        _refused_or_fine(pk(*args, "--now", T1, cwd=repo))


def test_a_record_without_not_before_crashes_status_check_verify_report(local):
    """Attack (a forged out/state.json): web's record has no `not_before`. The loader
    checks it only when present (`"not_before" in r and not stamp(...)`).

    What happens: `pkic status` (status_rows), `status --json`, `check`, `verify` and
    `report` crash with KeyError: 'not_before'. (As at 495cffc.)

    Expected: not_before required like not_after (refused naming out/state.json), or
    every reader copes; never a crash."""
    pk, repo = local
    body = read_state(repo)
    del body["certificates"]["web"][0]["not_before"]
    write_state(repo, body)
    for args in (("status",), ("status", "--json"), ("check",), ("verify",), ("report", "--out", str(repo.parent / "r.html"))):
        _refused_or_fine(pk(*args, "--now", T1, cwd=repo))


@pytest.mark.parametrize("value", [5, "missing"])
def test_a_responder_record_whose_not_before_is_not_a_time_crashes_check(local, value):
    """Attack (a forged out/state.json): services-ca's delegated responder record has
    `not_before: 5` (or none). The loader checks a responder's status, serial and
    not_after only; `cert_record` parses string times and leaves the number as it is.

    What happens: `pkic check` (what monitoring runs) crashes: TypeError (`Stamp - int`
    in check.run_check) or KeyError. (As at 495cffc.)

    Expected: a responder record's times checked like a certificate's (refused naming
    out/state.json); never a crash."""
    pk, repo = local
    body = read_state(repo)
    resp = body["responders"]["services-ca"][0]
    if value == "missing":
        del resp["not_before"]
    else:
        resp["not_before"] = value
    write_state(repo, body)
    for args in (("check",), ("check", "--json")):
        _refused_or_fine(pk(*args, "--now", T1, cwd=repo))


def test_a_time_at_the_edge_of_the_calendar_crashes_plan_and_check(local):
    """Attack (a forged out/state.json): web's `ocsp.next_update` is
    `0001-01-01T00:00:00Z` and services-ca's CRL `next_update` too: both well-formed
    UTC timestamps, accepted by the loader.

    What happens: `pkic plan` and `pkic check` crash with "pkic crashed: OverflowError"
    (refresh_point: `next_update - renew_before` goes below year 1). (As at 495cffc.)

    Expected: a time outside what pkic can compute with (e.g. before 1950 or after
    9000) refused naming out/state.json; never a crash."""
    pk, repo = local
    body = read_state(repo)
    body["certificates"]["web"][0]["ocsp"]["next_update"] = "0001-01-01T00:00:00Z"
    body["crls"]["services-ca"]["next_update"] = "0001-01-01T00:00:00Z"
    write_state(repo, body)
    for args in (("plan",), ("check",)):
        _refused_or_fine(pk(*args, "--now", T1, cwd=repo))


# --------------------------------------------------------------------------- the journal


def test_a_journal_step_whose_record_time_is_a_number_crashes_plan_status_check(local):
    """Attack: a `.pkic/journal.jsonl` in a repository git does not track (a tracked one
    is refused), whose `issued` step's record has `not_after: 5`. `JournalOp.from_json`
    validates `times` fields and parses a record's *string* times (cert_record); a
    number is left as it is, and the record is folded into the state with none of the
    checks `load_state` makes.

    What happens: `pkic plan`, `pkic status` and `pkic check` crash with
    "pkic crashed: TypeError" (a Stamp compared with an int).

    Expected: a step's record checked like the state's records (parse_op refuses it:
    "step 2 (issued) holds a time that is not one"), exit 1; never a crash."""
    pk, repo = local
    body = read_state(repo)
    rec = dict(body["certificates"]["web"][0], serial="0123456789abcdef01", not_after=5)
    steps = [
        {"op": "begin", "at": T1, "lineage": body["lineage"], "base_serial": body["serial"]},
        {"op": "issued", "at": T1, "name": "web", "record": rec},
    ]
    (repo / ".pkic").mkdir(exist_ok=True)
    (repo / ".pkic" / "journal.jsonl").write_text("".join(json.dumps(s) + "\n" for s in steps))
    for args in (("plan",), ("status",), ("check",)):
        proc = pk(*args, "--now", T1, cwd=repo)
        no_crash(proc)
        assert proc.returncode != 0, proc.stdout + proc.stderr  # a step like that is refused


# --------------------------------------------------------------------------- handled (kept: cheap)


def test_a_malformed_time_string_in_an_unchecked_field_is_one_clear_error(local):
    """Attack (a forged out/state.json): `issued_at` (which `_check_names` does not look
    at) is "yesterday". Handled: cert_record's Stamp.parse raises ValueError, load_state
    turns it into "a time in it is not a UTC timestamp", exit 1, for plan and status."""
    pk, repo = local
    body = read_state(repo)
    body["certificates"]["web"][0]["issued_at"] = "yesterday"
    write_state(repo, body)
    for args in (("plan",), ("status", "--json")):
        proc = pk(*args, "--now", T1, cwd=repo)
        no_crash(proc)
        assert proc.returncode == 1 and "out/state.json" in proc.stderr, proc.stdout + proc.stderr
