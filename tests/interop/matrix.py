"""The interop matrix: its checks (rows), its verifiers (columns), what each should do,
and the rendering of docs/interop.md from the suite's recorded results.

``tests/interop/results.json`` holds what the suite observed, cell by cell; every cell
test compares its observation with it, and ``test_docs_are_generated`` compares
docs/interop.md with :func:`render` of it. After a change of behaviour, rerun the suite
with ``PKIC_UPDATE_GOLDEN=1`` (it rewrites both files) and read the diff; or run
``python tests/interop/matrix.py`` to render docs/interop.md from results.json alone.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.json"
DOC = HERE.parent.parent / "docs" / "interop.md"

ACCEPTED, REFUSED = "accepted", "refused"
KEY_LABELS = {"p256": "P-256", "p384": "P-384", "rsa": "RSA-2048", "ed25519": "Ed25519"}


@dataclass(frozen=True)
class Row:
    id: str
    label: str
    expect: str  # what a correct verifier does: accepted | refused
    # (subject id, purpose) pairs; purpose "server" is checked by TLS clients, "client" by
    # TLS servers; a subject None is a client that sends no certificate
    probes: tuple = ()
    crl: str = "set"  # which CRLs the CRL-checking verifiers load: set | expired | none
    leaf_only: bool = False  # check the leaf's CRL only (not the whole chain)
    why: str = "other"  # for refusals: revocation rows must be refused as revoked, the expired CRL as stale
    ocsp: bool = False  # a stapled OCSP response decides


def _both(*sids: str) -> tuple:
    return tuple((s, p) for s in sids for p in ("server", "client"))


def _by_profile(*sids: str) -> tuple:
    out = []
    for s in sids:
        profile = s.split("-")[0]
        if profile in ("srv", "peer") or s == "kc-leaf":
            out.append((s, "server"))
        if profile in ("cli", "peer") or s == "kc-leaf":
            out.append((s, "client"))
    return tuple(out)


GOOD = {kt: (f"srv-{kt}", f"cli-{kt}", f"peer-{kt}") for kt in KEY_LABELS}
ALL_GOOD = tuple(p for kt in KEY_LABELS for p in _by_profile(*GOOD[kt]))

ROWS = [
    *(Row(f"good-{kt}", f"Good leaves, {label} (server, client, peer profiles)", ACCEPTED,
          _by_profile(*GOOD[kt], *(("kc-leaf",) if kt == "p256" else ()))) for kt, label in KEY_LABELS.items()),
    Row("ed-ca", "Leaf below an Ed25519 authority", ACCEPTED, _both("ed-leaf")),
    Row("uri-ca", "Leaf with a URI SAN below a `permitted_uri` authority", ACCEPTED, _both("uri-leaf")),
    Row("crafted-ok", "Crafted control: made by the test inside every constraint", ACCEPTED, _both("crafted-ok")),
    Row("dns-outside", "Crafted: DNS name outside the permitted subtrees", REFUSED, _both("crafted-dns-outside")),
    Row("dns-excluded", "Crafted: DNS name in an excluded subtree", REFUSED, _both("crafted-dns-excluded")),
    Row("ip-outside", "Crafted: IP address outside the permitted ranges", REFUSED, _both("crafted-ip-outside")),
    Row("ip-excluded", "Crafted: IP address in an excluded range", REFUSED, _both("crafted-ip-excluded")),
    Row("uri-outside", "Crafted: URI outside the `permitted_uri` hosts", REFUSED, _both("crafted-uri-outside")),
    Row("pathlen", "Crafted: an authority below a `path_length: 0` one", REFUSED, _both("crafted-pathlen")),
    Row("wrong-eku", "A client-only certificate as a server, a server-only one as a client", REFUSED,
        (("cli-p256", "server"), ("srv-p256", "client"))),
    Row("no-client-cert", "mTLS: the client sends no certificate", REFUSED, ((None, "client"),)),
    Row("revoked-kc", "Revoked leaf: key compromise (CRL)", REFUSED, _both("kc-old"), why="revoked"),
    Row("revoked-removed", "Revoked leaf: removed from pki.yaml (CRL)", REFUSED, _both("gone-leaf"), why="revoked"),
    Row("revoked-ca", "Leaf below a revoked authority, every CRL of the chain checked", REFUSED, _both("retired-leaf"), why="revoked"),
    Row("revoked-ca-leaf", "Leaf below a revoked authority, only the leaf's CRL checked", REFUSED, _both("retired-leaf"),
        leaf_only=True, why="revoked"),
    Row("crl-expired", "A CRL past its nextUpdate: every certificate refused", REFUSED, ALL_GOOD, crl="expired", why="stale CRL or OCSP"),
    Row("ocsp-good", "OCSP response for a good leaf", ACCEPTED, (("srv-p256", "server"),), crl="none", ocsp=True),
    Row("ocsp-revoked", "OCSP response for a revoked leaf (key compromise, removal)", REFUSED,
        (("kc-old", "server"), ("gone-leaf", "server")), crl="none", ocsp=True, why="revoked"),
    Row("ocsp-revoked-ca", "OCSP response for a leaf below a revoked authority", REFUSED,
        (("retired-leaf", "server"),), crl="none", ocsp=True, why="revoked"),
]
ROW = {r.id: r for r in ROWS}


@dataclass(frozen=True)
class Verifier:
    id: str
    label: str
    how: str  # how the suite drives it (for the doc)
    roles: tuple  # which purposes it checks: ("server", "client") offline; TLS clients "server", servers "client"
    rows: tuple  # the rows it takes part in


_PATH = ("good-p256", "good-p384", "good-rsa", "good-ed25519", "ed-ca", "uri-ca", "crafted-ok", "dns-outside", "dns-excluded",
         "ip-outside", "ip-excluded", "uri-outside", "pathlen", "wrong-eku")
_REVOKED = ("revoked-kc", "revoked-removed", "revoked-ca")
_OCSP = ("ocsp-good", "ocsp-revoked", "ocsp-revoked-ca")

VERIFIERS = [
    Verifier("openssl", "OpenSSL verify / ocsp",
             "`openssl verify -crl_check_all` (`-crl_check` for the leaf-only row), `openssl ocsp -respin` for OCSP responses",
             ("server", "client"), _PATH + _REVOKED + ("revoked-ca-leaf", "crl-expired") + _OCSP),
    Verifier("openssl-tls", "OpenSSL s_client / s_server",
             "`s_client -crl_check_all` against nginx; `s_server -Verify 5 -crl_check_all` (and `-crl_check`) with "
             "`s_client -cert`; the CRLs go into `-CAfile` (their `-CRL` reads one CRL)",
             ("server", "client"), _PATH + ("no-client-cert",) + _REVOKED + ("revoked-ca-leaf", "crl-expired")),
    Verifier("certtool", "GnuTLS certtool", "`certtool --verify --load-ca-certificate --load-crl --verify-purpose`",
             ("server", "client"), _PATH + _REVOKED + ("crl-expired",)),
    Verifier("gnutls-tls", "gnutls-cli / gnutls-serv",
             "`gnutls-cli --x509crlfile` against nginx (it checks stapled OCSP responses too); `gnutls-serv --require-client-cert "
             "--verify-client-cert --x509crlfile` in a network namespace of its own (it cannot listen on loopback only); both get "
             "the root's CRL alone (the only one they load)",
             ("server", "client"), _PATH + ("no-client-cert",) + _REVOKED + ("crl-expired",) + _OCSP),
    Verifier("nginx", "nginx",
             "`ssl_verify_client on`, `ssl_crl`, `ssl_verify_depth 5`; `ssl_stapling_file` (checked with `openssl s_client "
             "-status`); curl as the client",
             ("client",), _PATH + ("no-client-cert",) + _REVOKED + ("crl-expired",) + _OCSP),
    Verifier("curl", "curl",
             "`curl --cacert --crlfile` against nginx; `--cert-status` for stapled OCSP; `--cert --key` for mTLS (the nginx column)",
             ("server",), _PATH + _REVOKED + ("crl-expired",) + _OCSP),
    Verifier("node", "Node tls",
             "`tls.connect` / `tls.createServer({requestCert, rejectUnauthorized})` with `ca` and `crl` (one CRL per buffer)",
             ("server", "client"), _PATH + ("no-client-cert",) + _REVOKED + ("crl-expired",)),
    Verifier("go", "Go crypto/x509",
             "`x509.Certificate.Verify` with `KeyUsages` and `DNSName` (a standard-library program, `go run`)",
             ("server", "client"), _PATH + _REVOKED),
    Verifier("cryptography", "cryptography",
             "`x509.verification.PolicyBuilder`: `build_server_verifier` / `build_client_verifier`",
             ("server", "client"), _PATH + _REVOKED),
    Verifier("python-ssl", "Python ssl",
             "`ssl.SSLContext` with `load_verify_locations` (roots and CRLs), `VERIFY_CRL_CHECK_CHAIN` (`_LEAF` for the leaf-only row)",
             ("server", "client"), _PATH + ("no-client-cert",) + _REVOKED + ("revoked-ca-leaf", "crl-expired")),
]
VERIFIER = {v.id: v for v in VERIFIERS}
CELLS = [(v.id, r.id) for v in VERIFIERS for r in ROWS if r.id in v.rows]


@dataclass(frozen=True)
class Known:
    outcome: str
    note: str


NO_REVOCATION = "does no revocation checking: revoked certificates are accepted"
GNUTLS_URI = "GnuTLS does not enforce URI name constraints (`permitted_uri`, `excluded_uri`)"
GNUTLS_ANCHOR_CRLS = ("gnutls-cli and gnutls-serv load only the CRLs signed by a trust anchor: an intermediate's CRL fails to load "
                      "(\"Error in the CRL verification\"), so the suite gives them the root's alone and they miss what intermediates "
                      "revoke; gnutls-cli sees it in a stapled OCSP response")
#: the known behaviour of a verifier that is not (or not only) what the row asks for:
#: recorded as it is, asserted, so that a change is noticed
KNOWN: dict[tuple[str, str], Known] = {
    **{("go", r): Known(ACCEPTED, f"Go's crypto/x509 {NO_REVOCATION}") for r in _REVOKED},
    **{("cryptography", r): Known(ACCEPTED, f"cryptography's verifier {NO_REVOCATION}") for r in _REVOKED},
    ("cryptography", "ed-ca"): Known(REFUSED, "cryptography refuses an Ed25519 authority key (\"Forbidden public key algorithm\"); "
                                              "Ed25519 leaves below an ECDSA or RSA authority are accepted (issue 13 item 9)"),
    ("cryptography", "uri-ca"): Known(REFUSED, "cryptography refuses every leaf with a URI SAN (an email SAN likewise) below a "
                                               "`permitted_uri` (`permitted_email`) name constraint: \"unsupported name constraint\" (issue 13 item 9)"),
    ("cryptography", "uri-outside"): Known(REFUSED, "refused, but as \"unsupported name constraint\", like any URI below `permitted_uri` (issue 13 item 9)"),
    ("certtool", "uri-outside"): Known(ACCEPTED, GNUTLS_URI),
    ("gnutls-tls", "uri-outside"): Known(ACCEPTED, GNUTLS_URI),
    ("certtool", "crl-expired"): Known(ACCEPTED, "certtool uses a CRL past its nextUpdate as if it were current"),
    ("gnutls-tls", "crl-expired"): Known("server certificates: refused; client certificates: accepted",
                                         "gnutls-cli refuses to load a CRL past its nextUpdate (\"Error in the CRL verification\"), "
                                         "so it connects to no server; gnutls-serv loads it and accepts every client"),
    **{("gnutls-tls", r): Known(ACCEPTED, GNUTLS_ANCHOR_CRLS) for r in ("revoked-kc", "revoked-removed")},
    ("gnutls-tls", "wrong-eku"): Known("server certificates: refused; client certificates: accepted",
                                       "gnutls-serv checks no extended key usage on client certificates "
                                       "(it verifies them without a purpose): a serverAuth-only certificate is accepted as a client"),
}
#: rows whose target pkic does not reach yet, and what it waits for
PENDING: dict[str, str] = {}  # rows whose target pkic does not reach yet: what each waits for (none today)


def expected(verifier: str, row: str) -> str:
    k = KNOWN.get((verifier, row))
    if k is not None:
        return k.outcome
    if verifier == "nginx" and ROW[row].ocsp:
        return "stapled (revoked)" if ROW[row].expect == REFUSED else "stapled (good)"
    return ROW[row].expect


# --------------------------------------------------------------------------- outcomes


@dataclass
class Obs:
    """One probe's result: did the verifier accept the subject, and if not, why."""

    subject: str | None
    purpose: str
    ok: bool
    reason: str = ""
    extra: dict = field(default_factory=dict)


def outcome(row: Row, obs: Obs, kind) -> str:
    """accepted | refused | refused (<why>) when a refusal is not for the row's reason."""
    if obs.ok:
        return obs.reason if obs.reason.startswith("stapled") else ACCEPTED
    got = kind(obs.reason)
    if row.why != "other":
        return REFUSED if got == row.why else f"refused ({got})"
    if got != "other":  # a violation refused for a revocation problem proves nothing
        return f"refused ({got})"
    return REFUSED


def cell(row: Row, observations: list[Obs], kind) -> str:
    """One cell: the common outcome; else, side by side, server certificates (checked by
    TLS clients) and client certificates (checked by TLS servers), each uniform or with
    the probes that differ from the row's expectation."""
    outs = [(o, outcome(row, o, kind)) for o in observations]
    if not outs:
        raise AssertionError(f"no observation for {row.id}")
    values = [v for _, v in outs]
    if len(set(values)) == 1:
        return values[0]
    parts = []
    for purpose in ("server", "client"):
        mine = [(o, v) for o, v in outs if o.purpose == purpose]
        if not mine:
            continue
        vals = [v for _, v in mine]
        common = row.expect if row.expect in vals else max(sorted(set(vals)), key=vals.count)
        odd = sorted({f"{o.subject or 'no certificate'}: {v}" for o, v in mine if v != common})
        parts.append(f"{purpose} certificates: {common}" + (f" (except {'; '.join(odd)})" if odd else ""))
    return "; ".join(parts)


# --------------------------------------------------------------------------- results and the doc


def load_results(path: Path = RESULTS) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {"cells": {}, "notes": []}


def dump_results(results: dict, path: Path = RESULTS) -> None:
    path.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def _md(text: str) -> str:
    return text.replace("|", "\\|")


INTRO = """\
# Interoperability: every certificate in every TLS stack

<!-- Generated by tests/interop (matrix.py) from tests/interop/results.json: do not edit.
     Regenerate: PKIC_UPDATE_GOLDEN=1 python3 -m pytest tests/interop -->

The interop suite (`tests/interop/`, pytest marker `interop`: `python3 -m pytest -m
interop`, run by `.ci/run` after the quick selection) applies one PKI with the real CLI and shows
it to every verifier below. This page is the matrix of what each verifier did with
each check, generated from the suite's recorded results; every cell is asserted by a
test (`test_cell[<verifier>-<check>]`), so a change of behaviour fails the suite
before this page can go stale.

The PKI: a P-384 root; two intermediates in a chain, `policy-ca` (RSA-2048,
`path_length: 1`, permitted DNS subtrees `example.com`, `svc.internal` and IP ranges
`127.0.0.0/8`, `10.0.0.0/8`) and `issuing-ca` (P-256, `path_length: 0`, excluded
`secret.example.com` and `10.66.0.0/16`); below it leaves of every profile (server,
client, peer) and key type (P-256, P-384, RSA-2048, Ed25519), each with DNS, IP and
URI SANs, a leaf whose key is declared compromised and one removed from `pki.yaml`;
beside them an Ed25519 authority, a `permitted_uri` authority and an authority that
is revoked, each with a peer leaf; OCSP on (delegated responders). *Crafted*
certificates are made by the test with `cryptography` and signed with the real
intermediates' keys: each breaks one constraint, and a *control* made the same way
inside every constraint must be accepted. CRL-checking verifiers load every current
CRL of the hierarchy (`out/trust/crls.pem`, plus an empty CRL of the crafted
sub-authority, so that only its path length can refuse it); the *expired* CRLs are
the same authorities' CRLs from an apply ten days earlier, past their nextUpdate.

How to read a cell: what the verifier did (`accepted`, `refused`; `refused (missing
CRL)` when it refused for another reason than the check's: a revoked certificate must
be refused *as revoked*, a violation not for a revocation problem). ✅ is what a correct verifier
does; ⚠️ is a known limitation of that verifier, described below the table; ❌ is a
target pkic does not reach yet; — means the check does not apply (a server-only tool,
or a tool that takes no CRL). For TLS stacks a cell covers both sides: the client
checking the server's certificate and the server checking the client's (mTLS). The
OCSP rows are pkic's pre-signed responses: stapled by nginx (`ssl_stapling_file`) for
the TLS clients that check a stapled response, checked offline with `openssl ocsp
-respin` in the OpenSSL column.
"""

CAVEATS = """\
## Caveats for deployments

- **Every CRL of the chain.** nginx (`ssl_crl`), HAProxy (`crl-file`), Node (`crl`),
  curl (`--crlfile`), Python's `ssl` with `VERIFY_CRL_CHECK_CHAIN` and OpenSSL with
  `-crl_check_all` need a current CRL for *every* authority of the chain, and refuse
  every certificate when one is missing or past its nextUpdate: point them at
  `out/trust/crls.pem`, which holds every current CRL of the hierarchy, and keep it
  fresh.
- **Node reads one CRL per buffer.** `tls.createSecureContext({crl})` takes the
  first CRL of each string or Buffer and ignores the rest, so pass `crls.pem` split
  into one CRL per element (the suite asserts that a single buffer refuses every
  client):

  ```js
  const crl = fs.readFileSync("out/trust/crls.pem", "utf8")
    .split(/(?=-----BEGIN X509 CRL-----)/).filter((s) => s.includes("BEGIN X509 CRL"));
  tls.createServer({ key, cert, ca, crl, requestCert: true, rejectUnauthorized: true });
  ```
- **`openssl s_client` / `s_server -CRL` read one CRL too**; append `crls.pem` to
  the `-CAfile` instead (OpenSSL's certificate store loads the CRLs of a CA file),
  with `-crl_check_all`. `openssl verify -CRLfile` reads them all.
- **CRLs are read at (re)load only.** nginx, HAProxy and Node read their CRL files
  when they start or reload, never again: reload them more often than the CRL
  re-sign margin (`crl_renew_before`, half the CRL lifetime by default), or a server
  that is never reloaded refuses every client once the CRL it loaded expires.
- **nginx's `ssl_verify_depth`** defaults to 1: a leaf below two intermediates needs
  at least 3 (the suite uses 5, so that a crafted chain is refused for its path
  length, not its depth).
- **GnuTLS**'s TLS credentials (`gnutls-cli`, `gnutls-serv`,
  `gnutls_certificate_set_x509_crl_file`) load only the CRLs signed by a trust
  anchor: an intermediate's CRL fails to load, so rely on OCSP stapling there.
  `certtool --verify` takes every CRL but uses them past their nextUpdate; GnuTLS
  does not enforce URI name constraints, and `gnutls-serv` checks no extended key
  usage on client certificates.
- **cryptography's verifier** (issue 13 item 9) refuses an Ed25519 authority, and any
  leaf with a URI (email) SAN below a `permitted_uri` (`permitted_email`) constraint;
  it does no revocation checking, nor does Go's crypto/x509.
"""


def render(results: dict) -> str:
    cells = results["cells"]
    notes: list[str] = []

    def footnote(text: str) -> str:
        if text not in notes:
            notes.append(text)
        return f"<sup>{notes.index(text) + 1}</sup>"

    head = "| check | " + " | ".join(v.label for v in VERIFIERS) + " |"
    lines = [head, "|" + " --- |" * (len(VERIFIERS) + 1)]
    for r in ROWS:
        row = [_md(r.label)]
        for v in VERIFIERS:
            key = f"{v.id}/{r.id}"
            if (v.id, r.id) not in CELLS:
                row.append("—")
                continue
            got = cells.get(key, "not run")
            want = expected(v.id, r.id)
            k = KNOWN.get((v.id, r.id))
            if got == want and k is not None and k.outcome != r.expect:
                mark = "⚠️ "
            elif got == want:
                mark = "✅ "
            else:
                mark = "❌ "
            text = mark + _md(got)
            if k is not None:
                text += footnote(k.note)
            if got != want:
                text += footnote(PENDING.get(r.id, f"expected: {want}"))
            row.append(text)
        lines.append("| " + " | ".join(row) + " |")

    how = ["## How each verifier is driven", ""] + [f"- **{v.label}**: {v.how}." for v in VERIFIERS]
    out = [INTRO, "## The matrix", "", *lines, ""]
    out += [f"{i + 1}. {_md(n)}" for i, n in enumerate(notes)] + [""]
    if results.get("notes"):
        out += ["Notes from the run that produced it:", ""] + [f"- {n}" for n in results["notes"]] + [""]
    out += how + ["", CAVEATS]
    return "\n".join(out).rstrip("\n") + "\n"


def main() -> int:
    DOC.write_text(render(load_results()), encoding="utf-8")
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
