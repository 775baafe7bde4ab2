"""Attack: a '\\n' that `$` lets through. names.py's _LABEL, _ASCII_HOST and _LOCAL end in
`$`, which also matches before a final newline; `str.isdigit` is False on ``"123\\n"``.

* ``"host.123\\n."``: dns_name strips the final dot, keeps ``host.123\\n`` (every check
  passes, the last label is not all digits), and pydantic's str_strip_whitespace then
  makes it ``host.123``: the name ending in an all-digit label that dns_name refuses as
  written plainly is signed (``256.0.0.1`` too).
* ``"ops\\n@example.com"``: the local part ``ops\\n`` matches _LOCAL; the newline is
  inside the value, so no strip removes it, and the certificate carries the rfc822Name
  ``ops<LF>@example.com``: a control character signed into a certificate.

Pre-existing (06c911d has it too); not caused by the _NOT_AN_ADDRESS fast path.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from compiler.spec.models import Certificate


@pytest.mark.parametrize("value", ["host.123\n.", "256.0.0.1\n.", "web.example.123\n."])
def test_a_final_newline_does_not_hide_an_all_digit_last_label(value):
    with pytest.raises(ValidationError):
        got = Certificate.model_validate({"issuer": "ca", "dns": [value]}).dns
        pytest.fail(f"{value!r} accepted as {got!r}")


@pytest.mark.parametrize("value", ["ops\n@example.com", "a\n@svc.internal"])
def test_an_email_local_part_cannot_hold_a_newline(value):
    with pytest.raises(ValidationError):
        got = Certificate.model_validate({"issuer": "ca", "email": [value]}).email
        pytest.fail(f"{value!r} accepted as {got!r}")


def test_validate_refuses_both(pkic, repo):
    text = (repo / "pki.yaml").read_text(encoding="utf-8")
    text += ('  num:\n    issuer: root-ca\n    dns: ["host.123\\n."]\n'
             '  mail:\n    issuer: services-ca\n    profile: client\n    email: ["ops\\n@example.com"]\n')
    (repo / "pki.yaml").write_text(text, encoding="utf-8")
    proc = pkic("validate", cwd=repo)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "certificates.num.dns" in proc.stderr and "certificates.mail.email" in proc.stderr, proc.stderr


def test_no_pattern_of_the_spec_takes_a_final_newline():
    """The same `$` in the other patterns that hold untrusted text: an entry name (it
    becomes a file name), a duration, a URI scheme, an encrypted SOPS value."""
    from compiler.keys.sops_age import _ENC
    from compiler.model.durations import _ISO, _SHORT
    from compiler.model.names import uri
    from compiler.spec.resolution import NAME_RE

    assert NAME_RE.match("web") and not NAME_RE.match("web\n")
    assert not _ENC.match("ENC[AES256_GCM,data:a,iv:b,tag:c,type:str]\n")
    assert not _SHORT.match("90d\n") and not _ISO.match("P90D\n")
    with pytest.raises(ValueError):
        uri("https\n://example.com")
