#!/usr/bin/env bash
# Benchmark harness: the gateway side by side with direct access, NGINX and
# HAProxy, on loopback. See load/README.md.
#
#   bash load/run.sh            full run: 3 rounds, 10 s cells, medians -> load/results/<date>.md + .png + .csv
#   bash load/run.sh --smoke    1 round, 1 s cells -> load/target/smoke/ (keeps the harness working; numbers mean nothing)
#
# Every process this script starts is stopped by its PID at the end, also on
# Ctrl-C. All traffic goes to 127.0.0.1.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")

MODE=full
ROUNDS=3
DUR=10          # seconds per measured cell
WARM=1          # seconds of warm-up per target at the start of each block
RATE_WARM=1     # scenario 2: seconds at the fixed rate before measuring
WORKERS="1 2"
GW_BIN=""
GW_DESC=""
GW_BUILT=0
OUT_DIR=""
PORT_BASE=${LOAD_PORT_BASE:-28000}
CONNS=64        # scenarios 1, 2, 3, 5
H2_CLIENTS=16   # scenario 4: connections ...
H2_STREAMS=8    # ... times concurrent streams each
HOLD_CONNS=1000 # scenario 7

usage() {
  cat <<EOF
usage: bash load/run.sh [--smoke] [--rounds N] [--duration SECS] [--workers "1 2"]
                        [--gateway-bin PATH [--gateway-desc TEXT]] [--out DIR]
  --smoke            1 round of 1-second cells (CI: checks the harness, not the numbers)
  --rounds N         rounds of interleaved cells (default 3; medians are taken over them)
  --duration SECS    length of each measured cell (default 10)
  --workers LIST     worker/thread counts to compare (default "1 2")
  --gateway-bin PATH use this gateway binary instead of building the workspace
  --gateway-desc TXT how the report describes that binary (e.g. the commit it was built from)
  --out DIR          where the report goes (default load/results, smoke: load/target/smoke)
environment: LOAD_PORT_BASE (default 28000; ports BASE+1..BASE+49 on 127.0.0.1 are used)
EOF
}

while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) MODE=smoke; ROUNDS=1; DUR=1; WARM=1; RATE_WARM=0.5 ;;
    --rounds) ROUNDS=$2; shift ;;
    --duration) DUR=$2; shift ;;
    --workers) WORKERS=$2; shift ;;
    --gateway-bin) GW_BIN=$2; shift ;;
    --gateway-desc) GW_DESC=$2; shift ;;
    --out) OUT_DIR=$2; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
if [ -z "$OUT_DIR" ]; then
  if [ "$MODE" = smoke ]; then OUT_DIR=$HERE/target/smoke; else OUT_DIR=$HERE/results; fi
fi

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- processes
# Every long-running process is recorded here and stopped by PID on exit.
PIDS=()
RUN=$HERE/target/run
LOGTAG=""   # suffix of the log files of the processes of the current block
cleanup() {
  local pid kids=()
  set +e
  for pid in "${PIDS[@]}"; do
    kill -0 "$pid" 2>/dev/null || continue
    kids+=($(pgrep -P "$pid"))   # nginx workers, in case the master dies first
    kill -TERM "$pid" 2>/dev/null
  done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  done
  for pid in "${kids[@]}"; do kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null; done
  PIDS=()
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# start NAME CPUS CMD...: starts CMD in the background pinned to CPUS, records its PID.
start() {
  local name=$1 cpus=$2; shift 2
  taskset -c "$cpus" "$@" >"${STDOUT:-$RUN/$name$LOGTAG.out}" 2>"$RUN/$name$LOGTAG.err" &
  local pid=$!
  PIDS+=("$pid")
  eval "PID_${name//-/_}=$pid"
}
# stop NAME: stops one process started by `start` (and its children).
stop() {
  local var="PID_${1//-/_}" pid kids
  pid=${!var:-}
  [ -n "$pid" ] || return 0
  kids=$(pgrep -P "$pid" || true)
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  for k in $kids; do kill -KILL "$k" 2>/dev/null || true; done
  local keep=()
  for p in "${PIDS[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
  PIDS=("${keep[@]}")
  eval "unset $var"
}
pid_of() { local var="PID_${1//-/_}"; echo "${!var}"; }
tree() { echo "$1"; pgrep -P "$1" || true; }   # a process and its children (nginx workers)

# CPU ticks (user + system, all threads) of a process tree.
cpu_ticks() {
  local t=0 p v
  for p in $(tree "$1"); do
    v=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}') || v=0
    t=$((t + ${v:-0}))
  done
  echo "$t"
}
# Resident memory (sum of VmRSS, MiB) of a process tree.
rss_mib() {
  local kb=0 p v
  for p in $(tree "$1"); do
    v=$(awk '/^VmRSS:/{print $2}' "/proc/$p/status" 2>/dev/null) || v=0
    kb=$((kb + ${v:-0}))
  done
  awk -v kb="$kb" 'BEGIN{printf "%.1f", kb/1024}'
}

# Other work on the machine during a cell: busy CPU time of the whole machine
# (/proc/stat: user, nice, system, steal; interrupt time is left out, as the
# cells' own loopback traffic lands there) minus that of every process this
# script started and of the load generator. Call these in the main shell, not
# in $(...): `times` reports the children of the shell it runs in.
busy_ticks() { awk '/^cpu /{print $2 + $3 + $4 + $9}' /proc/stat; }
OURS=0
ours_ticks() {
  local t=0 p g
  for p in "${PIDS[@]}"; do t=$((t + $(cpu_ticks "$p"))); done
  times >"$RUN/times.txt"   # line 2: children user and system time, "XmY.YYYs XmY.YYYs"
  g=$(awk -v hz="$HZ" 'NR == 2 {
    s = 0
    for (i = 1; i <= 2; i++) { split($i, a, "m"); sub("s", "", a[2]); s += a[1] * 60 + a[2] }
    printf "%d", s * hz }' "$RUN/times.txt")
  OURS=$((t + g))
}

wait_port() {
  local port=$1 i
  for i in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  die "nothing listens on 127.0.0.1:$port (see $RUN/*$LOGTAG.err)"
}

# ---------------------------------------------------------------- setup
install_deps() {
  bash "$ROOT/tests/install-deps.sh"   # cmake, cc, pkg-config, curl, Rust
  local need=() sudo=""
  command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
  command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
  command -v wrk >/dev/null 2>&1 || need+=(wrk)
  command -v h2load >/dev/null 2>&1 || need+=(nghttp2-client)
  command -v curl >/dev/null 2>&1 || need+=(curl)
  command -v openssl >/dev/null 2>&1 || need+=(openssl)
  command -v taskset >/dev/null 2>&1 || need+=(util-linux)
  command -v pgrep >/dev/null 2>&1 || need+=(procps)
  [ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)
  if [ ${#need[@]} -gt 0 ]; then
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    log "installing ${need[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
  fi
}

PATH=$PATH:/usr/sbin:/sbin
install_deps
. "$HOME/.cargo/env" 2>/dev/null || true

NCPU=$(nproc)
[ "$NCPU" -ge 2 ] || die "needs at least 2 CPUs"
for p in 1 2 11 12 19 21 29 31 32 41 42; do
  port=$((PORT_BASE + p))
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "127.0.0.1:$port is in use; set LOAD_PORT_BASE to a free range"
  fi
done
UP_PORT=$((PORT_BASE + 1)); UP_TLS=$((PORT_BASE + 2))
GW_PORT=$((PORT_BASE + 11)); GW_TLS=$((PORT_BASE + 12)); GW_ADMIN=$((PORT_BASE + 19))
GWF_PORT=$((PORT_BASE + 21)); GWF_ADMIN=$((PORT_BASE + 29))
NG_PORT=$((PORT_BASE + 31)); NG_TLS=$((PORT_BASE + 32))
HA_PORT=$((PORT_BASE + 41)); HA_TLS=$((PORT_BASE + 42))

rm -rf "$RUN"; mkdir -p "$RUN" "$OUT_DIR"
STAMP=$(date +%Y-%m-%d-%H%M)
if [ "$MODE" = smoke ]; then NAME=smoke-$STAMP; else NAME=$STAMP; fi
CSV=$RUN/results.csv
echo "round,workers,scenario,target,metric,value" >"$CSV"
record() { echo "$1,$2,$3,$4,$5,$6" >>"$CSV"; }   # round workers scenario target metric value
T0=$(date +%s)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

log "building the harness helper (load/, not a workspace member)"
cargo build --release --quiet --manifest-path "$HERE/Cargo.toml" --target-dir "$HERE/target"
LOADTOOL=$HERE/target/release/loadtool

if [ -z "$GW_BIN" ]; then
  log "building the gateway (cargo build --release -p gateway)"
  (cd "$ROOT" && cargo build --release --quiet -p gateway)
  GW_BUILT=1
  GW_BIN=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps | sed 's/.*"target_directory":"\([^"]*\)".*/\1/')/release/gateway
fi
[ -x "$GW_BIN" ] || die "no gateway binary at $GW_BIN"

# ---------------------------------------------------------------- material
# A self-signed ECDSA P-256 certificate for every TLS listener.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
  -keyout "$RUN/key.pem" -out "$RUN/cert.pem" 2>/dev/null
cat "$RUN/cert.pem" "$RUN/key.pem" >"$RUN/haproxy.pem"
BODY=$(head -c 1024 /dev/zero | tr '\0' x)   # the fixed 1 KiB response body

# nginx.conf shared header: foreground, files under $RUN, no access log.
nginx_common() {
  cat <<EOF
daemon off;
master_process on;
worker_processes $1;
worker_rlimit_nofile 20000;
pid $RUN/$2.pid;
error_log $RUN/$2.error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $RUN/$2.tmp;
  proxy_temp_path $RUN/$2.tmp;
  fastcgi_temp_path $RUN/$2.tmp;
  uwsgi_temp_path $RUN/$2.tmp;
  scgi_temp_path $RUN/$2.tmp;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  ssl_certificate $RUN/cert.pem;
  ssl_certificate_key $RUN/key.pem;
  ssl_protocols TLSv1.2 TLSv1.3;
EOF
}

# The upstream: NGINX answering every request with the fixed 1 KiB body.
{
  nginx_common 2 upstream
  cat <<EOF
  server {
    listen 127.0.0.1:$UP_PORT backlog=4096;
    listen 127.0.0.1:$UP_TLS ssl http2 backlog=4096;
    location / { default_type text/plain; return 200 "$BODY"; }
  }
}
EOF
} >"$RUN/upstream.conf"

# NGINX as reverse proxy: keep-alive pool to the upstream, same forwarding
# headers the gateway adds (X-Forwarded-For/-Proto, a request id).
nginx_proxy_conf() {
  nginx_common "$1" nginx
  cat <<EOF
  upstream up {
    server 127.0.0.1:$UP_PORT;
    keepalive 256;
    keepalive_requests 100000000;
    keepalive_timeout 60s;
  }
  server {
    listen 127.0.0.1:$NG_PORT backlog=4096;
    listen 127.0.0.1:$NG_TLS ssl http2 backlog=4096;
    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_set_header X-Request-Id \$request_id;
      add_header X-Request-Id \$request_id;
    }
  }
}
EOF
}

# HAProxy: one process, nbthread N, server connections shared across clients
# (http-reuse always, the closest to a connection pool), same headers.
haproxy_conf() {
  cat <<EOF
global
  nbthread $1
  maxconn 8000
  log stderr format raw local0 err
defaults
  mode http
  timeout connect 2s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 300s
  http-reuse always
frontend fe
  bind 127.0.0.1:$HA_PORT backlog 4096
  bind 127.0.0.1:$HA_TLS ssl crt $RUN/haproxy.pem alpn h2,http/1.1 backlog 4096
  option forwardfor
  http-request set-header X-Forwarded-Proto https if { ssl_fc }
  http-request set-header X-Forwarded-Proto http if !{ ssl_fc }
  unique-id-format %{+X}o%ci:%cp_%fi:%fp_%Ts_%rt:%pid
  unique-id-header X-Request-Id
  http-response set-header X-Request-Id %[unique-id]
  default_backend be
backend be
  server up 127.0.0.1:$UP_PORT
EOF
}

# The gateway, plain: one catch-all route, access log off (metrics are always on).
gateway_conf() {
  cat <<EOF
gateway: {name: bench, threads: $1, drain_timeout: 1s}
admin: {listen: 127.0.0.1:$GW_ADMIN}
listeners:
  - {name: plain, listen: 127.0.0.1:$GW_PORT}
  - name: tls
    listen: 127.0.0.1:$GW_TLS
    tls: {cert: $RUN/cert.pem, key: $RUN/key.pem, alpn: [h2, http/1.1]}
clusters:
  - {name: up, endpoints: [{address: 127.0.0.1:$UP_PORT}]}
routes:
  - {name: all, match: {path_prefix: /}, cluster: up}
telemetry: {access_log: {enabled: false}}
EOF
}

# The gateway with its features on (scenario 6): JSON access log (stdout ->
# /dev/null), metrics, ten routes that do not match scanned first (exact
# hosts, a regex), header edits both ways, per-route timeout and retries, a
# local rate limit per client IP that never trips. JWT does not exist yet;
# its issue adds it here.
gateway_features_conf() {
  cat <<EOF
gateway: {name: bench-features, threads: $1, drain_timeout: 1s}
admin: {listen: 127.0.0.1:$GWF_ADMIN}
listeners:
  - {name: public, listen: 127.0.0.1:$GWF_PORT}
clusters:
  - {name: up, lb: least_request, endpoints: [{address: 127.0.0.1:$UP_PORT}]}
routes:
EOF
  for i in 1 2 3 4 5 6 7 8 9; do
    echo "  - {name: decoy-$i, match: {host: svc-$i.example.com, path_prefix: /}, cluster: up}"
  done
  cat <<EOF
  - {name: decoy-regex, match: {path_regex: "^/v[0-9]+/admin/.*"}, cluster: up}
  - name: api
    match: {path_prefix: /, methods: [GET, HEAD]}
    cluster: up
    request_headers: {set: {x-env: bench}, add: {x-via: gateway}, remove: [x-debug]}
    response_headers: {set: {x-served-by: gateway}, remove: [server]}
    timeout: 5s
    retries: {attempts: 2, per_try_timeout: 2s, on: [connect-failure, reset, 503]}
    rate_limit:
      - {name: per-ip, key: client_ip, rate: 1000000/s, burst: 1000000}
telemetry: {access_log: {enabled: true}}
EOF
}

# ---------------------------------------------------------------- CPU placement
# With w workers: when there are at least w+2 CPUs, the generator, the
# upstream and the proxy each get their own. On 2 CPUs with w=1: the proxy
# gets CPU 1 alone, the generator and the upstream share CPU 0 (for the
# direct cells the upstream moves to CPU 1, the proxy's place). Otherwise
# nothing is pinned.
placement() {
  local w=$1 last=$((NCPU - 1))
  if [ "$NCPU" -ge $((w + 2)) ]; then
    GEN_CPUS=0; UP_CPUS=1; UP_DIRECT_CPUS=1; PROXY_CPUS="2-$((w + 1))"; GEN_THREADS=1
  elif [ "$w" -eq 1 ]; then
    GEN_CPUS=0; UP_CPUS=0; UP_DIRECT_CPUS=1; PROXY_CPUS=1; GEN_THREADS=1
  else
    GEN_CPUS="0-$last"; UP_CPUS="0-$last"; UP_DIRECT_CPUS="0-$last"; PROXY_CPUS="0-$last"; GEN_THREADS=$w
  fi
}
pin_upstream() {   # moves every thread of the upstream's processes to CPUS
  local p
  for p in $(tree "$(pid_of upstream)"); do taskset -a -p -c "$1" "$p" >/dev/null; done
}

# ---------------------------------------------------------------- targets
port_of() {   # target scenario -> port
  case "$1:$2" in
    direct:tls_ka|direct:h2) echo "$UP_TLS" ;;
    direct:*) echo "$UP_PORT" ;;
    gateway:tls_ka|gateway:h2) echo "$GW_TLS" ;;
    gateway:*) echo "$GW_PORT" ;;
    gateway-features:*) echo "$GWF_PORT" ;;
    nginx:tls_ka|nginx:h2) echo "$NG_TLS" ;;
    nginx:*) echo "$NG_PORT" ;;
    haproxy:tls_ka|haproxy:h2) echo "$HA_TLS" ;;
    haproxy:*) echo "$HA_PORT" ;;
  esac
}
proc_of() {   # the process (tree) whose CPU and memory a target's figures count
  case "$1" in
    direct) pid_of upstream ;;
    gateway) pid_of gateway ;;
    gateway-features) pid_of gateway-features ;;
    nginx) pid_of nginx ;;
    haproxy) pid_of haproxy ;;
  esac
}

start_proxies() {
  local w=$1
  nginx_proxy_conf "$w" >"$RUN/nginx.conf"; mkdir -p "$RUN/nginx.tmp"
  haproxy_conf "$w" >"$RUN/haproxy.cfg"
  gateway_conf "$w" >"$RUN/gateway.yaml"
  gateway_features_conf "$w" >"$RUN/gateway-features.yaml"
  "$GW_BIN" validate -c "$RUN/gateway.yaml" >/dev/null
  "$GW_BIN" validate -c "$RUN/gateway-features.yaml" >/dev/null
  start nginx "$PROXY_CPUS" nginx -p "$RUN" -c "$RUN/nginx.conf" -e "$RUN/nginx.error.log"
  start haproxy "$PROXY_CPUS" haproxy -db -f "$RUN/haproxy.cfg"
  start gateway "$PROXY_CPUS" "$GW_BIN" run -c "$RUN/gateway.yaml"
  # The features-on gateway's access log (stdout) goes to /dev/null.
  STDOUT=/dev/null start gateway-features "$PROXY_CPUS" "$GW_BIN" run -c "$RUN/gateway-features.yaml"
  for p in $NG_PORT $NG_TLS $HA_PORT $HA_TLS $GW_PORT $GW_TLS $GWF_PORT; do wait_port "$p"; done
}
stop_proxies() { stop gateway-features; stop gateway; stop haproxy; stop nginx; }

# ---------------------------------------------------------------- measuring
# run_gen ROUND W SCENARIO TARGET SECS RECORD: runs the generator of SCENARIO
# against TARGET for SECS seconds; records the figures when RECORD=1.
run_gen() {
  local round=$1 w=$2 sc=$3 t=$4 secs=$5 rec=$6
  local port proc c0 c1 out=$RUN/gen.out reqs=0 rps=0 errs=0 extra=()
  port=$(port_of "$t" "$sc"); proc=$(proc_of "$t")
  if ! kill -0 "$proc" 2>/dev/null; then
    log "  $sc/$t: the process is gone (see $RUN/*$LOGTAG.err); no figure"
    [ "$rec" = 1 ] && record "$round" "$w" "$sc" "$t" rps nan
    return 0
  fi
  if [ "$t" = direct ]; then pin_upstream "$UP_DIRECT_CPUS"; else pin_upstream "$UP_CPUS"; fi
  local gen=(timeout --foreground -k 2 $((${secs%.*} + 20)) taskset -c "$GEN_CPUS")
  c0=$(cpu_ticks "$proc")
  local b0 o0 t0 t1
  b0=$(busy_ticks); ours_ticks; o0=$OURS; t0=$(date +%s%N)
  case "$sc" in
    h1_ka|close|tls_ka)
      local url=http://127.0.0.1:$port/
      [ "$sc" = tls_ka ] && url=https://127.0.0.1:$port/
      [ "$sc" = close ] && extra=(-H "Connection: close")
      "${gen[@]}" wrk -t "$GEN_THREADS" -c "$CONNS" -d "${secs}s" --timeout 5s "${extra[@]}" "$url" >"$out" 2>&1 || true
      reqs=$(awk '/requests in/{print $1}' "$out")
      rps=$(awk '/^Requests\/sec:/{print $2}' "$out")
      errs=$(awk '/Non-2xx/{n+=$NF} /Socket errors/{gsub(",","");n+=$4+$6+$8+$10} END{print n+0}' "$out")
      ;;
    h2)
      "${gen[@]}" h2load -t "$GEN_THREADS" -c "$H2_CLIENTS" -m "$H2_STREAMS" -D "$secs" "https://127.0.0.1:$port/" >"$out" 2>&1 || true
      reqs=$(awk '/^requests:/{print $8}' "$out")
      rps=$(awk '/^finished in/{print $4}' "$out")
      errs=$(awk '/^requests:/{print $10+$12+$14}' "$out")
      ;;
    fixed|fixed_low)
      # Constant rate, open loop (loadtool rate, wrk2-style): requests evenly
      # spaced in time over CONNS keep-alive connections, latency counted
      # from when each request was due. The first second warms up.
      "${gen[@]}" "$LOADTOOL" rate "127.0.0.1:$port" "$RATE" "$CONNS" "$secs" "$RATE_WARM" >"$out" 2>&1 || true
      local kv; kv=$(tr ' ' '\n' <"$out")
      get() { awk -F= -v k="$1" '$1==k{print $2}' <<<"$kv"; }
      reqs=$(get requests); rps=$(get achieved_rps); errs=$(get errors)
      if [ "$rec" = 1 ] && [ -n "$rps" ]; then
        local k
        for k in p50_ms p99_ms p999_ms; do record "$round" "$w" "$sc" "$t" "$k" "$(get $k)"; done
        record "$round" "$w" "$sc" "$t" offered_rps "$RATE"
      fi
      ;;
  esac
  c1=$(cpu_ticks "$proc")
  local foreign
  t1=$(date +%s%N); ours_ticks
  foreign=$(awk -v b=$(( $(busy_ticks) - b0 )) -v o=$((OURS - o0)) -v hz="$HZ" -v ns=$((t1 - t0)) \
    'BEGIN{f = (b - o) / hz / (ns / 1e9) * 100; if (f < 0) f = 0; printf "%.0f", f}')
  [ -n "$rps" ] || { log "  $sc/$t: generator failed: $(tail -n 3 "$out" | tr '\n' ' ')"; rps=nan; }
  if [ "$rec" = 1 ]; then
    record "$round" "$w" "$sc" "$t" rps "${rps%req/s}"
    record "$round" "$w" "$sc" "$t" errors "${errs:-nan}"
    record "$round" "$w" "$sc" "$t" foreign_cpu_pct "$foreign"
    if [[ $sc == h1_ka || $sc == fixed* ]] && [ "${reqs:-0}" -gt 0 ] 2>/dev/null; then
      local key=max_per_100k
      [ "$sc" = fixed ] && key=fixed_per_100k
      [ "$sc" = fixed_low ] && key=low_per_100k
      record "$round" "$w" cpu "$t" "$key" "$(awk -v d=$((c1 - c0)) -v hz="$HZ" -v n="$reqs" 'BEGIN{printf "%.3f", d/hz/n*100000}')"
    fi
    log "  $sc/$t: ${rps%req/s} req/s, $errs failed, other work on the machine: $foreign % of a CPU"
  fi
}

# hold_conns ROUND W TARGET METRIC: RSS of TARGET with HOLD_CONNS open keep-alive connections.
hold_conns() {
  local round=$1 w=$2 t=$3 metric=$4 ready=$RUN/hold.ready i
  if ! kill -0 "$(proc_of "$t")" 2>/dev/null; then
    log "  mem/$t: the process is gone (see $RUN/*$LOGTAG.err); no figure"
    record "$round" "$w" mem "$t" "$metric" nan
    return 0
  fi
  rm -f "$ready"
  start hold "$GEN_CPUS" "$LOADTOOL" hold "127.0.0.1:$(port_of "$t" h1_ka)" "$HOLD_CONNS" 60 "$ready"
  for i in $(seq 600); do [ -s "$ready" ] && break; sleep 0.1; done
  sleep 0.5
  local rss; rss=$(rss_mib "$(proc_of "$t")")
  local ok; ok=$(sed -n 's/^ok=\([0-9]*\).*/\1/p' "$ready" 2>/dev/null)
  stop hold
  record "$round" "$w" mem "$t" "$metric" "$rss"
  record "$round" "$w" mem "$t" errors $((HOLD_CONNS - ${ok:-0}))
  log "  mem/$t: $rss MiB with ${ok:-0}/$HOLD_CONNS connections ($metric)"
}

HZ=$(getconf CLK_TCK)
declare -A RATES RATES_LOW
TARGETS=(direct gateway gateway-features nginx haproxy)
PROXIES=(gateway gateway-features nginx haproxy)

# The upstream runs for the whole run.
start upstream 0-$((NCPU - 1)) nginx -p "$RUN" -c "$RUN/upstream.conf" -e "$RUN/upstream.error.log"
wait_port "$UP_PORT"; wait_port "$UP_TLS"
[ "$(curl -s "http://127.0.0.1:$UP_PORT/" | wc -c)" -eq 1024 ] || die "upstream does not answer 1 KiB"

for round in $(seq "$ROUNDS"); do
  for w in $WORKERS; do
    placement "$w"
    LOGTAG="-r$round-w$w"
    log "round $round/$ROUNDS, $w worker(s): generator on CPU $GEN_CPUS, proxy on CPU $PROXY_CPUS, upstream on CPU $UP_CPUS (direct: $UP_DIRECT_CPUS)"
    echo "round $round w=$w loadavg $(cut -d' ' -f1-3 /proc/loadavg)" >>"$RUN/loadavg.txt"
    start_proxies "$w"
    # (7) idle memory: fresh processes after one request each.
    sleep 0.5
    for t in "${PROXIES[@]}"; do
      curl -s -o /dev/null "http://127.0.0.1:$(port_of "$t" h1_ka)/" || true
    done
    sleep 0.5
    for t in "${PROXIES[@]}"; do
      record "$round" "$w" mem "$t" idle_mib "$(rss_mib "$(proc_of "$t")")"
    done
    for t in "${PROXIES[@]}"; do hold_conns "$round" "$w" "$t" conns_fresh_mib; done
    # Rotate the target order every round so no target always goes first.
    order=("${TARGETS[@]:$(( (round - 1) % 5 ))}" "${TARGETS[@]:0:$(( (round - 1) % 5 ))}")
    for t in "${order[@]}"; do run_gen "$round" "$w" h1_ka "$t" "$WARM" 0; done
    for sc in h1_ka fixed fixed_low tls_ka h2 close; do
      if [ "$sc" = fixed ] && [ -z "${RATES[$w]:-}" ]; then
        # (2) Half of NGINX's scenario (1) maximum, and (2b) half of the
        # gateway's, both taken in round 1 and kept for the later rounds.
        nmax=$(awk -F, -v w="$w" '$2==w && $3=="h1_ka" && $4=="nginx" && $5=="rps"{print int($6)}' "$CSV" | head -n1)
        gmax=$(awk -F, -v w="$w" '$2==w && $3=="h1_ka" && $4=="gateway" && $5=="rps"{print int($6)}' "$CSV" | head -n1)
        RATES[$w]=$(( ${nmax:-2000} / 2 )); RATES_LOW[$w]=$(( ${gmax:-2000} / 2 ))
        [ "${RATES[$w]}" -ge "$CONNS" ] || RATES[$w]=$CONNS
        [ "${RATES_LOW[$w]}" -ge "$CONNS" ] || RATES_LOW[$w]=$CONNS
        log "  fixed rates for $w worker(s): ${RATES[$w]} req/s (half of NGINX's max), ${RATES_LOW[$w]} req/s (half of the gateway's)"
      fi
      RATE=${RATES[$w]:-0}
      [ "$sc" = fixed_low ] && RATE=${RATES_LOW[$w]:-0}
      for t in "${order[@]}"; do
        case "$sc:$t" in
          tls_ka:gateway-features|h2:gateway-features|close:gateway-features) continue ;;
        esac
        run_gen "$round" "$w" "$sc" "$t" "$DUR" 1
      done
    done
    for t in "${PROXIES[@]}"; do hold_conns "$round" "$w" "$t" conns_loaded_mib; done
    stop_proxies
  done
done
stop upstream

# ---------------------------------------------------------------- report
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
ELAPSED=$(( $(date +%s) - T0 ))
if [ "$GW_BUILT" = 1 ]; then
  GW_DESC="built from the work tree at commit $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  if [ -n "$(cd "$ROOT" && git status --porcelain -- gateway filters Cargo.toml Cargo.lock 2>/dev/null | head -c1)" ]; then
    GW_DESC="$GW_DESC (with uncommitted changes)"
  fi
else
  GW_DESC=${GW_DESC:-"prebuilt binary given with --gateway-bin"}
fi
{
  echo "## Machine and method"
  echo
  echo "- Machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $NCPU CPUs, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), Linux $(uname -r)."
  echo "- Load average (1/5/15 min) at start: $LOAD_START; at the end: $LOAD_END. The machine may be shared: other work running during a cell takes CPU from it; the harness measures it per cell (busy CPU time of the machine minus that of the processes it runs) and the report lists the cells it disturbed."
  echo "- Run: $MODE, $ROUNDS round(s), ${DUR} s per cell, ${WARM} s warm-up per target at the start of each block; took $((ELAPSED / 60)) min $((ELAPSED % 60)) s."
  echo "- Gateway: $("$GW_BIN" --version), $GW_DESC, release profile; $(nginx -v 2>&1 | sed 's/nginx version: //'); HAProxy $(haproxy -v | head -n1 | awk '{print $3}'); wrk $(wrk -v 2>&1 | head -n1 | awk '{print $2}'); h2load $(h2load --version | awk '{print $2}')."
  echo "- Upstream: NGINX, 2 workers, \`return 200\` with a fixed 1 KiB body (faster than any proxy in front of it: see the direct column). Keep-alive everywhere: no request limit per connection."
  echo "- Workers: the gateway's \`gateway.threads\`, NGINX's \`worker_processes\`, HAProxy's \`nbthread\` set to the same number."
  echo "- CPU placement (taskset): with 1 worker, the proxy alone on CPU 1, the load generator and the upstream on CPU 0 (for direct cells the upstream moves to CPU 1); with 2 workers on 2 CPUs nothing can be separated, so nothing is pinned. On a machine with at least workers + 2 CPUs, generator, upstream and proxy get separate CPUs."
  echo "- Parity: NGINX and HAProxy add X-Forwarded-For, X-Forwarded-Proto and a request id header as the gateway does; none writes an access log, except the gateway in \"features on\"."
  echo "- (1) wrk, $CONNS connections, HTTP/1.1 keep-alive, GET / (1 KiB answer). (2) \`loadtool rate\` (load/src/rate.rs, open loop like wrk2): $CONNS keep-alive connections, requests evenly spaced at a fixed total rate set to half of NGINX's (1) maximum in round 1, latency of each request counted from the moment it was due (no coordinated omission), ${RATE_WARM} s warm-up excluded. (h2load --rps was tried first: it fires all connections' timers at the same instant, so it sends bursts of $CONNS requests and measures the burst's queueing.) (2b) the same at half of the gateway's own (1) maximum, a rate every target sustains, to compare latency without queueing. (3) wrk over TLS 1.3 (ECDSA P-256, self-signed), keep-alive, $CONNS connections. (4) h2load, HTTP/2 over TLS with ALPN, $H2_CLIENTS connections x $H2_STREAMS concurrent streams; HTTP/1.1 keep-alive to the upstream. (5) wrk with \`Connection: close\`, $CONNS connections: a TCP connection per request. (6) the gateway with its features on, scenarios (1), (2) and (2b): JSON access log to stdout redirected to /dev/null, metrics (also on in the plain gateway: they cannot be turned off), ten non-matching routes ahead of the one that matches (exact hosts, a path regex), a method match, request and response header edits, route timeout and retry policy, a local rate limit per client IP that never trips; JWT does not exist yet and is added by its issue. (7) VmRSS summed over the proxy's processes (NGINX: master + workers): idle = fresh process after one request; then with $HOLD_CONNS keep-alive connections open, each having completed one request, both right after the idle figure (fresh) and again at the end of the round, after every load cell (what a process that has served traffic holds). (8) utime + stime of the proxy's processes during the cell, per 100,000 requests."
  echo
} >"$RUN/meta.md"

cp "$CSV" "$OUT_DIR/$NAME.csv"
"$LOADTOOL" report "$OUT_DIR/$NAME.csv" "$RUN/meta.md" "$OUT_DIR/$NAME.md" "$OUT_DIR/$NAME.png" "$MODE"
log "done in $((ELAPSED / 60)) min $((ELAPSED % 60)) s: $OUT_DIR/$NAME.md, $OUT_DIR/$NAME.png, $OUT_DIR/$NAME.csv"
# The harness itself must work: every cell has to have produced a figure.
missing=$(awk -F, 'NR > 1 && ($6 == "" || $6 == "nan")' "$CSV" | wc -l)
if [ "$missing" -gt 0 ]; then
  log "error: $missing cell(s) produced no figure:"
  awk -F, 'NR > 1 && ($6 == "" || $6 == "nan")' "$CSV" >&2
  exit 1
fi
