#!/usr/bin/env bash
# Builds a runnable secure-gateway setup in ./out: the bookinfo demo config plus
# a Secret and a Gateway that terminates TLS (SIMPLE on 8443, MUTUAL on 8444) and
# redirects plain HTTP (8081) to https. Certificates are made with openssl the way
# Istio's "Secure Gateways" task makes them (plus a subjectAltName, which rustls
# and current curl require).
#
#   ./setup.sh            # needs openssl and a weir binary (WEIR=path/to/weir to choose one)
#   weir demo --config out/config
#   then the curl commands printed at the end
set -euo pipefail
WEIR=${WEIR:-weir}
case "$WEIR" in */*) WEIR="$(cd "$(dirname "$WEIR")" && pwd)/$(basename "$WEIR")" ;; esac
cd "$(dirname "$0")"
command -v openssl >/dev/null || { echo "openssl is needed" >&2; exit 1; }

rm -rf out && mkdir -p out/certs
"$WEIR" demo --write-config out/config >/dev/null
cd out/certs

# The CA, then a server certificate for bookinfo.example.com and a client certificate.
openssl req -x509 -sha256 -nodes -days 365 -newkey rsa:2048 -subj '/O=example Inc./CN=example.com' \
  -keyout example.com.key -out example.com.crt 2>/dev/null
issue() { # host usage
  openssl req -out "$1.csr" -newkey rsa:2048 -nodes -keyout "$1.key" -subj "/CN=$1/O=$1 organization" 2>/dev/null
  printf 'subjectAltName=DNS:%s\nextendedKeyUsage=%s\n' "$1" "$2" > "$1.ext"
  openssl x509 -req -sha256 -days 365 -CA example.com.crt -CAkey example.com.key -set_serial "$RANDOM" \
    -in "$1.csr" -out "$1.crt" -extfile "$1.ext" 2>/dev/null
}
issue bookinfo.example.com serverAuth
issue client.example.com clientAuth
cd ..

# kubectl create secret tls bookinfo-credential --cert=... --key=... (plus ca.crt for MUTUAL)
indent() { sed 's/^/    /' "$1"; }
{
  echo "apiVersion: v1"
  echo "kind: Secret"
  echo "metadata: {name: bookinfo-credential}"
  echo "type: kubernetes.io/tls"
  echo "stringData:"
  echo "  tls.crt: |"; indent certs/bookinfo.example.com.crt
  echo "  tls.key: |"; indent certs/bookinfo.example.com.key
  echo "  ca.crt: |"; indent certs/example.com.crt
} > config/secret.yaml
cp ../secure-gateway.yaml config/

cat <<'MSG'
Ready. Start weir with the demo backends:

  weir demo --config examples/secure-gateway/out/config

Then, from the repository root:

  cd examples/secure-gateway/out
  # SIMPLE: HTTP/2 over TLS, certificate chosen by SNI
  curl -sv --cacert certs/example.com.crt --resolve bookinfo.example.com:8443:127.0.0.1 \
    https://bookinfo.example.com:8443/productpage
  # MUTUAL: refused without a client certificate, served with one
  curl -s --cacert certs/example.com.crt --resolve bookinfo.example.com:8444:127.0.0.1 \
    https://bookinfo.example.com:8444/productpage
  curl -s --cacert certs/example.com.crt --cert certs/client.example.com.crt --key certs/client.example.com.key \
    --resolve bookinfo.example.com:8444:127.0.0.1 https://bookinfo.example.com:8444/productpage
  # httpsRedirect: 301 to https
  curl -si -H 'Host: bookinfo.example.com' http://127.0.0.1:8081/productpage
  # Rotation: re-run ./setup.sh's certificate steps and rewrite config/secret.yaml;
  # new handshakes get the new certificate within a second.
MSG
