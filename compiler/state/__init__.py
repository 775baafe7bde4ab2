"""What pkic remembers and proves: the recorded state, the apply journal, and the seal over ``out/``.

* :mod:`~compiler.state.records`: the state in memory (:class:`State`, its records)
* :mod:`~compiler.state.store`: ``out/state.json`` read and checked; :mod:`~compiler.state.migrate`
  brings an older pkic's state up to this one's format
* :mod:`~compiler.state.ops`: an apply's steps, one class per kind (folded, their files written, named in commits)
* :mod:`~compiler.state.journal`, :mod:`~compiler.state.lock`: an apply's journal and the repo lock
* :mod:`~compiler.state.sealkey`, :mod:`~compiler.state.seal`: the seal key, and ``out.seal`` and its signature
* :mod:`~compiler.state.outtree`, :mod:`~compiler.state.gitview`: ``out/`` as git sees it, and what git knows
* :mod:`~compiler.state.sealcheck`: is ``out/`` the newest sealed output? (:func:`examine`)
* :mod:`~compiler.state.trust`: the recorded seal key plan and verify check against, without a secret
* :mod:`~compiler.state.invariants`, :mod:`~compiler.state.sealing`: apply's side of the seal
"""

from compiler.state.gitview import GitView
from compiler.state.invariants import Invariants
from compiler.state.journal import Journal, load_with_journal, new_lineage, read_journal
from compiler.state.lock import RepoLock
from compiler.state.migrate import upgrade
from compiler.state.ops import (
    BeginOp,
    CommitOp,
    CompromisedOp,
    CrlOp,
    FileSink,
    IssuedOp,
    JournalOp,
    MovedOp,
    OcspOp,
    Op,
    ReencryptedOp,
    ResponderOp,
    ResponderRetiredOp,
    RevokedOp,
    SettingsOp,
    parse_op,
)
from compiler.state.outtree import EMPTY_TREE, BlobMemo, Listing, listing_json, scan_out, tree_id
from compiler.state.records import (
    ACTIVE,
    REVOKED,
    STATE_FORMAT,
    STATE_VERSION,
    SUPERSEDED,
    CertRecord,
    Compromised,
    CrlInfo,
    OcspInfo,
    Record,
    Settings,
    State,
    parse_ts,
    ts,
)
from compiler.state.seal import MAX_SEAL, Seal, parse_seal, parsed_seals, render_seal
from compiler.state.sealcheck import REVERT_HINT, Report, examine
from compiler.state.sealing import Sealing, write_seal
from compiler.state.sealkey import cache_key, cache_mac_key, load_key, new_key_file, parse_key, public_text, seal_key_file
from compiler.state.store import MAX_STATE, load_state
from compiler.state.trust import recorded_public_key, sealed_findings

__all__ = [
    "BeginOp",
    "CommitOp",
    "CompromisedOp",
    "CrlOp",
    "FileSink",
    "IssuedOp",
    "JournalOp",
    "MovedOp",
    "OcspOp",
    "ReencryptedOp",
    "ResponderOp",
    "ResponderRetiredOp",
    "RevokedOp",
    "SettingsOp",
    "parse_op",
    "ACTIVE",
    "EMPTY_TREE",
    "MAX_SEAL",
    "MAX_STATE",
    "REVERT_HINT",
    "REVOKED",
    "STATE_FORMAT",
    "STATE_VERSION",
    "SUPERSEDED",
    "GitView",
    "Invariants",
    "Journal",
    "Listing",
    "Op",
    "CertRecord",
    "Compromised",
    "CrlInfo",
    "OcspInfo",
    "Record",
    "Settings",
    "RepoLock",
    "Report",
    "Seal",
    "Sealing",
    "State",
    "examine",
    "listing_json",
    "BlobMemo",
    "cache_key",
    "cache_mac_key",
    "load_key",
    "load_state",
    "load_with_journal",
    "new_key_file",
    "new_lineage",
    "parse_key",
    "parse_seal",
    "parse_ts",
    "parsed_seals",
    "public_text",
    "read_journal",
    "recorded_public_key",
    "render_seal",
    "scan_out",
    "seal_key_file",
    "sealed_findings",
    "tree_id",
    "ts",
    "upgrade",
    "write_seal",
]
