"""An in-process writer (and reader) of SOPS YAML key documents, for age-only rules.

Why: one `sops` process per key costs ~15 ms; this costs well under a millisecond. It
writes the documented SOPS format (checked against sops 3.11 in the tests, which judge
every file with the real binary both ways):

* each encrypted value is ``ENC[AES256_GCM,data:<b64>,iv:<b64>,tag:<b64>,type:str]``:
  AES-256-GCM under the file's 32-byte data key, a fresh 32-byte IV, the 16-byte tag
  split off, and the path of keys to the value, each followed by ``:``, as AAD;
* the MAC is SHA-512 over the values in document order (only the encrypted ones with
  ``mac_only_encrypted``), upper-case hex, encrypted with ``lastmodified`` as AAD;
* the data key is age-encrypted (ASCII armor) to each recipient.

Only plain age rules are handled here: no key groups, no Shamir threshold, no other
backend (KMS, PGP, Vault...). For anything else :func:`rule_for` returns None and the
keystore calls the real binary (:mod:`compiler.keys.sops_process`), so a root key meant
to need 2 of 3 shares is never silently encrypted to one recipient.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyrage
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from compiler import settings
from compiler.keys.sops_meta import sops_doc
from compiler.spec.sops_config import go_agrees, load_rules, path_matches, re2_compile

SOPS_VERSION = "3.11.0"  # the format version written (what the bundled binary writes)
OTHER_BACKENDS = ("kms", "gcp_kms", "azure_keyvault", "hc_vault_transit_uri", "pgp", "key_groups", "shamir_threshold", "hckms")
UNSUPPORTED_SELECTORS = ("unencrypted_regex", "encrypted_suffix", "encrypted_comment_regex", "unencrypted_comment_regex")
# sops initialises the MAC hash with these bytes when mac_only_encrypted is set
# an age identity (pyrage.x25519.Identity: pyrage ships no type information)
AgeIdentity = Any

MAC_ONLY_ENCRYPTED_INIT = bytes.fromhex("8a3fd2ad54ce66527b1034f3d147be0b0b975b3bf44f72c6fdadec8176f27d69")


@dataclass(frozen=True)
class AgeRule:
    """A plain age creation rule: all this writer needs to know to encrypt like sops."""

    recipients: tuple[str, ...]
    encrypted_regex: str | None
    unencrypted_suffix: str | None
    mac_only_encrypted: bool

    def encrypts(self, key: str) -> bool:
        if self.encrypted_regex is not None:  # as sops reads it (Go's regexp = RE2): linear time
            compiled = re2_compile(self.encrypted_regex)
            assert compiled is not None  # rule_for hands out no AgeRule RE2 cannot read
            return compiled.search(key) is not None
        return not key.endswith(self.unencrypted_suffix or "_unencrypted")


def rule_for(config: Path, rel_path: str) -> AgeRule | None:
    """The first creation rule matching ``rel_path``, if it is a plain age rule."""
    try:
        rules = load_rules(config)
    except (OSError, ValueError, AttributeError, UnicodeDecodeError):
        return None
    for rule in rules:  # each a mapping: load_rules refuses anything else
        path_regex = rule.get("path_regex")
        if path_regex and not go_agrees(path_regex):
            return None  # sops (Go) might pick another rule than Python would: let it choose
        if path_regex and not path_matches(path_regex, rel_path):
            continue
        if rule.get("filename_regex"):
            return None  # not worth guessing: let sops decide
        if any(rule.get(k) for k in OTHER_BACKENDS) or any(rule.get(k) for k in UNSUPPORTED_SELECTORS):
            return None
        age = rule.get("age")
        if isinstance(age, str):
            recipients = tuple(r.strip() for r in age.split(",") if r.strip())
        elif isinstance(age, list) and all(isinstance(r, str) for r in age):
            recipients = tuple(r.strip() for r in age if r.strip())
        else:
            return None
        if not recipients or not all(r.startswith("age1") and "pq" not in r[:6] for r in recipients):
            return None
        try:
            for r in recipients:
                pyrage.x25519.Recipient.from_str(r)
        except Exception:
            return None
        encrypted_regex = rule.get("encrypted_regex")
        if encrypted_regex is not None and re2_compile(encrypted_regex) is None:
            return None  # RE2 (Go's syntax) cannot read it: let sops decide
        return AgeRule(recipients, encrypted_regex, rule.get("unencrypted_suffix"), bool(rule.get("mac_only_encrypted")))
    return None


def _armor(data: bytes) -> str:
    b64 = base64.b64encode(data).decode("ascii")
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    return "-----BEGIN AGE ENCRYPTED FILE-----\n" + "\n".join(lines) + "\n-----END AGE ENCRYPTED FILE-----\n"


def _dearmor(text: str) -> bytes:
    body = [ln.strip() for ln in text.strip().splitlines() if ln.strip() and not ln.startswith("-----")]
    return base64.b64decode("".join(body))


def _enc(aes: AESGCM, value: str, aad: str) -> str:
    iv = os.urandom(32)
    sealed = aes.encrypt(iv, value.encode("utf-8"), aad.encode("utf-8"))
    data, tag = sealed[:-16], sealed[-16:]
    b = base64.b64encode
    return f"ENC[AES256_GCM,data:{b(data).decode()},iv:{b(iv).decode()},tag:{b(tag).decode()},type:str]"


_ENC = re.compile(r"^ENC\[AES256_GCM,data:(?P<data>[^,]*),iv:(?P<iv>[^,]+),tag:(?P<tag>[^,]+),type:(?P<type>[a-z]+)\]\Z")


def _dec(aes: AESGCM, token: str, aad: str) -> str:
    m = _ENC.match(token)
    if not m:
        raise ValueError("not an encrypted value")
    d = base64.b64decode
    return aes.decrypt(d(m["iv"]), d(m["data"]) + d(m["tag"]), aad.encode("utf-8")).decode("utf-8")


def _yaml_str(value: str) -> str:
    """A flat YAML scalar for our known-safe values (names, hex, ENC[...])."""
    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._/+=,:\[\]-]*", value) and not value.endswith(":"):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_document(fields: list[tuple[str, str]], rule: AgeRule, now: datetime | None = None) -> str:
    """A SOPS YAML document of flat string fields (in this order), encrypted per ``rule``."""
    data_key = os.urandom(32)
    aes = AESGCM(data_key)
    lastmodified = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    mac = hashlib.sha512()
    if rule.mac_only_encrypted:
        mac.update(MAC_ONLY_ENCRYPTED_INIT)
    lines = []
    for key, value in fields:
        encrypted = rule.encrypts(key)
        if encrypted or not rule.mac_only_encrypted:
            mac.update(value.encode("utf-8"))
        if encrypted:
            lines.append(f"{key}: {_enc(aes, value, key + ':')}")
        elif "\n" in value:
            lines.append(f"{key}: |\n" + "".join(f"    {ln}\n" for ln in value.rstrip("\n").split("\n")).rstrip("\n"))
        else:
            lines.append(f"{key}: {_yaml_str(value)}")
    lines.append("sops:")
    lines.append("    age:")
    for recipient in rule.recipients:
        stanza = pyrage.encrypt(data_key, [pyrage.x25519.Recipient.from_str(recipient)])
        lines.append(f"        - recipient: {recipient}")
        lines.append("          enc: |")
        lines.extend(f"            {ln}" for ln in _armor(stanza).rstrip("\n").split("\n"))
    lines.append(f'    lastmodified: "{lastmodified}"')
    lines.append(f"    mac: {_enc(aes, mac.hexdigest().upper(), lastmodified)}")
    if rule.mac_only_encrypted:
        lines.append("    mac_only_encrypted: true")
    if rule.encrypted_regex is not None:
        lines.append(
            f"    encrypted_regex: {_yaml_str(rule.encrypted_regex) if re.fullmatch(r'[A-Za-z0-9^$_.-]+', rule.encrypted_regex) else repr(rule.encrypted_regex)}"
        )
    else:
        lines.append(f"    unencrypted_suffix: {rule.unencrypted_suffix or '_unencrypted'}")
    lines.append(f"    version: {SOPS_VERSION}")
    return "\n".join(lines) + "\n"


def identities() -> list[AgeIdentity]:
    """age identities where sops looks: SOPS_AGE_KEY, SOPS_AGE_KEY_FILE, the default file."""
    texts = []
    if os.environ.get("SOPS_AGE_KEY"):
        texts.append(os.environ["SOPS_AGE_KEY"])
    try:
        texts.append(settings.age_key_file().read_text(encoding="utf-8"))
    except OSError:
        pass
    out = []
    for text in texts:
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:  # an identity line is whatever pyrage accepts as one
                out.append(pyrage.x25519.Identity.from_str(line))
            except Exception:
                continue
    return out


def read_value(text: str, key: str, idents: list[AgeIdentity]) -> str | None:
    """Decrypt one top-level value of an age-encrypted SOPS YAML document, MAC checked.

    None when the document is not something this reader handles (other backends, nested
    documents, no matching identity...): the caller then asks the real binary."""
    doc = sops_doc(text)
    if doc is None:
        return None
    meta = doc["sops"]
    if any(meta.get(k) for k in ("kms", "gcp_kms", "azure_kv", "hc_vault", "pgp", "key_groups", "shamir_threshold")):
        return None
    data_key = None
    for stanza in meta.get("age") or []:
        try:
            data_key = pyrage.decrypt(_dearmor(stanza["enc"]), idents)
            break
        except Exception:
            continue
    if data_key is None:
        return None
    aes = AESGCM(data_key)
    mac = hashlib.sha512()
    only_enc = bool(meta.get("mac_only_encrypted"))
    if only_enc:
        mac.update(MAC_ONLY_ENCRYPTED_INIT)
    wanted = None
    try:
        for k, v in doc.items():
            if k == "sops":
                continue
            if not isinstance(v, str):
                return None
            if _ENC.match(v):
                plain = _dec(aes, v, f"{k}:")
                mac.update(plain.encode("utf-8"))
            else:
                plain = v
                if not only_enc:
                    mac.update(plain.encode("utf-8"))
            if k == key:
                wanted = plain
        stored = _dec(
            aes,
            meta["mac"],
            str(meta["lastmodified"])
            if not isinstance(meta["lastmodified"], datetime)
            else meta["lastmodified"].strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
    except Exception:
        return None
    if stored.upper() != mac.hexdigest().upper():
        raise ValueError("MAC mismatch: the file was modified outside sops")
    return wanted
