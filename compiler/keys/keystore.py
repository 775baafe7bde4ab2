"""The keystore: the only place a private key exists in clear, and only in memory.

Callers hold opaque :class:`KeyHandle` objects. They can ask for the public key, have a
certificate builder signed, or have the key sealed into a SOPS document; they never see
private key bytes. Keys are written only SOPS-encrypted, following the repo's
``.sops.yaml`` creation rules: a plain age rule in-process (:mod:`sops_age`), any other
(any backend, key groups, Shamir) by the real ``sops`` binary fed through a pipe
(:mod:`sops_process`): the clear key never touches the disk. Authority keys are
decrypted (again in memory or through a pipe) only when an apply needs them to sign.
The one exception is `pkic csr` (:func:`write_host_key`), which writes a new key where
the host's user asks, outside the repository.
"""

from __future__ import annotations

import errno
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import overload

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes, CertificateIssuerPublicKeyTypes
from cryptography.x509 import ocsp

from compiler import layout, settings
from compiler.keys import sops_age, sops_meta, sops_process
from compiler.layout import SOPS_CONFIG, key_path
from compiler.model.errors import PkicError, fail
from compiler.model.keytype import KeyType, SignatureHash, public_key_sha256
from compiler.spec import sops_config, sops_rules
from compiler.spec.sops_rules import SopsRule
from compiler.x509.build import SpecEntry, csr_builder

# the private keys that can sign a certificate (what cryptography's builders accept)
_SIGNING_KEYS = (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey, dsa.DSAPrivateKey)


class KeyHandle:
    """An opaque reference to a private key held by the keystore. ``key_type`` is None
    for a key loaded from a file that is of no type pkic issues for."""

    __slots__ = ("_key", "key_type")

    def __init__(self, key: CertificateIssuerPrivateKeyTypes, key_type: KeyType | None):
        self._key = key
        self.key_type = key_type

    def public_key(self) -> CertificateIssuerPublicKeyTypes:
        return self._key.public_key()

    def signature_hash(self) -> SignatureHash | None:
        # a key of no known type signs with SHA-256, as every type but three does
        return self.key_type.signature_hash() if self.key_type is not None else hashes.SHA256()

    def __repr__(self) -> str:  # never the key
        return f"<KeyHandle {self.key_type or 'unknown'} {public_key_sha256(self.public_key())[:16]}>"


_hardened = False


def harden() -> None:
    """Before the first private key exists in this process: no core dump (RLIMIT_CORE 0,
    inherited by forked workers and by the sops child that pipes a clear key back) and,
    on Linux, not dumpable (no core, no ptrace or /proc/<pid>/mem by other processes of
    the same user). A crash must not leave a CA key in a core file in the repository."""
    global _hardened
    if _hardened:
        return
    _hardened = True
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ImportError, ValueError, OSError):
        pass
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE, 0
        except (OSError, AttributeError):
            pass


def generate(key_type: KeyType) -> KeyHandle:
    """A new private key of ``key_type``, held in memory (the parameters are the enum's)."""
    harden()
    key: CertificateIssuerPrivateKeyTypes
    curve, bits = key_type.curve, key_type.rsa_bits
    if curve is not None:
        key = ec.generate_private_key(curve)
    elif bits is not None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    elif key_type is KeyType.ED25519:
        key = ed25519.Ed25519PrivateKey.generate()
    else:  # a member added to KeyType without its generation here: a programming error
        raise ValueError(f"unknown key type {key_type}")
    return KeyHandle(key, key_type)


@overload
def sign(builder: x509.CertificateBuilder, signer: KeyHandle) -> x509.Certificate: ...
@overload
def sign(builder: x509.CertificateRevocationListBuilder, signer: KeyHandle) -> x509.CertificateRevocationList: ...
@overload
def sign(builder: ocsp.OCSPResponseBuilder, signer: KeyHandle) -> ocsp.OCSPResponse: ...
def sign(
    builder: x509.CertificateBuilder | x509.CertificateRevocationListBuilder | ocsp.OCSPResponseBuilder, signer: KeyHandle
) -> x509.Certificate | x509.CertificateRevocationList | ocsp.OCSPResponse:
    """A certificate, CRL or OCSP response signed with ``signer``'s key and hash."""
    return builder.sign(signer._key, signer.signature_hash())


def _pem(handle: KeyHandle) -> str:
    return handle._key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode(
        "ascii"
    )


def key_fields(name: str, handle: KeyHandle) -> list[tuple[str, str]]:
    """The fields of a key document, in order: readable metadata, then the key."""
    return [
        ("name", name),
        ("key_type", str(handle.key_type or "unknown")),
        ("public_key_sha256", public_key_sha256(handle.public_key())),
        ("private_key", _pem(handle)),
    ]


def key_document(name: str, handle: KeyHandle) -> str:
    """The YAML handed to `sops encrypt` on its standard input."""
    out = []
    for key, value in key_fields(name, handle):
        if "\n" in value:
            out.append(f"{key}: |\n" + "".join(f"  {line}\n" for line in value.splitlines()))
        else:
            out.append(f'{key}: "{value}"\n')
    return "".join(out)


@dataclass
class Keystore:
    """Seals and opens keys in one repo through the sops binary."""

    repo: Path
    binary: str = field(default="")
    _cache: dict[str, KeyHandle] = field(default_factory=dict)
    _identities: list[sops_age.AgeIdentity] | None = None
    # rel -> the SHA-256 of the public key the (sealed) state records for that key file:
    # set by apply, so a key file swapped for another key (encrypted to CI's public
    # recipient, which anyone can do) is refused instead of signed with
    expected: dict[str, str] | None = None
    # rel -> the normalised SOPS rule the state records for that key file (None: not
    # recorded by an older pkic). Set by apply: a key file is decrypted only when its own
    # metadata names nothing but that rule's master keys (for an unrecorded one: age
    # recipients only), so that a file cannot make sops contact a backend of its choice
    allowed: dict[str, SopsRule | None] | None = None
    # rel -> the rule the plan shows for a key file written now: what sops wrote is held
    # to it (the reviewer saw who can decrypt; sops may not decide otherwise)
    planned: dict[str, SopsRule] = field(default_factory=dict)
    # the state is sealed (the apply identity wrote it): its recorded rules are trusted.
    # Unsealed, a network backend must also be named by .sops.yaml now (what a plan shows)
    trust_recorded: bool = False

    def __post_init__(self) -> None:
        harden()  # before anything is decrypted (apply, verify --keys)

    @property
    def sops(self) -> str:
        """The sops binary, found when first needed (plain age rules need none)."""
        if not self.binary:
            self.binary = sops_process.find_sops()
        return self.binary

    def check_config(self) -> None:
        if not layout.is_regular(self.repo, SOPS_CONFIG):
            layout.read_file(self.repo, SOPS_CONFIG)  # a symlink: refused with its own message
            raise fail(
                SOPS_CONFIG,
                "missing: apply cannot encrypt keys without creation rules",
                f"create {SOPS_CONFIG} (pkic init writes one with an age recipient; see docs/keys.md)",
            )

    def _env(self, rule: SopsRule | None) -> dict[str, str]:
        """The environment sops runs with: what the rule's backends need, nothing else
        (no token, no cloud credential a rule does not name)."""
        groups = rule["groups"] if rule else [["age:"]]
        return sops_process.sops_env({m.split(":", 1)[0] for g in groups for m in g})

    def seal(self, name: str, handle: KeyHandle, rel: str | None = None) -> str:
        """The SOPS-encrypted document for ``handle`` (text).

        Plain age rules are written in-process (see sops_age); every other rule (key
        groups, Shamir, KMS, PGP, Vault...) goes through the real `sops encrypt`."""
        rel = rel or key_path(name)
        want = self.planned.get(rel)
        if settings.sops_inprocess():
            rule = sops_age.rule_for(self.repo / SOPS_CONFIG, rel)
            if rule is not None:
                if want is not None and _age_rule(rule) != sops_rules.comparable(want):
                    raise _not_planned(rel)
                return _require_encrypted(sops_age.write_document(key_fields(name, handle), rule), rel)
        proc = sops_process.encrypt(
            self.sops, self.repo, self.repo / SOPS_CONFIG, rel, key_document(name, handle).encode(), self._env(want or self._rule_now(rel))
        )
        if proc.returncode != 0:
            msg = sops_process.clean_stderr(proc.stderr)
            hint = "check the creation_rules in .sops.yaml: one must match out/keys/<name>.sops.yaml"
            if "no matching creation rules" in msg or "has no creation rules" in msg:
                hint = "add a creation rule whose path_regex matches out/keys/ (see docs/keys.md)"
            raise fail(SOPS_CONFIG, f"sops could not encrypt the key of '{name}': {msg}", hint)
        text = _require_encrypted(proc.stdout.decode("utf-8"), rel)
        if want is not None and sops_meta.file_rule(text) != sops_rules.comparable(want):
            raise _not_planned(rel)  # key groups, threshold, selector and keys: exactly what the plan showed
        return text

    def _rule_now(self, rel: str) -> SopsRule | None:
        try:
            return sops_rules.resolved_rule(self.repo, rel)
        except sops_config.RuleError:
            return None

    def check_encrypts(self, rels: list[str]) -> None:
        """Before anything is signed: each key file this apply writes will hold its private
        key encrypted. A .sops.yaml whose rule leaves `private_key` out (encrypted_regex:
        ^name$, say) would otherwise commit keys in clear. Plain age rules are read; any
        other rule is tried once with a throwaway key through the real sops."""
        tried: set[int | None] = set()
        config = self.repo / SOPS_CONFIG
        inprocess = settings.sops_inprocess()
        for rel in rels:
            rule = sops_age.rule_for(config, rel) if inprocess else None
            if rule is not None:
                if not rule.encrypts("private_key"):
                    raise _clear(rel)
                want = self.planned.get(rel)
                if want is not None and _age_rule(rule) != sops_rules.comparable(want):
                    raise _not_planned(rel)
                continue
            which = sops_config.first_match(config, rel)  # None: pkic cannot tell which rule sops takes: try this file
            if which is not None and which in tried:
                continue
            tried.add(which)
            try:
                self.seal(rel, generate(KeyType.ECDSA_P256), rel)  # a throwaway key; seal() refuses a clear result
            except PkicError as exc:
                d = exc.diagnostics[0]
                raise fail(d.file, d.message.replace(f"the key of '{rel}'", rel) + " (tried before signing anything)", d.hint) from None

    def remember(self, rel: str, handle: KeyHandle) -> None:
        self._cache[rel] = handle

    def load(self, name: str, rel: str | None = None) -> KeyHandle:
        """Decrypt ``out/keys/<name>.sops.yaml`` (or ``rel``) in memory (cached for this run)."""
        rel = rel or key_path(name)
        if rel in self._cache:
            return self._cache[rel]
        data = layout.read_file(self.repo, rel, max_size=1024 * 1024)
        if data is None:
            raise fail(rel, f"the key of '{name}' is missing", f"restore {rel} from git, or bump `rekey` on '{name}' to replace it")
        recorded = self._check_masters(rel, name, data)
        key = None
        if settings.sops_inprocess():
            if self._identities is None:
                self._identities = sops_age.identities()
            try:
                text = sops_age.read_value(data.decode("utf-8", "replace"), "private_key", self._identities)
            except ValueError as exc:
                raise fail(rel, f"cannot decrypt the key of '{name}': {exc}", "restore it from git") from None
            if text is not None:
                try:
                    key = serialization.load_pem_private_key(text.encode("ascii"), password=None)
                except ValueError:
                    raise fail(rel, f"the decrypted key of '{name}' is not a PEM private key", "restore the file from git") from None
        if key is None:
            proc = sops_process.decrypt_field(self.sops, self.repo, data, "private_key", self._env(recorded))
            if proc.returncode != 0:
                msg = sops_process.clean_stderr(proc.stderr)
                raise fail(
                    rel,
                    f"sops could not decrypt the key of '{name}': {msg}",
                    "apply needs the identity: set SOPS_AGE_KEY (CI) or SOPS_AGE_KEY_FILE, or keep it in ~/.config/sops/age/keys.txt",
                )
            try:
                key = serialization.load_pem_private_key(proc.stdout, password=None)
            except ValueError:
                raise fail(rel, f"the decrypted key of '{name}' is not a PEM private key", "restore the file from git") from None
            finally:
                del proc
        if self.expected is not None:
            want = self.expected.get(rel)
            got = public_key_sha256(key.public_key())
            if want is None:
                raise fail(rel, f"the state records no public key for this key file of '{name}'", "restore out/ from git")
            if got != want:
                raise fail(
                    rel,
                    f"decrypts to a key that is not the one the state records for '{name}' (public key {got[:16]}…, recorded {want[:16]}…)",
                    "refusing to sign with it: restore the key file from git, and find out who replaced it",
                )
        if not isinstance(key, _SIGNING_KEYS):  # X25519/X448: no certificate can be signed with it
            raise fail(rel, f"the decrypted key of '{name}' is not a signing key", "restore the file from git")
        handle = KeyHandle(key, KeyType.of(key.public_key()))
        self._cache[rel] = handle
        return handle

    def _check_masters(self, rel: str, name: str, data: bytes) -> SopsRule | None:
        """Before anything decrypts ``rel``: the master keys its metadata names are those
        of the rule the state records (unrecorded: age recipients only). Returns that rule."""
        if self.allowed is None:
            return None
        recorded = self.allowed.get(rel)
        named = sops_meta.file_masters(data.decode("utf-8", "replace"))
        if named is None:
            raise fail(rel, f"the key file of '{name}' is not a SOPS document pkic can read", "restore it from git")
        allowed = sops_rules.masters(recorded) if recorded is not None else {m for m in named if m.startswith("age:")}
        if not self.trust_recorded:
            now = self._rule_now(rel)
            current = sops_rules.masters(now) if now is not None else set()
            allowed = {m for m in allowed if m.startswith("age:") or m in current}
        foreign = sorted(named - allowed)
        if foreign:
            shown = ", ".join(f[:80] for f in foreign[:3])
            raise fail(
                rel,
                f"its SOPS metadata names master keys the state does not record for '{name}' ({shown}): "
                "sops would contact them with this machine's credentials; nothing was decrypted",
                "restore the file from git, and find out who changed it; a change of recipients is made in .sops.yaml and planned",
            )
        return recorded


def _age_rule(rule: sops_age.AgeRule) -> SopsRule:
    """The in-process writer's rule, as sops_rules.comparable gives a planned one."""
    enc = (
        {"encrypted_regex": rule.encrypted_regex}
        if rule.encrypted_regex is not None
        else {"unencrypted_suffix": rule.unencrypted_suffix or "_unencrypted"}
    )
    return {
        "groups": [sorted({f"age:{r}" for r in rule.recipients})],
        "threshold": None,
        "encrypt": enc,
        "mac_only_encrypted": rule.mac_only_encrypted,
    }


def _not_planned(rel: str) -> Exception:
    return fail(
        SOPS_CONFIG,
        f"sops encrypted {rel} for other master keys than the plan shows: nothing is written",
        "sops and pkic read .sops.yaml differently: simplify the rule's path_regex, and plan again",
    )


def _clear(rel: str) -> Exception:
    return fail(
        SOPS_CONFIG,
        f"its creation rule for {rel} would leave private_key in clear: nothing is written",
        "encrypt private_key (encrypted_regex: ^private_key$, or no selector at all); see docs/security.md",
    )


def _require_encrypted(text: str, rel: str) -> str:
    """A key document as written to out/keys: `private_key` must be an encrypted value
    and no clear key may be anywhere in it (checked on every document, cheaply)."""
    if "\nprivate_key: ENC[AES256_GCM," not in "\n" + text or "PRIVATE KEY" in text:
        raise _clear(rel)
    return text


def write_host_key(entry: SpecEntry, key_out: Path) -> bytes:
    """`pkic csr`: the one place a clear key is written to disk, where the host's user asks
    (never the repo), mode 0600, never over an existing file or through a symlink. Returns
    the PEM CSR for the entry's subject and names, signed by the new key."""
    handle = generate(entry.key_type)
    pem = csr_builder(entry).sign(handle._key, handle.signature_hash()).public_bytes(serialization.Encoding.PEM)
    key_out.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_out, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(_pem(handle))
    return pem


def write_csr_outside(csr_out: Path, pem: bytes) -> None:
    """`pkic csr --csr-out` outside the repo: the CSR written there, never through a
    symlink (one inside the repo is written by layout.write_input)."""
    csr_out.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(csr_out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise fail(str(csr_out), "is a symlink: pkic csr never writes through one", "remove it, or pick another --csr-out") from None
        raise
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
