"""pki.yaml: everything that knows the YAML. Everything after this package works on
:class:`EffectiveSpec`.

* :mod:`~compiler.spec.models`: the pydantic models, which are the JSON Schema;
* :mod:`~compiler.spec.parse`: YAML text to data (fast C loaders, ruamel round-trip);
* :mod:`~compiler.spec.loading`: pki.yaml to a document with positions, then to the
  effective spec (:func:`load`, the entry point);
* :mod:`~compiler.spec.diagnostics`: problems turned into file:line:col diagnostics;
* :mod:`~compiler.spec.resolution`: issuers, cross-field checks, canonical order;
* :mod:`~compiler.spec.entries`: one entry with its defaults applied and its own checks;
* :mod:`~compiler.spec.effective`: the effective spec's classes;
* :mod:`~compiler.spec.cache`: the resolved-spec cache in the user's cache directory.

Import from ``compiler.spec``, not from its modules: they may move.
"""

from compiler.spec.cache import cache_dir
from compiler.spec.diagnostics import pydantic_diags, raw_index, sorted_diagnostics
from compiler.spec.effective import (
    AuthorityEntry,
    CaSettings,
    EffectiveSpec,
    Entry,
    EntryKind,
    EntrySpec,
    LeafEntry,
    PublishSettings,
    spec_digest,
)
from compiler.spec.loading import load, load_spec, locate, read_document
from compiler.spec.models import (
    SPEC_FILE,
    Authority,
    Certificate,
    Defaults,
    Duration,
    IpNetwork,
    KeyTypeName,
    Moved,
    OcspSigner,
    Profile,
    Publish,
    RevokeReason,
    Spec,
    Subject,
    json_schema,
)
from compiler.spec.parse import parse_yaml
from compiler.spec.resolution import resolve

__all__ = [
    "SPEC_FILE",
    "Authority",
    "AuthorityEntry",
    "CaSettings",
    "Certificate",
    "Defaults",
    "Duration",
    "EffectiveSpec",
    "Entry",
    "EntryKind",
    "EntrySpec",
    "IpNetwork",
    "KeyTypeName",
    "LeafEntry",
    "Moved",
    "OcspSigner",
    "Profile",
    "Publish",
    "PublishSettings",
    "RevokeReason",
    "Spec",
    "Subject",
    "cache_dir",
    "json_schema",
    "load",
    "load_spec",
    "locate",
    "parse_yaml",
    "pydantic_diags",
    "raw_index",
    "read_document",
    "resolve",
    "sorted_diagnostics",
    "spec_digest",
]
