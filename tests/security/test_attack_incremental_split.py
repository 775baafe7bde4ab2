"""Attacks on the incremental plan (compiler/spec/incremental.py), found by a hostile-PR
review: each made the plan shown on the pull request differ from what apply signed.

1. A quoted scalar opened in a top-level key before ``certificates:`` and closed by a
   ``"`` after the section: the line split read the decoy section, the parser read the
   section as text and an inline ``certificates:`` after it. The runs of top-level lines
   are now pieces of their own, each parsed alone.
2. Cache poisoning: a commit whose split disagrees with the parser, planned once (full
   load), stored the parser's entry under the split's text; a later, ordinary commit with
   that text hit it. A full load now keeps entries only where the split reads the file
   as the parser did.
3. An alias into another entry: the cached text of ``web: {dns: *names}`` stood for
   whatever the anchor held; a change to the anchor alone was not seen. Entries that may
   hold an alias are not kept.

Each case primes the cache with a plan, then compares the plan's load with apply's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from compiler.model.errors import PkicError
from compiler.spec import loading
from compiler.spec.cache import dump_entry

AUTH = """version: 1
authorities:
  root-ca:
    subject: {CN: Example Root CA}
    lifetime: 10y
  services-ca:
    issuer: root-ca
    subject: {CN: Example Services CA}
    lifetime: 3y
"""

SWALLOW = (
    AUTH
    + """defaults:
  subject:
    L: "Springfield
certificates:
  web: {issuer: services-ca, dns: [web.example.com]}
  # "
certificates: {evil: {issuer: services-ca, dns: [evil.example.com]}}
# "
"""
)

POISON_1 = (
    AUTH
    + """defaults:
  subject:
    L: "Springfield
certificates:
  web:
    issuer: services-ca
    dns: [evil.example.com]
    # "
certificates: {web: {issuer: services-ca, dns: [web.example.com]}}
# "
"""
)
POISON_2 = (
    AUTH
    + """certificates:
  web:
    issuer: services-ca
    dns: [evil.example.com]
    # "
defaults:
  subject: {L: "Springfield\\ncertificates:\\n  web:\\n    issuer: services-ca\\n    dns: [evil.example.com]\\n    # "}
"""
)

ALIAS_1 = (
    AUTH
    + """certificates:
  api:
    issuer: services-ca
    dns: &names [web.example.com]
  web:
    issuer: services-ca
    dns: *names
"""
)
ALIAS_2 = ALIAS_1.replace("&names [web.example.com]", "&names [web.example.com, evil.example.net]")

PLAIN = AUTH + "certificates:\n  web: {issuer: services-ca, dns: [web.example.com]}\n"

# 4. A header the split took for one, which YAML reads as a key (a comment starts after
#    a space only: `certificates:#x:` is the key `certificates:#x`), and characters YAML
#    refuses in lines the split hands to no parser: a fresh load refuses the file, a warm
#    one (plan, or apply with its own records) read the split's version and its new entry.
HEADER = PLAIN.replace("certificates:\n", "certificates:#x:\n  evil: {issuer: services-ca, dns: [evil.example.com]}\n")
CONTROL = PLAIN.replace("certificates:\n", "certificates:\n  # \x1b[2J\n  evil: {issuer: services-ca, dns: [evil.example.com]}\n")


KEY = b"k" * 32  # apply's key for its own records (derived from the seal key in apply)


def outcome(repo: Path, *, use_cache: bool, mac_key: bytes | None = None) -> str:
    try:
        eff = loading.load(repo, caches=loading.PLAN_CACHES if use_cache else mac_key)
    except PkicError as exc:
        return "error: " + "; ".join(d.message for d in exc.diagnostics)
    return json.dumps([dump_entry(e) for e in eff.entries.values()], sort_keys=True)


@pytest.mark.parametrize(
    ("first", "second"),
    [(PLAIN, SWALLOW), (POISON_1, POISON_2), (ALIAS_1, ALIAS_2), (PLAIN, HEADER), (PLAIN, CONTROL)],
    ids=[
        "quoted-scalar-across-a-section",
        "cache-poisoned-by-an-earlier-commit",
        "alias-into-another-entry",
        "header-that-is-a-key",
        "refused-character-in-a-comment",
    ],
)
def test_the_plan_loads_what_apply_signs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, first: str, second: str) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "pki.yaml").write_text(first)
    outcome(repo, use_cache=True)  # the plan of the earlier commit: fills the caches
    outcome(repo, use_cache=False, mac_key=KEY)  # and its apply, apply's own records
    (repo / "pki.yaml").write_text(second)
    plan, warm_apply, apply = outcome(repo, use_cache=True), outcome(repo, use_cache=False, mac_key=KEY), outcome(repo, use_cache=False)
    assert plan == apply
    assert warm_apply == apply
    assert "evil" in apply or apply.startswith("error")  # the change is there to be seen, or refused
