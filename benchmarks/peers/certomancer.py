"""certomancer (YAML-declared PKI, Python): generate the leaves' keys (certomancer reads
keys from files; writing them is part of its cost here) and `certomancer mass-summon`.

Installs certomancer into its own venv (benchmarks/.peers-venv) on first use.
Usage: certomancer.py N DIR; prints the seconds spent on the leaves; exit 3 = skipped.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV = HERE.parent / ".peers-venv"


def ensure_certomancer() -> Path | None:
    exe = VENV / "bin" / "certomancer"
    if exe.exists():
        return exe
    try:
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, capture_output=True)
        subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", "certomancer"], check=True, capture_output=True)
    except subprocess.CalledProcessError as exc:
        print(f"cannot install certomancer: {exc.stderr.decode()[-300:]}")
        return None
    return exe if exe.exists() else None


def write_key(path: Path, curve) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(curve)
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def config(n: int) -> str:
    validity = '{valid-from: "2026-11-01T00:00:00+0000", valid-to: "2027-01-30T00:00:00+0000"}'
    ca_validity = '{valid-from: "2026-11-01T00:00:00+0000", valid-to: "2029-11-01T00:00:00+0000"}'
    lines = [
        'external-url-prefix: "http://test.test"',
        "keysets:",
        "  bench:",
        "    path-prefix: keys",
        "    keys:",
        "      root: {path: root.key.pem}",
        "      ca: {path: ca.key.pem}",
    ]
    lines += [f"      svc-{j:05d}: {{path: svc-{j:05d}.key.pem}}" for j in range(n)]
    lines += [
        "pki-architectures:",
        "  bench:",
        "    keyset: bench",
        "    entity-defaults: {country-name: US, organization-name: Bench Corp}",
        "    entities:",
        "      root: {common-name: Bench Root}",
        "      ca: {common-name: Bench CA}",
    ]
    lines += [f"      svc-{j:05d}: {{common-name: svc-{j:05d}}}" for j in range(n)]
    lines += [
        "    certs:",
        "      root:",
        "        subject: root",
        "        issuer: root",
        f"        validity: {ca_validity}",
        "        extensions:",
        "          - {id: basic_constraints, critical: true, value: {ca: true}}",
        "          - {id: key_usage, critical: true, smart-value: {schema: key-usage, params: [key_cert_sign, crl_sign]}}",
        "      ca:",
        "        subject: ca",
        "        issuer: root",
        f"        validity: {ca_validity}",
        "        extensions:",
        "          - {id: basic_constraints, critical: true, value: {ca: true, path_len_constraint: 0}}",
        "          - {id: key_usage, critical: true, smart-value: {schema: key-usage, params: [key_cert_sign, crl_sign]}}",
    ]
    for j in range(n):
        name = f"svc-{j:05d}"
        lines += [
            f"      {name}:",
            f"        subject: {name}",
            "        issuer: ca",
            f"        validity: {validity}",
            "        extensions:",
            "          - {id: key_usage, critical: true, smart-value: {schema: key-usage, params: [digital_signature]}}",
            f"          - {{id: subject_alt_name, smart-value: {{schema: general-names, params: [{{type: dns-name, value: {name}.svc.internal}}, {{type: dns-name, value: {name}.example.com}}]}}}}",
        ]
    return "\n".join(lines) + "\n"


def main() -> int:
    n, work = int(sys.argv[1]), Path(sys.argv[2])
    exe = ensure_certomancer()
    if exe is None:
        return 3
    from cryptography.hazmat.primitives.asymmetric import ec

    keys = work / "keys"
    keys.mkdir(parents=True, exist_ok=True)
    write_key(keys / "root.key.pem", ec.SECP384R1())
    write_key(keys / "ca.key.pem", ec.SECP256R1())
    (work / "certomancer.yml").write_text(config(n))
    start = time.perf_counter()
    for j in range(n):
        write_key(keys / f"svc-{j:05d}.key.pem", ec.SECP256R1())
    proc = subprocess.run([str(exe), "--config", str(work / "certomancer.yml"), "mass-summon", "bench", str(work / "out")], capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        print(proc.stderr[-1500:], file=sys.stderr)
        return 1
    print(elapsed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
