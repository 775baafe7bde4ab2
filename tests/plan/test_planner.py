"""The planner as a table of sentences: each row states a situation in plain words and
the action and reasons the plan must give. The clock is fixed; no key, no file."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta

import pytest

from compiler.model.bounded import Locator
from compiler.plan import make_plan
from compiler.spec import Spec, parse_yaml, resolve
from compiler.model.stamp import Stamp
from compiler.state import State

T0 = datetime(2026, 1, 1, tzinfo=UTC)

BASE = """
version: 1
defaults: {key: ecdsa-p256, subject: {O: Example}}
authorities:
  root: {subject: {CN: Root}, key: ecdsa-p384, lifetime: 10y}
  mid: {issuer: root, subject: {CN: Mid}, lifetime: 3y, path_length: 0}
  other: {issuer: root, subject: {CN: Other}, lifetime: 3y}
certificates:
  web: {issuer: mid, dns: [web.example.com], lifetime: 90d}
  api: {issuer: mid, dns: [api.example.com], lifetime: 90d, renew_before: 10d}
  db: {issuer: other, profile: client, subject: {CN: db}, lifetime: 30d}
"""


def effective(text: str):
    doc = parse_yaml(textwrap.dedent(text), "pki.yaml")
    return resolve(Spec.model_validate(doc), Locator("pki.yaml", doc))


def fake_apply(spec, state: State, plan, now: datetime) -> None:
    """Record what an apply would, without crypto: key ids stand for keys."""
    counter = fake_apply.counter = getattr(fake_apply, "counter", 0) + 1
    for old, new in plan.moves:
        state.record_moved(old, new)
    if plan.settings_changes:
        state.settings = plan.settings
    for c in plan.changes:
        if c.action == "revoke":
            state.record_revoked(c.name, c.serial, "cessation_of_operation", Stamp.of(now))
            continue
        e = spec.entries[c.name]
        prev = state.active(c.name)
        key_id = f"key-{c.name}-{counter}" if c.key == "new" else prev["key_id"]
        issuer_key = key_id if e.issuer is None else state.active(e.issuer)["key_id"]
        state.record_issued(c.name, {
            "name": c.name, "kind": e.kind, "status": "active", "serial": f"{c.name}-{counter}",
            "issuer": e.issuer, "key_id": key_id, "issuer_key_id": issuer_key,
            "not_before": Stamp.of(now), "not_after": Stamp.of(now + e.lifetime), "spec": e.spec,
            "public_key_sha256": key_id,
        }, Stamp.of(now))
    # publications: CRLs, responders, OCSP responses, as an apply records them
    for pub in plan.crls:
        e = spec.entries[pub.name]
        on = [(r["name"], r["serial"]) for recs in state.certificates.values() for r in recs if r["status"] == "revoked" and r.get("issuer") == pub.name]
        state.record_crl(pub.name, {"number": counter, "this_update": Stamp.of(now), "next_update": Stamp.of(now + e.ca.crl_lifetime),
                                    "key_id": state.active(pub.name)["key_id"], "serials": [s for _, s in on], "names": sorted({n for n, _ in on})})
    for pub in plan.responders:
        e = spec.entries[pub.name]
        state.record_responder(pub.name, {"serial": f"ocsp-{pub.name}-{counter}", "status": "active", "not_after": Stamp.of(now + e.ca.responder_lifetime),
                                          "issuer_key_id": state.active(pub.name)["key_id"]}, Stamp.of(now))
    for pub in plan.ocsp:
        serial = pub.serial or state.active(pub.name)["serial"]
        rec = next(r for r in state.certificates[pub.name] if r["serial"] == serial)
        ca = spec.entries[pub.issuer].ca
        state.record_ocsp(pub.name, serial, {"status": "revoked" if rec["status"] == "revoked" else "good", "signer": ca.ocsp_signer,
                                             "this_update": Stamp.of(now), "next_update": Stamp.of(now + ca.ocsp_lifetime)})
    state.serial += 1


def applied_state(text: str = BASE, now: datetime = T0) -> State:
    spec = effective(text)
    state = State()
    fake_apply(spec, state, make_plan(spec, state, now), now)
    return state


def edit(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new)


def summary(plan) -> dict[str, tuple[str, set[str], str | None]]:
    return {c.name: (c.action, {r.code for r in c.reasons}, c.key) for c in plan.changes}


CASES = [
    ("issues everything, parents first, on an empty state", None, T0,
     {"root": ("issue", {"new"}, "new"), "mid": ("issue", {"new"}, "new"), "other": ("issue", {"new"}, "new"),
      "web": ("issue", {"new"}, "new"), "api": ("issue", {"new"}, "new"), "db": ("issue", {"new"}, "new")}),
    ("does nothing when nothing changed", BASE, T0 + timedelta(days=1), {}),
    ("reissues only the leaf whose SANs change, with a new key",
     edit(BASE, "dns: [web.example.com]", "dns: [web.example.com, www.example.com]"), T0,
     {"web": ("reissue", {"dns_changed"}, "new")}),
    ("reordering YAML keys and SANs reissues nothing",
     edit(edit(BASE, "web: {issuer: mid, dns: [web.example.com], lifetime: 90d}", "web: {lifetime: 90d, dns: [WEB.example.com.], issuer: mid}"),
          "root: {subject: {CN: Root}, key: ecdsa-p384, lifetime: 10y}", "root: {lifetime: 10y, key: ecdsa-p384, subject: {CN: Root}}"), T0, {}),
    ("writing the default lifetime out explicitly reissues nothing",
     edit(BASE, "db: {issuer: other, profile: client, subject: {CN: db}, lifetime: 30d}", "db: {issuer: other, profile: client, subject: {CN: db}, lifetime: 720h}"), T0, {}),
    ("changing a default reissues what it affects (the subject of every certificate)",
     edit(BASE, "subject: {O: Example}}", "subject: {O: Example Corp}}"), T0,
     {"root": ("reissue", {"subject_changed"}, "keep"), "mid": ("reissue", {"subject_changed", "issuer_reissued"}, "keep"),
      "other": ("reissue", {"subject_changed", "issuer_reissued"}, "keep"), "web": ("reissue", {"subject_changed", "issuer_reissued"}, "new"),
      "api": ("reissue", {"subject_changed", "issuer_reissued"}, "new"), "db": ("reissue", {"subject_changed", "issuer_reissued"}, "new")}),
    ("renews exactly the leaves inside their renewal window, with new keys", BASE, T0 + timedelta(days=61),
     {"web": ("renew", {"renewal_due"}, "new"), "db": ("renew", {"expired"}, "new")}),
    ("honours renew_before: api (10d) is not due when web (a third of 90d) is", BASE, T0 + timedelta(days=70),
     {"web": ("renew", {"renewal_due"}, "new"), "db": ("renew", {"expired"}, "new")}),
    ("renews an expired certificate with reason expired", BASE, T0 + timedelta(days=91),
     {"web": ("renew", {"expired"}, "new"), "api": ("renew", {"expired"}, "new"), "db": ("renew", {"expired"}, "new")}),
    ("an authority key change reissues its whole subtree and nothing else",
     edit(BASE, "mid: {issuer: root, subject: {CN: Mid}, lifetime: 3y, path_length: 0}", "mid: {issuer: root, subject: {CN: Mid}, lifetime: 3y, path_length: 0, rekey: 1}"), T0,
     {"mid": ("reissue", {"rekey_requested"}, "new"), "web": ("reissue", {"issuer_reissued"}, "new"), "api": ("reissue", {"issuer_reissued"}, "new")}),
    ("an authority key type change is a new key and reissues its subtree",
     edit(BASE, "other: {issuer: root, subject: {CN: Other}, lifetime: 3y}", "other: {issuer: root, subject: {CN: Other}, lifetime: 3y, key: ed25519}"), T0,
     {"other": ("reissue", {"key_changed"}, "new"), "db": ("reissue", {"issuer_reissued"}, "new")}),
    ("an authority renewed with the same key and subject does not force its children", BASE, T0 + timedelta(days=3 * 365 - 300),
     {"mid": ("renew", {"renewal_due"}, "keep"), "other": ("renew", {"renewal_due"}, "keep"),
      "web": ("renew", {"expired"}, "new"), "api": ("renew", {"expired"}, "new"), "db": ("renew", {"expired"}, "new")}),
    ("a reissued leaf keeps its key with reuse_key",
     edit(BASE, "lifetime: 90d, renew_before: 10d}", "lifetime: 90d, renew_before: 10d, reuse_key: true, dns: [api2.example.com]}").replace("api: {issuer: mid, dns: [api.example.com], ", "api: {issuer: mid, "), T0,
     {"api": ("reissue", {"dns_changed"}, "keep")}),
    ("removing a certificate revokes it", edit(BASE, "  db: {issuer: other, profile: client, subject: {CN: db}, lifetime: 30d}\n", ""), T0,
     {"db": ("revoke", {"removed"}, None)}),
    ("moving an issuer to another authority reissues the leaf",
     edit(BASE, "db: {issuer: other,", "db: {issuer: mid,"), T0, {"db": ("reissue", {"issuer_changed"}, "new")}),
    ("a rename declared with moved carries the state over: nothing issued or revoked",
     edit(BASE, "  web: {issuer: mid", "  www: {issuer: mid") + "moved:\n  - {from: web, to: www}\n", T0, {}),
    ("a profile change reissues", edit(BASE, "profile: client, subject: {CN: db}", "profile: peer, dns: [db.example.com], subject: {CN: db}"), T0,
     {"db": ("reissue", {"profile_changed", "dns_changed"}, "new")}),
]


@pytest.mark.parametrize("sentence,text,now,expected", CASES, ids=[c[0] for c in CASES])
def test_planner_table(sentence, text, now, expected):
    state = State() if text is None else applied_state()
    spec = effective(text or BASE)
    plan = make_plan(spec, state, now)
    assert summary(plan) == expected
    names = [c.name for c in plan.changes if c.action != "revoke"]
    order = list(spec.entries)
    assert names == sorted(names, key=order.index), "parents before children"


def test_plan_is_deterministic():
    spec = effective(BASE)
    a = make_plan(spec, State(), T0).to_json()
    b = make_plan(effective(BASE), State(), T0).to_json()
    assert a == b


def test_moved_plan_lists_the_move_and_applying_it_converges():
    state = applied_state()
    text = edit(BASE, "  web: {issuer: mid", "  www: {issuer: mid") + "moved:\n  - {from: web, to: www}\n"
    spec = effective(text)
    plan = make_plan(spec, state, T0)
    assert plan.moves == [("web", "www")] and not plan.changes
    fake_apply(spec, state, plan, T0)
    again = make_plan(spec, state, T0)
    assert again.empty and any("can be deleted" in n for n in again.notices)


def test_child_outliving_issuer_renews_issuer_first_same_key():
    # mid (3y) has 60 days left; web (90d) is new: mid must be renewed first, with its key
    state = applied_state()
    later = T0 + timedelta(days=3 * 365 - 60)
    spec = effective(BASE.replace("renew_before: 10d}", "renew_before: 10d}\n  fresh: {issuer: mid, dns: [fresh.example.com]}"))
    # suppress mid's own renewal window so only the child's need drives it
    spec_text = BASE.replace("lifetime: 3y, path_length: 0}", "lifetime: 3y, path_length: 0, renew_before: 1d}") + "  fresh: {issuer: mid, dns: [fresh.example.com]}\n"
    spec = effective(spec_text)
    state = applied_state(spec_text.replace("  fresh: {issuer: mid, dns: [fresh.example.com]}\n", ""))
    plan = make_plan(spec, state, later)
    got = summary(plan)
    assert got["mid"][0] == "renew" and "outlived_by_child" in got["mid"][1] and got["mid"][2] == "keep"
    assert got["fresh"][0] == "issue"
    assert "web" in got  # expired long ago, renewed too; but not because of mid
    assert "issuer_reissued" not in got["web"][1]


def test_plan_json_has_documented_fields():
    body = make_plan(effective(BASE), State(), T0).to_json()
    assert body["format_version"] == 1
    for c in body["changes"]:
        assert set(c) >= {"name", "kind", "action", "reasons", "key", "issuer"}
        assert all(set(r) == {"code", "message"} for r in c["reasons"])


def test_to_json_carries_every_field():
    """Change and Publication spell their JSON out (for speed): it must stay what
    dataclasses.asdict gives, so a new field cannot be left out of plans and digests."""
    from dataclasses import asdict

    from compiler.plan import Action, Change, KeyDisposition, Publication, PublicationCode, PublicationKind, Reason, ReasonCode

    c = Change("web", "certificate", Action.REISSUE, [Reason(ReasonCode.DNS_CHANGED, "dns: +x")], KeyDisposition.NEW, "ca", "ecdsa-p256",
               "0a", "2027-01-01T00:00:00Z",
               [{"name": "web", "serial": "0a", "reason": "superseded", "invalidity": None, "public_key_sha256": "ab"}])
    p = Publication(PublicationKind.OCSP, "web", [Reason(PublicationCode.NEW, "new certificate")], "ca", "0b")
    for obj in (c, p):
        expected = asdict(obj)
        expected["reasons"] = [asdict(r) for r in obj.reasons]
        assert obj.to_json() == expected


def test_every_code_has_a_description():
    """The reference tables in the docs are generated from the codes' descriptions: a
    code added without one would be a blank row."""
    from compiler.plan import Action, KeyDisposition, PublicationCode, PublicationKind, ReasonCode

    for enum in (Action, KeyDisposition, ReasonCode, PublicationKind, PublicationCode):
        for member in enum:
            assert member.description and "\n" not in member.description, member
            assert enum(member.value) is member  # looked up by the string a plan carries
