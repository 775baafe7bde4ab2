"""Red-team review of issue 12 (hostile input: bounded parsing). Each test is one
bypass a pull request author can plant; each fails on the code as reviewed and states
what pkic should do instead.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import NOW, unsealed
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.model.bounded import json_depth_ok

WALL = 30  # seconds: generous for a loaded 2-core machine; the promise is "well under a second"
MAX_LINE = 400  # a diagnostic line quoting at most ~80 characters of any value


def run(pkic, *args: str, cwd: Path, timeout: float = WALL) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, "-m", "compiler.cli", *args], cwd=cwd, env=pkic.env,
                              capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"pkic {' '.join(args)} still working after {timeout} s")
    return proc, time.monotonic() - start


def refused(proc: subprocess.CompletedProcess) -> None:
    text = proc.stdout + proc.stderr
    assert "Traceback" not in text and "pkic crashed" not in text, text[-3000:]
    assert proc.returncode == 1, (proc.returncode, text[-3000:])


def short_lines(proc: subprocess.CompletedProcess) -> None:
    longest = max((line for line in (proc.stdout + proc.stderr).splitlines()), key=len, default="")
    assert len(longest) < MAX_LINE, f"a {len(longest)}-character line: {longest[:200]}..."


def depth(v) -> int:
    """Nesting depth of a decoded JSON value (iterative: the values here are deep)."""
    best, todo = 0, [(v, 0)]
    while todo:
        x, d = todo.pop()
        if isinstance(x, (dict, list)):
            todo.extend((y, d + 1) for y in (x.values() if isinstance(x, dict) else x))
            best = max(best, d + 1)
    return best


# --------------------------------------------------------------------------- json_depth_ok and non-UTF-8 JSON


def hidden_deep(levels: int) -> str:
    """Valid JSON ``["\\"", [[[...]]], "\\""]``: two strings holding an escaped quote
    around a deep array. In UTF-8 the check sees the escapes; in UTF-16/32 a backslash is
    ``5c 00``, its escape is never removed, the check pairs the wrong quotes and takes the
    deep array for the inside of one string."""
    return '["\\"", ' + "[" * levels + "]" * levels + ', "\\""]'


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"])
def test_json_depth_check_is_not_fooled_by_utf16_or_utf32(encoding):
    """Attack: json.loads(bytes) detects UTF-16 and UTF-32 by itself, but json_depth_ok
    scans the bytes as if they were ASCII-compatible: escaped quotes in UTF-16 hide any
    nesting between them. Expected: json_depth_ok never says "ok" for bytes that
    json.loads decodes to something deeper than the limit (refuse non-UTF-8, or decode
    first)."""
    data = hidden_deep(500).encode(encoding)
    assert depth(json.loads(data)) == 501
    assert not json_depth_ok(data), f"json_depth_ok says a {encoding} document 501 levels deep is within 64"


_TEXT = st.text(alphabet='[]{}"\\ab\x00é', max_size=6)


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(st.recursive(st.one_of(st.integers(), _TEXT),
                    lambda children: st.one_of(st.lists(children, max_size=3), st.dictionaries(_TEXT, children, max_size=3)),
                    max_leaves=30),
       st.sampled_from(["utf-8", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"]))
def test_json_depth_check_never_underestimates_in_any_encoding_json_reads(value, encoding):
    """Property: for every byte string json.loads accepts (it reads UTF-8, UTF-16 and
    UTF-32), json_depth_ok(data, k) is True only if the decoded value is at most k deep."""
    data = json.dumps(value).encode(encoding)
    d = depth(json.loads(data))
    assert d == 0 or not json_depth_ok(data, d - 1), (encoding, d)


@pytest.mark.slow
def test_a_deep_utf16_state_is_refused_not_a_crash(pkic, applied):
    """Attack (unsealed repo, e.g. a local experiment or a repo that never set a seal
    key): out/state.json re-encoded as UTF-16 with a 900-level array in a record's spec,
    hidden between two escaped quotes, and a `moved` block in pki.yaml. The depth check
    passes, json.loads reads it (below the recursion limit), and the planner's
    copy.deepcopy of the certificates overflows the stack: "pkic crashed: RecursionError",
    exit 3. Expected: "out/state.json: nested more than 64 levels deep" (or "not UTF-8"),
    exit 1, for plan and apply alike."""
    pkic.env.update(unsealed(applied))
    state_path = applied / "out" / "state.json"
    body = json.loads(state_path.read_text())
    body["certificates"]["web"][0]["spec"]["x"] = "PLACEHOLDER"
    text = json.dumps(body).replace('"PLACEHOLDER"', hidden_deep(900))
    state_path.write_bytes(text.encode("utf-16"))
    spec = (applied / "pki.yaml").read_text()
    assert "\n  web:\n" in spec
    (applied / "pki.yaml").write_text(spec.replace("\n  web:\n", "\n  web2:\n", 1) + "moved:\n  - {from: web, to: web2}\n")
    for command in (("plan", "--now", NOW), ("apply", "--yes", "--now", NOW)):
        proc, _ = run(pkic, *command, cwd=applied)
        refused(proc)
        assert "out/state.json" in proc.stderr, proc.stderr


# --------------------------------------------------------------------------- a wide document: bounded bytes, unbounded work


@pytest.mark.slow
def test_a_wide_two_megabyte_spec_is_answered_in_seconds(pkic, repo):
    """Attack: 2 MB of pki.yaml is far below the 10 MiB cap, but a flow list of a million
    one-letter scalars under one unknown field sends the document to ruamel's pure-Python
    round-trip loader (for the error's position), at ~100 us a node: minutes of CPU and
    gigabytes (a 7 MB file took validate 603 s and 2.6 GB). Expected: an ordinary error
    (the unknown field, or "too many values") within seconds -- e.g. a node-count limit
    checked on the event stream next to the depth, before the round-trip loader."""
    spec = (repo / "pki.yaml").read_text()
    (repo / "pki.yaml").write_text("x-extra: [" + ",".join(["a"] * 1_000_000) + "]\n" + spec)
    for command in (("validate",), ("plan", "--now", NOW)):
        proc, _ = run(pkic, *command, cwd=repo)
        refused(proc)
        assert "pki.yaml:" in proc.stderr, proc.stderr


# --------------------------------------------------------------------------- values echoed whole


@pytest.mark.slow
def test_a_long_unknown_field_or_entry_name_is_not_echoed_whole(pkic, repo):
    """Attack: an explicit key (`? name` -- YAML's 1024-character limit is for implicit
    keys only) 20,000 characters long, as an unknown field and as an entry name. The value
    part of each message is quoted short, but the field path in front of it is printed
    whole: a 40,000-character line. Expected: every line short (the path shortened like a
    quoted value)."""
    spec = (repo / "pki.yaml").read_text()
    assert "    renew_before: 30d\n" in spec and "certificates:\n" in spec
    spec = spec.replace("    renew_before: 30d\n", "    renew_before: 30d\n    ? " + "k" * 20_000 + "\n    : 1\n", 1)
    spec = spec.replace("certificates:\n", "certificates:\n  ? " + "n" * 20_000 + "\n  :\n    issuer: services-ca\n    dns: [a.example.com]\n", 1)
    (repo / "pki.yaml").write_text(spec)
    for command in (("validate",), ("plan", "--now", NOW)):
        proc, _ = run(pkic, *command, cwd=repo)
        refused(proc)
        short_lines(proc)


@pytest.mark.slow
def test_a_long_policy_pattern_is_not_echoed_whole(pkic, repo):
    """Attack: policies/web.yaml with a 50,000-character allowed_dns / allowed_uri entry
    that is not a pattern. policy.py's PydanticCustomError repeats the value whole (two
    50,000-character lines). Expected: quoted short (bounded.quote)."""
    spec = (repo / "pki.yaml").read_text()
    assert "    path_length: 0\n" in spec
    (repo / "pki.yaml").write_text(spec.replace("    path_length: 0\n", "    path_length: 0\n    policy: web\n", 1))
    (repo / "policies" / "web.yaml").write_text("allowed_dns: ['" + "d" * 50_000 + "!']\nallowed_uri: ['" + "u" * 50_000 + "']\n")
    for command in (("validate",), ("plan", "--now", NOW)):
        proc, _ = run(pkic, *command, cwd=repo)
        refused(proc)
        assert "policies/web.yaml" in proc.stderr
        short_lines(proc)


@pytest.mark.slow
def test_a_long_csr_path_is_not_echoed_whole(pkic, repo):
    """Attack: `csr:` a 50,000-character relative path (valid characters). Reading it
    fails ("File name too long") and the message repeats the path whole. Expected: the
    path quoted short."""
    spec = (repo / "pki.yaml").read_text()
    (repo / "pki.yaml").write_text(spec.replace("    renew_before: 30d\n", "    renew_before: 30d\n    csr: '" + "c" * 50_000 + ".pem'\n", 1))
    for command in (("validate",), ("plan", "--now", NOW)):
        proc, _ = run(pkic, *command, cwd=repo)
        refused(proc)
        short_lines(proc)


@pytest.mark.slow
def test_a_long_state_version_is_not_echoed_whole(pkic, applied):
    """Attack (unsealed): out/state.json with "version" a 100,000-character string.
    state.py prints it with !r: a 100,000-character error line. Expected: quoted short."""
    pkic.env.update(unsealed(applied))
    state_path = applied / "out" / "state.json"
    body = json.loads(state_path.read_text())
    body["version"] = "v" * 100_000
    state_path.write_text(json.dumps(body))
    for command in (("plan", "--now", NOW), ("status",)):
        proc, _ = run(pkic, *command, cwd=applied)
        refused(proc)
        short_lines(proc)


@pytest.mark.slow
def test_a_long_seal_format_is_not_echoed_whole(pkic, applied):
    """Attack: out.seal with "format" a 60,000-character string (under MAX_SEAL). status
    prints `seal: out.seal is unreadable: not a pkic seal: format 'fff...'` whole.
    Expected: quoted short."""
    seal_path = applied / "out.seal"
    body = json.loads(seal_path.read_text())
    body["format"] = "f" * 60_000
    seal_path.write_text(json.dumps(body))
    proc, _ = run(pkic, "status", cwd=applied)
    assert "Traceback" not in proc.stderr and "pkic crashed" not in proc.stderr
    assert "out.seal" in proc.stdout + proc.stderr
    short_lines(proc)


# --------------------------------------------------------------------------- --out through a symlinked directory


@pytest.mark.slow
@pytest.mark.parametrize("command", [("plan", "--now", NOW, "--out"), ("report", "--now", NOW, "--out")])
def test_an_absolute_out_path_inside_the_repo_is_not_written_through_a_symlinked_directory(pkic, applied, tmp_path, command):
    """Attack: the pull request commits `reports -> /somewhere` (a symlinked directory);
    CI writes `--out $GITHUB_WORKSPACE/reports/x`. The relative spelling is refused, but
    the absolute one only gets O_NOFOLLOW on its last component, and the file lands in
    /somewhere. Expected: an absolute path inside the repository is checked like a
    relative one (no symlinked component): exit 1, "symlink", nothing written there."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (applied / "reports").symlink_to(elsewhere)
    proc, _ = run(pkic, *command, str(applied / "reports" / "x.out"), cwd=applied)
    assert not list(elsewhere.iterdir()), "written through the planted symlink"
    refused(proc)
    assert "symlink" in proc.stderr, proc.stderr


# --------------------------------------------------------------------------- CSRs


def _self_signed_csr(patch) -> bytes:
    """A DER CSR whose request info ``patch`` rewrote, re-signed by its own Ed25519 key
    (a fixed-length signature, so the outer lengths stay): the self-signature verifies."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from cryptography.x509.oid import NameOID

    key = ed25519.Ed25519PrivateKey.generate()
    names = [x509.DNSName("web.example.com")]
    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "web")]))
           .add_extension(x509.SubjectAlternativeName(names), False).add_extension(x509.IssuerAlternativeName(names), False)
           .sign(key, None))
    der, tbs = csr.public_bytes(serialization.Encoding.DER), csr.tbs_certrequest_bytes
    new = patch(tbs)
    assert len(new) == len(tbs) and new != tbs
    out = der.replace(tbs, new).replace(csr.signature, key.sign(new))
    assert x509.load_der_x509_csr(out).is_signature_valid
    return out


def _duplicate_san(tbs: bytes) -> bytes:
    return tbs.replace(bytes.fromhex("0603551d12"), bytes.fromhex("0603551d11"))  # issuerAltName -> a second subjectAltName


def _x400_name(tbs: bytes) -> bytes:
    i = tbs.index(b"\x82\x0fweb.example.com")  # the SAN's dNSName [2] -> x400Address [3] (constructed)
    return tbs[:i] + b"\xa3" + tbs[i + 1:]


@pytest.mark.slow
@pytest.mark.parametrize("patch", [_duplicate_san, _x400_name], ids=["two-SAN-extensions", "x400Address-SAN"])
def test_a_csr_with_odd_extensions_is_an_error_not_a_crash(pkic, repo, patch):
    """Attack: a validly self-signed CSR with two subjectAltName extensions, or a SAN
    holding an x400Address. csr.extensions raises x509.DuplicateExtension /
    UnsupportedGeneralNameType (plain Exceptions; csr.py catches only ExtensionNotFound and
    ValueError): "pkic crashed", exit 3, in validate, plan and apply. Expected: an error
    naming the CSR (or the extra names ignored), exit 1."""
    (repo / "csrs").mkdir()
    (repo / "csrs" / "web.csr.der").write_bytes(_self_signed_csr(patch))
    spec = (repo / "pki.yaml").read_text()
    (repo / "pki.yaml").write_text(spec.replace("    renew_before: 30d\n", "    renew_before: 30d\n    key: ed25519\n    csr: csrs/web.csr.der\n", 1))
    for command in (("validate",), ("plan", "--now", NOW)):
        proc, _ = run(pkic, *command, cwd=repo)
        assert "Traceback" not in proc.stderr and "pkic crashed" not in proc.stderr, proc.stderr
        assert proc.returncode in (0, 1), proc.stderr


@pytest.mark.slow
def test_names_a_csr_asks_for_are_escaped_and_few(pkic, repo):
    """Attack: a CSR asking for 100,000 extra DNS names, one of them carrying terminal
    escapes (IA5String allows ESC). plan's warning "the CSR also asks for ..." lists every
    one, raw: a 1.7 MB line, and ESC [8m / ESC [31m reach the terminal and the CI log.
    Expected: a few names, quoted and escaped, and a count of the rest."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName("web.example.com"), x509.DNSName("x\x1b[8mhidden\x1b[0m.example.com")]
    names += [x509.DNSName(f"x{i}.example.net") for i in range(100_000)]
    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "web")]))
           .add_extension(x509.SubjectAlternativeName(names), False).sign(key, hashes.SHA256()))
    (repo / "csrs").mkdir()
    (repo / "csrs" / "web.csr.pem").write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    spec = (repo / "pki.yaml").read_text()
    (repo / "pki.yaml").write_text(spec.replace("    renew_before: 30d\n", "    renew_before: 30d\n    csr: csrs/web.csr.pem\n", 1))
    proc, _ = run(pkic, "plan", "--now", NOW, cwd=repo)
    assert proc.returncode == 0, proc.stderr
    assert "\x1b" not in proc.stdout + proc.stderr, "a terminal escape from the CSR reached the terminal"
    short_lines(proc)


# --------------------------------------------------------------------------- .sops.yaml regexes other than path_regex


@pytest.mark.slow
@pytest.mark.parametrize("field", ["path_regex", "encrypted_regex"])
def test_a_deeply_grouped_sops_regex_is_an_error_not_a_crash(pkic, repo, field):
    """Attack: a .sops.yaml regex of 1,000 nested groups. _checked_rules compiles every
    regex field with Python's re (catching only re.error); sre_parse recurses per group:
    RecursionError, "pkic crashed", exit 3, in validate and plan (and apply). Expected:
    ".sops.yaml:line:col: ... is not a regular expression", exit 1 (RE2 reads it, or
    refuses it, without recursion)."""
    rules = (repo / ".sops.yaml").read_text()
    deep = "(" * 1000 + ")" * 1000
    if field == "path_regex":
        assert "path_regex: ^out/keys/" in rules
        rules = rules.replace("path_regex: ^out/keys/", f"path_regex: '{deep}^out/keys/", 1).replace(r"\.sops\.yaml$", r"\.sops\.yaml$'", 1)
    else:
        assert "encrypted_regex: ^private_key$" in rules
        rules = rules.replace("encrypted_regex: ^private_key$", f"encrypted_regex: '{deep}^private_key$'", 1)
    (repo / ".sops.yaml").write_text(rules)
    for command in (("validate",), ("plan", "--now", NOW)):
        proc, _ = run(pkic, *command, cwd=repo)
        refused(proc)
        assert ".sops.yaml" in proc.stderr, proc.stderr


@pytest.mark.slow
def test_a_backtracking_encrypted_regex_cannot_stall_apply(pkic, applied):
    """Attack: the pull request changes .sops.yaml's encrypted_regex to
    `^private_key$|(.*)(.*)...(.*)x$` (30 groups). It still encrypts private_key, so
    validate and plan pass in a second; but the in-process writer matches it with
    Python's re against every other field name of a key file ("name", ...): exponential
    backtracking, and the apply after the merge (holding the identity) never finishes.
    Expected: encrypted_regex matched like path_regex (RE2, which sops itself uses):
    apply completes (or refuses) in seconds."""
    rules = (applied / ".sops.yaml").read_text()
    assert "encrypted_regex: ^private_key$" in rules
    (applied / ".sops.yaml").write_text(rules.replace("encrypted_regex: ^private_key$", "encrypted_regex: '^private_key$|" + "(.*)" * 30 + "x$'", 1))
    spec = (applied / "pki.yaml").read_text()
    (applied / "pki.yaml").write_text(spec.rstrip("\n") + "\n  api:\n    issuer: services-ca\n    dns: [api.example.com]\n")
    proc, _ = run(pkic, "plan", "--now", NOW, cwd=applied)
    assert proc.returncode == 0, proc.stderr
    proc, _ = run(pkic, "apply", "--yes", "--now", NOW, cwd=applied, timeout=60)
    assert proc.returncode in (0, 1) and "pkic crashed" not in proc.stderr, proc.stderr


# --------------------------------------------------------------------------- a huge number the number check never sees


@pytest.mark.slow
@pytest.mark.parametrize("where", ["entry name", "subject CN", "version", "rekey"])
def test_a_quoted_tagged_huge_int_is_an_error_not_a_crash(pkic, repo, where):
    """Attack: `!!int "0xfff...f"` (5,000 hex digits). The number check skips quoted
    scalars (ev.style) and the explicit tag makes the loader build the int anyway (hex has
    no digit limit); the first repr() of it (spec.diagnostics._show, bounded.quote) raises ValueError
    ("Exceeds the limit (4300 digits)"): "pkic crashed", exit 3. Expected: refused where
    it stands, like a plain 5,000-character number (check tagged scalars too, whatever
    their style), exit 1."""
    huge = '!!int "0x' + "f" * 5000 + '"'
    spec = (repo / "pki.yaml").read_text()
    edits = {
        "entry name": ("certificates:\n", f"certificates:\n  ? {huge}\n  :\n    issuer: services-ca\n    dns: [a.example.com]\n"),
        "subject CN": ("subject: {CN: payments}", "subject: {CN: " + huge + "}"),
        "version": ("version: 1\n", f"version: {huge}\n"),
        "rekey": ("    renew_before: 30d\n", f"    renew_before: 30d\n    rekey: {huge}\n"),
    }
    old, new = edits[where]
    assert old in spec
    (repo / "pki.yaml").write_text(spec.replace(old, new, 1))
    for command in (("validate",), ("plan", "--now", NOW)):
        proc, _ = run(pkic, *command, cwd=repo)
        refused(proc)
        assert "pki.yaml" in proc.stderr
        short_lines(proc)
