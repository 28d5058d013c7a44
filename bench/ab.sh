#!/usr/bin/env bash
# A/B of weir builds on the HTTP/1.1 saturation test of run.sh: the same layout (weir alone on
# core 0 with --concurrency 1; wrk -t1 -c64 and a 1 KiB nginx upstream on core 1), the builds
# run alternately, and each run gives requests per weir CPU-second (CPU from /proc).
#
#   bench/ab.sh [--runs N] [--duration S] BIN_A BIN_B [BIN ...]
#
# Build the binaries first, e.g. for two commits:
#   git worktree add /tmp/weir-a <commit> && (cd /tmp/weir-a && cargo build --release -p weir)
# Needs nginx, wrk, curl, taskset and python3 (bench/run.sh installs them).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LIB="$REPO/bench/lib.py"
RUNS=3
DURATION=6
BINS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS=$2; shift ;;
        --duration) DURATION=$2; shift ;;
        -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) [ -x "$1" ] || { echo "ab.sh: $1 is not an executable" >&2; exit 2; }; BINS+=("$1") ;;
    esac
    shift
done
[ "${#BINS[@]}" -ge 1 ] || { echo "ab.sh: give at least one weir binary (try --help)" >&2; exit 2; }
for t in nginx wrk curl taskset python3; do
    command -v "$t" >/dev/null || { echo "ab.sh: $t is missing (bench/run.sh installs it)" >&2; exit 2; }
done

WORK=$(mktemp -d /tmp/weir-ab.XXXXXX)
chmod 755 "$WORK"
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
read -r UP PORT ADMIN <<<"$(python3 "$LIB" ports 3)"
mkdir -p "$WORK/www" "$WORK/cfg" "$WORK/tmp"
head -c 1024 /dev/zero | tr '\0' x > "$WORK/www/1k"
chmod -R a+rX "$WORK"
cat > "$WORK/up.conf" <<EOF
daemon off;
worker_processes 1;
pid $WORK/up.pid;
error_log $WORK/up-error.log error;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_timeout 300s;
    keepalive_requests 100000000;
    client_body_temp_path $WORK/tmp/b; proxy_temp_path $WORK/tmp/p; fastcgi_temp_path $WORK/tmp/f;
    uwsgi_temp_path $WORK/tmp/u; scgi_temp_path $WORK/tmp/s;
    sendfile on; tcp_nodelay on; open_file_cache max=16; default_type application/octet-stream;
    server { listen 127.0.0.1:$UP; root $WORK/www; location / { try_files /1k =404; } }
}
EOF
python3 "$LIB" gen-weir-http "$WORK/cfg/bench.yaml" --port "$PORT" --upstream "$UP"
taskset -c 1 nginx -p "$WORK/" -e "$WORK/up-error.log" -c "$WORK/up.conf" &
PIDS+=($!)
python3 "$LIB" wait-listen "$UP" --timeout 30 || { echo "ab.sh: the upstream did not start" >&2; exit 1; }

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
declare -A RESULTS
for run in $(seq 1 "$RUNS"); do
    for bin in "${BINS[@]}"; do
        RUST_LOG=warn taskset -c 0 "$bin" run --config "$WORK/cfg" --role gateway --bind 127.0.0.1 \
            --proxy-port 0 --namespace bench --concurrency 1 --access-log off \
            --admin "127.0.0.1:$ADMIN" > "$WORK/weir.log" 2>&1 &
        wp=$!
        PIDS+=("$wp")
        ok=0
        for _ in $(seq 1 300); do
            [ "$(curl -s -o /dev/null -m 1 -w '%{http_code}' "http://127.0.0.1:$PORT/" || true)" = 200 ] && { ok=1; break; }
            kill -0 "$wp" 2>/dev/null || break
            sleep 0.1
        done
        [ "$ok" = 1 ] || { cat "$WORK/weir.log" >&2; echo "ab.sh: $bin did not serve" >&2; exit 1; }
        taskset -c 1 wrk -t1 -c64 -d2s "http://127.0.0.1:$PORT/" > /dev/null
        t0=$(ticks "$wp")
        out=$(taskset -c 1 wrk -t1 -c64 -d"${DURATION}s" "http://127.0.0.1:$PORT/")
        t1=$(ticks "$wp")
        kill "$wp"; wait "$wp" 2>/dev/null || true
        rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
        per=$(python3 -c "import sys; r, d, t = map(float, sys.argv[1:]); print(int(r * d / max(t / $(getconf CLK_TCK), 1e-9)))" "$rps" "$DURATION" "$((t1 - t0))")
        printf 'run %s  %-40s %8.0f req/s  %6s req per CPU-second\n' "$run" "$bin" "$rps" "$per"
        RESULTS[$bin]="${RESULTS[$bin]:-} $per"
    done
done
echo
echo "median requests per weir CPU-second over $RUNS runs:"
for bin in "${BINS[@]}"; do
    python3 -c "import statistics, sys; v = [int(x) for x in sys.argv[2:]]; print(f'  {sys.argv[1]}: {int(statistics.median(v))} (min {min(v)}, max {max(v)})')" "$bin" ${RESULTS[$bin]}
done
