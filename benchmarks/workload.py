"""Generate the benchmark workloads: 1 root, 10 intermediates, N ECDSA P-256 leaves with
2 DNS SANs each (W1k: N = 1,000; W10k: N = 10,000). Every tenth leaf lives 30 days
instead of 90, so that a renewal wave (--now 25 days later) has N/10 leaves due.

    python benchmarks/workload.py 10000 > pki.yaml
"""

from __future__ import annotations

import sys


def workload(leaves: int, intermediates: int = 10, ocsp: bool = False) -> str:
    lines = [
        "version: 1",
        "defaults: {key: ecdsa-p256, subject: {O: Bench Corp, C: US}}",
        f"publish: {{ocsp: {'true' if ocsp else 'false'}}}",
        "authorities:",
        "  root-ca: {subject: {CN: Bench Root}, key: ecdsa-p384, lifetime: 10y}",
    ]
    for i in range(intermediates):
        lines.append(f"  ca-{i:02d}: {{issuer: root-ca, subject: {{CN: Bench CA {i:02d}}}, lifetime: 3y, path_length: 0}}")
    lines.append("certificates:")
    for j in range(leaves):
        ca = j % intermediates
        life = "30d" if j % 10 == 0 else "90d"
        lines.append(f"  svc-{j:05d}: {{issuer: ca-{ca:02d}, dns: [svc-{j:05d}.svc.internal, svc-{j:05d}.example.com], lifetime: {life}}}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    sys.stdout.write(workload(n, ocsp="--ocsp" in sys.argv))
