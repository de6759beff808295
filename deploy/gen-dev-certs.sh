#!/usr/bin/env sh
# A development CA and one certificate for every smoltbot service (server and client use),
# for deploy/compose.tls.yaml. Not for production: use your PKI or cert-manager there.
#   ./gen-dev-certs.sh [DIR] [EXTRA_SAN ...]      e.g. ./gen-dev-certs.sh certs DNS:smoltbot.internal
set -eu
dir=${1:-certs}
[ $# -gt 0 ] && shift
sans="DNS:registry,DNS:observer,DNS:gateway,DNS:api,DNS:localhost,IP:127.0.0.1"
for extra in "$@"; do sans="$sans,$extra"; done
mkdir -p "$dir"
cd "$dir"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 825 \
  -subj "/CN=smoltbot development CA" -keyout ca.key -out ca.crt \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=smoltbot" \
  -keyout tls.key -out tls.csr 2>/dev/null
printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n' "$sans" > tls.ext
openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 825 -sha256 \
  -extfile tls.ext -out tls.crt 2>/dev/null
rm -f tls.csr tls.ext ca.srl
# The containers run as uid 10001 and read these through a bind mount.
chmod 0755 .
chmod 0644 ca.crt tls.crt tls.key
chmod 0600 ca.key
echo "wrote $(pwd)/ca.crt, tls.crt, tls.key (SANs: $sans); keep ca.key away from the services"
