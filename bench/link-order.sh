#!/usr/bin/env bash
# Writes crates/weir/link.order: the functions a release weir runs while starting, serving
# HTTP/1.1 and h2c through a gateway, answering admin pages and reloading, in the order the
# linker should place them (see crates/weir/build.rs). Needs valgrind, nginx, wrk, h2load, curl.
#   bench/link-order.sh [path/to/weir]     (default target/release/weir; rebuild afterwards)
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=$(readlink -f "${1:-${CARGO_TARGET_DIR:-$REPO/target}/release/weir}")
W=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$W"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP=$(port); GW=$(port); ADMIN=$(port)
head -c 1024 /dev/zero | tr '\0' x > "$W/index.html"
cat > "$W/nginx.conf" <<N
worker_processes 1; daemon off; pid $W/nginx.pid; error_log $W/nginx.err;
events {}
http { access_log off; client_body_temp_path $W; proxy_temp_path $W; fastcgi_temp_path $W; uwsgi_temp_path $W; scgi_temp_path $W;
  server { listen 127.0.0.1:$UP; location / { root $W; try_files /index.html =404; } } }
N
nginx -c "$W/nginx.conf" & 
mkdir "$W/cfg"
python3 "$REPO/bench/lib.py" gen-weir-http "$W/cfg/bench.yaml" --port "$GW" --upstream "$UP"
RUST_LOG=warn valgrind --tool=callgrind --dump-instr=no --compress-strings=no --compress-pos=no --demangle=no \
    --callgrind-out-file="$W/cg.out" "$BIN" run --config "$W/cfg" --role gateway --bind 127.0.0.1 --proxy-port 0 \
    --namespace bench --concurrency 1 --access-log off --drain-timeout 100ms --admin "127.0.0.1:$ADMIN" \
    > /dev/null 2> "$W/weir.err" &
VG=$!
for _ in $(seq 1 120); do
    [ "$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$ADMIN/ready")" = 200 ] && break; sleep 0.5
done
wrk -t1 -c8 -d3s "http://127.0.0.1:$GW/" > /dev/null
h2load -n 500 -c4 -m10 "http://127.0.0.1:$GW/" > /dev/null
curl -s -o /dev/null "http://127.0.0.1:$ADMIN/stats/prometheus"; curl -s -o /dev/null "http://127.0.0.1:$ADMIN/config_dump"
kill -HUP "$VG"; sleep 3; curl -s -o /dev/null "http://127.0.0.1:$GW/"
kill -TERM "$VG"; wait "$VG" || true
python3 - "$BIN" "$W/cg.out" > "$REPO/crates/weir/link.order" <<'P'
import subprocess, sys
binp, prof = sys.argv[1], sys.argv[2]
have = {l.split()[-1] for l in subprocess.run(["nm", "--defined-only", binp], capture_output=True, text=True).stdout.splitlines()}
seen, order, obj = set(), [], None
for line in open(prof):
    if line.startswith("ob="):
        obj = line[3:].strip()
    elif line.startswith("fn=") and obj == binp:
        name = line[3:].strip().split("'")[0]
        if name in have and name not in seen:
            seen.add(name); order.append(name)
print("\n".join(order))
P
echo "crates/weir/link.order: $(wc -l < "$REPO/crates/weir/link.order") functions" >&2
