"""`pkic init`: a ready PKI repo and an age identity where sops looks for it.

The identity is appended (never overwritten) to ``$SOPS_AGE_KEY_FILE``, else
``$XDG_CONFIG_HOME/sops/age/keys.txt`` (``~/.config/sops/age/keys.txt``), mode 0600,
and never written inside the repo.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from datetime import datetime
from importlib import metadata, resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pyrage

from compiler import layout, settings
from compiler.model.errors import fail

SOPS_YAML = """\
# SOPS creation rules for the keys pkic writes (out/keys/<name>.sops.yaml).
# Only `private_key` is encrypted; the name and public key fingerprint stay readable.
# Add recipients (more age keys, KMS, PGP, Vault...) or key_groups with a
# shamir_threshold here: pkic hands every key to sops with these rules.
creation_rules:
  - path_regex: ^out/keys/.*\\.sops\\.yaml$
    encrypted_regex: ^private_key$
    age: {recipient}
"""

GITIGNORE = """\
# pkic's working files: the apply lock, the journal of an apply in progress
.pkic/
# never commit a clear private key
*.key
*-key.pem
"""

POLICIES_README = """\
# policies/

One YAML file per policy (`policies/<name>.yaml`), attached to authorities in pki.yaml
with `policy: <name>`: it constrains everything that authority signs. For example:

    allowed_dns: ['*.svc.internal', '*.example.com']
    forbidden_dns: [admin.example.com]
    allowed_ip: [10.0.0.0/8]
    max_lifetime: 90d
    allowed_key_types: [ecdsa-p256, ecdsa-p384]

`pkic schema --policy` prints every rule; `pkic validate` checks them.
"""


PLACEHOLDER_OWNER = "@YOUR-ORG/pki-owners"
OWNER = re.compile(r"@[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})(?:/[A-Za-z0-9._-]{1,100})?|[^@\s]+@[^@\s]+\.[^@\s]+")
# every path whose change reaches what apply signs, or the workflows that run it
OWNED = ("/.github/CODEOWNERS", "/.github/", "/.sops.yaml", "/pki.yaml", "/policies/", "/csrs/", "/out/", "/out.seal")

CODEOWNERS = """\
# Code owners: a change to any of these paths needs their review, once a branch ruleset
# requires code-owner review (pkic's docs/gitops.md). The workflows in .github/ run with the CA
# identity after a merge, so they are owned like the spec.
{replace}{lines}"""

REQUIREMENTS = """\
# How CI installs pkic: a pip requirements file, read by every workflow in
# .github/workflows/ unless the repository variable PKIC_INSTALL is set (it then
# replaces this file). See pkic's docs/gitops.md, "Installing pkic in CI".
# What is installed here runs with the CA identity: change it in a reviewed pull
# request, and pin it: a git commit SHA, or a version with --hash (pip's hash-checking
# mode then needs every dependency hashed too: `pip-compile --generate-hashes`).
{body}"""


def codeowners(owners: list[str]) -> str:
    owners = owners or [PLACEHOLDER_OWNER]
    for owner in owners:
        if not OWNER.fullmatch(owner):
            raise fail("--owner", f"{owner!r} is not a GitHub user, team or email", "write @user, @org/team or name@example.com")
    replace = (
        "# Replace the placeholder owner with the team or people who own this PKI: while it\n"
        "# names nobody, GitHub requires nobody's review.\n"
        if PLACEHOLDER_OWNER in owners
        else ""
    )
    width = max(len(p) for p in OWNED) + 2
    lines = "".join(f"{path.ljust(width)}{' '.join(owners)}\n" for path in OWNED)
    return CODEOWNERS.format(replace=replace, lines=lines)


def ci_requirement(version: str | None, direct_url: str | None) -> tuple[str | None, str]:
    """The pip requirement CI can install this pkic from, and where it comes from, from
    the installed distribution's version and PEP 610 ``direct_url.json``. None when CI
    could not reach it (a local directory) or it would put a credential into git."""
    if version is None:
        return None, "pkic is not installed as a package here"
    if direct_url is None:
        return f"pkic=={version}", "the package index pkic was installed from (CI uses PyPI unless you add --index-url)"
    try:
        info = json.loads(direct_url)
    except ValueError:
        return None, "its direct_url.json is unreadable"
    url = info.get("url") if isinstance(info, dict) else None
    if not isinstance(url, str) or not url or any(c.isspace() for c in url):
        return None, "its direct_url.json names no usable URL"
    parts = urlsplit(url)
    if parts.scheme != "https":
        return None, f"pkic was installed from a {parts.scheme or 'local'} location ({url}), which CI cannot reach"
    if parts.username or parts.password:
        return None, "pkic was installed from a URL that carries a credential, which must not go into git"
    vcs = info.get("vcs_info")
    if isinstance(vcs, dict):
        commit = vcs.get("commit_id")
        if vcs.get("vcs") == "git" and isinstance(commit, str) and re.fullmatch(r"[0-9a-f]{40}", commit):
            return f"pkic @ git+{url}@{commit}", "the git commit pkic was installed from"
        return None, f"pkic was installed from {url} with {vcs.get('vcs')}, at no commit SHA"
    archive = info.get("archive_info")
    if isinstance(archive, dict):
        hashes = archive.get("hashes")
        hashes = hashes if isinstance(hashes, dict) else {}
        legacy = archive.get("hash")
        legacy = legacy if isinstance(legacy, str) else ""
        digest = hashes.get("sha256") or (legacy[len("sha256=") :] if legacy.startswith("sha256=") else None)
        pinned = f"#sha256={digest}" if isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest) else ""
        return f"pkic @ {url}{pinned}", "the archive pkic was installed from"
    return None, f"pkic was installed from {url}, which is no archive or git commit"


def requirements_file() -> tuple[str, str | None, str]:
    """(.github/pkic-requirements.txt, the requirement in it or None, where it comes from)."""
    try:
        dist = metadata.distribution("pkic")
        version: str | None = dist.version
        direct_url = dist.read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        version = direct_url = None
    requirement, source = ci_requirement(version, direct_url)
    if requirement is None:
        body = (
            f"# pkic init could not tell where CI can install pkic from: {source}.\n"
            "# Write the requirement here, for example:\n# pkic @ git+https://github.com/<owner>/<repo>@<commit SHA>\n"
        )
    else:
        body = f"# From {source}:\n{requirement}\n"
    return REQUIREMENTS.format(body=body), requirement, source


def new_identity(label: str, now: datetime) -> tuple[str, Path]:
    """Append a fresh age identity to the key file; return (recipient, key file)."""
    ident = pyrage.x25519.Identity.generate()
    recipient = str(ident.to_public())
    path = settings.age_key_file()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)
        text = f"# created: {now.strftime('%Y-%m-%dT%H:%M:%SZ')} by pkic init for {label}\n# public key: {recipient}\n{ident}\n"
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    return recipient, path


def _outside(target: Path, secret: Path, what: str, variable: str) -> None:
    """Refuse to put a secret inside the repository being created (git would commit it)."""
    if os.path.realpath(secret).startswith(os.path.realpath(target).rstrip("/") + "/"):
        raise fail(
            str(secret),
            f"the {what} would be written inside the new repository, where git would commit it",
            f"point {variable} outside {target} (e.g. ~/.config/sops/age/keys.txt), or create the repository elsewhere",
        )


def init_repo(target: Path, now: datetime, owners: list[str] | None = None) -> dict[str, Any]:
    from compiler.state import examine, load_key, new_key_file, seal_key_file, write_seal

    if (target / "pki.yaml").exists():
        raise fail(str(target / "pki.yaml"), "already exists: this is a pkic repo", "run pkic plan there, or pick a new directory")
    if target.exists() and not target.is_dir():
        raise fail(str(target), "exists and is not a directory")
    owners_text = codeowners(list(owners or []))
    _outside(target, settings.age_key_file(), "age identity", "SOPS_AGE_KEY_FILE (or XDG_CONFIG_HOME)")
    seal_env = settings.seal_key_text()
    if not seal_env:
        _outside(target, seal_key_file(), "seal key", "PKIC_SEAL_KEY_FILE (or SOPS_AGE_KEY_FILE, beside which it goes)")
    requirements, requirement, source = requirements_file()
    templates = resources.files("compiler")
    files: dict[str, tuple[str, bool]] = {  # path: (text, replace an existing file)
        "pki.yaml": (templates.joinpath("templates/pki.yaml").read_text(encoding="utf-8"), True),
        ".sops.yaml": ("", True),  # written with the new recipient below
        ".gitignore": (GITIGNORE, False),
        "policies/README.md": (POLICIES_README, True),
        ".github/CODEOWNERS": (owners_text, False),
        ".github/dependabot.yml": (templates.joinpath("templates/dependabot.yml").read_text(encoding="utf-8"), False),
        ".github/pkic-requirements.txt": (requirements, False),
    }
    for wf in sorted(templates.joinpath("templates/workflows").iterdir(), key=lambda p: p.name):
        if wf.name.endswith(".yml"):
            files[f".github/workflows/{wf.name}"] = (wf.read_text(encoding="utf-8"), False)
    target.mkdir(parents=True, exist_ok=True)
    for rel in files:  # a planted symlink is refused before anything is created (no identity either)
        layout.check_input_target(target, rel)
    recipient, key_file = new_identity(str(target.resolve()), now)
    files[".sops.yaml"] = (SOPS_YAML.format(recipient=recipient), True)
    for rel, (text, replace) in files.items():
        layout.write_input(target, rel, text.encode("utf-8"), replace=replace)
    git = not (target / ".git").exists()
    if git:
        try:
            subprocess.run(["git", "init", "-q", str(target)], check=True, capture_output=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            raise fail(str(target), f"git init failed: {exc}", "install git, or run git init yourself") from None
    # the seal: out/ is sealed from the first apply on (see seal.py and docs/security.md)
    if seal_env:
        seal_key, seal_file, created = load_key(), "PKIC_SEAL_KEY", False
    else:
        seal_key, created = new_key_file(seal_key_file(), str(target.resolve()))
        seal_file = str(seal_key_file())
    assert seal_key is not None
    first = write_seal(
        target, seal_key, examine(target, None, scan=False), {}, lineage=None, state_serial=0, at=now.strftime("%Y-%m-%dT%H:%M:%SZ")
    )
    return {
        "recipient": recipient,
        "key_file": str(key_file),
        "git_init": git,
        "seal_key_file": seal_file,
        "seal_key_created": created,
        "seal_public_key": first.public_key,
        "ci_install": requirement,
        "ci_install_source": source,
        "owners_placeholder": not owners,
    }
