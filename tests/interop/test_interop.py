"""Issue 13: every certificate pkic issues works in every TLS stack, and revocation never
goes silent.

The matrix (verifier x check) of docs/interop.md, one test per cell
(``test_cell[<verifier>-<check>]``): each verifier runs once for the session over every
probe of its checks (interoplib.py builds the PKI, verifiers.py drives the tools,
matrix.py says what each cell should be). A cell must be what a correct verifier does,
or the known behaviour recorded for that verifier (matrix.KNOWN: asserted, so that a
change is noticed); and it must be what tests/interop/results.json records, from which
docs/interop.md is rendered. ``PKIC_UPDATE_GOLDEN=1`` rewrites both from the run.

Every tool is required: a missing one fails the test with what to install (.ci/run
installs them all), never a skip.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

pytest.register_assert_rewrite("interoplib", "matrix", "verifiers", "servers")  # before importing them
from interoplib import World, need, pem_blocks, reason_kind, run  # noqa: E402
from matrix import CELLS, DOC, KNOWN, PENDING, RESULTS, ROW, cell, dump_results, expected, load_results, render  # noqa: E402
from verifiers import RUNNERS, Lab, node_single_buffer  # noqa: E402

pytest_plugins = ["interoplib"]
pytestmark = pytest.mark.interop

UPDATE = bool(os.environ.get("PKIC_UPDATE_GOLDEN"))


@pytest.fixture(scope="session")
def lab(world: World, tmp_path_factory):
    lab = Lab(world, tmp_path_factory.mktemp("lab"))
    yield lab
    lab.close()


@pytest.fixture(scope="session")
def recorder(world: World):
    """The cells this run observed; with PKIC_UPDATE_GOLDEN=1 they are written to
    results.json at the end, and docs/interop.md rendered from it."""
    seen: dict[str, str] = {}
    yield seen
    write_golden(seen, world)


def write_golden(seen: dict[str, str], world: World) -> None:
    """With PKIC_UPDATE_GOLDEN=1: the observed cells into results.json, and docs/interop.md from it."""
    if UPDATE and seen:
        results = load_results()
        keys = {f"{v}/{r}" for v, r in CELLS}
        results["cells"] = {k: v for k, v in {**results["cells"], **seen}.items() if k in keys}
        results["notes"] = list(world.notes)
        dump_results(results)
        DOC.write_text(render(results), encoding="utf-8")


@pytest.fixture(scope="session")
def observed(lab: Lab):
    """verifier -> its observations by row; each verifier runs once, when first asked."""
    cache: dict[str, object] = {}

    def get(verifier: str) -> dict:
        if verifier not in cache:
            try:
                cache[verifier] = RUNNERS[verifier](lab)
            except BaseException as exc:  # noqa: BLE001 - reported by every cell of that verifier
                cache[verifier] = exc
                raise
        got = cache[verifier]
        if isinstance(got, BaseException):
            pytest.fail(f"{verifier} could not run: {got}", pytrace=False)
        return got

    return get


@pytest.mark.parametrize(("verifier", "row"), CELLS, ids=[f"{v}-{r}" for v, r in CELLS])
def test_cell(verifier: str, row: str, observed, recorder):
    obs = observed(verifier).get(row, [])
    assert obs, f"{verifier} made no observation for {row}"
    got = cell(ROW[row], obs, reason_kind)
    key = f"{verifier}/{row}"
    recorder[key] = got
    want = expected(verifier, row)
    details = "\n".join(f"  {o.subject or 'no certificate'} as a {o.purpose}: {'accepted' if o.ok else 'refused'}  {o.reason[:300]}" for o in obs)
    problems = []
    if got != want:
        why = PENDING.get(row) or (KNOWN[(verifier, row)].note if (verifier, row) in KNOWN else "")
        problems.append(f"{verifier} / {ROW[row].label}: {got!r}, expected {want!r}" + (f"\n  ({why})" if why else ""))
    recorded = load_results()["cells"].get(key)
    if recorded != got and not UPDATE:
        problems.append(f"results.json records {recorded!r} for {key}, the run saw {got!r}: rerun with PKIC_UPDATE_GOLDEN=1 "
                        "(rewrites results.json and docs/interop.md) and review the diff")
    assert not problems, "\n".join(problems) + "\n" + details


def test_docs_are_generated(world: World, recorder):
    """docs/interop.md is the rendering of results.json, which covers every cell and
    holds this run's notes (the cells' tests run first: with PKIC_UPDATE_GOLDEN=1 their
    results are written here)."""
    if UPDATE:
        write_golden(recorder, world)
    results = load_results()
    assert RESULTS.exists(), "tests/interop/results.json is missing: run PKIC_UPDATE_GOLDEN=1 python3 -m pytest tests/interop"
    assert sorted(results["cells"]) == sorted(f"{v}/{r}" for v, r in CELLS)
    assert results["notes"] == world.notes, "results.json's notes are not this run's: rerun with PKIC_UPDATE_GOLDEN=1"
    assert DOC.read_text(encoding="utf-8") == render(results), \
        "docs/interop.md is not the rendering of tests/interop/results.json: run python3 tests/interop/matrix.py"


# --------------------------------------------------------------------------- what pkic publishes for them


def test_crls_pem_holds_every_current_crl(world: World):
    """nginx `ssl_crl`, Node `crl`, curl `--crlfile` need every CRL of the chain in one
    file: pkic publishes it (issue 13 item 3; until then the suite builds it itself)."""
    published = world.out("trust", "crls.pem")
    assert published.exists(), "out/trust/crls.pem is not published (issue 13 item 3)"
    want = sorted(x509.load_pem_x509_crl(p.read_bytes()).public_bytes(Encoding.DER) for p in world.out("crl").glob("*.crl.pem"))
    got = sorted(x509.load_pem_x509_crl(b).public_bytes(Encoding.DER) for b in pem_blocks(published.read_bytes()))
    assert got == want and len(want) == 6


def test_a_revoked_authority_revokes_its_children_and_keeps_its_crl(world: World):
    """Revoking retired-ca revokes retired-leaf on retired-ca's CRL, which stays published
    (issue 13 item 6), so that leaf-only checks refuse the children too."""
    leaf = x509.load_pem_x509_certificate(world.subjects["retired-leaf"].cert.read_bytes())
    records = json.loads(world.out("state.json").read_text())["certificates"]
    assert records["retired-ca"][0]["status"] == "revoked"
    assert records["retired-leaf"][0]["status"] == "revoked", "retired-leaf is still active below its revoked issuer (issue 13 item 6)"
    crl_file = world.out("crl", "retired-ca.crl.pem")
    assert crl_file.exists(), "the revoked authority's CRL left out/ (issue 13 item 6)"
    crl = x509.load_pem_x509_crl(crl_file.read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(leaf.serial_number) is not None
    assert crl.next_update_utc > datetime.now(timezone.utc)


# --------------------------------------------------------------------------- the caveats of docs/interop.md


def test_node_reads_one_crl_per_buffer(lab: Lab):
    """Node's `crl` takes the first CRL of each buffer: crls.pem as one buffer refuses a
    good client for the missing CRLs; split into one CRL per element, it is accepted."""
    seen = node_single_buffer(lab, "cli-p256")
    assert seen["split"]["ok"], seen
    assert not seen["single"]["ok"] and "UNABLE_TO_GET_CRL" in seen["single"]["reason"], seen


def test_openssl_s_client_CRL_option_reads_one_crl(lab: Lab):
    """`s_client -CRL crls.pem` loads the first CRL only; crls.pem in -CAfile loads them all."""
    s = lab.subject("srv-p256")
    base = [need("openssl"), "s_client", "-connect", f"127.0.0.1:{lab.zoo_port('srv-p256')}", "-servername", s.host,
            "-verify_hostname", s.host, "-verify_return_error", "-brief", "-crl_check_all"]
    one = run(base + ["-CAfile", str(lab.w.root), "-CRL", str(lab.w.crls)], input="")
    assert one.returncode != 0 and "unable to get certificate CRL" in one.stdout + one.stderr, one.stdout + one.stderr
    every = run(base + ["-CAfile", str(lab.ca_with_crls["set"])], input="")
    assert every.returncode == 0 and "Verification: OK" in every.stdout + every.stderr, every.stdout + every.stderr


def test_gnutls_cli_loads_only_crls_signed_by_a_trust_anchor(lab: Lab):
    """gnutls-cli refuses a CRL file holding an intermediate's CRL: it cannot start at all."""
    s = lab.subject("srv-p256")
    base = [need("gnutls-cli"), "--x509cafile", str(lab.w.root), "--verify-hostname", s.host, "--sni-hostname", s.host,
            "-p", str(lab.zoo_port("srv-p256"))]
    every = run(base + ["--x509crlfile", str(lab.w.crls), "127.0.0.1"], input="")
    assert every.returncode != 0 and "Error in the CRL verification" in every.stdout + every.stderr, every.stdout + every.stderr
    root_only = run(base + ["--x509crlfile", str(lab.anchor_crls["set"]), "127.0.0.1"], input="")
    assert root_only.returncode == 0 and "The certificate is trusted" in root_only.stdout, root_only.stdout + root_only.stderr
