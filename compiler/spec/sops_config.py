"""``.sops.yaml`` as reviewed input: its creation rules read, checked, and matched as sops does.

The creation rules decide who can decrypt every key pkic writes, so they are read like
pki.yaml: bounded parsing, every mistake a diagnostic with file, line and field. A rule
is chosen by its ``path_regex`` the way sops (Go) chooses it: with RE2, which is Go's
regexp syntax and runs in time linear in the path. Where Go and Python might read a
regex differently, pkic does not guess (:func:`go_agrees`).

What a rule *means* (its master keys, normalised for the plan) is in
:mod:`compiler.spec.sops_rules`; encrypting with one is in :mod:`compiler.keys`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Protocol

from compiler import layout
from compiler.layout import SOPS_CONFIG
from compiler.model.bounded import Locator, load_yaml, quote, yaml_nodes
from compiler.model.errors import PkicError, fail

SOPS_HINT = "fix .sops.yaml (see docs/keys.md)"

# one creation rule as written (a YAML mapping): open data, checked field by field
CreationRule = dict[str, Any]

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


class RuleError(ValueError):
    """pkic cannot tell (or refuses) the rule sops would apply to a key file."""


class Re2Pattern(Protocol):
    """The part of a compiled ``re2`` pattern pkic uses (google-re2 ships no types)."""

    def search(self, text: str) -> object | None: ...


class Re2BytesPattern(Protocol):
    """A compiled ``re2`` pattern of bytes (matched against bytes)."""

    def search(self, text: bytes) -> object | None: ...


_rules_cache: dict[tuple[str, int, int, int, int], list[CreationRule]] = {}


def load_rules(config: Path) -> list[CreationRule]:
    """The creation rules of ``config`` (a .sops.yaml in a repo), read without following
    a symlink; cached by content. FileNotFoundError when there is none."""
    try:  # one read per process while the file stays the same (it is asked once per key)
        st = os.lstat(config)
        stamp = (str(config), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    except FileNotFoundError:
        raise FileNotFoundError(str(config)) from None
    if stamp in _rules_cache:
        return _rules_cache[stamp]
    data = layout.read_file(config.parent, config.name)  # refuses a symlink
    if data is None:
        raise FileNotFoundError(str(config))
    rules = checked_rules(data)
    _rules_cache.clear()
    _rules_cache[stamp] = rules
    return rules


def checked_rules(data: bytes) -> list[CreationRule]:
    """.sops.yaml's creation rules, checked as data: every mistake is an error naming the
    file, line and field (bounded parsing first), never a crash and never guessed around."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise fail(".sops.yaml", "is not UTF-8 text", SOPS_HINT) from None
    doc = load_yaml(text, ".sops.yaml")
    problems: list[tuple[tuple[str | int, ...], str]] = []
    if doc is None:
        return []
    rules: list[Any] = []
    if not isinstance(doc, dict):
        problems.append(((), "the top level must be a mapping with creation_rules"))
    else:
        found = doc.get("creation_rules") or []
        if isinstance(found, list):
            rules = found
        else:
            problems.append((("creation_rules",), "must be a list of rules"))
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
                    problems.append((("creation_rules", i, k), f"{quote(rule[k])} is not a regular expression: {exc}"))
                except (RecursionError, OverflowError, MemoryError):
                    problems.append(
                        (("creation_rules", i, k), f"{quote(rule[k])} is nested too deeply to be a regular expression pkic reads")
                    )
    if problems:
        loc = Locator(".sops.yaml", doc, yaml_nodes(text))
        raise PkicError([loc.diag(path, why, SOPS_HINT) for path, why in problems[:20]])
    return rules


def creation_rules(repo: Path) -> list[CreationRule] | None:
    """.sops.yaml's creation rules as plain data (None: no .sops.yaml)."""
    try:
        return load_rules(repo / SOPS_CONFIG)
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(".sops.yaml", f"cannot read it: {exc}") from None


# --------------------------------------------------------------------------- matching as Go does


def go_agrees(regex: object) -> bool:
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
        and re2_compile(regex) is not None
    )


_RE2: dict[str, Re2Pattern | None] = {}


def re2_compile(regex: str) -> Re2Pattern | None:
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


def re2_search(regex: str, text: str) -> bool:
    compiled = re2_compile(regex)
    if compiled is None:
        raise RuleError(f"{regex[:60]!r} is not a regular expression Go's regexp (sops) reads")
    return compiled.search(text) is not None


_RE2_UTF8: dict[str, Re2BytesPattern] = {}


def path_matches(path_regex: str, rel_path: str) -> bool:
    """Whether sops's rule ``path_regex`` applies to ``rel_path`` (for a regex go_agrees
    accepts), in linear time. Matched as UTF-8 bytes, as Go matches a string: the same
    pattern under the same options as the text form (which encodes both to UTF-8 and
    then maps byte offsets back to characters, a third of the cost, and offsets a yes or
    no does not need: a plan asks once a key file, 100,000 times at W100k)."""
    compiled = _RE2_UTF8.get(path_regex)
    if compiled is None:
        if re2_compile(path_regex) is None:
            raise RuleError(f"path_regex {path_regex[:60]!r} is not a regular expression Go's regexp (sops) reads")
        import re2

        options = re2.Options()
        options.log_errors = False
        compiled = _RE2_UTF8[path_regex] = re2.compile(path_regex.encode(), options)
    return compiled.search(rel_path.encode()) is not None


def first_match(config: Path, rel_path: str) -> int | None:
    """The index of the creation rule sops would use for ``rel_path`` (by path_regex;
    None when pkic cannot tell: it then asks sops for each file)."""
    try:
        rules = load_rules(config)
    except (OSError, ValueError, AttributeError, UnicodeDecodeError):
        return None
    except Exception:  # PkicError: a broken .sops.yaml is reported where it is read first
        return None
    for i, rule in enumerate(rules):
        if not isinstance(rule, dict) or rule.get("filename_regex"):
            return None
        path_regex = rule.get("path_regex")
        if path_regex and not go_agrees(path_regex):
            return None
        if path_regex and not path_matches(str(path_regex), rel_path):
            continue
        return i
    return None
