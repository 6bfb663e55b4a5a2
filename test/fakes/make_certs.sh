#!/bin/bash
# make_certs.sh DIR: a throw-away CA and a server certificate for 127.0.0.1 and
# localhost signed by it, for the fakes' --tls-cert/--tls-key. Clients verify
# with DIR/ca.crt as their CA bundle (curl --cacert, pgcloud.ca_bundle).
# Writes DIR/ca.key DIR/ca.crt DIR/server.key DIR/server.crt (PEM, EC P-256).
set -euo pipefail
dir=${1:?usage: make_certs.sh DIR}
mkdir -p "$dir"
cd "$dir"
days=${CERT_DAYS:-30}
openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout ca.key -out ca.crt -days "$days" -subj "/CN=pgcloud test CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout server.key -out server.csr -subj "/CN=localhost" 2>/dev/null
cat > server.ext <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=IP:127.0.0.1,DNS:localhost
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
EXT
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
    -out server.crt -days "$days" -extfile server.ext 2>/dev/null
rm -f server.csr server.ext ca.srl
chmod 644 ca.crt server.crt
chmod 600 ca.key server.key
openssl verify -CAfile ca.crt server.crt >/dev/null
