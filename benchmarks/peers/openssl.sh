#!/usr/bin/env bash
# The openssl CLI, one process per leaf: key, certificate, PEM, write (no encryption).
# Usage: openssl.sh N DIR; prints the seconds spent on the leaves; exit 3 = skipped.
set -euo pipefail
n=$1; dir=$2; cd "$dir"
command -v openssl >/dev/null || { echo "openssl not installed"; exit 3; }
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-384 -nodes -keyout root.key -out root.pem -subj "/O=Bench Corp/CN=Bench Root" -days 3650 -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -subj "/O=Bench Corp/CN=Bench CA" 2>/dev/null \
  | openssl x509 -req -CA root.pem -CAkey root.key -CAcreateserial -days 1095 -out ca.pem -extfile <(printf "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n") 2>/dev/null
start=$(date +%s.%N)
for ((j = 0; j < n; j++)); do
  name=$(printf "svc-%05d" "$j")
  openssl req -x509 -CA ca.pem -CAkey ca.key -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$name.key" -out "$name.pem" -subj "/O=Bench Corp/CN=$name" -days 90 \
    -addext "subjectAltName=DNS:$name.svc.internal,DNS:$name.example.com" -addext "extendedKeyUsage=serverAuth" 2>/dev/null
done
end=$(date +%s.%N)
python3 -c "print($end - $start)"
