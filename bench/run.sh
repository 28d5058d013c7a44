#!/usr/bin/env bash
# Side-by-side benchmark of weir against a direct connection, nginx and HAProxy (issue 7).
# Every subject runs in the same pass on the same machine; results are medians over passes
# with min–max, and ratios between subjects computed pass by pass.
#
#   bench/run.sh                  full: 3 passes of 10 s runs (about 20 minutes), appends to BENCHMARKS.md
#   bench/run.sh --quick          smoke: 1 pass of 2 s runs, smaller configs (under 2 minutes), prints only
#   bench/run.sh --only saturation,latency --quick
#
# Options:
#   --quick              1 pass, 2 s runs, memory with 1/100/1,000 services, reload in 1,000; no record
#   --passes N           passes (default 3)
#   --duration S         seconds per load run (default 10)
#   --only LIST          tests, comma separated: saturation latency h2 tls tcp memory reload
#   --subjects LIST      subjects, comma separated: direct nginx haproxy hyper weir (default: all;
#                        hyper is a bare hyper reverse proxy, weir's crates without weir, HTTP tests only)
#   --no-record          print the table only; do not append to BENCHMARKS.md
#   --no-build           use target/release/weir and examples/bare_hyper as they are
#                        (or WEIR_BIN=path, HYPER_BIN=path)
#   --keep               keep the work directory (configs, tool output, logs)
#
# Needs Debian and a Rust toolchain. As root it installs what is missing: nginx (+ stream
# module), haproxy, wrk, nghttp2-client (h2load), iperf3, curl, openssl, python3 from the
# distribution and oha with `cargo install oha --locked`. Listens on 127.0.0.1 only, on free
# ports. See bench/README.md for what each test measures.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
LIB="$REPO/bench/lib.py"

PASSES=3
DURATION=10
WARMUP=2
RECORD=1
QUICK=0
BUILD=1
KEEP=0
ONLY=saturation,latency,h2,tls,tcp,memory,reload
SUBJECT_LIST=direct,nginx,haproxy,hyper,weir
SMALL=1000
LARGE=10000
RELOAD_SERVICES=5000
RELOAD_EDITS=5
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1; PASSES=1; DURATION=2; WARMUP=1; RECORD=0; SMALL=100; LARGE=1000
                 RELOAD_SERVICES=1000; RELOAD_EDITS=2 ;;
        --passes) PASSES=$2; shift ;;
        --duration) DURATION=$2; shift ;;
        --only) ONLY=$2; shift ;;
        --subjects) SUBJECT_LIST=$2; shift ;;
        --no-record) RECORD=0 ;;
        --no-build) BUILD=0 ;;
        --keep) KEEP=1 ;;
        -h|--help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "run.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done
case "$PASSES$DURATION" in *[!0-9]*|"") echo "run.sh: --passes and --duration take whole numbers" >&2; exit 2 ;; esac
[ "$PASSES" -ge 1 ] && [ "$DURATION" -ge 1 ] || { echo "run.sh: --passes and --duration must be >= 1" >&2; exit 2; }
for t in ${ONLY//,/ }; do
    case "$t" in saturation|latency|h2|tls|tcp|memory|reload) ;;
        *) echo "run.sh: unknown test '$t' (saturation latency h2 tls tcp memory reload)" >&2; exit 2 ;; esac
done
SUBJECTS=()
for s in ${SUBJECT_LIST//,/ }; do
    case "$s" in direct|nginx|haproxy|hyper|weir) SUBJECTS+=("$s") ;;
        *) echo "run.sh: unknown subject '$s' (direct nginx haproxy hyper weir)" >&2; exit 2 ;; esac
done
wants() { case ",$ONLY," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

log() { printf '[bench] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- 1. Tools ---------------------------------------------------------------------------------
export PATH="$PATH:/usr/sbin:/sbin:$HOME/.cargo/bin"
missing=()
have() { command -v "$1" >/dev/null 2>&1; }
have nginx || missing+=(nginx)
[ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || missing+=(libnginx-mod-stream)
have haproxy || missing+=(haproxy)
have wrk || missing+=(wrk)
have h2load || missing+=(nghttp2-client)
have iperf3 || missing+=(iperf3)
have curl || missing+=(curl)
have openssl || missing+=(openssl)
have python3 || missing+=(python3)
have taskset || missing+=(util-linux)
if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || die "missing ${missing[*]}; run as root or: sudo apt-get install ${missing[*]}"
    have apt-get || die "missing ${missing[*]} and no apt-get (Debian/Ubuntu expected)"
    log "installing ${missing[*]} from the distribution"
    apt-get update -qq
    # The packaged services are not started here (no init system) or not used: every server
    # below runs from its own config in a temporary directory.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
have cargo || die "cargo not found: install a Rust toolchain (https://rustup.rs) first"
if ! have oha; then
    log "installing oha (cargo install oha --locked; a few minutes)"
    cargo install oha --locked --quiet || die "cargo install oha failed"
fi
for t in nginx haproxy wrk h2load iperf3 oha curl openssl python3; do have "$t" || die "$t is still missing"; done
STREAM_MODULE=/usr/lib/nginx/modules/ngx_stream_module.so

# --- 2. weir ----------------------------------------------------------------------------------
WEIR=${WEIR_BIN:-$REPO/target/release/weir}
if [ "$BUILD" = 1 ] && [ -z "${WEIR_BIN:-}" ]; then
    log "building weir (cargo build --release -p weir)"
    cargo build --release -p weir --quiet
fi
[ -x "$WEIR" ] || die "$WEIR does not exist (build it, or drop --no-build)"
# The bare hyper reverse proxy (subject "hyper"): weir's HTTP crates with nothing of weir's own.
HYPER=${HYPER_BIN:-$REPO/target/release/examples/bare_hyper}
if [[ ",$SUBJECT_LIST," == *,hyper,* ]] && [ "$BUILD" = 1 ] && [ -z "${HYPER_BIN:-}" ]; then
    log "building the bare hyper proxy (cargo build --release -p weir-proxy --example bare_hyper)"
    cargo build --release -p weir-proxy --example bare_hyper --quiet
fi

# --- 3. Pinning -------------------------------------------------------------------------------
if [ "$(nproc)" -ge 2 ] && taskset -c 0 true 2>/dev/null && taskset -c 1 true 2>/dev/null; then
    PIN_SUBJECT=(taskset -c 0); PIN_LOAD=(taskset -c 1)
    PINNING="subject alone on core 0; load generator and upstream on core 1"
else
    PIN_SUBJECT=(); PIN_LOAD=(); PINNING="none (fewer than 2 usable cores)"
fi

# --- 4. Work directory, processes, cleanup ----------------------------------------------------
WORK=$(mktemp -d /tmp/weir-bench.XXXXXX)
chmod 755 "$WORK"   # nginx workers run as an unprivileged user and read the static file
RESULTS="$WORK/results.tsv"; : > "$RESULTS"
TOOLLOG="$WORK/tools.log"
PIDS=()
stop_pid() {   # pid: TERM, bounded wait, KILL
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    if [ "$KEEP" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
forget() { local p keep=(); for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done; PIDS=("${keep[@]}"); }

read -r UP_HTTP UP_H2 UP_TLS IPERF_PORT S_HTTP S_H2 S_TLS S_TCP S_ADMIN <<<"$(python3 "$LIB" ports 9)"

# --- 5. Shared files --------------------------------------------------------------------------
mkdir -p "$WORK/www" "$WORK/tmp" "$WORK/tls"
head -c 1024 /dev/zero | tr '\0' 'x' > "$WORK/www/1k"
chmod 644 "$WORK/www/1k"
# One ECDSA P-256 certificate for every subject (TLS 1.3, the clients' default suite).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=bench.local" -addext "subjectAltName=DNS:bench.local,IP:127.0.0.1" \
    -keyout "$WORK/tls/key.pem" -out "$WORK/tls/cert.pem" 2>/dev/null || die "openssl could not make a certificate"
cat "$WORK/tls/cert.pem" "$WORK/tls/key.pem" > "$WORK/tls/haproxy.pem"
chmod 644 "$WORK/tls/"*

cat > "$WORK/report.lua" <<'EOF'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK requests=%d duration_us=%d connect=%d read=%d write=%d status=%d timeout=%d p50=%d p99=%d p999=%d max=%d\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max))
end
EOF
{ cat "$WORK/report.lua"; echo 'wrk.headers["Connection"] = "close"'; } > "$WORK/close.lua"

nginx_main() {   # name [modules]: top of an nginx config (1 worker, no logs, no daemon)
    [ "${2:-}" = stream ] && echo "load_module $STREAM_MODULE;"
    cat <<EOF
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 65536;
pid $WORK/$1.pid;
error_log $WORK/$1-error.log error;
events { worker_connections 16384; }
EOF
}
nginx_http_common() {   # name
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

# --- 6. Upstream (core 1): 1 KiB over HTTP/1.1, h2c and HTTPS ----------------------------------
{
    nginx_main upstream
    echo "http {"
    nginx_http_common upstream
    cat <<EOF
    sendfile on;
    tcp_nodelay on;
    open_file_cache max=16;
    default_type application/octet-stream;
    ssl_certificate $WORK/tls/cert.pem;
    ssl_certificate_key $WORK/tls/key.pem;
    server {
        listen 127.0.0.1:$UP_HTTP;
        listen 127.0.0.1:$UP_H2 http2;
        listen 127.0.0.1:$UP_TLS ssl;
        root $WORK/www;
        location / { try_files /1k =404; }
    }
}
EOF
} > "$WORK/upstream.conf"

wait_http() {   # url pid [curl args...]: bounded poll for 200 + 1024 bytes
    local url=$1 pid=$2 i got
    shift 2
    for i in $(seq 1 150); do
        got=$(curl -sk "$@" -o /dev/null -m 1 -w '%{http_code} %{size_download}' "$url" 2>/dev/null || true)
        [ "$got" = "200 1024" ] && return 0
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

log "starting the upstream nginx (HTTP :$UP_HTTP, h2c :$UP_H2, HTTPS :$UP_TLS)"
"${PIN_LOAD[@]}" nginx -p "$WORK/" -e "$WORK/upstream-error.log" -c "$WORK/upstream.conf" &
UPSTREAM_PID=$!; PIDS+=("$UPSTREAM_PID")
wait_http "http://127.0.0.1:$UP_HTTP/" "$UPSTREAM_PID" \
    || { cat "$WORK/upstream-error.log" >&2 2>/dev/null; die "the upstream nginx did not start"; }

# --- 7. Subjects ------------------------------------------------------------------------------
# start_subject SUBJECT GROUP [extra]: starts the subject (core 0) configured for a test group,
# sets SPID (pid to measure, "" for direct) and SPORT; returns 1 with SKIP set when it cannot.
# Groups: http (HTTP/1.1 + HTTP/2 listeners), tls, tcp, mem (extra: services endpoints),
# reload (extra: services).
SPID=""; SPORT=""; SKIP=""
start_subject() {
    local s=$1 g=$2 cfg out
    SPID=""; SPORT=""; SKIP=""
    case "$s" in
        direct)
            case "$g" in
                http) SPORT=$UP_HTTP ;; h2) SPORT=$UP_H2 ;; tls) SPORT=$UP_TLS ;; tcp) SPORT=$IPERF_PORT ;;
                *) SKIP="not applicable"; return 1 ;;
            esac
            return 0 ;;
        nginx) start_nginx "$g" "${3:-}" "${4:-}" ;;
        haproxy) start_haproxy "$g" "${3:-}" "${4:-}" ;;
        weir) start_weir "$g" "${3:-}" "${4:-}" ;;
        hyper) start_hyper "$g" ;;
    esac
}

# The bare hyper proxy serves HTTP/1.1 and h2c on one port, and HTTPS on another; it has no
# TCP proxying, no config to hold in memory and nothing to reload.
start_hyper() {
    local tls=()
    [ -x "$HYPER" ] || { SKIP="$HYPER does not exist (build it, or drop --no-build)"; return 1; }
    case "$1" in
        http|h2) SPORT=$S_HTTP ;;
        tls) SPORT=$S_TLS; tls=(--tls-listen "127.0.0.1:$S_TLS" --cert "$WORK/tls/cert.pem" --key "$WORK/tls/key.pem") ;;
        *) SKIP="not applicable (a bare HTTP proxy)"; return 1 ;;
    esac
    "${PIN_SUBJECT[@]}" "$HYPER" --listen "127.0.0.1:$S_HTTP" --upstream "127.0.0.1:$UP_HTTP" "${tls[@]}" \
        > "$WORK/hyper-$1.out" 2>&1 &
    SPID=$!; PIDS+=("$SPID")
    python3 "$LIB" wait-listen "$SPORT" --pid "$SPID" --timeout 30 \
        || { SKIP="the bare hyper proxy did not start: $(tail -c 200 "$WORK/hyper-$1.out" | tr '\n' ' ')"; return 1; }
}

start_nginx() {
    local g=$1 cfg="$WORK/nginx-$1.conf"
    {
        nginx_main "nginx-$g" "$( [ "$g" = tcp ] && echo stream )"
        case "$g" in
            http|h2|tls|mem|reload)
                echo "http {"
                nginx_http_common "nginx-$g"
                cat <<EOF
    upstream backend {
        server 127.0.0.1:$UP_HTTP;
        keepalive 128;
        keepalive_requests 100000000;
        keepalive_timeout 300s;
    }
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_buffering on;
EOF
                case "$g" in
                    http|h2) cat <<EOF
    server {
        listen 127.0.0.1:$S_HTTP;
        listen 127.0.0.1:$S_H2 http2;
        location / { proxy_pass http://backend; }
    }
EOF
                    ;;
                    tls) cat <<EOF
    server {
        listen 127.0.0.1:$S_TLS ssl;
        ssl_certificate $WORK/tls/cert.pem;
        ssl_certificate_key $WORK/tls/key.pem;
        ssl_session_cache off;
        ssl_session_tickets off;
        location / { proxy_pass http://backend; }
    }
EOF
                    ;;
                    mem)
                        python3 "$LIB" gen nginx "$WORK/nginx-services.conf" --services "$2" --endpoints "$3"
                        echo "    include $WORK/nginx-services.conf;"
                        echo "    server { listen 127.0.0.1:$S_HTTP; location / { proxy_pass http://backend; } }"
                    ;;
                    reload)
                        echo "    include $WORK/nginx-reload/*.conf;"
                    ;;
                esac
                echo "}"
                ;;
            tcp) cat <<EOF
stream {
    server {
        listen 127.0.0.1:$S_TCP;
        proxy_pass 127.0.0.1:$IPERF_PORT;
    }
}
EOF
            ;;
        esac
    } > "$cfg"
    if [ "$g" = reload ]; then
        rm -rf "$WORK/nginx-reload"
        python3 "$LIB" gen-nginx-reload "$WORK/nginx-reload" --services "$2" --port "$S_HTTP"
    fi
    "${PIN_SUBJECT[@]}" nginx -p "$WORK/" -e "$WORK/nginx-$g-error.log" -c "$cfg" > "$WORK/nginx-$g.out" 2>&1 &
    SPID=$!; PIDS+=("$SPID")
    case "$g" in http|h2) SPORT=$S_HTTP ;; tls) SPORT=$S_TLS ;; tcp) SPORT=$S_TCP ;; *) SPORT=$S_HTTP ;; esac
    [ "$g" = h2 ] && SPORT=$S_H2
    python3 "$LIB" wait-listen "$SPORT" --pid "$SPID" --timeout 120 \
        || { SKIP="nginx did not start: $(tail -c 200 "$WORK/nginx-$g-error.log" "$WORK/nginx-$g.out" 2>/dev/null | tr '\n' ' ')"; return 1; }
}

start_haproxy() {
    local g=$1 cfg="$WORK/haproxy-$1.cfg" mode=http
    [ "$g" = tcp ] && mode=tcp
    {
        cat <<EOF
global
    nbthread 1
    maxconn 8000
    tune.ssl.default-dh-param 2048
    ssl-default-bind-options ssl-min-ver TLSv1.2 no-tls-tickets
defaults
    mode $mode
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-keep-alive 300s
    maxconn 8000
EOF
        [ "$mode" = http ] && echo "    http-reuse always"
        case "$g" in
            http|h2) cat <<EOF
frontend fe
    bind 127.0.0.1:$S_HTTP
    bind 127.0.0.1:$S_H2 proto h2
    default_backend be
EOF
            ;;
            tls) cat <<EOF
frontend fe
    bind 127.0.0.1:$S_TLS ssl crt $WORK/tls/haproxy.pem alpn http/1.1
    default_backend be
EOF
            ;;
            tcp) cat <<EOF
frontend fe
    bind 127.0.0.1:$S_TCP
    default_backend be
EOF
            ;;
            mem) cat <<EOF
frontend fe
    bind 127.0.0.1:$S_HTTP
    default_backend be
EOF
            ;;
        esac
        if [ "$g" = tcp ]; then
            echo "backend be"; echo "    server up 127.0.0.1:$IPERF_PORT"
        else
            echo "backend be"; echo "    server up 127.0.0.1:$UP_HTTP"
        fi
        if [ "$g" = mem ]; then
            python3 "$LIB" gen haproxy "$WORK/haproxy-services.cfg" --services "$2" --endpoints "$3"
            cat "$WORK/haproxy-services.cfg"
        fi
    } > "$cfg"
    local mw=()
    if [ "$g" = reload ]; then
        # Master-worker mode: SIGUSR2 to the master reloads (a new worker reads the new files).
        rm -rf "$WORK/haproxy-reload"
        python3 "$LIB" gen-haproxy-reload "$WORK/haproxy-reload" --services "$2" --port "$S_HTTP" --upstream "$UP_HTTP"
        sed -i '/^backend be/,$d' "$cfg"
        cat "$WORK/haproxy-reload/services.cfg" >> "$cfg"
        mw=(-W)
    fi
    "${PIN_SUBJECT[@]}" haproxy "${mw[@]}" -db -f "$cfg" > "$WORK/haproxy-$g.out" 2>&1 &
    SPID=$!; PIDS+=("$SPID")
    case "$g" in http|mem|reload) SPORT=$S_HTTP ;; h2) SPORT=$S_H2 ;; tls) SPORT=$S_TLS ;; tcp) SPORT=$S_TCP ;; esac
    python3 "$LIB" wait-listen "$SPORT" --pid "$SPID" --timeout 120 \
        || { SKIP="haproxy did not start: $(tail -c 200 "$WORK/haproxy-$g.out" | tr '\n' ' ')"; return 1; }
}

weir_gateway() {   # name: the Gateway every weir config uses (servers by group)
    cat <<EOF
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: bench, namespace: bench}
spec:
  selector: {istio: ingressgateway}
  servers:
EOF
}
weir_upstream_se() {
    cat <<EOF
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: upstream, namespace: bench}
spec:
  hosts: [upstream.bench.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 80, name: http, protocol: HTTP}
  - {number: 5201, name: tcp-iperf, protocol: TCP}
  endpoints:
  - {address: 127.0.0.1, ports: {http: $UP_HTTP, tcp-iperf: $IPERF_PORT}}
---
EOF
}
weir_http_vs() {
    cat <<EOF
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bench, namespace: bench}
spec:
  hosts: ["*"]
  gateways: [bench]
  http:
  - route:
    - destination: {host: upstream.bench.local, port: {number: 80}}
EOF
}

start_weir() {
    local g=$1 dir="$WORK/weir-$1"
    rm -rf "$dir"; mkdir -p "$dir"
    case "$g" in
        http|h2)
            { weir_upstream_se; weir_gateway
              echo "  - port: {number: $S_HTTP, name: http, protocol: HTTP}"
              echo "    hosts: ['*']"
              weir_http_vs; } > "$dir/bench.yaml"
            SPORT=$S_HTTP ;;
        tls)
            { weir_upstream_se; weir_gateway
              echo "  - port: {number: $S_TLS, name: https, protocol: HTTPS}"
              echo "    hosts: ['*']"
              echo "    tls: {mode: SIMPLE, serverCertificate: $WORK/tls/cert.pem, privateKey: $WORK/tls/key.pem}"
              weir_http_vs; } > "$dir/bench.yaml"
            SPORT=$S_TLS ;;
        tcp)
            { weir_upstream_se; weir_gateway
              echo "  - port: {number: $S_TCP, name: tcp, protocol: TCP}"
              echo "    hosts: ['*']"
              cat <<EOF
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bench-tcp, namespace: bench}
spec:
  hosts: ["*"]
  gateways: [bench]
  tcp:
  - match: [{port: $S_TCP}]
    route:
    - destination: {host: upstream.bench.local, port: {number: 5201}}
EOF
            } > "$dir/bench.yaml"
            SPORT=$S_TCP ;;
        mem)
            # Clusters only: ServiceEntries of N endpoints each (a gateway builds a cluster per
            # service port it can see); no listener.
            python3 "$LIB" gen weir "$dir/services.yaml" --services "$2" --endpoints "$3"
            SPORT="" ;;
        reload)
            # N ServiceEntries (one endpoint: the upstream) and N VirtualServices on one Gateway;
            # the target's VirtualService is in its own file, the one that gets edited.
            { weir_gateway
              echo "  - port: {number: $S_HTTP, name: http, protocol: HTTP}"
              echo "    hosts: ['*']"
              echo "---"; } > "$dir/gateway.yaml"
            python3 "$LIB" gen weir "$dir/services.yaml" --services "$2" --vs --skip-vs $(( $2 / 2 )) \
                --upstream "$UP_HTTP"
            python3 -c 'import sys; sys.path.insert(0, sys.argv[1]); import lib; open(sys.argv[2], "w").write(lib.vs_yaml(int(sys.argv[3]), 1))' \
                "$REPO/bench" "$dir/target-vs.yaml" $(( $2 / 2 ))
            SPORT=$S_HTTP ;;
    esac
    RUST_LOG=${RUST_LOG:-warn} "${PIN_SUBJECT[@]}" "$WEIR" run --config "$dir" --role gateway \
        --bind 127.0.0.1 --proxy-port 0 --namespace bench --concurrency 1 --access-log off \
        --drain-timeout 100ms --admin "127.0.0.1:$S_ADMIN" > "$WORK/weir-$g.out" 2> "$WORK/weir-$g.err" &
    SPID=$!; PIDS+=("$SPID")
    local i code=""
    for i in $(seq 1 600); do
        code=$(curl -s -o /dev/null -m 1 -w '%{http_code}' "http://127.0.0.1:$S_ADMIN/ready" 2>/dev/null || true)
        [ "$code" = 200 ] && break
        kill -0 "$SPID" 2>/dev/null || break
        sleep 0.1
    done
    [ "$code" = 200 ] || { SKIP="weir was not ready: $(tail -c 200 "$WORK/weir-$g.err" | tr '\n' ' ')"; return 1; }
}

stop_subject() { [ -n "$SPID" ] && { stop_pid "$SPID"; forget "$SPID"; }; SPID=""; }

skip() {   # pass test subject reason
    python3 "$LIB" record "$RESULTS" "$1" "$2" "$3" result "skip:$4"
    log "pass $1 $2 $3: skipped: $4"
}

# Checks a subject answers the way the test needs; on failure records a skip and returns 1.
probe() {   # pass tests(space separated) subject url [curl args]
    local p=$1 tests=$2 s=$3 url=$4 got t
    shift 4
    got=$(curl -sSk "$@" -o /dev/null -m 3 -w '%{http_code} %{size_download}' "$url" 2>"$WORK/curl.err" || true)
    if [ "$got" != "200 1024" ]; then
        got="status $got$( [ -s "$WORK/curl.err" ] && printf ', %s' "$(head -c 120 "$WORK/curl.err" | tr '\n' ' ')")"
        for t in $tests; do skip "$p" "$t" "$s" "GET $url: $got (expected 200 with 1 KiB)"; done
        return 1
    fi
}

measure() {   # pass test subject tool cmd...
    local p=$1 t=$2 s=$3 tool=$4
    shift 4
    python3 "$LIB" measure --results "$RESULTS" --log "$TOOLLOG" --pass "$p" --test "$t" --subject "$s" \
        --tool "$tool" ${SPID:+--pid "$SPID"} --timeout $(( DURATION * 3 + 60 )) -- "${PIN_LOAD[@]}" "$@" \
        2> >(sed 's/^/[bench] /' >&2)
}

# --- 8. Tests ---------------------------------------------------------------------------------
oha_run() {   # pass test subject rate url
    measure "$1" "$2" "$3" oha oha -z "${DURATION}s" -c 16 -q "$4" --latency-correction \
        --no-tui --output-format json "$5"
}

record_idle() {   # pass subject: memory of the freshly started subject with the HTTP test config
    local rss pss
    read -r rss pss <<<"$(python3 "$LIB" mem "$SPID")"
    python3 "$LIB" record "$RESULTS" "$1" memory "$2" idle_rss "$rss"
    python3 "$LIB" record "$RESULTS" "$1" memory "$2" idle_pss "$pss"
}

group_http() {   # pass subject
    local p=$1 s=$2 url
    local tests=""
    wants saturation && tests+=" saturation"
    wants latency && tests+=" latency_2k latency_5k"
    [ -n "$tests" ] || return 0
    if ! start_subject "$s" http; then for t in $tests; do skip "$p" "$t" "$s" "$SKIP"; done; stop_subject; return 0; fi
    url="http://127.0.0.1:$SPORT/"
    [ "$s" != direct ] && wants memory && record_idle "$p" "$s"
    if probe "$p" "$tests" "$s" "$url"; then
        timeout $(( WARMUP + 30 )) "${PIN_LOAD[@]}" wrk -t1 -c64 -d"${WARMUP}s" "$url" >/dev/null 2>&1 || true
        wants saturation && measure "$p" saturation "$s" wrk wrk -t1 -c64 -d"${DURATION}s" -s "$WORK/report.lua" "$url"
        if wants latency; then
            oha_run "$p" latency_2k "$s" 2000 "$url"
            oha_run "$p" latency_5k "$s" 5000 "$url"
        fi
    fi
    stop_subject
}

group_h2() {
    local p=$1 s=$2 url
    if ! start_subject "$s" h2; then skip "$p" h2 "$s" "$SKIP"; stop_subject; return 0; fi
    [ "$s" = weir ] && SPORT=$S_HTTP   # weir serves HTTP/1.1 and h2c (prior knowledge) on one port
    url="http://127.0.0.1:$SPORT/"
    if probe "$p" h2 "$s" "$url" --http2-prior-knowledge; then
        timeout $(( WARMUP + 30 )) "${PIN_LOAD[@]}" h2load -c16 -m32 -D "$WARMUP" "$url" >/dev/null 2>&1 || true
        measure "$p" h2 "$s" h2load h2load -c16 -m32 -t1 -D "$DURATION" "$url"
    fi
    stop_subject
}

group_tls() {
    local p=$1 s=$2 url
    if ! start_subject "$s" tls; then skip "$p" tls_keepalive "$s" "$SKIP"; skip "$p" tls_handshake "$s" "$SKIP"; stop_subject; return 0; fi
    url="https://127.0.0.1:$SPORT/"
    if probe "$p" "tls_keepalive tls_handshake" "$s" "$url"; then
        timeout $(( WARMUP + 30 )) "${PIN_LOAD[@]}" wrk -t1 -c64 -d"${WARMUP}s" "$url" >/dev/null 2>&1 || true
        measure "$p" tls_keepalive "$s" wrk wrk -t1 -c64 -d"${DURATION}s" -s "$WORK/report.lua" "$url"
        measure "$p" tls_handshake "$s" wrk wrk -t1 -c16 -d"${DURATION}s" -s "$WORK/close.lua" "$url"
    fi
    stop_subject
}

group_tcp() {
    local p=$1 s=$2 ipid
    [ "$s" = hyper ] && return 0   # no TCP proxying
    if ! start_subject "$s" tcp; then skip "$p" tcp "$s" "$SKIP"; stop_subject; return 0; fi
    "${PIN_LOAD[@]}" iperf3 -s -1 -B 127.0.0.1 -p "$IPERF_PORT" > "$WORK/iperf3-server.out" 2>&1 &
    ipid=$!; PIDS+=("$ipid")
    if python3 "$LIB" wait-listen "$IPERF_PORT" --pid "$ipid" --timeout 10; then
        measure "$p" tcp "$s" iperf3 iperf3 -c 127.0.0.1 -p "$SPORT" -t "$DURATION" -J
    else
        skip "$p" tcp "$s" "iperf3 server did not start"
    fi
    stop_pid "$ipid"; forget "$ipid"
    stop_subject
}

group_memory() {   # RSS with generated configs: 1, SMALL, LARGE services x 10 endpoints, LARGE x 1
    local p=$1 s=$2 key n e rss pss
    [ "$s" = direct ] && return 0
    if ! wants saturation && ! wants latency; then   # else group_http took the idle figure
        if start_subject "$s" http; then record_idle "$p" "$s"; fi
        stop_subject
    fi
    [ "$s" = hyper ] && return 0   # idle only: it holds no config
    for spec in "rss_1 1 10" "rss_small $SMALL 10" "rss_large $LARGE 10" "rss_large_1ep $LARGE 1"; do
        read -r key n e <<<"$spec"
        if ! start_subject "$s" mem "$n" "$e"; then skip "$p" memory "$s" "$SKIP"; stop_subject; return 0; fi
        read -r rss pss <<<"$(python3 "$LIB" mem "$SPID")"
        python3 "$LIB" record "$RESULTS" "$p" memory "$s" "$key" "$rss"
        if [ "$s" = weir ] && [ "$key" != rss_1 ]; then
            local got
            got=$(curl -s -m 30 "http://127.0.0.1:$S_ADMIN/clusters" | grep -c '::observability_name::' || true)
            [ "$got" -ge "$n" ] || log "weir built $got clusters for $n services (expected >= $n)"
        fi
        log "pass $p memory $s: $key ($n services x $e endpoints): $(( rss / 1024 )) KiB RSS"
        stop_subject
    done
}

group_reload() {
    local p=$1 s=$2 target=$(( RELOAD_SERVICES / 2 )) dir
    case "$s" in direct|hyper) return 0 ;; esac
    if ! start_subject "$s" reload "$RELOAD_SERVICES"; then skip "$p" reload "$s" "$SKIP"; stop_subject; return 0; fi
    case "$s" in
        weir)
            dir="$WORK/weir-reload"
            python3 "$LIB" reload --results "$RESULTS" --pass "$p" --subject weir --dir "$dir" \
                --port "$SPORT" --target "$target" --edits "$RELOAD_EDITS" 2> >(sed 's/^/[bench] /' >&2) ;;
        nginx)
            python3 "$LIB" reload --results "$RESULTS" --pass "$p" --subject nginx --dir "$WORK/nginx-reload" \
                --format nginx --port "$SPORT" --target "$target" --edits "$RELOAD_EDITS" --signal-pid "$SPID" 2> >(sed 's/^/[bench] /' >&2) ;;
        haproxy)
            python3 "$LIB" reload --results "$RESULTS" --pass "$p" --subject haproxy --dir "$WORK/haproxy-reload" \
                --format haproxy --services "$RELOAD_SERVICES" --port "$SPORT" --target "$target" \
                --edits "$RELOAD_EDITS" --signal-pid "$SPID" --signal 12 2> >(sed 's/^/[bench] /' >&2) ;;
    esac
    stop_subject
}

# --- 9. Passes --------------------------------------------------------------------------------
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=$(git status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo "+dirty" || true)
CPU_MODEL=$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')
MACHINE="$(nproc) x ${CPU_MODEL:-unknown CPU}, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(uname -sr)"
log "weir $WEIR ($COMMIT$DIRTY); $PASSES pass(es) of ${DURATION}s runs; tests: $ONLY; subjects: ${SUBJECTS[*]}"
log "pinning: $PINNING; work dir $WORK"
START=$(date +%s)
for pass in $(seq 1 "$PASSES"); do
    for s in "${SUBJECTS[@]}"; do { wants saturation || wants latency; } && group_http "$pass" "$s"; done
    if wants h2; then for s in "${SUBJECTS[@]}"; do group_h2 "$pass" "$s"; done; fi
    if wants tls; then for s in "${SUBJECTS[@]}"; do group_tls "$pass" "$s"; done; fi
    if wants tcp; then for s in "${SUBJECTS[@]}"; do group_tcp "$pass" "$s"; done; fi
    if wants memory; then for s in "${SUBJECTS[@]}"; do group_memory "$pass" "$s"; done; fi
    if wants reload; then for s in "${SUBJECTS[@]}"; do group_reload "$pass" "$s"; done; fi
    log "pass $pass done ($(( $(date +%s) - START )) s)"
done

# --- 10. Report -------------------------------------------------------------------------------
REPORT="$WORK/report.md"
CMD="bench/run.sh"
[ "$QUICK" = 1 ] && CMD+=" --quick"
[ "$ONLY" != saturation,latency,h2,tls,tcp,memory,reload ] && CMD+=" --only $ONLY"
[ "$SUBJECT_LIST" != direct,nginx,haproxy,hyper,weir ] && CMD+=" --subjects $SUBJECT_LIST"
[ "$PASSES" != 3 ] && [ "$QUICK" = 0 ] && CMD+=" --passes $PASSES"
[ "$DURATION" != 10 ] && [ "$QUICK" = 0 ] && CMD+=" --duration $DURATION"
{
    echo "#### $(date -u +%Y-%m-%d), commit $COMMIT$DIRTY, $MACHINE"
    echo
    echo "\`$CMD\` — $PASSES pass(es), ${DURATION} s per load run after a ${WARMUP} s warm-up; $PINNING;" \
         "loopback; 1 KiB responses from an nginx upstream with keep-alive; logs off everywhere;" \
         "weir \`--concurrency 1\`, nginx 1 worker (upstream keep-alive pool), HAProxy \`nbthread 1\`" \
         "(\`http-reuse always\`). Cells: median (min–max) over passes; ratio columns: the ratio" \
         "computed in each pass, then its median (min–max). Saturation counts only runs where the" \
         "subject used >= 95% of its core."
    echo
    python3 "$LIB" report "$RESULTS" --large "$LARGE" --small "$SMALL" --reload-services "$RELOAD_SERVICES"
} > "$REPORT"
echo
cat "$REPORT"
echo
if [ "$RECORD" = 1 ]; then
    SECTION="## Side by side: direct, nginx, HAProxy, weir (issue 7)"
    {
        grep -qxF "$SECTION" BENCHMARKS.md 2>/dev/null || printf '\n%s\n' "$SECTION"
        echo
        cat "$REPORT"
    } >> BENCHMARKS.md
    log "appended to BENCHMARKS.md"
else
    log "not recorded (--quick or --no-record)"
fi
log "finished in $(( $(date +%s) - START )) s"
