#!/usr/bin/env bash
# A/B of weir builds on the HTTP/1.1 saturation test of run.sh: the same layout (weir alone on
# core 0 with --concurrency 1; wrk -t1 -c64 and a 1 KiB nginx upstream on core 1), the builds
# run alternately, and each run gives requests per weir CPU-second (CPU from /proc), split into
# user and kernel microseconds per request.
#
#   bench/ab.sh [--runs N] [--duration S] [--rate R] [--h2 | --tls] [--nginx] [--hyper BIN]
#               [--wakeups] [--syscalls] [--profile DIR] BIN_A [BIN_B ...]
#
# --nginx adds nginx as a proxy subject (1 worker, upstream keep-alive pool, as in run.sh), so
# the split can be compared with it. --hyper BIN adds the bare hyper reverse proxy of run.sh
# (cargo build --release -p weir-proxy --example bare_hyper; BIN is
# target/release/examples/bare_hyper): weir's crates with nothing of weir's own. --wakeups also
# counts, on core 0, the wake-ups of sleeping tasks and the inter-processor interrupts sent, per
# request (needs perf and tracepoints).
# --rate R offers R requests/s over 64 connections (oha) instead of saturating with wrk, so that
# subjects are compared at the same load. --h2 runs run.sh's HTTP/2 test instead (h2load -c16
# -m32 over h2c; nginx then listens with http2). --tls runs run.sh's TLS keep-alive test instead
# (wrk -c64 over HTTPS, an ECDSA P-256 certificate made with openssl). --syscalls counts each subject's system calls
# per request (perf's syscall tracepoints), the calls made more than once per 100 requests.
# --profile DIR records each measured run with perf (999 Hz, DWARF call graphs, the subject's
# threads only) into DIR/<name>-<run>.data, prints its self time by crate or library in µs per
# request, and with inferno on PATH (cargo install inferno) draws DIR/<name>-<run>.svg. Sampling
# costs the subject a few per cent, so compare profiled runs only with each other.
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
NGINX=0
HYPER=""
WAKEUPS=0
SYSCALLS=0
H2=0
TLS=0
RATE=""
PROFILE=""
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS=$2; shift ;;
        --duration) DURATION=$2; shift ;;
        --nginx) NGINX=1 ;;
        --hyper) HYPER=$2; [ -x "$HYPER" ] || { echo "ab.sh: --hyper $HYPER is not an executable" >&2; exit 2; }; shift ;;
        --rate) RATE=$2; shift ;;
        --wakeups) WAKEUPS=1 ;;
        --syscalls) SYSCALLS=1 ;;
        --h2) H2=1 ;;
        --tls) TLS=1 ;;
        --profile) PROFILE=$2; shift ;;
        -h|--help) sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) [ -x "$1" ] || { echo "ab.sh: $1 is not an executable" >&2; exit 2; }; BINS+=("$1") ;;
    esac
    shift
done
[ "${#BINS[@]}" -ge 1 ] || { echo "ab.sh: give at least one weir binary (try --help)" >&2; exit 2; }
[ -z "$RATE" ] || command -v oha >/dev/null || { echo "ab.sh: --rate needs oha (bench/run.sh installs it)" >&2; exit 2; }
[ "$WAKEUPS$SYSCALLS" = 00 ] && [ -z "$PROFILE" ] || command -v perf >/dev/null || { echo "ab.sh: --wakeups, --syscalls and --profile need perf" >&2; exit 2; }
[ "$H2" = 0 ] || command -v h2load >/dev/null || { echo "ab.sh: --h2 needs h2load (bench/run.sh installs it)" >&2; exit 2; }
[ -z "$RATE" ] || [ "$H2" = 0 ] || { echo "ab.sh: --rate and --h2 do not go together" >&2; exit 2; }
[ "$H2$TLS" != 11 ] || { echo "ab.sh: --h2 and --tls do not go together" >&2; exit 2; }
[ "$TLS" = 0 ] || command -v openssl >/dev/null || { echo "ab.sh: --tls needs openssl" >&2; exit 2; }
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
read -r UP PORT ADMIN NPORT TPORT <<<"$(python3 "$LIB" ports 5)"
mkdir -p "$WORK/www" "$WORK/cfg" "$WORK/tmp"
SCHEME=http
TLS_ARGS=()
NGINX_TLS=""
if [ "$TLS" = 1 ]; then
    # The certificate of run.sh's TLS test; weir serves HTTPS on $TPORT, nginx on $NPORT.
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj "/CN=bench.local" -addext "subjectAltName=DNS:bench.local,IP:127.0.0.1" \
        -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
    SCHEME=https
    TLS_ARGS=(--tls-port "$TPORT" --cert "$WORK/cert.pem" --key "$WORK/key.pem")
    NGINX_TLS=" ssl; ssl_certificate $WORK/cert.pem; ssl_certificate_key $WORK/key.pem; ssl_session_tickets off"
fi
head -c 1024 /dev/zero | tr '\0' x > "$WORK/www/1k"
chmod -R a+rX "$WORK"
# The top of an nginx config: 1 worker, no logs, keep-alive without limits ($1: name).
nginx_top() {
    cat <<EOF
daemon off;
worker_processes 1;
worker_rlimit_nofile 65536;
pid $WORK/$1.pid;
error_log $WORK/$1-error.log error;
events { worker_connections 16384; }
http {
    access_log off;
    keepalive_timeout 300s;
    keepalive_requests 100000000;
    client_body_temp_path $WORK/tmp/$1-b; proxy_temp_path $WORK/tmp/$1-p; fastcgi_temp_path $WORK/tmp/$1-f;
    uwsgi_temp_path $WORK/tmp/$1-u; scgi_temp_path $WORK/tmp/$1-s;
EOF
}
{ nginx_top up; cat <<EOF
    sendfile on; tcp_nodelay on; open_file_cache max=16; default_type application/octet-stream;
    server { listen 127.0.0.1:$UP; root $WORK/www; location / { try_files /1k =404; } }
}
EOF
} > "$WORK/up.conf"
python3 "$LIB" gen-weir-http "$WORK/cfg/bench.yaml" --port "$PORT" --upstream "$UP" "${TLS_ARGS[@]}"
taskset -c 1 nginx -p "$WORK/" -e "$WORK/up-error.log" -c "$WORK/up.conf" &
PIDS+=($!)
python3 "$LIB" wait-listen "$UP" --timeout 30 || { echo "ab.sh: the upstream did not start" >&2; exit 1; }

if [ "$NGINX" = 1 ]; then
    { nginx_top proxy; cat <<EOF
    upstream backend { server 127.0.0.1:$UP; keepalive 128; keepalive_requests 100000000; keepalive_timeout 300s; }
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    server { listen 127.0.0.1:$NPORT$([ "$H2" = 1 ] && echo ' http2')$NGINX_TLS; location / { proxy_pass http://backend; } }
}
EOF
    } > "$WORK/proxy.conf"
    BINS+=(nginx)
fi
[ -z "$HYPER" ] || BINS+=("$HYPER")

# utime and stime (clock ticks) of a process and its children (nginx: master + worker).
ticks() {
    local p u=0 s=0 f
    for p in "$1" $(pgrep -P "$1" || true); do
        read -r -a f < "/proc/$p/stat" || continue
        u=$((u + f[13])); s=$((s + f[14]))
    done
    echo "$u $s"
}
# Saturating load on $port for $1 seconds: h2load (--h2) or wrk; prints the tool's report.
saturate() {
    if [ "$H2" = 1 ]; then
        taskset -c 1 h2load -c16 -m32 -D "$1" "http://127.0.0.1:$port/"
    else
        taskset -c 1 wrk -t1 -c64 -d"$1s" "$SCHEME://127.0.0.1:$port/"
    fi
}
HZ=$(getconf CLK_TCK)
CURL_H2=()
[ "$H2" = 0 ] || CURL_H2=(--http2-prior-knowledge)
declare -A RESULTS SPLIT
for run in $(seq 1 "$RUNS"); do
    for bin in "${BINS[@]}"; do
        if [ "$bin" = nginx ]; then
            taskset -c 0 nginx -p "$WORK/" -e "$WORK/proxy-error.log" -c "$WORK/proxy.conf" > "$WORK/proxy.log" 2>&1 &
            port=$NPORT
        elif [ "$bin" = "$HYPER" ]; then
            hyper_tls=()
            [ "$TLS" = 0 ] || hyper_tls=(--tls-listen "127.0.0.1:$TPORT" --cert "$WORK/cert.pem" --key "$WORK/key.pem")
            taskset -c 0 "$bin" --listen "127.0.0.1:$PORT" --upstream "127.0.0.1:$UP" "${hyper_tls[@]}" \
                > "$WORK/proxy.log" 2>&1 &
            port=$PORT
            [ "$TLS" = 0 ] || port=$TPORT
        else
            RUST_LOG=warn taskset -c 0 "$bin" run --config "$WORK/cfg" --role gateway --bind 127.0.0.1 \
                --proxy-port 0 --namespace bench --concurrency 1 --access-log off \
                --admin "127.0.0.1:$ADMIN" > "$WORK/proxy.log" 2>&1 &
            port=$PORT
            [ "$TLS" = 0 ] || port=$TPORT
        fi
        wp=$!
        PIDS+=("$wp")
        ok=0
        for _ in $(seq 1 300); do
            [ "$(curl -sk "${CURL_H2[@]}" -o /dev/null -m 1 -w '%{http_code}' "$SCHEME://127.0.0.1:$port/" || true)" = 200 ] \
                && { ok=1; break; }
            kill -0 "$wp" 2>/dev/null || break
            sleep 0.1
        done
        [ "$ok" = 1 ] || { cat "$WORK/proxy.log" "$WORK/proxy-error.log" >&2 2>/dev/null; echo "ab.sh: $bin did not serve" >&2; exit 1; }
        saturate 2 > /dev/null
        # The subject's processes, for perf -p (nginx: master and worker).
        # shellcheck disable=SC2046  # one pid per word
        pids=$(echo "$wp" $(pgrep -P "$wp" || true) | tr ' ' ,)
        if [ "$WAKEUPS" = 1 ]; then
            perf stat -x, -e sched:sched_waking,ipi:ipi_send_cpu -C 0 -o "$WORK/wakeups.csv" -- sleep "$DURATION" \
                > /dev/null 2>&1 &
            sp=$!
        fi
        if [ "$SYSCALLS" = 1 ]; then
            perf stat -x, -e 'syscalls:sys_enter_*' -p "$pids" -o "$WORK/syscalls.csv" -- sleep "$DURATION" \
                > /dev/null 2>&1 &
            cp=$!
        fi
        if [ -n "$PROFILE" ]; then
            mkdir -p "$PROFILE"
            pdata="$PROFILE/$(basename "$bin")-$run.data"
            perf record -q -F 999 --call-graph dwarf,16384 -p "$pids" -o "$pdata" -- sleep "$DURATION" \
                > /dev/null 2>&1 &
            pp=$!
        fi
        read -r u0 s0 <<<"$(ticks "$wp")"
        if [ -n "$RATE" ]; then
            out=$(taskset -c 1 oha --no-tui --insecure -q "$RATE" -c 64 -z "${DURATION}s" "$SCHEME://127.0.0.1:$port/")
            requests=$(echo "$out" | awk -v d="$DURATION" '/Requests\/sec:/ {printf "%d", $2 * d}')
        else
            # h2load: "requests: N total, N started, N done, N succeeded, ..."; wrk: "N requests in 6.00s".
            requests=$(saturate "$DURATION" | awk '/^requests:/ {print $8} / requests in / {print $1}')
        fi
        read -r u1 s1 <<<"$(ticks "$wp")"
        wake=""
        if [ "$WAKEUPS" = 1 ]; then
            wait "$sp" || true
            wake=$(awk -F, '$1 ~ /^[0-9]+$/ {printf "%s %s ", $3, $1}' "$WORK/wakeups.csv")
        fi
        if [ "$SYSCALLS" = 1 ]; then
            wait "$cp" || true
            wake+=$(awk -F, '$1 ~ /^[0-9]+$/ && $1 > 0 {printf "%s %s ", $3, $1}' "$WORK/syscalls.csv")
        fi
        [ -z "$PROFILE" ] || wait "$pp" || true
        kill "$wp"; wait "$wp" 2>/dev/null || true
        # shellcheck disable=SC2086  # $wake is name/count pairs
        line=$(python3 - "$requests" "$((u1 - u0))" "$((s1 - s0))" "$HZ" $wake <<'PY'
import sys
n, u, s, hz = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
w = sys.argv[5:]
per = int(n / max((u + s) / hz, 1e-9))
text = f"{per} {u / hz / n * 1e6:.2f} {s / hz / n * 1e6:.2f}"
for name, count in zip(w[::2], w[1::2]):
    per_request = int(count) / n
    if per_request >= 0.01:
        text += f" {name.split(':')[-1].removeprefix('sys_enter_')}={per_request:.3f}"
print(text)
PY
)
        read -r per us ss extra <<<"$line"
        printf 'run %s  %-40s %7s req per CPU-second  user %5s + kernel %5s µs per request  %s\n' \
            "$run" "$bin" "$per" "$us" "$ss" "${extra:-}"
        if [ -n "$PROFILE" ]; then
            python3 "$LIB" profile-summary "$pdata" --top 15 \
                --us-per-request "$(python3 -c "print($us + $ss)")" | sed 's/^/    /'
            if command -v inferno-collapse-perf >/dev/null && command -v inferno-flamegraph >/dev/null; then
                perf script -i "$pdata" 2>/dev/null | inferno-collapse-perf 2>/dev/null \
                    | inferno-flamegraph --title "$(basename "$bin") run $run" > "${pdata%.data}.svg" \
                    && echo "    flame graph: ${pdata%.data}.svg"
            fi
        fi
        RESULTS[$bin]="${RESULTS[$bin]:-} $per"
        SPLIT[$bin]="${SPLIT[$bin]:-} $us/$ss"
    done
done
echo
echo "median requests per CPU-second over $RUNS runs (user + kernel µs per request):"
for bin in "${BINS[@]}"; do
    # shellcheck disable=SC2086  # one argument per run
    python3 - "$bin" "${SPLIT[$bin]}" ${RESULTS[$bin]} <<'PY'
import statistics, sys
v = [int(x) for x in sys.argv[3:]]
split = [tuple(map(float, p.split("/"))) for p in sys.argv[2].split()]
u = statistics.median(p[0] for p in split)
k = statistics.median(p[1] for p in split)
print(f"  {sys.argv[1]}: {int(statistics.median(v))} (min {min(v)}, max {max(v)}); {u:.2f} + {k:.2f} µs")
PY
done
