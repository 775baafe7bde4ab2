"""Who can decrypt a key file: a ``.sops.yaml`` creation rule as part of the plan.

The creation rule sops would apply to a key file is normalised so that comments,
anchors, reordering and spelling (a comma-separated string or a list) change nothing.
A normalised rule is plain JSON (:class:`SopsRule`), recorded in the state and shown in
the plan::

    {"groups": [["age:age1...", "pgp:ABCD..."], ...],  # master keys, per key group, sorted
     "threshold": 2 | null,                              # shamir_threshold (key groups only)
     "encrypt": {"encrypted_regex": "^private_key$"},    # which fields sops encrypts
     "mac_only_encrypted": false}

Reading and matching the rules is in :mod:`compiler.spec.sops_config`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypedDict

from compiler.spec.sops_config import CreationRule, RuleError, creation_rules, go_agrees, path_matches


class SopsRule(TypedDict):
    """A normalised creation rule (see the module's docstring)."""

    groups: list[list[str]]
    threshold: int | None
    encrypt: dict[str, str]
    mac_only_encrypted: bool


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
SELECTORS = (
    "encrypted_regex",
    "unencrypted_regex",
    "encrypted_suffix",
    "unencrypted_suffix",
    "encrypted_comment_regex",
    "unencrypted_comment_regex",
)


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
    return f"{kind}:{json.dumps(value, sort_keys=True, separators=(',', ':'), default=str)}"


def normalise(rule: CreationRule) -> SopsRule:
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
    encrypt = {k: rule[k] for k in SELECTORS if rule.get(k) is not None}
    if len(encrypt) > 1:
        raise RuleError("a rule may use only one of " + ", ".join(SELECTORS))
    return {
        "groups": groups,
        "threshold": threshold,
        "encrypt": encrypt or {"unencrypted_suffix": "_unencrypted"},
        "mac_only_encrypted": bool(rule.get("mac_only_encrypted")),
    }


_digests: dict[int, tuple[Mapping[str, Any], str]] = {}  # id(rule) -> (rule, digest): rules are shared, never mutated


def rule_digest(rule: Mapping[str, Any]) -> str:
    """A short digest of a normalised rule (a recorded one included), as the plan shows it."""
    hit = _digests.get(id(rule))
    if hit is not None and hit[0] is rule:
        return hit[1]
    digest = hashlib.sha256(json.dumps(rule, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:32]
    if len(_digests) > 1000:
        _digests.clear()
    _digests[id(rule)] = (rule, digest)
    return digest


def resolved_rule(repo: Path, rel_path: str) -> SopsRule:
    """The normalised creation rule sops applies to ``rel_path`` (a key file). Raises
    RuleError when there is none, or when pkic cannot be sure which one sops takes (a
    regular expression Go and Python read differently): the plan must say who can
    decrypt every key, so a guess is refused, never made."""
    return resolved_from(creation_rules(repo), rel_path)


_normalised: dict[int, tuple[object, SopsRule]] = {}  # id(rule) -> (the rule, its normal form): a plan asks per key file


def resolved_from(rules: list[CreationRule] | None, rel_path: str) -> SopsRule:
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
        if path_regex and not go_agrees(path_regex):
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


def rules_digest(rules: list[CreationRule] | None) -> str:
    """The creation rules as data, in order (sops takes the first match): comments,
    anchors, spelling and the order of recipients within a rule don't count."""
    if rules is None:
        return "none"
    body: list[list[object]] = []
    for rule in rules:
        try:
            norm: object = normalise(rule)
        except RuleError:
            norm = {k: rule[k] for k in sorted(rule, key=str)}
        body.append([rule.get("path_regex"), rule.get("filename_regex"), norm])
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def _comparable(master: str) -> str:
    """A master key as ``kind:identifier``, the form a key file's metadata can be compared
    in (a KMS role or profile, a group entry's extra fields, are not part of identity)."""
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


def comparable(rule: SopsRule) -> SopsRule:
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


def masters(rule: SopsRule) -> set[str]:
    """Every master key of a normalised rule, comparable with ``keys.sops_meta.file_masters``."""
    return {_comparable(k) for g in rule["groups"] for k in g}
