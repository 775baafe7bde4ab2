"""Generate the benchmark workloads: 1 root, N intermediates, M ECDSA P-256 leaves with
2 DNS SANs each (W1k: 1 + 10 + 1,000; W10k: 1 + 10 + 10,000).

    python benchmarks/workload.py 10000 > pki.yaml
"""

from __future__ import annotations

import sys


def workload(leaves: int, intermediates: int = 10) -> str:
    lines = [
        "version: 1",
        "defaults: {key: ecdsa-p256, subject: {O: Bench Corp, C: US}}",
        "authorities:",
        "  root-ca: {subject: {CN: Bench Root}, key: ecdsa-p384, lifetime: 10y}",
    ]
    for i in range(intermediates):
        lines.append(f"  ca-{i:02d}: {{issuer: root-ca, subject: {{CN: Bench CA {i:02d}}}, lifetime: 3y, path_length: 0}}")
    lines.append("certificates:")
    for j in range(leaves):
        ca = j % intermediates
        lines.append(f"  svc-{j:05d}: {{issuer: ca-{ca:02d}, dns: [svc-{j:05d}.svc.internal, svc-{j:05d}.example.com], lifetime: 90d}}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    sys.stdout.write(workload(n))
