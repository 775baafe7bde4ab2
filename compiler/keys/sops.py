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
keystore calls the real binary, so a root key meant to need 2 of 3 shares is never
silently encrypted to one recipient.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyrage
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SOPS_VERSION = "3.11.0"  # the format version written (what the bundled binary writes)
OTHER_BACKENDS = ("kms", "gcp_kms", "azure_keyvault", "hc_vault_transit_uri", "pgp", "key_groups", "shamir_threshold", "hckms")
UNSUPPORTED_SELECTORS = ("unencrypted_regex", "encrypted_suffix", "encrypted_comment_regex", "unencrypted_comment_regex")
# sops initialises the MAC hash with these bytes when mac_only_encrypted is set
MAC_ONLY_ENCRYPTED_INIT = bytes(
    [
        0x8A,
        0x3F,
        0xD2,
        0xAD,
        0x54,
        0xCE,
        0x66,
        0x52,
        0x7B,
        0x10,
        0x34,
        0xF3,
        0xD1,
        0x47,
        0xBE,
        0x0B,
        0x0B,
        0x97,
        0x5B,
        0x3B,
        0xF4,
        0x4F,
        0x72,
        0xC6,
        0xFD,
        0xAD,
        0xEC,
        0x81,
        0x76,
        0xF2,
        0x7D,
        0x69,
    ]
)


@dataclass(frozen=True)
class AgeRule:
    recipients: tuple[str, ...]
    encrypted_regex: str | None
    unencrypted_suffix: str | None
    mac_only_encrypted: bool

    def encrypts(self, key: str) -> bool:
        if self.encrypted_regex is not None:  # as sops reads it (Go's regexp = RE2): linear time
            compiled = _re2(self.encrypted_regex)
            assert compiled is not None  # rule_for hands out no AgeRule RE2 cannot read
            return compiled.search(key) is not None  # type: ignore[attr-defined]
        return not key.endswith(self.unencrypted_suffix or "_unencrypted")


_rules_cache: dict[tuple, list] = {}


def _load_rules(config: Path) -> list:
    """The creation rules of ``config`` (a .sops.yaml in a repo), read without following
    a symlink; cached by content."""
    from compiler import layout

    try:  # one read per process while the file stays the same (it is asked once per key)
        st = os.lstat(config)
        stamp: tuple = (str(config), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    except FileNotFoundError:
        raise FileNotFoundError(str(config)) from None
    if stamp in _rules_cache:
        return _rules_cache[stamp]
    data = layout.read_file(config.parent, config.name)  # refuses a symlink
    if data is None:
        raise FileNotFoundError(str(config))
    rules = _checked_rules(data)
    _rules_cache.clear()
    _rules_cache[stamp] = rules
    return rules


_STRING_FIELDS = (
    "path_regex",
    "filename_regex",
    "encrypted_regex",
    "unencrypted_regex",
    "encrypted_suffix",
    "unencrypted_suffix",
    "encrypted_comment_regex",
    "unencrypted_comment_regex",
    "kms",
    "gcp_kms",
    "azure_keyvault",
    "hc_vault_transit_uri",
    "pgp",
    "hckms",
)
_REGEX_FIELDS = (
    "path_regex",
    "filename_regex",
    "encrypted_regex",
    "unencrypted_regex",
    "encrypted_comment_regex",
    "unencrypted_comment_regex",
)


SOPS_HINT = "fix .sops.yaml (see the README: Keys, SOPS and identities)"


def _checked_rules(data: bytes) -> list:
    """.sops.yaml's creation rules, checked as data: every mistake is an error naming the
    file, line and field (bounded parsing first), never a crash and never guessed around."""
    from compiler.model.bounded import Locator, load_yaml, quote, yaml_nodes
    from compiler.model.errors import PkicError, fail

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise fail(".sops.yaml", "is not UTF-8 text", SOPS_HINT) from None
    doc = load_yaml(text, ".sops.yaml")
    problems: list[tuple[tuple, str]] = []
    if doc is None:
        return []
    if not isinstance(doc, dict):
        problems.append(((), "the top level must be a mapping with creation_rules"))
        rules: list = []
    else:
        rules = doc.get("creation_rules") or []
        if not isinstance(rules, list):
            problems.append((("creation_rules",), "must be a list of rules"))
            rules = []
    for i, rule in enumerate(rules):
        if not isinstance(rule, dict):
            problems.append((("creation_rules", i), "is not a mapping (a rule: path_regex, age, key_groups...)"))
            continue
        for k in _STRING_FIELDS:
            if k in rule and rule[k] is not None and not isinstance(rule[k], str):
                problems.append((("creation_rules", i, k), f"must be a string, not {type(rule[k]).__name__}"))
        age = rule.get("age")
        if age is not None and not (isinstance(age, str) or (isinstance(age, list) and all(isinstance(a, str) for a in age))):
            problems.append((("creation_rules", i, "age"), "must be a string or a list of strings"))
        for k in _REGEX_FIELDS:
            if isinstance(rule.get(k), str):
                try:
                    re.compile(rule[k])
                except re.error as exc:
                    problems.append(((("creation_rules", i, k)), f"{quote(rule[k])} is not a regular expression: {exc}"))
                except (RecursionError, OverflowError, MemoryError):
                    problems.append(
                        ((("creation_rules", i, k)), f"{quote(rule[k])} is nested too deeply to be a regular expression pkic reads")
                    )
    if problems:
        loc = Locator(".sops.yaml", doc, yaml_nodes(text))
        raise PkicError([loc.diag(path, why, SOPS_HINT) for path, why in problems[:20]])
    return rules


def _go_agrees(regex: object) -> bool:
    """Would Go's regexp (what sops uses) read ``regex`` as Python does? `{,n}` is a
    repetition to Python and literal text to Go; lookarounds and back-references do not
    compile in Go. When unsure, pkic leaves the choice of rule to sops itself."""
    return (
        isinstance(regex, str)
        and regex.isascii()
        and not any(t in regex for t in ("{,", "(?=", "(?!", "(?<", "[:", "[=", "[."))
        and not re.search(r"\\[1-9]", regex)
        and not re.search(
            r"\(\?[a-zA-Z]", regex.replace("(?P<", "")
        )  # POSIX classes: [[:alnum:]] is a class to Go, a set and a ']' to Python
        and _re2(regex) is not None
    )


_RE2: dict[str, object] = {}


def _re2(regex: str) -> object | None:
    """``regex`` compiled by RE2 (None: RE2 refuses it). Go's regexp, which sops uses,
    is RE2's syntax and semantics; and RE2 runs in time linear in the path, where
    Python's backtracking engine took minutes on a path_regex like ``(a|aa)+$x`` against
    a 60-letter name (both written by the same pull request)."""
    if regex not in _RE2:
        import re2

        options = re2.Options()
        options.log_errors = False
        try:
            _RE2[regex] = re2.compile(regex, options)
        except re2.error:
            _RE2[regex] = None
    return _RE2[regex]


def _re2_search(regex: str, text: str) -> bool:
    compiled = _re2(regex)
    if compiled is None:
        raise RuleError(f"{regex[:60]!r} is not a regular expression Go's regexp (sops) reads")
    return compiled.search(text) is not None  # type: ignore[attr-defined]


def path_matches(path_regex: str, rel_path: str) -> bool:
    """Whether sops's rule ``path_regex`` applies to ``rel_path`` (for a regex _go_agrees
    accepts), in linear time."""
    compiled = _re2(path_regex)
    if compiled is None:
        raise RuleError(f"path_regex {path_regex[:60]!r} is not a regular expression Go's regexp (sops) reads")
    return compiled.search(rel_path) is not None  # type: ignore[attr-defined]


def creation_rules(repo: Path) -> list | None:
    """.sops.yaml's creation rules as plain data (None: no .sops.yaml)."""
    try:
        return _load_rules(repo / ".sops.yaml")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        from compiler.model.errors import fail

        raise fail(".sops.yaml", f"cannot read it: {exc}") from None


def age_key_file() -> Path:
    """Where sops looks for age identities: $SOPS_AGE_KEY_FILE, else
    $XDG_CONFIG_HOME/sops/age/keys.txt (~/.config/sops/age/keys.txt)."""
    explicit = os.environ.get("SOPS_AGE_KEY_FILE")
    if explicit:
        return Path(explicit).expanduser()
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "sops" / "age" / "keys.txt"


def first_match(config: Path, rel_path: str) -> int | None:
    """The index of the creation rule sops would use for ``rel_path`` (by path_regex;
    None when pkic cannot tell: it then asks sops for each file)."""
    try:
        rules = _load_rules(config)
    except (OSError, ValueError, AttributeError, UnicodeDecodeError):
        return None
    except Exception:  # PkicError: a broken .sops.yaml is reported where it is read first
        return None
    for i, rule in enumerate(rules):
        if not isinstance(rule, dict) or rule.get("filename_regex"):
            return None
        path_regex = rule.get("path_regex")
        if path_regex and not _go_agrees(path_regex):
            return None
        if path_regex and not path_matches(str(path_regex), rel_path):
            continue
        return i
    return None


def rule_for(config: Path, rel_path: str) -> AgeRule | None:
    """The first creation rule matching ``rel_path``, if it is a plain age rule."""
    try:
        rules = _load_rules(config)
    except (OSError, ValueError, AttributeError, UnicodeDecodeError):
        return None
    for rule in rules:
        if not isinstance(rule, dict):
            return None
        path_regex = rule.get("path_regex")
        if path_regex and not _go_agrees(path_regex):
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
        if encrypted_regex is not None and _re2(encrypted_regex) is None:
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


_ENC = re.compile(r"^ENC\[AES256_GCM,data:(?P<data>[^,]*),iv:(?P<iv>[^,]+),tag:(?P<tag>[^,]+),type:(?P<type>[a-z]+)\]$")


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


def identities() -> list:
    """age identities where sops looks: SOPS_AGE_KEY, SOPS_AGE_KEY_FILE, the default file."""
    texts = []
    if os.environ.get("SOPS_AGE_KEY"):
        texts.append(os.environ["SOPS_AGE_KEY"])
    try:
        texts.append(age_key_file().read_text(encoding="utf-8"))
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


def read_value(text: str, key: str, idents: list) -> str | None:
    """Decrypt one top-level value of an age-encrypted SOPS YAML document, MAC checked.

    None when the document is not something this reader handles (other backends, nested
    documents, no matching identity...): the caller then asks the real binary."""
    doc = _sops_doc(text)
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


# --------------------------------------------------------------------------- rules as intent
#
# Who can decrypt a key file is part of the plan: the creation rule sops would apply to
# it, normalised so that comments, anchors, reordering and spelling (a comma-separated
# string or a list) change nothing. A normalised rule is plain JSON:
#
#   {"groups": [["age:age1...", "pgp:ABCD..."], ...],  # master keys, per key group, sorted
#    "threshold": 2 | null,                              # shamir_threshold (key groups only)
#    "encrypt": {"encrypted_regex": "^private_key$"},    # which fields sops encrypts
#    "mac_only_encrypted": false}

_FLAT_BACKENDS = (
    ("age", "age"),
    ("pgp", "pgp"),
    ("kms", "kms"),
    ("gcp_kms", "gcp_kms"),
    ("azure_keyvault", "azure_kv"),
    ("hc_vault_transit_uri", "hc_vault"),
    ("hckms", "hckms"),
)
_GROUP_BACKENDS = {
    "age": "age",
    "pgp": "pgp",
    "kms": "kms",
    "gcp_kms": "gcp_kms",
    "azure_keyvault": "azure_kv",
    "hc_vault": "hc_vault",
    "hckms": "hckms",
}
_SELECTORS = (
    "encrypted_regex",
    "unencrypted_regex",
    "encrypted_suffix",
    "unencrypted_suffix",
    "encrypted_comment_regex",
    "unencrypted_comment_regex",
)


class RuleError(ValueError):
    """pkic cannot tell (or refuses) the rule sops would apply to a key file."""


def _split(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [v.strip() for v in value if v.strip()]
    raise RuleError("a list of master keys must be strings")


def _master(kind: str, value: object) -> str:
    if isinstance(value, str):
        return f"{kind}:{value.strip()}"
    import json

    return f"{kind}:{json.dumps(value, sort_keys=True, separators=(',', ':'), default=str)}"


def normalise(rule: dict) -> dict:
    """The normalised form of one creation rule (see above)."""
    groups: list[list[str]] = []
    if rule.get("key_groups") is not None:
        kg = rule["key_groups"]
        if not isinstance(kg, list) or not kg:
            raise RuleError("key_groups must be a non-empty list of groups")
        for g in kg:
            if not isinstance(g, dict):
                raise RuleError("each key group must be a mapping of backends to master keys")
            keys = []
            for field_name, value in g.items():
                kind = _GROUP_BACKENDS.get(str(field_name))
                if kind is None:
                    raise RuleError(f"key group backend {str(field_name)[:40]!r} is not one sops knows")
                if not isinstance(value, list):
                    raise RuleError(f"key group {field_name} must be a list")
                keys += [_master(kind, v) for v in value]
            groups.append(sorted(set(keys)))
        groups.sort()
    else:
        keys = []
        for field_name, kind in _FLAT_BACKENDS:
            for v in _split(rule.get(field_name)):
                entry = v if kind != "kms" or not rule.get("aws_profile") else f"{v}|profile={rule['aws_profile']}"
                keys.append(_master(kind, entry))
        if keys:
            groups.append(sorted(set(keys)))
    if not groups or not all(groups):
        raise RuleError("the rule names no master key: sops could not encrypt with it")
    threshold = rule.get("shamir_threshold")
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, int) or not 1 <= threshold <= len(groups)):
        raise RuleError(f"shamir_threshold must be a number of key groups (1..{len(groups)})")
    if len(groups) == 1:
        threshold = None
    encrypt = {k: rule[k] for k in _SELECTORS if rule.get(k) is not None}
    if len(encrypt) > 1:
        raise RuleError("a rule may use only one of " + ", ".join(_SELECTORS))
    return {
        "groups": groups,
        "threshold": threshold,
        "encrypt": encrypt or {"unencrypted_suffix": "_unencrypted"},
        "mac_only_encrypted": bool(rule.get("mac_only_encrypted")),
    }


_digests: dict[int, tuple[dict, str]] = {}  # id(rule) -> (rule, digest): rules are shared, never mutated


def rule_digest(rule: dict) -> str:
    import json

    hit = _digests.get(id(rule))
    if hit is not None and hit[0] is rule:
        return hit[1]
    digest = hashlib.sha256(json.dumps(rule, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:32]
    if len(_digests) > 1000:
        _digests.clear()
    _digests[id(rule)] = (rule, digest)
    return digest


def resolved_rule(repo: Path, rel_path: str) -> dict:
    """The normalised creation rule sops applies to ``rel_path`` (a key file). Raises
    RuleError when there is none, or when pkic cannot be sure which one sops takes (a
    regular expression Go and Python read differently): the plan must say who can
    decrypt every key, so a guess is refused, never made."""
    return resolved_from(creation_rules(repo), rel_path)


_normalised: dict[int, tuple[object, dict]] = {}  # id(rule) -> (the rule, its normal form): a plan asks per key file


def resolved_from(rules: list | None, rel_path: str) -> dict:
    """:func:`resolved_rule` on creation rules already read."""
    if rules is None:
        raise RuleError("there is no .sops.yaml")
    for i, rule in enumerate(rules):
        hit = _normalised.get(id(rule))
        if hit is not None and hit[0] is rule:
            path_regex = rule.get("path_regex")
            if path_regex and not path_matches(path_regex, rel_path):
                continue
            return hit[1]
        if rule.get("filename_regex"):
            raise RuleError(f"rule {i + 1} uses filename_regex: write path_regex instead (pkic reads only path_regex)")
        path_regex = rule.get("path_regex")
        if path_regex and not _go_agrees(path_regex):
            raise RuleError(
                f"rule {i + 1}'s path_regex uses syntax that Go's regexp (sops) and Python read differently "
                "({,n}, lookarounds, back-references, POSIX classes): pkic cannot show who decrypts the keys"
            )
        if path_regex and not path_matches(path_regex, rel_path):
            continue
        try:
            norm = normalise(rule)
        except RuleError as exc:
            raise RuleError(f"rule {i + 1}: {exc}") from None
        if len(_normalised) > 1000:
            _normalised.clear()
        _normalised[id(rule)] = (rule, norm)
        return norm
    raise RuleError(f"no creation rule matches {rel_path}")


def rules_digest(rules: list | None) -> str:
    """The creation rules as data, in order (sops takes the first match): comments,
    anchors, spelling and the order of recipients within a rule don't count."""
    import json

    if rules is None:
        return "none"
    body = []
    for rule in rules:
        try:
            norm: object = normalise(rule)
        except RuleError:
            norm = {k: rule[k] for k in sorted(rule, key=str)}
        body.append([rule.get("path_regex"), rule.get("filename_regex"), norm])
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def rule_encrypts_private_key(rule: dict) -> bool:
    """Does a normalised rule encrypt the ``private_key`` field?"""
    enc = rule["encrypt"]
    if "encrypted_regex" in enc:
        return _re2_search(enc["encrypted_regex"], "private_key")
    if "unencrypted_regex" in enc:
        return not _re2_search(enc["unencrypted_regex"], "private_key")
    if "encrypted_suffix" in enc:
        return "private_key".endswith(enc["encrypted_suffix"])
    if "unencrypted_suffix" in enc:
        return not "private_key".endswith(enc["unencrypted_suffix"])
    return False  # comment selectors: values are left in clear


def _comparable(master: str) -> str:
    """A master key as ``kind:identifier``, the form a key file's metadata can be compared
    in (a KMS role or profile, a group entry's extra fields, are not part of identity)."""
    import json

    kind, _, value = master.partition(":")
    if value.startswith("{"):
        try:
            item = json.loads(value)
        except ValueError:
            return master
        if kind == "kms":
            value = str(item.get("arn"))
        elif kind == "gcp_kms":
            value = str(item.get("resource_id"))
        elif kind == "azure_kv":
            value = f"{item.get('vaultUrl')}/keys/{item.get('key')}/{item.get('version')}"
        elif kind == "hckms":
            value = str(item.get("key_id"))
    elif kind == "kms":
        value = re.split(r"[+|]", value, maxsplit=1)[0]
    return f"{kind}:{value.rstrip('/')}"


def comparable(rule: dict) -> dict:
    """A normalised rule in the form a key file's metadata can be compared with: master
    keys as identities, a threshold always given for key groups, the selector."""
    groups = sorted(sorted({_comparable(m) for m in g}) for g in rule["groups"])
    threshold = (rule.get("threshold") or len(groups)) if len(groups) > 1 else None
    return {
        "groups": groups,
        "threshold": threshold,
        "encrypt": dict(rule.get("encrypt") or {}),
        "mac_only_encrypted": bool(rule.get("mac_only_encrypted")),
    }


def file_rule(text: str) -> dict | None:
    """What a SOPS YAML document's metadata says it was encrypted under, in the form of
    :func:`comparable` (None: not a document pkic can read)."""
    meta = sops_meta(text)
    if meta is None:
        return None
    if meta.get("key_groups") is not None:
        if not isinstance(meta["key_groups"], list):
            return None
        found = [_group_masters(g) for g in meta["key_groups"]]
    else:
        found = [_group_masters(meta)]
    if any(g is None for g in found):
        return None
    groups = sorted(sorted(g) for g in found if g is not None)
    threshold = meta.get("shamir_threshold")
    threshold = (threshold or len(groups)) if len(groups) > 1 else None
    encrypt = {k: meta[k] for k in _SELECTORS if meta.get(k) is not None}
    return {
        "groups": groups,
        "threshold": threshold,
        "encrypt": encrypt or {"unencrypted_suffix": "_unencrypted"},
        "mac_only_encrypted": bool(meta.get("mac_only_encrypted")),
    }


def masters(rule: dict) -> set[str]:
    """Every master key of a normalised rule, comparable with :func:`file_masters`."""
    return {_comparable(k) for g in rule["groups"] for k in g}


def _sops_doc(text: str) -> dict | None:
    """A SOPS YAML document with its ``sops`` metadata (None: not one pkic can read)."""
    from compiler.model.bounded import load_yaml

    try:
        doc = load_yaml(text, "key file")  # bounded: a key file in out/ is untrusted too
    except Exception:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("sops"), dict):
        return None
    return doc


def sops_meta(text: str) -> dict | None:
    """The ``sops`` metadata of a SOPS YAML document (None: not one pkic can read)."""
    doc = _sops_doc(text)
    return doc["sops"] if doc is not None else None


_FILE_BACKENDS = ("age", "pgp", "kms", "gcp_kms", "azure_kv", "hc_vault", "hckms")


def _file_ident(kind: str, item: dict) -> str:
    if kind == "age":
        return str(item.get("recipient"))
    if kind == "pgp":
        return str(item.get("fp"))
    if kind == "kms":
        return str(item.get("arn"))
    if kind == "gcp_kms":
        return str(item.get("resource_id"))
    if kind == "azure_kv":
        return f"{item.get('vault_url')}/keys/{item.get('name')}/{item.get('version')}"
    if kind == "hc_vault":
        return f"{item.get('vault_address')}/v1/{item.get('engine_path')}/keys/{item.get('key_name')}"
    return str(item.get("key_id"))


def _group_masters(group: object) -> set[str] | None:
    """The master keys one mapping of metadata (the top level, or one key group) names."""
    if not isinstance(group, dict):
        return None
    out: set[str] = set()
    for k, v in group.items():
        if k not in _FILE_BACKENDS or v is None:
            continue
        if not isinstance(v, list) or not all(isinstance(item, dict) for item in v):
            return None
        out.update(f"{k}:{_file_ident(k, item).rstrip('/')}" for item in v)
    return out


def file_masters(text: str) -> set[str] | None:
    """The master keys a SOPS YAML document's own metadata names (None: not a SOPS
    document pkic can read). Anything there beyond the recorded rule's keys is a backend
    sops would contact with CI's credentials: the caller refuses the file."""
    meta = sops_meta(text)
    out = _group_masters(meta) if meta is not None else None
    if meta is None or out is None:
        return None
    groups = meta.get("key_groups")
    if groups is not None:
        if not isinstance(groups, list):
            return None
        for g in groups:
            found = _group_masters(g)
            if found is None:
                return None
            out |= found
    return out
