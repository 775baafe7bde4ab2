"""What a SOPS key file's own metadata says, read without decrypting anything.

A key file in out/ can come from a pull request: before sops is asked to decrypt one,
the keystore compares the master keys its metadata names (a backend sops would contact
with this machine's credentials) with the rule the state records, and after sops wrote
one, the rule it used with the rule the plan showed.
"""

from __future__ import annotations

from typing import Any

from compiler.model.bounded import load_yaml
from compiler.spec.sops_rules import SELECTORS, SopsRule


def sops_doc(text: str) -> dict[str, Any] | None:
    """A SOPS YAML document with its ``sops`` metadata (None: not one pkic can read)."""
    try:
        doc = load_yaml(text, "key file")  # bounded: a key file in out/ is untrusted too
    except Exception:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("sops"), dict):
        return None
    return doc  # a YAML mapping: open data, read field by field


def sops_meta(text: str) -> dict[str, Any] | None:
    """The ``sops`` metadata of a SOPS YAML document (None: not one pkic can read)."""
    doc = sops_doc(text)
    return doc["sops"] if doc is not None else None


def file_rule(text: str) -> SopsRule | None:
    """What a SOPS YAML document's metadata says it was encrypted under, in the form of
    ``sops_rules.comparable`` (None: not a document pkic can read)."""
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
    encrypt = {k: meta[k] for k in SELECTORS if meta.get(k) is not None}
    return {
        "groups": groups,
        "threshold": threshold,
        "encrypt": encrypt or {"unencrypted_suffix": "_unencrypted"},
        "mac_only_encrypted": bool(meta.get("mac_only_encrypted")),
    }


_FILE_BACKENDS = ("age", "pgp", "kms", "gcp_kms", "azure_kv", "hc_vault", "hckms")


def _file_ident(kind: str, item: dict[str, Any]) -> str:
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
