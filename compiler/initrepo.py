"""`pkic init`: a ready PKI repo and an age identity where sops looks for it.

The identity is appended (never overwritten) to ``$SOPS_AGE_KEY_FILE``, else
``$XDG_CONFIG_HOME/sops/age/keys.txt`` (``~/.config/sops/age/keys.txt``), mode 0600,
and never written inside the repo.
"""

from __future__ import annotations

import os
import subprocess
from datetime import datetime
from importlib import resources
from pathlib import Path

import pyrage

from .errors import fail
from .sopsfile import age_key_file

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


def new_identity(label: str, now: datetime) -> tuple[str, Path]:
    """Append a fresh age identity to the key file; return (recipient, key file)."""
    ident = pyrage.x25519.Identity.generate()
    recipient = str(ident.to_public())
    path = age_key_file()
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
        raise fail(str(secret), f"the {what} would be written inside the new repository, where git would commit it",
                   f"point {variable} outside {target} (e.g. ~/.config/sops/age/keys.txt), or create the repository elsewhere")


def init_repo(target: Path, now: datetime) -> dict:
    from . import seal

    if (target / "pki.yaml").exists():
        raise fail(str(target / "pki.yaml"), "already exists: this is a pkic repo", "run pkic plan there, or pick a new directory")
    if target.exists() and not target.is_dir():
        raise fail(str(target), "exists and is not a directory")
    _outside(target, age_key_file(), "age identity", "SOPS_AGE_KEY_FILE (or XDG_CONFIG_HOME)")
    seal_env = os.environ.get("PKIC_SEAL_KEY")
    if not seal_env:
        _outside(target, seal.key_file(), "seal key", "PKIC_SEAL_KEY_FILE (or SOPS_AGE_KEY_FILE, beside which it goes)")
    target.mkdir(parents=True, exist_ok=True)
    recipient, key_file = new_identity(str(target.resolve()), now)
    template = resources.files("compiler").joinpath("templates/pki.yaml").read_text(encoding="utf-8")
    (target / "pki.yaml").write_text(template, encoding="utf-8")
    (target / ".sops.yaml").write_text(SOPS_YAML.format(recipient=recipient), encoding="utf-8")
    gi = target / ".gitignore"
    if not gi.exists():
        gi.write_text(GITIGNORE, encoding="utf-8")
    (target / "policies").mkdir(exist_ok=True)
    (target / "policies" / "README.md").write_text(POLICIES_README, encoding="utf-8")
    workflows = target / ".github" / "workflows"
    workflows.mkdir(parents=True, exist_ok=True)
    for wf in sorted(resources.files("compiler").joinpath("templates/workflows").iterdir(), key=lambda p: p.name):
        if wf.name.endswith(".yml") and not (workflows / wf.name).exists():
            (workflows / wf.name).write_text(wf.read_text(encoding="utf-8"), encoding="utf-8")
    git = not (target / ".git").exists()
    if git:
        try:
            subprocess.run(["git", "init", "-q", str(target)], check=True, capture_output=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            raise fail(str(target), f"git init failed: {exc}", "install git, or run git init yourself") from None
    # the seal: out/ is sealed from the first apply on (see seal.py and docs/security.md)
    if seal_env:
        seal_key, seal_file, created = seal.load_key(), "PKIC_SEAL_KEY", False
    else:
        seal_key, created = seal.new_key_file(seal.key_file(), str(target.resolve()))
        seal_file = str(seal.key_file())
    assert seal_key is not None
    first = seal.write(target, seal_key, seal.examine(target, None, scan=False), {}, lineage=None, state_serial=0,
                       at=now.strftime("%Y-%m-%dT%H:%M:%SZ"))
    return {"recipient": recipient, "key_file": str(key_file), "git_init": git, "seal_key_file": seal_file,
            "seal_key_created": created, "seal_public_key": first.public_key}
