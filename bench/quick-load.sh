#!/usr/bin/env bash
# Quick load measurement of weir's HTTP data path against a direct connection and nginx,
# all in one run on loopback, reported as ratios (issue 4's first measurement; the full
# harness is a later issue).
#
#   bench/quick-load.sh            full run: 3 passes of 10 s runs, appends a table to BENCHMARKS.md
#   bench/quick-load.sh --quick    smoke run: 1 pass of 3 s runs, prints only (BENCHMARKS.md untouched)
#
# Options: --passes N, --duration SECONDS, --no-record (do not append to BENCHMARKS.md).
# Ports (environment): UPSTREAM_PORT (18080), NGINX_PORT (18081), WEIR_PORT (18082),
# WEIR_ADMIN_PORT (18090). Everything listens on 127.0.0.1 only.
#
# Needs: Debian (apt-get) and a Rust toolchain (cargo). Run as root on a fresh machine and it
# installs nginx and wrk (and curl) from the distribution when missing; it never downloads
# binaries. See bench/README.md for what it measures and what it does not.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

PASSES=3
DURATION=10
RECORD=1
QUICK=0
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1; PASSES=1; DURATION=3; RECORD=0 ;;
        --passes) PASSES=$2; shift ;;
        --duration) DURATION=$2; shift ;;
        --no-record) RECORD=0 ;;
        -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "quick-load: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done
case "$PASSES$DURATION" in *[!0-9]*) echo "quick-load: --passes and --duration take whole numbers" >&2; exit 2 ;; esac

UPSTREAM_PORT=${UPSTREAM_PORT:-18080}
NGINX_PORT=${NGINX_PORT:-18081}
WEIR_PORT=${WEIR_PORT:-18082}
WEIR_ADMIN_PORT=${WEIR_ADMIN_PORT:-18090}
WARMUP=$(( DURATION >= 10 ? 2 : 1 ))
# Paced latency run: 16 connections, each waiting PACE_MS after every response, so about
# 16 / (PACE_MS + latency) = ~1.95k requests/s in total.
PACE_CONNS=16
PACE_MS=8

log() { printf '[quick-load] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- 1. Tools from the distribution -----------------------------------------------------------
missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || die "missing ${missing[*]}; run as root or: sudo apt-get install ${missing[*]}"
    command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get (Debian/Ubuntu expected)"
    log "installing ${missing[*]} from the distribution"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # Debian starts the packaged nginx on port 80 where an init system runs; it is not used here.
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
command -v cargo >/dev/null 2>&1 || die "cargo not found: install a Rust toolchain (https://rustup.rs) first"

# --- 2. weir, release build -------------------------------------------------------------------
log "building weir (cargo build --release -p weir)"
cargo build --release -p weir --quiet
WEIR="$REPO/target/release/weir"
[ -x "$WEIR" ] || die "$WEIR was not built"

# --- 3. Pinning -------------------------------------------------------------------------------
# Proxies on core 0; wrk and the upstream on core 1.
if [ "$(nproc)" -ge 2 ] && taskset -c 1 true 2>/dev/null && taskset -c 0 true 2>/dev/null; then
    PIN_PROXY=(taskset -c 0); PIN_LOAD=(taskset -c 1); PINNING="proxies on core 0, wrk + upstream on core 1"
else
    PIN_PROXY=(); PIN_LOAD=(); PINNING="none (fewer than 2 usable cores)"
fi

# --- 4. Work directory, cleanup ---------------------------------------------------------------
WORK=$(mktemp -d /tmp/weir-quick-load.XXXXXX)
chmod 755 "$WORK"   # nginx workers run as an unprivileged user and read the static file
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.25
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ "${KEEP_WORK:-0}" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- 5. Configs -------------------------------------------------------------------------------
mkdir -p "$WORK/www" "$WORK/weir" "$WORK/tmp"
head -c 1024 /dev/zero | tr '\0' 'x' > "$WORK/www/1k"
chmod 644 "$WORK/www/1k"

nginx_common() {   # $1: name
    cat <<EOF
daemon off;
master_process on;
worker_processes 1;
pid $WORK/$1.pid;
error_log $WORK/$1-error.log warn;
events { worker_connections 4096; }
EOF
}
nginx_http_common() {   # $1: name
    cat <<EOF
    access_log off;
    keepalive_timeout 300s;
    keepalive_requests 100000000;
    client_body_temp_path $WORK/tmp/$1-body;
    proxy_temp_path $WORK/tmp/$1-proxy;
    fastcgi_temp_path $WORK/tmp/$1-fastcgi;
    uwsgi_temp_path $WORK/tmp/$1-uwsgi;
    scgi_temp_path $WORK/tmp/$1-scgi;
EOF
}

{
    nginx_common upstream
    echo "http {"
    nginx_http_common upstream
    cat <<EOF
    sendfile on;
    tcp_nodelay on;
    open_file_cache max=16;
    default_type application/octet-stream;
    server {
        listen 127.0.0.1:$UPSTREAM_PORT;
        root $WORK/www;
        location / { try_files /1k =404; }
    }
}
EOF
} > "$WORK/upstream.conf"

{
    nginx_common proxy
    echo "http {"
    nginx_http_common proxy
    cat <<EOF
    upstream backend {
        server 127.0.0.1:$UPSTREAM_PORT;
        keepalive 128;
        keepalive_requests 100000000;
        keepalive_timeout 300s;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
} > "$WORK/proxy.conf"

# weir: an ingress Gateway on its own port, a VirtualService routing everything to a
# ServiceEntry whose one endpoint is the upstream.
cat > "$WORK/weir/bench.yaml" <<EOF
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: upstream
spec:
  hosts: [upstream.bench.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 80, name: http, protocol: HTTP}
  endpoints:
  - {address: 127.0.0.1, ports: {http: $UPSTREAM_PORT}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: bench
spec:
  selector:
    istio: ingressgateway
  servers:
  - port: {number: $WEIR_PORT, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: bench
spec:
  hosts: ["*"]
  gateways: [bench]
  http:
  - route:
    - destination:
        host: upstream.bench.local
        port: {number: 80}
EOF

# wrk prints one machine-readable line at the end (latency in microseconds).
cat > "$WORK/report.lua" <<'EOF'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK requests=%d duration_us=%d connect=%d read=%d write=%d status=%d timeout=%d p50=%d p99=%d p999=%d max=%d\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max))
end
EOF
{ cat "$WORK/report.lua"; echo "delay = function() return $PACE_MS end"; } > "$WORK/paced.lua"

# --- 6. Start the servers ---------------------------------------------------------------------
wait_http() {   # url, what, pid
    local i code
    for i in $(seq 1 100); do
        code=$(curl -s -o /dev/null -m 1 -w '%{http_code}' "$1" 2>/dev/null || true)
        [ "$code" = 200 ] && return 0
        kill -0 "$3" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

log "starting upstream nginx on 127.0.0.1:$UPSTREAM_PORT (core 1)"
"${PIN_LOAD[@]}" "$NGINX" -p "$WORK/" -e "$WORK/upstream-error.log" -c "$WORK/upstream.conf" &
UPSTREAM_PID=$!; PIDS+=("$UPSTREAM_PID")
wait_http "http://127.0.0.1:$UPSTREAM_PORT/" upstream "$UPSTREAM_PID" \
    || { cat "$WORK/upstream-error.log" >&2 2>/dev/null; die "upstream nginx did not start"; }

log "starting nginx reverse proxy on 127.0.0.1:$NGINX_PORT (core 0)"
"${PIN_PROXY[@]}" "$NGINX" -p "$WORK/" -e "$WORK/proxy-error.log" -c "$WORK/proxy.conf" &
NGINX_PID=$!; PIDS+=("$NGINX_PID")
wait_http "http://127.0.0.1:$NGINX_PORT/" nginx "$NGINX_PID" \
    || { cat "$WORK/proxy-error.log" >&2 2>/dev/null; die "nginx proxy did not start"; }

log "starting weir on 127.0.0.1:$WEIR_PORT (core 0), admin 127.0.0.1:$WEIR_ADMIN_PORT"
WEIR_CMD=("$WEIR" run --config "$WORK/weir" --role gateway --bind 127.0.0.1 --proxy-port 0
    --concurrency 1 --access-log off --admin "127.0.0.1:$WEIR_ADMIN_PORT")
RUST_LOG=${RUST_LOG:-warn} "${PIN_PROXY[@]}" "${WEIR_CMD[@]}" >"$WORK/weir.out" 2>"$WORK/weir.err" &
WEIR_PID=$!; PIDS+=("$WEIR_PID")
wait_http "http://127.0.0.1:$WEIR_ADMIN_PORT/ready" weir "$WEIR_PID" \
    || { cat "$WORK/weir.err" >&2; die "weir did not become ready"; }

for port in "$UPSTREAM_PORT" "$NGINX_PORT" "$WEIR_PORT"; do
    got=$(curl -s -o /dev/null -m 2 -w '%{http_code} %{size_download}' "http://127.0.0.1:$port/")
    [ "$got" = "200 1024" ] || die "127.0.0.1:$port/ answered '$got', expected '200 1024'"
done

# --- 7. Measurement ---------------------------------------------------------------------------
CLK_TCK=$(getconf CLK_TCK)
# CPU ticks (utime + stime, all threads) of a process and its direct children (nginx workers).
cpu_ticks() {
    local pid=$1 total=0 p stat rest
    for p in $pid $(cat /proc/[0-9]*/stat 2>/dev/null | awk -v pp="$pid" '{
            s = $0; sub(/^.*\) /, "", s); split(s, f, " "); if (f[2] == pp) { sub(/ .*/, "", $0); print $1 } }'); do
        stat=$(cat "/proc/$p/stat" 2>/dev/null) || continue
        rest=${stat##*) }
        # rest starts at field 3 (state); utime and stime are fields 14 and 15.
        set -- $rest
        total=$(( total + ${12} + ${13} ))
    done
    echo "$total"
}

port_of() { case $1 in direct) echo "$UPSTREAM_PORT" ;; nginx) echo "$NGINX_PORT" ;; weir) echo "$WEIR_PORT" ;; esac; }
pid_of() { case $1 in nginx) echo "$NGINX_PID" ;; weir) echo "$WEIR_PID" ;; *) echo "" ;; esac; }

# run_wrk subject connections script -> prints the WRK line (exits on a wrk failure)
run_wrk() {
    local url="http://127.0.0.1:$(port_of "$1")/" out
    out=$(timeout $(( DURATION + 30 )) "${PIN_LOAD[@]}" wrk -t1 -c"$2" -d"${DURATION}s" -s "$3" "$url" 2>&1) \
        || { echo "$out" >&2; die "wrk against $1 failed or hung (see above)"; }
    echo "$out" >> "$WORK/wrk.log"
    echo "$out" | grep '^WRK ' || { echo "$out" >&2; die "no result line from wrk against $1"; }
}
field() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }
errors_of() {
    local l=$1
    echo $(( $(field "$l" connect) + $(field "$l" read) + $(field "$l" write) + $(field "$l" status) + $(field "$l" timeout) ))
}

SUBJECTS=(direct nginx weir)
RESULTS="$WORK/results.tsv"   # pass subject metric value
: > "$RESULTS"
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >> "$RESULTS"; }

check_alive() {
    local pid
    pid=$(pid_of "$1")
    [ -z "$pid" ] && pid=$UPSTREAM_PID
    kill -0 "$pid" 2>/dev/null && kill -0 "$UPSTREAM_PID" 2>/dev/null || {
        cat "$WORK/weir.err" >&2; die "$1 (or the upstream) died during the run"; }
}

log "pinning: $PINNING; $PASSES pass(es) of ${DURATION}s runs; wrk $(wrk -v 2>&1 | head -1 | awk '{print $2}')"
for pass in $(seq 1 "$PASSES"); do
    for s in "${SUBJECTS[@]}"; do
        url="http://127.0.0.1:$(port_of "$s")/"
        timeout $(( WARMUP + 30 )) "${PIN_LOAD[@]}" wrk -t1 -c64 -d"${WARMUP}s" "$url" >/dev/null 2>&1 \
            || die "warm-up against $s failed"

        # Saturation: throughput and the proxy's CPU time.
        pid=$(pid_of "$s")
        [ -n "$pid" ] && t0=$(cpu_ticks "$pid")
        line=$(run_wrk "$s" 64 "$WORK/report.lua")
        [ -n "$pid" ] && t1=$(cpu_ticks "$pid")
        dur=$(field "$line" duration_us); req=$(field "$line" requests)
        rps=$(awk -v r="$req" -v d="$dur" 'BEGIN { printf "%.0f", r / (d / 1e6) }')
        record "$pass" "$s" rps "$rps"
        err=$(errors_of "$line"); record "$pass" "$s" errors_c64 "$err"
        if [ -n "$pid" ]; then
            cpu=$(awk -v a="$t0" -v b="$t1" -v k="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / k }')
            rpc=$(awk -v r="$req" -v c="$cpu" 'BEGIN { printf "%.0f", (c > 0 ? r / c : 0) }')
            util=$(awk -v c="$cpu" -v d="$dur" 'BEGIN { printf "%.0f", 100 * c / (d / 1e6) }')
            record "$pass" "$s" cpu_s "$cpu"; record "$pass" "$s" rps_per_cpu "$rpc"; record "$pass" "$s" cpu_pct "$util"
        fi
        check_alive "$s"

        # Latency, closed loop at saturation with 16 connections (wrk's fallback for a fixed rate).
        line16=$(run_wrk "$s" 16 "$WORK/report.lua")
        record "$pass" "$s" p50_c16 "$(field "$line16" p50)"; record "$pass" "$s" p99_c16 "$(field "$line16" p99)"
        err16=$(errors_of "$line16"); record "$pass" "$s" errors_c16 "$err16"
        check_alive "$s"

        # Latency at ~2k requests/s: 16 connections, each pausing PACE_MS after every response
        # (wrk's delay() hook; the pause is not counted in the latency).
        linep=$(run_wrk "$s" "$PACE_CONNS" "$WORK/paced.lua")
        pdur=$(field "$linep" duration_us); preq=$(field "$linep" requests)
        record "$pass" "$s" paced_rps "$(awk -v r="$preq" -v d="$pdur" 'BEGIN { printf "%.0f", r / (d / 1e6) }')"
        record "$pass" "$s" p50_2k "$(field "$linep" p50)"; record "$pass" "$s" p99_2k "$(field "$linep" p99)"
        errp=$(errors_of "$linep"); record "$pass" "$s" errors_2k "$errp"
        check_alive "$s"

        total_err=$(( err + err16 + errp ))
        log "pass $pass $s: ${rps} rps (c64)$( [ -n "$pid" ] && echo ", proxy ${cpu} CPU-s (${util}%), ${rpc} req/CPU-s" ), p50/p99 c16 $(field "$line16" p50)/$(field "$line16" p99) us, @~2k $(field "$linep" p50)/$(field "$linep" p99) us, errors ${total_err}"
    done
done

# --- 8. Medians, ratios, report ---------------------------------------------------------------
median() {   # subject metric
    awk -F'\t' -v s="$1" -v m="$2" '$2 == s && $3 == m { print $4 }' "$RESULTS" | sort -g |
        awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
calc() { awk "BEGIN { printf \"$1\", $2 }"; }
sum_metric() { awk -F'\t' -v m="$1" '$3 == m { t += $4 } END { print t + 0 }' "$RESULTS"; }

declare -A M
for s in "${SUBJECTS[@]}"; do
    for m in rps cpu_s rps_per_cpu cpu_pct p50_c16 p99_c16 paced_rps p50_2k p99_2k errors_c64 errors_c16 errors_2k; do
        M[$s,$m]=$(median "$s" "$m")
    done
done
for m in p50_c16 p99_c16 p50_2k p99_2k; do
    for s in nginx weir; do M[$s,add_$m]=$(calc '%.0f' "${M[$s,$m]} - ${M[direct,$m]}"); done
done
ratio() { calc '%.2f' "($2 != 0) ? $1 / $2 : 0"; }
signed() { case $1 in -*) echo "$1" ;; *) echo "+$1" ;; esac; }

DATE=$(date -u +%F)
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD -- crates Cargo.toml Cargo.lock 2>/dev/null || COMMIT="$COMMIT+uncommitted"
CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
MACHINE="$(nproc) x ${CPU_MODEL:-unknown CPU}"
CMD="bench/quick-load.sh"
if [ "$QUICK" = 1 ]; then CMD="$CMD --quick"; fi
if [ "$QUICK" = 0 ] && [ "$PASSES" != 3 ]; then CMD="$CMD --passes $PASSES"; fi
if [ "$QUICK" = 0 ] && [ "$DURATION" != 10 ]; then CMD="$CMD --duration $DURATION"; fi
TOTAL_ERRORS=$(( $(sum_metric errors_c64) + $(sum_metric errors_c16) + $(sum_metric errors_2k) ))

REPORT="$WORK/report.md"
{
    echo "#### $DATE, commit $COMMIT, $MACHINE"
    echo
    echo "\`$CMD\` — medians of $PASSES pass(es); each run ${DURATION}s after a ${WARMUP}s warm-up; wrk -t1;" \
         "1 KiB keep-alive responses from nginx on 127.0.0.1; pinning: $PINNING;" \
         "weir --concurrency 1 (Gateway listener), nginx 1 worker with an upstream keep-alive pool; access logs off."
    echo
    echo "| Subject | rps (c64) | proxy CPU (c64) | req per proxy CPU-s | p50 / p99 (c16, saturated) | rps paced | p50 / p99 (paced ~2k rps) | errors |"
    echo "|---|---|---|---|---|---|---|---|"
    for s in "${SUBJECTS[@]}"; do
        if [ "$s" = direct ]; then cpucol="-"; rpccol="-"; else cpucol="${M[$s,cpu_pct]}%"; rpccol="${M[$s,rps_per_cpu]}"; fi
        errs=$(( $(awk -F'\t' -v s="$s" '$2 == s && $3 ~ /^errors/ { t += $4 } END { print t + 0 }' "$RESULTS") ))
        echo "| $s | ${M[$s,rps]} | $cpucol | $rpccol | ${M[$s,p50_c16]} / ${M[$s,p99_c16]} µs | ${M[$s,paced_rps]} | ${M[$s,p50_2k]} / ${M[$s,p99_2k]} µs | $errs |"
    done
    echo
    echo "| weir vs nginx | weir | nginx | weir / nginx | issue-7 goal (weir) |"
    echo "|---|---|---|---|---|"
    echo "| rps (c64) | ${M[weir,rps]} | ${M[nginx,rps]} | $(ratio "${M[weir,rps]}" "${M[nginx,rps]}") | |"
    echo "| requests per proxy CPU-second | ${M[weir,rps_per_cpu]} | ${M[nginx,rps_per_cpu]} | $(ratio "${M[weir,rps_per_cpu]}" "${M[nginx,rps_per_cpu]}") | >= 1.10 |"
    echo "| added p50 over direct, c16 saturated | $(signed "${M[weir,add_p50_c16]}") µs | $(signed "${M[nginx,add_p50_c16]}") µs | $(ratio "${M[weir,add_p50_c16]}" "${M[nginx,add_p50_c16]}") | |"
    echo "| added p99 over direct, c16 saturated | $(signed "${M[weir,add_p99_c16]}") µs | $(signed "${M[nginx,add_p99_c16]}") µs | $(ratio "${M[weir,add_p99_c16]}" "${M[nginx,add_p99_c16]}") | |"
    echo "| added p50 over direct, paced ~2k rps | $(signed "${M[weir,add_p50_2k]}") µs | $(signed "${M[nginx,add_p50_2k]}") µs | $(ratio "${M[weir,add_p50_2k]}" "${M[nginx,add_p50_2k]}") | <= +60 µs |"
    echo "| added p99 over direct, paced ~2k rps | $(signed "${M[weir,add_p99_2k]}") µs | $(signed "${M[nginx,add_p99_2k]}") µs | $(ratio "${M[weir,add_p99_2k]}" "${M[nginx,add_p99_2k]}") | <= +150 µs |"
    echo
    per_pass=$(awk -F'\t' '$3 == "rps_per_cpu" { v[$1, $2] = $4; if ($1 > n) n = $1 }
        END { for (i = 1; i <= n; i++) printf "%s%.2f", (i > 1 ? ", " : ""), (v[i, "nginx"] > 0 ? v[i, "weir"] / v[i, "nginx"] : 0) }' "$RESULTS")
    echo "weir / nginx requests per proxy CPU-second, pass by pass: $per_pass."
    low=$(awk -F'\t' '$3 == "cpu_pct" && $4 < 90 { printf "%s%s pass %s (%s%%)", (n++ ? ", " : ""), $2, $1, $4 }' "$RESULTS")
    if [ -n "$low" ]; then
        echo "Proxy below 90% CPU in the c64 run: $low. There the proxy was not the bottleneck (the core of wrk" \
             "and the upstream, or the host, was), so its rps is not its capacity and its requests per CPU-second" \
             "are measured at less than saturation."
    fi
    if [ "$TOTAL_ERRORS" -gt 0 ]; then
        echo
        echo "wrk counted $TOTAL_ERRORS errors (connect/read/write/non-2xx/timeout) in this run; see the errors column."
    fi
} > "$REPORT"

echo
cat "$REPORT"
echo
if [ "$RECORD" = 1 ]; then
    SECTION="## Data path: first load measurement (issue 4)"
    {
        grep -qxF "$SECTION" BENCHMARKS.md 2>/dev/null || printf '\n%s\n' "$SECTION"
        echo
        cat "$REPORT"
    } >> BENCHMARKS.md
    log "appended to BENCHMARKS.md"
else
    log "not recorded (--quick or --no-record)"
fi
[ -s "$WORK/weir.err" ] && { log "weir stderr:"; tail -20 "$WORK/weir.err" >&2; }
exit 0
