"""What an apply's signing reads and fills in: its inputs, the certificates and keys it
has made so far, and its result. Signing (issue.py, publish.py) turns these into journal
steps; run.py carries the steps out."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from compiler.apply.bundle import Certs
from compiler.keys.keystore import KeyHandle, Keystore
from compiler.plan import Plan
from compiler.spec import EffectiveSpec
from compiler.state import JournalOp, Seal, State, ts

Steps = Iterator[JournalOp]  # steps, each journaled, written and folded before the next is made


@dataclass
class ApplyResult:
    """What an apply did, for its summary line and its commit."""

    issued: list[str] = field(default_factory=list)
    revoked: list[str] = field(default_factory=list)
    moved: list[tuple[str, str]] = field(default_factory=list)
    crls: list[str] = field(default_factory=list)
    crls_removed: list[str] = field(default_factory=list)  # authorities whose CRL files went (planned cleanup)
    responders: list[str] = field(default_factory=list)
    ocsp: int = 0
    ocsp_removed: int = 0  # published responses removed: publish.ocsp is false
    responders_retired: list[str] = field(default_factory=list)
    reencrypted: list[str] = field(default_factory=list)  # key files re-encrypted under a new rule
    touched: set[str] = field(default_factory=set)  # paths written, removed or renamed
    files_written: int = 0
    state_serial: int = 0
    workers: int = 0  # worker processes that signed (0: all in the main process)
    signed_in_workers: int = 0
    seal: Seal | None = None  # the seal written by this apply
    state_sha256: bytes | None = None  # the SHA-256 of the state this apply wrote


@dataclass
class Context:
    """The inputs of one apply, and what it made so far (the state is folded step by step)."""

    repo: Path
    plan: Plan
    spec: EffectiveSpec
    state: State
    store: Keystore
    now: datetime
    certs: Certs
    result: ApplyResult = field(default_factory=ApplyResult)
    handles: dict[str, KeyHandle] = field(default_factory=dict)  # authority keys made in this apply
    # RFC 4514 subjects by the spec's subject: each computed once per apply (leaves share them)
    subjects: dict[tuple[tuple[str, ...], ...], str] = field(default_factory=dict)
    at: str = field(init=False)  # the apply's time as journal steps record it

    def __post_init__(self) -> None:
        self.at = ts(self.now)
