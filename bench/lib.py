#!/usr/bin/env python3
"""Helpers for bench/run.sh: free ports, CPU and memory from /proc, running a load generator
while measuring the subject, parsing wrk / oha / h2load / iperf3 output, generating large
configs, timing a reload, and rendering the report. Standard library only.

Results are appended to a TSV file, one line per value:

    pass <TAB> test <TAB> subject <TAB> metric <TAB> value

where value is a number, or `skip:<reason>` when the subject could not run the test.
"""

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# --- /proc ------------------------------------------------------------------------------------


def _stat_fields(pid):
    with open(f"/proc/{pid}/stat") as f:
        s = f.read()
    # Fields after the command name (which may contain spaces); rest[0] is field 3 (state).
    return s[s.rindex(")") + 2 :].split()


def tree(pid):
    """pid and all its descendants (nginx master + worker, a shell and its child, ...)."""
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            ppid = int(_stat_fields(d)[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [int(pid)]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_ticks(pids):
    """utime + stime (all threads) of every process in the trees of pids."""
    total = 0
    for root in pids:
        for p in tree(root):
            try:
                f = _stat_fields(p)
                total += int(f[11]) + int(f[12])
            except (OSError, ValueError, IndexError):
                pass
    return total


def core_ticks(core):
    """(busy, total) jiffies of one CPU from /proc/stat."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{core} "):
                v = [int(x) for x in line.split()[1:]]
                idle = v[3] + (v[4] if len(v) > 4 else 0)
                total = sum(v[:8])
                return total - idle, total
    return 0, 0


def memory(pids):
    """(rss, pss) in bytes, summed over the process trees of pids."""
    rss = pss = 0
    for root in pids:
        for p in tree(root):
            try:
                with open(f"/proc/{p}/smaps_rollup") as f:
                    for line in f:
                        if line.startswith("Rss:"):
                            rss += int(line.split()[1]) * 1024
                        elif line.startswith("Pss:"):
                            pss += int(line.split()[1]) * 1024
            except OSError:
                pass
    return rss, pss


# --- results ----------------------------------------------------------------------------------


def record(path, pass_, test, subject, metric, value):
    if isinstance(value, float):
        value = f"{value:.6g}"
    with open(path, "a") as f:
        f.write(f"{pass_}\t{test}\t{subject}\t{metric}\t{value}\n")


def skip_reason(text):
    text = " ".join(text.split())
    return text[:160] if text else "failed"


# --- parsers: each returns a dict of metrics, or raises ValueError with a reason ---------------


def parse_wrk(out):
    m = re.search(r"^WRK (.*)$", out, re.M)
    if not m:
        raise ValueError("no result line from wrk: " + skip_reason(out[-300:]))
    kv = dict(x.split("=", 1) for x in m.group(1).split())
    req = int(kv["requests"])
    dur = int(kv["duration_us"]) / 1e6
    errors = sum(int(kv[k]) for k in ("connect", "read", "write", "status", "timeout"))
    if req == 0:
        raise ValueError(f"wrk completed no request ({errors} errors)")
    return {
        "requests": req,
        "rps": req / dur,
        "errors": errors,
        "p50_us": int(kv["p50"]),
        "p99_us": int(kv["p99"]),
        "p999_us": int(kv["p999"]),
    }


def parse_oha(out):
    start = out.find("{")
    if start < 0:
        raise ValueError("no JSON from oha: " + skip_reason(out[-300:]))
    d = json.loads(out[start:])
    s = d["summary"]
    lat = d.get("latencyPercentiles") or {}
    codes = d.get("statusCodeDistribution") or {}
    ok = sum(int(v) for k, v in codes.items() if str(k).startswith("2"))
    total = sum(int(v) for v in codes.values())
    # Requests still in flight when -z ends are "aborted due to deadline": not failures.
    errs = sum(int(v) for k, v in (d.get("errorDistribution") or {}).items() if "deadline" not in k)
    if ok == 0:
        raise ValueError(f"oha got no 2xx response ({total} responses, {errs} errors: "
                         f"{skip_reason(json.dumps(d.get('errorDistribution')))})")
    dur = s.get("total") or 0
    out = {
        "requests": total,
        "rps": s.get("requestsPerSec") or (total / dur if dur else 0),
        "errors": errs + (total - ok),
    }
    for k, name in (("p50", "p50_us"), ("p99", "p99_us"), ("p99.9", "p999_us")):
        if lat.get(k) is not None:
            out[name] = lat[k] * 1e6
    return out


def parse_h2load(out):
    m = re.search(r"finished in ([0-9.]+)(m?s), ([0-9.]+) req/s", out)
    r = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                  r"(\d+) errored, (\d+) timeout", out)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    if not m or not r:
        raise ValueError("no summary from h2load: " + skip_reason(out[-300:]))
    ok2xx = int(codes.group(1)) if codes else int(r.group(4))
    if ok2xx == 0:
        raise ValueError("h2load got no 2xx response: " + skip_reason(out[-300:]))
    secs = float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)
    return {
        "requests": ok2xx,
        "rps": ok2xx / secs if secs else 0,
        "errors": int(r.group(5)) + int(r.group(6)) + int(r.group(7)) + max(0, int(r.group(4)) - ok2xx),
    }


def parse_iperf3(out):
    start = out.find("{")
    if start < 0:
        raise ValueError("no JSON from iperf3: " + skip_reason(out[-300:]))
    d = json.loads(out[start:])
    if d.get("error"):
        raise ValueError("iperf3: " + d["error"])
    bps = d["end"]["sum_received"]["bits_per_second"]
    if not bps:
        raise ValueError("iperf3 moved no data")
    return {"gbps": bps / 1e9, "errors": 0}


PARSERS = {"wrk": parse_wrk, "oha": parse_oha, "h2load": parse_h2load, "iperf3": parse_iperf3}


# --- subcommands ------------------------------------------------------------------------------


def cmd_ports(a):
    socks = []
    for _ in range(a.n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    print(" ".join(str(s.getsockname()[1]) for s in socks))
    for s in socks:
        s.close()


def cmd_wait_listen(a):
    """Waits (bounded) until something listens on 127.0.0.1:port, without connecting."""
    deadline = time.monotonic() + a.timeout
    while time.monotonic() < deadline:
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with open(table) as f:
                for line in f.readlines()[1:]:
                    p = line.split()
                    if p[1].endswith(f":{a.port:04X}") and p[3] == "0A":
                        return 0
        if a.pid and not os.path.exists(f"/proc/{a.pid}"):
            return 1
        time.sleep(0.02)
    return 1


def cmd_mem(a):
    rss, pss = memory(a.pid)
    print(rss, pss)


def cmd_measure(a):
    """Runs the load generator while measuring the subject's CPU time and its core's load,
    parses the generator's output and records the metrics (or a skip line)."""
    cmd = a.cmd[1:] if a.cmd and a.cmd[0] == "--" else a.cmd
    pids = [p for p in a.pid if p]
    c0 = cpu_ticks(pids) if pids else 0
    b0, t0 = core_ticks(a.core)
    w0 = time.monotonic()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=a.timeout)
        out, rc = p.stdout + p.stderr, p.returncode
    except subprocess.TimeoutExpired as e:
        out, rc = f"timed out after {a.timeout}s: {e}", 124
    wall = time.monotonic() - w0
    c1 = cpu_ticks(pids) if pids else 0
    b1, t1 = core_ticks(a.core)
    rss = memory(pids)[0] if pids else 0  # while the load generator's connections are still open
    with open(a.log, "a") as f:
        f.write(f"### pass {a.pass_} {a.test} {a.subject}: {' '.join(cmd)} (rc {rc}, {wall:.2f}s)\n{out}\n")
    alive = all(os.path.exists(f"/proc/{p}") for p in pids)

    def rec(metric, value):
        record(a.results, a.pass_, a.test, a.subject, metric, value)

    try:
        if rc != 0 and a.tool != "wrk":
            raise ValueError(f"{a.tool} exited {rc}: " + skip_reason(out[-300:]))
        m = PARSERS[a.tool](out)
        if not alive:
            raise ValueError(f"{a.subject} died during the run")
    except (ValueError, KeyError, json.JSONDecodeError) as e:
        rec("result", "skip:" + skip_reason(str(e)))
        print(f"{a.subject} {a.test}: skipped: {skip_reason(str(e))}", file=sys.stderr)
        return 0
    if a.direction_wall:
        wall = a.direction_wall
    for k, v in m.items():
        rec(k, v)
    summary = {k: round(v, 3) if isinstance(v, float) else v for k, v in m.items()}
    if pids:
        cpu = (c1 - c0) / CLK_TCK
        util = cpu / wall if wall else 0
        core = (b1 - b0) / (t1 - t0) if t1 > t0 else 0
        rec("cpu_s", cpu)
        rec("util", util)
        rec("core_busy", core)
        rec("rss", rss)
        summary.update(cpu_s=round(cpu, 2), util=round(util, 3), core_busy=round(core, 3),
                       rss_mib=round(rss / 1048576, 1))
        if cpu > 0 and "requests" in m:
            rec("req_per_cpu_s", m["requests"] / cpu)
            summary["req_per_cpu_s"] = round(m["requests"] / cpu)
        if "rps" in m and m["rps"] > 0:
            # Istio's unit: CPU (millicores) per 1000 requests per second.
            mc = util * 1000 / (m["rps"] / 1000)
            rec("mcores_per_krps", mc)
            summary["mcores_per_krps"] = round(mc, 1)
        if "gbps" in m and util > 0:
            rec("gbps_per_core", m["gbps"] / util)
            summary["gbps_per_core"] = round(m["gbps"] / util, 2)
    print(f"{a.subject} {a.test}: {summary}", file=sys.stderr)
    return 0


def cmd_record(a):
    record(a.results, a.pass_, a.test, a.subject, a.metric, a.value)


# --- config generators ------------------------------------------------------------------------


def ep_addr(i, j):
    """A distinct loopback address per endpoint (127.16.0.0/12 region of 127/8); no traffic is
    ever sent to these: they only make the configs big."""
    n = i * 16 + j + 1
    return f"127.{16 + (n >> 16) % 200}.{(n >> 8) & 255}.{n & 255}"


def cmd_gen(a):
    n, eps = a.services, a.endpoints
    out = []
    if a.kind == "weir":
        for i in range(n):
            host = f"svc-{i}.bench.local"
            if a.upstream:
                endpoints = f"  - {{address: 127.0.0.1, ports: {{http: {a.upstream}}}}}\n"
            else:
                endpoints = "".join(f"  - {{address: {ep_addr(i, j)}, ports: {{http: 9}}}}\n" for j in range(eps))
            out.append(
                "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
                f"metadata: {{name: svc-{i}, namespace: bench}}\n"
                f"spec:\n  hosts: [{host}]\n  location: MESH_INTERNAL\n  resolution: STATIC\n"
                "  ports:\n  - {number: 80, name: http, protocol: HTTP}\n"
                f"  endpoints:\n{endpoints}---\n"
            )
            if a.vs and i != a.skip_vs:
                out.append(vs_yaml(i, 1))
    elif a.kind == "nginx":
        for i in range(n):
            servers = "".join(f"    server {ep_addr(i, j)}:9;\n" for j in range(eps))
            out.append(f"  upstream svc_{i} {{\n{servers}    keepalive 8;\n  }}\n")
    elif a.kind == "haproxy":
        for i in range(n):
            servers = "".join(f"  server s{j} {ep_addr(i, j)}:9\n" for j in range(eps))
            out.append(f"backend svc_{i}\n{servers}")
    with open(a.out, "w") as f:
        f.write("".join(out))


def nginx_server(i, version, port):
    return (f"server {{ listen 127.0.0.1:{port}; server_name svc-{i}.bench.local; "
            f"location / {{ proxy_pass http://backend; add_header x-bench-version \"{version}\" always; }} }}\n")


def cmd_gen_nginx_reload(a):
    """nginx's counterpart of the reload config: a server block per host, the target's alone in
    target.conf."""
    os.makedirs(a.dir, exist_ok=True)
    target = a.services // 2
    with open(os.path.join(a.dir, "all.conf"), "w") as f:
        f.write("".join(nginx_server(i, 1, a.port) for i in range(a.services) if i != target))
    with open(os.path.join(a.dir, "target.conf"), "w") as f:
        f.write(nginx_server(target, 1, a.port))


def haproxy_versions(n, target, version):
    return "".join(f"svc-{i}.bench.local {version if i == target else 1}\n" for i in range(n))


def cmd_gen_haproxy_reload(a):
    """HAProxy's counterpart of the reload config: a backend per host chosen through a map, and
    the response header from a second map (versions.map), the file that gets edited."""
    os.makedirs(a.dir, exist_ok=True)
    n = a.services
    with open(os.path.join(a.dir, "backends.map"), "w") as f:
        f.write("".join(f"svc-{i}.bench.local svc_{i}\n" for i in range(n)))
    with open(os.path.join(a.dir, "versions.map"), "w") as f:
        f.write(haproxy_versions(n, n // 2, 1))
    with open(os.path.join(a.dir, "services.cfg"), "w") as f:
        f.write(
            "frontend fe\n"
            f"    bind 127.0.0.1:{a.port}\n"
            "    http-request set-var(txn.host) req.hdr(host),lower\n"
            f"    use_backend %[var(txn.host),map({a.dir}/backends.map,be)]\n"
            f"    http-response set-header x-bench-version %[var(txn.host),map({a.dir}/versions.map,0)]\n"
            "    default_backend be\n"
            f"backend be\n    server up 127.0.0.1:{a.upstream}\n"
        )
        f.write("".join(f"backend svc_{i}\n    server up 127.0.0.1:{a.upstream}\n" for i in range(n)))


def cmd_gen_weir_http(a):
    """A ServiceEntry for the upstream, a Gateway with one HTTP port and a VirtualService to it."""
    text = WEIR_HTTP.format(port=a.port, upstream=a.upstream)
    if a.tls_port:
        # One more server on the Gateway: HTTPS terminated with the given certificate.
        https = (f"{{port: {{number: {a.tls_port}, name: https, protocol: HTTPS}}, hosts: ['*'], "
                 f"tls: {{mode: SIMPLE, serverCertificate: {a.cert}, privateKey: {a.key}}}}}")
        text = text.replace("hosts: ['*']}]", "hosts: ['*']}, " + https + "]", 1)
    with open(a.out, "w") as f:
        f.write(text)


WEIR_HTTP = """apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: upstream, namespace: bench}}
spec:
  hosts: [upstream.bench.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {upstream}}}}}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: bench, namespace: bench}}
spec:
  selector: {{istio: ingressgateway}}
  servers: [{{port: {{number: {port}, name: http, protocol: HTTP}}, hosts: ['*']}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: bench, namespace: bench}}
spec:
  hosts: ["*"]
  gateways: [bench]
  http: [{{route: [{{destination: {{host: upstream.bench.local, port: {{number: 80}}}}}}]}}]
"""


def vs_yaml(i, version):
    return (
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
        f"metadata: {{name: svc-{i}, namespace: bench}}\n"
        f"spec:\n  hosts: [svc-{i}.bench.local]\n  gateways: [bench/bench]\n"
        "  http:\n  - route:\n"
        f"    - destination: {{host: svc-{i}.bench.local, port: {{number: 80}}}}\n"
        f"      headers: {{response: {{set: {{x-bench-version: \"{version}\"}}}}}}\n---\n"
    )


# --- reload latency ---------------------------------------------------------------------------


def probe(port, host, timeout=1.0):
    """One HTTP/1.1 request on a new connection; returns the x-bench-version header or None."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return None
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    if not head.startswith("HTTP/1.1 200"):
        return None
    for line in head.split("\r\n")[1:]:
        k, _, v = line.partition(":")
        if k.strip().lower() == "x-bench-version":
            return v.strip()
    return None


def cmd_reload(a):
    """Edits one VirtualService (its response header value) `edits` times and, for each edit,
    times from just before the file write to the first response that carries the new value
    (new connection per probe, no pause between probes)."""
    host = f"svc-{a.target}.bench.local"
    if a.format == "nginx":
        path = os.path.join(a.dir, "target.conf")
    elif a.format == "haproxy":
        path = os.path.join(a.dir, "versions.map")
    else:
        path = os.path.join(a.dir, "target-vs.yaml")
        if not os.path.exists(path):
            with open(path, "w") as f:
                f.write(vs_yaml(a.target, 1))
    deadline = time.monotonic() + 30
    while probe(a.port, host) != "1":
        if time.monotonic() > deadline:
            record(a.results, a.pass_, "reload", a.subject, "result",
                   f"skip:{host} did not answer with x-bench-version 1 before the edit")
            print(f"{a.subject} reload: skipped: no initial answer", file=sys.stderr)
            return 0
        time.sleep(0.05)
    samples = []
    for k in range(a.edits):
        version = str(k + 2)
        if a.format == "nginx":
            text = nginx_server(a.target, version, a.port)
        elif a.format == "haproxy":
            text = haproxy_versions(a.services, a.target, version)
        else:
            text = vs_yaml(a.target, version)
        tmp = path + ".tmp"
        t0 = time.perf_counter()
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)  # what editors and config tools do: the new file appears whole
        if a.signal_pid:
            os.kill(a.signal_pid, a.signal)
        while True:
            if probe(a.port, host) == version:
                samples.append((time.perf_counter() - t0) * 1000)
                break
            if time.perf_counter() - t0 > a.limit:
                record(a.results, a.pass_, "reload", a.subject, "result",
                       f"skip:edit {k + 1} not served within {a.limit}s")
                print(f"{a.subject} reload: edit not served in {a.limit}s", file=sys.stderr)
                return 0
        # The next edit starts from a settled state: weir's watcher debounces changes.
        time.sleep(a.gap)
    for s in samples:
        record(a.results, a.pass_, "reload", a.subject, "reload_ms", s)
    print(f"{a.subject} reload: {[round(s, 1) for s in samples]} ms", file=sys.stderr)
    return 0


# --- profiles ---------------------------------------------------------------------------------

# Where a symbol's code comes from: the crate of the type or function it names (a trait method
# on a generic type goes to the trait's crate; `drop_in_place<T>` to T's), or the library.
_GENERIC = re.compile(r"^<[A-Z]\w* as ")
_PATH = re.compile(r"([a-z_][a-z0-9_]*)::")


def symbol_origin(dso, sym):
    if dso.startswith("[kernel"):
        return "kernel"
    if dso.startswith("[vdso"):
        return "vDSO (clock reads)"
    if ".so" in dso:
        return "libc memcpy/memmove/memcmp" if sym.startswith("__mem") else dso.split(".so")[0]
    if "::" not in sym:
        # C in the subject's binary: nginx and HAProxy themselves; in weir mimalloc and aws-lc.
        if sym.startswith(("mi_", "_mi_")):
            return "mimalloc"
        if re.match(r"(aws_lc|aead_|skip_iv|gcm_|aes_)", sym):
            return "aws-lc (crypto)"
        return dso
    s = sym.removeprefix("core::ptr::drop_in_place<")
    m = _PATH.search(_GENERIC.sub("<", s))
    return m.group(1) if m else "other"


def cmd_profile_summary(a):
    """Self time of a perf.data by where the code comes from, then the top symbols."""
    out = subprocess.run(["perf", "report", "-i", a.data, "--no-children", "-g", "none", "--sort", "dso,sym",
                          "--stdio"], capture_output=True, text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        m = re.match(r"\s*([0-9.]+)%\s+(\S+)\s+\[[.k]\]\s+(.*)$", line)
        if m:
            rows.append((float(m.group(1)), m.group(2), m.group(3).strip()))
    if not rows:
        print(f"{a.data}: no samples", file=sys.stderr)
        return 1
    by = {}
    for pct, dso, sym in rows:
        o = symbol_origin(dso, sym)
        by[o] = by.get(o, 0) + pct
    per = f" = µs per request ({a.us_per_request:.2f} µs of CPU each)" if a.us_per_request else ""
    print(f"self time by origin (share of samples{per}):")
    for o, pct in sorted(by.items(), key=lambda kv: -kv[1])[: a.top]:
        us = f"  {pct / 100 * a.us_per_request:5.2f} µs" if a.us_per_request else ""
        print(f"  {pct:6.2f}%{us}  {o}")
    print(f"top {a.top} symbols:")
    for pct, dso, sym in rows[: a.top]:
        print(f"  {pct:6.2f}%  {symbol_origin(dso, sym):<28} {sym[:110]}")
    return 0


# --- report -----------------------------------------------------------------------------------

# hyper: the bare hyper reverse proxy (crates/proxy/examples/bare_hyper.rs), weir's crates alone.
SUBJECTS = ["direct", "nginx", "haproxy", "hyper", "weir"]
PROXIES = ["nginx", "haproxy", "hyper", "weir"]

# (test, metric, label, unit, higher_is_better, goal)  goal: (kind, value) evaluated for weir.
ROWS = [
    ("saturation", "rps", "HTTP/1.1 1 KiB, wrk -c64: requests/s", "", True, None),
    ("saturation", "req_per_cpu_s", "HTTP/1.1 1 KiB: requests per subject CPU-second", "", True,
     ("ratio_min_both", 1.1)),
    ("saturation", "util", "HTTP/1.1: subject CPU (share of its core)", "%", None, None),
    ("latency_2k", "p50_us", "oha -q 2000 -c16: p50", "us", False, None),
    ("latency_2k", "p99_us", "oha -q 2000 -c16: p99", "us", False, None),
    ("latency_2k", "p999_us", "oha -q 2000 -c16: p99.9", "us", False, None),
    ("latency_2k", "add_p50_us", "added p50 at 2k rps (vs direct)", "us", False, ("max", 60)),
    ("latency_2k", "add_p99_us", "added p99 at 2k rps (vs direct)", "us", False, ("max", 150)),
    ("latency_2k", "add_p999_us", "added p99.9 at 2k rps (vs direct)", "us", False, None),
    ("latency_2k", "mcores_per_krps", "CPU per 1000 rps at 2k rps", "mcores", False,
     ("anchor", 60, "ztunnel's 0.06 vCPU per 1000 rps; sidecar Envoy 0.20")),
    ("latency_2k", "rss", "RSS at the end of the 2k rps run", "bytes", False,
     ("anchor", 12 * 1024 * 1024, "ztunnel's 12 MB at 1000 rps; sidecar Envoy 60 MB")),
    ("latency_5k", "p50_us", "oha -q 5000 -c16: p50", "us", False, None),
    ("latency_5k", "p99_us", "oha -q 5000 -c16: p99", "us", False, None),
    ("latency_5k", "p999_us", "oha -q 5000 -c16: p99.9", "us", False, None),
    ("latency_5k", "add_p50_us", "added p50 at 5k rps (vs direct)", "us", False, None),
    ("latency_5k", "add_p99_us", "added p99 at 5k rps (vs direct)", "us", False, None),
    ("latency_5k", "add_p999_us", "added p99.9 at 5k rps (vs direct)", "us", False, None),
    ("latency_5k", "mcores_per_krps", "CPU per 1000 rps at 5k rps", "mcores", False, ("ratio_max", "nginx", 0.8)),
    ("latency_5k", "rss", "RSS at the end of the 5k rps run", "bytes", False, None),
    ("h2", "rps", "HTTP/2 h2load -c16 -m32: requests/s", "", True, None),
    ("h2", "req_per_cpu_s", "HTTP/2: requests per subject CPU-second", "", True, ("ratio_min_best", 1.0)),
    ("tls_keepalive", "rps", "TLS termination, keep-alive (wrk -c64): requests/s", "", True, None),
    ("tls_keepalive", "req_per_cpu_s", "TLS keep-alive: requests per subject CPU-second", "", True,
     ("ratio_min_best", 1.0)),
    ("tls_handshake", "rps", "TLS new handshakes (wrk -c16, Connection: close): /s", "", True, None),
    ("tls_handshake", "req_per_cpu_s", "TLS handshakes per subject CPU-second", "", True, ("ratio_min_best", 1.0)),
    ("tcp", "gbps", "L4 bulk (iperf3 through a TCP route): Gbit/s", "", True, None),
    ("tcp", "gbps_per_core", "L4 bulk: Gbit/s per subject core", "", True, ("ratio_min", "haproxy", 1.0)),
    ("memory", "idle_rss", "idle RSS (HTTP test config, before traffic)", "bytes", False, ("max", 8 * 1024 * 1024)),
    ("memory", "idle_pss", "idle PSS, all processes (HTTP test config)", "bytes", False, None),
    ("memory", "rss_1", "RSS, 1 service x 10 endpoints", "bytes", False, None),
    ("memory", "rss_small", "RSS, SMALL services x 10 endpoints", "bytes", False, None),
    ("memory", "rss_large", "RSS, LARGE services x 10 endpoints", "bytes", False, None),
    ("memory", "rss_large_1ep", "RSS, LARGE services x 1 endpoint", "bytes", False, None),
    ("memory", "b_per_cluster", "bytes per cluster (LARGE x 1 ep vs 1 service)", "B", False, ("max", 2048)),
    ("memory", "b_per_endpoint", "bytes per endpoint (LARGE x 10 vs x 1 ep)", "B", False, ("max", 150)),
    ("reload", "reload_ms", "reload: one route edited among RELOADN services -> served", "ms", False, ("max", 100)),
]


def load(path):
    data = {}  # (pass, test, subject) -> {metric: [values]}
    for line in open(path):
        p = line.rstrip("\n").split("\t")
        if len(p) != 5:
            continue
        data.setdefault((int(p[0]), p[1], p[2]), {}).setdefault(p[3], []).append(p[4])
    return data


def fmt(v, unit):
    if v is None:
        return "-"
    if unit == "bytes":
        return f"{v / 1048576:.1f} MiB" if abs(v) >= 1048576 else f"{v / 1024:.0f} KiB"
    if unit == "%":
        return f"{v * 100:.0f}%"
    if unit == "us":
        return f"{v:+.0f} µs" if False else f"{v:.0f} µs"
    if unit == "ms":
        return f"{v:.0f} ms"
    if unit == "B":
        return f"{v:.0f} B"
    if unit == "mcores":
        return f"{v:.0f} m"
    if abs(v) >= 100:
        return f"{v:.0f}"
    return f"{v:.2f}"


def spread(values, unit):
    values = sorted(values)
    med = statistics.median(values)
    if len(values) == 1:
        return fmt(med, unit)
    return f"{fmt(med, unit)} ({fmt(values[0], unit)}–{fmt(values[-1], unit)})"


def derive(data, passes, large, small):
    """Per pass: added latency vs direct, bytes per cluster / endpoint, saturation validity."""
    for p in passes:
        for test in ("latency_2k", "latency_5k"):
            d = data.get((p, test, "direct"), {})
            for s in PROXIES:
                m = data.get((p, test, s), {})
                for q in ("p50_us", "p99_us", "p999_us"):
                    if q in d and q in m:
                        m["add_" + q] = [str(float(m[q][0]) - float(d[q][0]))]
        for s in PROXIES:
            m = data.get((p, "memory", s), {})
            try:
                one, l1, l10 = (float(m[k][0]) for k in ("rss_1", "rss_large_1ep", "rss_large"))
                m["b_per_cluster"] = [str((l1 - one) / (large - 1))]
                m["b_per_endpoint"] = [str((l10 - l1) / (large * 9))]
            except (KeyError, ValueError, ZeroDivisionError):
                pass


def value(data, p, test, s, metric, min_util):
    """(value, counted, note): note is a skip reason (value None) or why a value is not counted."""
    m = data.get((p, test, s))
    if not m:
        return None, False, None
    if "result" in m and m["result"][0].startswith("skip:"):
        return None, False, m["result"][0][5:]
    if metric not in m:
        return None, False, None
    vals = [float(v) for v in m[metric]]
    v = statistics.median(vals)
    # HTTP/1.1 saturation counts only when the subject kept its core busy.
    if test == "saturation" and s != "direct" and metric != "util" and "util" in m \
            and float(m["util"][0]) < min_util:
        return v, False, f"not counted: subject at {float(m['util'][0]) * 100:.0f}% of its core (< {min_util * 100:.0f}%)"
    return v, True, None


def cmd_report(a):
    data = load(a.results)
    passes = sorted({k[0] for k in data})
    derive(data, passes, a.large, a.small)
    subjects = [s for s in SUBJECTS if any(k[2] == s for k in data)]
    tests = {k[1] for k in data}
    lines = []
    hdr = ["Test"] + subjects
    ratios = [("weir", "nginx"), ("weir", "haproxy"), ("weir", "hyper"), ("nginx", "haproxy")]
    ratios = [r for r in ratios if r[0] in subjects and r[1] in subjects]
    hdr += [f"{x} / {y}" for x, y in ratios] + ["Goal (weir)"]
    lines.append("| " + " | ".join(hdr) + " |")
    lines.append("|" + "---|" * len(hdr))
    notes = []  # footnotes: skip reasons, shared by every cell that names them

    def note(text):
        if text not in notes:
            notes.append(text)
        return f"[{notes.index(text) + 1}]"

    for test, metric, label, unit, higher, goal in ROWS:
        if test not in tests:
            continue
        label = label.replace("LARGE", f"{a.large:,}").replace("SMALL", f"{a.small:,}") \
            .replace("RELOADN", f"{a.reload_services:,}")
        per = {}  # subject -> {pass: counted value}
        cells = [label]
        for s in subjects:
            vals, uncounted, reasons = {}, [], []
            for p in passes:
                v, counted, why = value(data, p, test, s, metric, a.min_util)
                if counted:
                    vals[p] = v
                elif v is not None:
                    uncounted.append(v)
                    reasons.append(why)
                elif why:
                    reasons.append(why)
            per[s] = vals
            if vals:
                c = spread(list(vals.values()), unit)
                if reasons:
                    c += f" ({len(reasons)} of {len(passes)} passes left out {note(reasons[0])})"
            elif uncounted:
                c = f"({spread(uncounted, unit)}) not counted {note(reasons[0])}"
            elif reasons:
                c = f"skipped {note(reasons[0])}"
            else:
                c = "-"
            cells.append(c)
        if all(c == "-" for c in cells[1:]):
            continue
        for x, y in ratios:
            rs = [per[x][p] / per[y][p] for p in passes if p in per[x] and p in per[y] and per[y][p]]
            cells.append(spread(rs, "") if rs and unit != "%" else "-")
        cells.append(goal_cell(goal, per, passes, unit))
        lines.append("| " + " | ".join(cells) + " |")
    print("\n".join(lines))
    if notes:
        print()
        for i, n in enumerate(notes):
            print(f"[{i + 1}] skipped: {n}" if not n.startswith("not counted") else f"[{i + 1}] {n}")


def goal_cell(goal, per, passes, unit):
    if not goal:
        return ""
    w = per.get("weir", {})
    kind = goal[0]

    def med(d):
        return statistics.median(d.values()) if d else None

    def ratio_to(other):
        rs = [w[p] / per[other][p] for p in passes if p in w and p in per.get(other, {}) and per[other][p]]
        return statistics.median(rs) if rs else None

    if kind == "max":
        v = med(w)
        target = f"<= {fmt(goal[1], unit)}" if unit != "us" else f"<= +{goal[1]} µs"
        return f"{target}: " + ("-" if v is None else ("met" if v <= goal[1] else "not met"))
    if kind == "anchor":  # a published figure of Istio's proxies, not a same-pass ratio
        v = med(w)
        return f"<= {fmt(goal[1], unit)} ({goal[2]}): " + ("-" if v is None else ("met" if v <= goal[1] else "not met"))
    if kind == "ratio_max":
        r = ratio_to(goal[1])
        return f"<= {goal[2]}x {goal[1]}: " + ("-" if r is None else ("met" if r <= goal[2] else "not met"))
    if kind == "ratio_min":
        r = ratio_to(goal[1])
        return f">= {goal[2]}x {goal[1]}: " + ("-" if r is None else ("met" if r >= goal[2] else "not met"))
    if kind in ("ratio_min_both", "ratio_min_best"):
        rs = [r for r in (ratio_to("nginx"), ratio_to("haproxy")) if r is not None]
        word = "both" if kind == "ratio_min_both" else "the better"
        if not rs:
            return f">= {goal[1]}x {word} of nginx, HAProxy: -"
        return f">= {goal[1]}x {word} of nginx, HAProxy: " + ("met" if min(rs) >= goal[1] else "not met")
    return ""


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("ports")
    p.add_argument("n", type=int)
    p.set_defaults(f=cmd_ports)
    p = sub.add_parser("wait-listen")
    p.add_argument("port", type=int)
    p.add_argument("--pid", type=int)
    p.add_argument("--timeout", type=float, default=60)
    p.set_defaults(f=cmd_wait_listen)
    p = sub.add_parser("mem")
    p.add_argument("pid", type=int, nargs="+")
    p.set_defaults(f=cmd_mem)
    p = sub.add_parser("measure")
    for k in ("results", "log", "test", "subject", "tool"):
        p.add_argument("--" + k, required=True)
    p.add_argument("--pass", dest="pass_", type=int, required=True)
    p.add_argument("--pid", type=int, action="append", default=[])
    p.add_argument("--core", type=int, default=0)
    p.add_argument("--timeout", type=float, default=300)
    p.add_argument("--direction-wall", type=float, default=0)
    p.add_argument("cmd", nargs=argparse.REMAINDER)
    p.set_defaults(f=cmd_measure)
    p = sub.add_parser("record")
    p.add_argument("results")
    p.add_argument("pass_", type=int)
    for k in ("test", "subject", "metric", "value"):
        p.add_argument(k)
    p.set_defaults(f=cmd_record)
    p = sub.add_parser("gen")
    p.add_argument("kind", choices=["weir", "nginx", "haproxy"])
    p.add_argument("out")
    p.add_argument("--services", type=int, required=True)
    p.add_argument("--endpoints", type=int, default=10)
    p.add_argument("--vs", action="store_true", help="weir: a VirtualService per service")
    p.add_argument("--skip-vs", type=int, default=-1, help="weir: leave out this service's VirtualService")
    p.add_argument("--upstream", type=int, default=0, help="weir: one endpoint, 127.0.0.1:PORT")
    p.set_defaults(f=cmd_gen)
    p = sub.add_parser("gen-weir-http", help="weir: one Gateway port routed to one upstream (ab.sh, link-order.sh)")
    p.add_argument("out")
    p.add_argument("--port", type=int, required=True, help="the Gateway's HTTP port")
    p.add_argument("--upstream", type=int, required=True, help="the upstream at 127.0.0.1:PORT")
    p.add_argument("--tls-port", type=int, default=0, help="also an HTTPS server on this port")
    p.add_argument("--cert", default="", help="PEM certificate of the HTTPS server")
    p.add_argument("--key", default="", help="PEM private key of the HTTPS server")
    p.set_defaults(f=cmd_gen_weir_http)
    p = sub.add_parser("gen-nginx-reload")
    p.add_argument("dir")
    p.add_argument("--services", type=int, required=True)
    p.add_argument("--port", type=int, required=True)
    p.set_defaults(f=cmd_gen_nginx_reload)
    p = sub.add_parser("gen-haproxy-reload")
    p.add_argument("dir")
    p.add_argument("--services", type=int, required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--upstream", type=int, required=True)
    p.set_defaults(f=cmd_gen_haproxy_reload)
    p = sub.add_parser("reload")
    for k in ("results", "subject", "dir"):
        p.add_argument("--" + k, required=True)
    p.add_argument("--pass", dest="pass_", type=int, required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--target", type=int, required=True)
    p.add_argument("--edits", type=int, default=3)
    p.add_argument("--limit", type=float, default=20)
    p.add_argument("--gap", type=float, default=0.5)
    p.add_argument("--format", choices=["weir", "nginx", "haproxy"], default="weir")
    p.add_argument("--services", type=int, default=0, help="haproxy: entries in versions.map")
    p.add_argument("--signal-pid", type=int, default=0)
    p.add_argument("--signal", type=int, default=1)
    p.set_defaults(f=cmd_reload)
    p = sub.add_parser("profile-summary", help="a perf.data's self time by crate or library (ab.sh --profile)")
    p.add_argument("data")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--us-per-request", type=float, default=0, help="CPU µs per request, to turn shares into µs")
    p.set_defaults(f=cmd_profile_summary)
    p = sub.add_parser("report")
    p.add_argument("results")
    p.add_argument("--large", type=int, default=10000)
    p.add_argument("--small", type=int, default=1000)
    p.add_argument("--reload-services", type=int, default=5000)
    p.add_argument("--min-util", type=float, default=0.95)
    p.set_defaults(f=cmd_report)
    a = ap.parse_args()
    sys.exit(a.f(a) or 0)


if __name__ == "__main__":
    main()
