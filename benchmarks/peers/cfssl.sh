#!/usr/bin/env bash
# cfssl gencert, one process per leaf (plus cfssljson to write the PEM files).
# Needs Debian's golang-cfssl. Usage: cfssl.sh N DIR; prints the seconds spent on the
# leaves; exit 3 = skipped.
set -euo pipefail
n=$1; dir=$2; cd "$dir"
command -v cfssl >/dev/null && command -v cfssljson >/dev/null || { echo "cfssl not installed (apt-get install golang-cfssl)"; exit 3; }
cat > ca-csr.json <<JSON
{"CN": "Bench CA", "key": {"algo": "ecdsa", "size": 256}, "names": [{"O": "Bench Corp"}]}
JSON
cfssl gencert -initca ca-csr.json 2>/dev/null | cfssljson -bare ca
cat > config.json <<JSON
{"signing": {"default": {"expiry": "2160h", "usages": ["digital signature", "server auth"]}}}
JSON
start=$(date +%s.%N)
for ((j = 0; j < n; j++)); do
  name=$(printf "svc-%05d" "$j")
  printf '{"CN": "%s", "hosts": ["%s.svc.internal", "%s.example.com"], "key": {"algo": "ecdsa", "size": 256}, "names": [{"O": "Bench Corp"}]}' "$name" "$name" "$name" > leaf.json
  cfssl gencert -ca ca.pem -ca-key ca-key.pem -config config.json leaf.json 2>/dev/null | cfssljson -bare "$name"
done
end=$(date +%s.%N)
python3 -c "print($end - $start)"
