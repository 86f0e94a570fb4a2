#!/usr/bin/env bash
# Durable one-entry writes, chainlog against PostgreSQL, side by side on this machine, with
# load generators equally light: h2load (Debian's nghttp2-client) sending one prebuilt gRPC
# Set frame over and over, and pgbench -M prepared sending one INSERT. Rounds alternate
# (chainlog, then PostgreSQL, per client count), so both meet the same noise; each round
# reports throughput and the server's CPU per operation (from /proc). chainlog's count of
# successes is checked against the txs it committed (a gRPC error is an HTTP 200 that
# h2load counts as a success).
#
#   cargo build --release --bin chainlogd --bin chainlog --example server_load
#   tools/bench_vs_postgres.sh [SECONDS] [ROUNDS] [CLIENTS...|none]     # defaults: 10 3 1 8 64
#
# With STREAMS="1 4" (say), each round also runs chainlog's streaming write path: the SDK
# load program (server_load writestream) on that many WriteStreams, beside pgbench at
# PG_CLIENTS (default 64) clients, PostgreSQL's best count on this machine.
#
# With H2STREAMS="1" (say), each round also runs the WriteStream with a load generator as light
# as pgbench: h2load on that many connections, each sending one WriteStream request at a time
# whose body is H2_WRITES (default 20000) prebuilt one-entry writes (distinct 16-byte keys,
# 100-byte values), again beside pgbench at PG_CLIENTS clients. The txs chainlog committed are
# checked against what h2load sent: at least every completed request's writes, at most every
# started one's.
#
# Installs nothing: needs h2load, pgbench and PostgreSQL 15's binaries
# (apt-get install nghttp2-client postgresql-15). PostgreSQL runs as the `postgres` user in
# a private cluster under a temporary directory (fsync and synchronous_commit on).
set -euo pipefail
secs=${1:-10}
rounds=${2:-3}
shift $(( $# > 2 ? 2 : $# )) || true
clients=("${@:-1 8 64}")
read -r -a clients <<<"${clients[*]}"
[ "${clients[*]}" = none ] && clients=() # streaming rounds only
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$root/target/release
pgbin=/usr/lib/postgresql/15/bin
for tool in h2load pgbench "$pgbin/initdb" "$bin/chainlogd" "$bin/chainlog"; do
  command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 2; }
done
work=$(mktemp -d)
chmod 755 "$work"
cleanup() {
  [ -n "${cpid:-}" ] && kill "$cpid" 2>/dev/null || true
  runuser -u postgres -- "$pgbin/pg_ctl" -D "$work/pg" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# chainlog
port=$((20000 + RANDOM % 10000))
export CHAINLOG_ADMIN_PASSWORD=bench-password-1
"$bin/chainlogd" --data-dir "$work/cl" --listen "127.0.0.1:$port" --ready-file "$work/ready" \
  >"$work/chainlogd.log" 2>&1 &
cpid=$!
while [ ! -s "$work/ready" ]; do sleep 0.05; done
addr="http://127.0.0.1:$port"
CHAINLOG_PASSWORD=$CHAINLOG_ADMIN_PASSWORD "$bin/chainlog" --addr "$addr" \
  --session-file "$work/session.json" login >/dev/null
token=$(python3 -c 'import json,sys; print(next(iter(json.load(open(sys.argv[1]))["sessions"].values()))["token"])' "$work/session.json")
# SetRequest{database: "defaultdb", entries: [{key: 16 bytes, value: 100 bytes}]}, framed.
python3 - "$work/set.bin" <<'PY'
import struct, sys
def field(n, b): return bytes([n << 3 | 2, len(b)]) + b
kv = field(1, b"k" * 16) + field(2, b"v" * 100)
msg = field(1, b"defaultdb") + field(2, kv)
open(sys.argv[1], "wb").write(b"\0" + struct.pack(">I", len(msg)) + msg)
PY
# WriteStream request bodies: one gRPC message per write, the first naming the database.
h2writes=${H2_WRITES:-20000}
python3 - "$work/stream.bin" "$h2writes" <<'PY'
import struct, sys
def varint(n):
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)
def field(n, b): return bytes([n << 3 | 2]) + varint(len(b)) + b
body = bytearray()
for i in range(int(sys.argv[2])):
    kv = field(1, b"h2stream" + i.to_bytes(8, "big")) + field(2, b"v" * 100)
    msg = (field(1, b"defaultdb") if i == 0 else b"") + field(5, kv)
    body += b"\0" + struct.pack(">I", len(msg)) + msg
open(sys.argv[1], "wb").write(body)
PY
tx_id() {
  CHAINLOG_PASSWORD=$CHAINLOG_ADMIN_PASSWORD "$bin/chainlog" --addr "$addr" --json state \
    --state-file "$work/state.json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["tx_id"])'
}

# PostgreSQL
mkdir "$work/pg" && chown postgres "$work/pg" && chmod 700 "$work/pg"
chmod 1777 "$work"
runuser -u postgres -- "$pgbin/initdb" -D "$work/pg" -A trust >/dev/null
pgport=$((30000 + RANDOM % 10000))
runuser -u postgres -- "$pgbin/pg_ctl" -D "$work/pg" -o "-p $pgport -k $work -c fsync=on -c synchronous_commit=on -c max_connections=200" \
  -l "$work/pg.log" start >/dev/null
until runuser -u postgres -- psql -h "$work" -p "$pgport" -d postgres -c 'select 1' >/dev/null 2>&1; do sleep 0.1; done
runuser -u postgres -- psql -q -h "$work" -p "$pgport" -d postgres \
  -c 'create table kv (k bytea not null, v bytea not null)'
echo "insert into kv values ('\\x6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b', decode(repeat('76', 100), 'hex'));" >"$work/insert.sql"
chmod 644 "$work/insert.sql"
pgpid=$(head -1 "$work/pg/postmaster.pid")

# CPU time (user + system, clock ticks) of a process and its children.
cpu_of() { # pid...
  local total=0 p
  for p in "$@"; do
    for t in /proc/"$p"/task/*/stat; do
      total=$((total + $(awk '{print $14 + $15}' "$t" 2>/dev/null || echo 0)))
    done
  done
  echo "$total"
}
# PostgreSQL's: the postmaster with its reaped children (backends end with their
# connections) and the children alive now.
pg_cpu_now() {
  local total
  total=$(awk '{print $14 + $15 + $16 + $17}' /proc/"$pgpid"/stat)
  for p in $(pgrep -P "$pgpid"); do
    total=$((total + $(awk '{print $14 + $15}' /proc/"$p"/stat 2>/dev/null || echo 0)))
  done
  echo "$total"
}
hz=$(getconf CLK_TCK)

declare -A cl_rate pg_rate cl_cpu pg_cpu
pgc=${PG_CLIENTS:-64}
# One pgbench round at $1 clients; its rate and CPU per tx are added under the label $2.
pg_round() {
  local p0 p1 pout ptx
  p0=$(pg_cpu_now)
  pout=$(runuser -u postgres -- pgbench -n -M prepared -h "$work" -p "$pgport" -c "$1" -j 2 \
    -T "$secs" -f "$work/insert.sql" postgres 2>&1)
  sleep 0.5 # the postmaster reaps the backends (their CPU joins its children's)
  p1=$(pg_cpu_now)
  ptx=$(echo "$pout" | awk '/number of transactions actually processed/ {split($6, a, "/"); print a[1]}')
  pg_rate[$2]+="$((ptx / secs)) "
  pg_cpu[$2]+="$(( (p1 - p0) * 1000000 / hz / (ptx > 0 ? ptx : 1) )) "
}
for c in "${clients[@]}"; do
  for r in $(seq "$rounds"); do
    before=$(tx_id); c0=$(cpu_of "$cpid")
    out=$(h2load -c "$c" -m 1 -D "$secs" -H 'content-type: application/grpc' -H 'te: trailers' \
      -H "authorization: Bearer $token" -d "$work/set.bin" "$addr/chainlog.v1.Data/Set" 2>&1)
    c1=$(cpu_of "$cpid"); after=$(tx_id)
    ok=$(echo "$out" | awk '/^requests:/ {print $8}')
    txs=$((after - before))
    [ "$ok" -le "$txs" ] || { echo "h2load counted $ok successes, chainlog committed $txs txs" >&2; exit 1; }
    cl_rate[$c]+="$((txs / secs)) "
    cl_cpu[$c]+="$(( (c1 - c0) * 1000000 / hz / (txs > 0 ? txs : 1) )) "
    pg_round "$c" "$c"
  done
done

declare -A st_rate st_cpu
for s in ${STREAMS:-}; do
  for r in $(seq "$rounds"); do
    c0=$(cpu_of "$cpid")
    sout=$("$bin/examples/server_load" --addr "$addr" --password "$CHAINLOG_ADMIN_PASSWORD" \
      --secs "$secs" writestream "$s")
    c1=$(cpu_of "$cpid")
    stx=$(echo "$sout" | awk '/^writestream/ {print $3}')
    st_rate[$s]+="$((stx / secs)) "
    st_cpu[$s]+="$(( (c1 - c0) * 1000000 / hz / (stx > 0 ? stx : 1) )) "
    pg_round "$pgc" "s$s"
  done
done

declare -A h2_rate h2_cpu
for s in ${H2STREAMS:-}; do
  for r in $(seq "$rounds"); do
    before=$(tx_id); c0=$(cpu_of "$cpid")
    out=$(h2load -c "$s" -m 1 -D "$secs" -H 'content-type: application/grpc' -H 'te: trailers' \
      -H "authorization: Bearer $token" -d "$work/stream.bin" "$addr/chainlog.v1.Data/WriteStream" 2>&1)
    c1=$(cpu_of "$cpid"); after=$(tx_id)
    started=$(echo "$out" | awk '/^requests:/ {print $4}')
    ok=$(echo "$out" | awk '/^requests:/ {print $8}')
    txs=$((after - before))
    if [ $((ok * h2writes)) -gt "$txs" ] || [ "$txs" -gt $((started * h2writes)) ]; then
      echo "h2load completed $ok and started $started WriteStreams of $h2writes writes; chainlog committed $txs txs" >&2
      exit 1
    fi
    h2_rate[$s]+="$((txs / secs)) "
    h2_cpu[$s]+="$(( (c1 - c0) * 1000000 / hz / (txs > 0 ? txs : 1) )) "
    pg_round "$pgc" "h$s"
  done
done

echo "durable one-entry writes, ${secs} s rounds x ${rounds}, $(nproc) cores; tx/s and server CPU us/op per round"
for c in "${clients[@]}"; do
  python3 - "$c" "${cl_rate[$c]}" "${pg_rate[$c]}" "${cl_cpu[$c]}" "${pg_cpu[$c]}" <<'PY'
import statistics, sys
c, cl, pg, clc, pgc = sys.argv[1], *[list(map(int, a.split())) for a in sys.argv[2:]]
ratios = sorted(a / b for a, b in zip(cl, pg) if b)
print(f"clients {c}: chainlog {cl} tx/s ({clc} us CPU/tx), PostgreSQL {pg} tx/s ({pgc} us CPU/tx); "
      f"ratio min {ratios[0]:.2f} median {statistics.median(ratios):.2f} max {ratios[-1]:.2f}")
PY
done
# One streaming line: label, streams, then chainlog's and PostgreSQL's rates and CPU.
stream_report() {
  python3 - "$@" "$pgc" <<'PY'
import statistics, sys
how, s, cl, pg, clc, pgc_cpu, pgc = sys.argv[1], sys.argv[2], *[list(map(int, a.split())) for a in sys.argv[3:7]], sys.argv[7]
ratios = sorted(a / b for a, b in zip(cl, pg) if b)
print(f"WriteStream x{s} ({how}): chainlog {cl} tx/s ({clc} us CPU/tx), "
      f"PostgreSQL pgbench -c {pgc} {pg} tx/s ({pgc_cpu} us CPU/tx); "
      f"ratio min {ratios[0]:.2f} median {statistics.median(ratios):.2f} max {ratios[-1]:.2f}; "
      f"against PostgreSQL's best round {max(cl) / max(pg):.2f}")
PY
}
for s in ${STREAMS:-}; do
  stream_report "SDK load program" "$s" "${st_rate[$s]}" "${pg_rate[s$s]}" "${st_cpu[$s]}" "${pg_cpu[s$s]}"
done
for s in ${H2STREAMS:-}; do
  stream_report h2load "$s" "${h2_rate[$s]}" "${pg_rate[h$s]}" "${h2_cpu[$s]}" "${pg_cpu[h$s]}"
done
