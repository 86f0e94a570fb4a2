#!/usr/bin/env bash
# Catch-up of a fresh replica, chainlog against a PostgreSQL standby, side by side on this
# machine, rounds alternating (chainlog, then PostgreSQL) so both meet the same noise.
#
# chainlog: `replication_load catchup TXS`: a primary holding TXS one-entry txs (16-byte
# keys, 100-byte values, one distinct key each), a replica database created on a second
# server; the time until it holds them all, each tx verified (chain, entries, history root,
# key map root) and applied durably, with both servers' CPU per tx.
#
# PostgreSQL: a primary holding TXS one-row INSERT txs (the same row as
# tools/bench_vs_postgres.sh inserts; with PG_INDEX=1, a distinct 16-byte key per row under a
# primary key, as chainlog indexes every key), loaded once after a base backup was taken;
# each round starts a standby from a copy of that backup and times it from `pg_ctl start`
# until its replay LSN reaches the primary's, with the standby's CPU per tx (its startup
# process and WAL receiver) and the primary's (its WAL sender).
#
#   cargo build --release --bin chainlogd --example replication_load
#   tools/bench_catchup_vs_postgres.sh [TXS] [ROUNDS]     # defaults: 1000000 3
#
# Installs nothing: needs PostgreSQL 15's binaries (apt-get install postgresql-15). PostgreSQL
# runs as the `postgres` user in private clusters under a temporary directory (fsync on).
set -euo pipefail
txs=${1:-1000000}
rounds=${2:-3}
root=$(cd "$(dirname "$0")/.." && pwd)
load=$root/target/release/examples/replication_load
pgbin=/usr/lib/postgresql/15/bin
for tool in "$pgbin/initdb" "$pgbin/pg_basebackup" "$pgbin/pgbench" "$load" "$root/target/release/chainlogd"; do
  [ -x "$tool" ] || { echo "missing: $tool" >&2; exit 2; }
done
work=$(mktemp -d)
chmod 1777 "$work"
pg() { runuser -u postgres -- "$@"; }
cleanup() {
  pg "$pgbin/pg_ctl" -D "$work/sb" -m immediate stop >/dev/null 2>&1 || true
  pg "$pgbin/pg_ctl" -D "$work/pg" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
hz=$(getconf CLK_TCK)
# CPU ticks of a postmaster's live children (and, with "all", its own and its reaped ones).
children_cpu() { # pid [all]
  local total=0 p
  if [ "${2:-}" = all ]; then total=$(awk '{print $14 + $15 + $16 + $17}' /proc/"$1"/stat); fi
  for p in $(pgrep -P "$1"); do
    total=$((total + $(awk '{print $14 + $15}' /proc/"$p"/stat 2>/dev/null || echo 0)))
  done
  echo "$total"
}

# The PostgreSQL primary, its base backup, then the backlog.
pgport=$((30000 + RANDOM % 10000))
sbport=$((pgport + 1))
mkdir "$work/pg" && chown postgres "$work/pg" && chmod 700 "$work/pg"
pg "$pgbin/initdb" -D "$work/pg" -A trust >/dev/null
pg "$pgbin/pg_ctl" -D "$work/pg" -l "$work/pg.log" -o "-p $pgport -k $work -c fsync=on \
  -c wal_level=replica -c wal_keep_size=16GB -c max_wal_size=16GB -c checkpoint_timeout=1h" \
  start >/dev/null
psql_at() { pg psql -qAt -h "$work" -p "$1" -d postgres -c "$2"; }
until psql_at "$pgport" 'select 1' >/dev/null 2>&1; do sleep 0.1; done
if [ "${PG_INDEX:-0}" = 1 ]; then
  psql_at "$pgport" 'create table kv (k bytea primary key, v bytea not null)'
  echo "insert into kv values (decode(md5(random()::text), 'hex'), decode(repeat('76', 100), 'hex'));" >"$work/insert.sql"
else
  psql_at "$pgport" 'create table kv (k bytea not null, v bytea not null)'
  echo "insert into kv values ('\\x6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b', decode(repeat('76', 100), 'hex'));" >"$work/insert.sql"
fi
chmod 644 "$work/insert.sql"
pg "$pgbin/pg_basebackup" -h "$work" -p "$pgport" -D "$work/base" -X stream -R
echo "loading $txs one-row txs into PostgreSQL (synchronous_commit off for the load only)" >&2
pg env PGOPTIONS='-c synchronous_commit=off' "$pgbin/pgbench" -n -M prepared -h "$work" -p "$pgport" \
  -c 8 -j 2 -t $((txs / 8)) -f "$work/insert.sql" postgres >/dev/null
pg_txs=$(( (txs / 8) * 8 ))
target=$(psql_at "$pgport" 'select pg_current_wal_lsn()')
wal_bytes=$(psql_at "$pgport" "select pg_wal_lsn_diff('$target', '0/0')")
pgpid=$(head -1 "$work/pg/postmaster.pid")

standby_round() {
  rm -rf "$work/sb"
  cp -a "$work/base" "$work/sb"
  local p0 t0 t1 sbpid sbcpu p1
  p0=$(children_cpu "$pgpid" all)
  t0=$(date +%s.%N)
  pg "$pgbin/pg_ctl" -D "$work/sb" -l "$work/sb.log" -o "-p $sbport -k $work -c hot_standby=on" \
    start >/dev/null
  until [ "$(psql_at "$sbport" "select coalesce(pg_last_wal_replay_lsn() >= '$target', false)" 2>/dev/null)" = t ]; do
    sleep 0.02
  done
  t1=$(date +%s.%N)
  sbpid=$(head -1 "$work/sb/postmaster.pid")
  sbcpu=$(children_cpu "$sbpid" all)
  p1=$(children_cpu "$pgpid" all)
  pg "$pgbin/pg_ctl" -D "$work/sb" -m immediate stop >/dev/null
  python3 -c 'import sys
t0, t1, n, sb, p, hz = map(float, sys.argv[1:])
s = t1 - t0
print(f"{n / s:.0f} {s:.2f} {sb * 1e6 / hz / n:.2f} {p * 1e6 / hz / n:.2f}")' \
    "$t0" "$t1" "$pg_txs" "$sbcpu" "$((p1 - p0))" "$hz"
}

echo "round | chainlog catch-up tx/s (s; replica, primary CPU us/tx) | PostgreSQL standby tx/s (s; standby, primary CPU us/tx) | ratio"
cl_all=() pg_all=() ratios=()
for r in $(seq "$rounds"); do
  out=$(cd "$root" && "$load" catchup "$txs" | grep '^catchup:')
  # catchup: N txs in S s = R tx/s (...); CPU per tx: replica A us, primary B us
  read -r cl secs rcpu pcpu < <(echo "$out" | sed -E 's/.* in ([0-9.]+) s = ([0-9]+) tx\/s.*replica ([0-9.]+) us, primary ([0-9.]+) us.*/\2 \1 \3 \4/')
  read -r pgr pgs sbc ppc < <(standby_round)
  ratio=$(python3 -c "print(f'{$cl / $pgr:.2f}')")
  echo "$r | $cl ($secs s; $rcpu, $pcpu) | $pgr ($pgs s; $sbc, $ppc) | $ratio"
  cl_all+=("$cl"); pg_all+=("$pgr"); ratios+=("$ratio")
done
summary() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {printf "%s / %s / %s", a[1], a[int((NR+1)/2)], a[NR]}'; }
echo "min / median / max: chainlog $(summary "${cl_all[@]}") tx/s; PostgreSQL $(summary "${pg_all[@]}") tx/s; ratio $(summary "${ratios[@]}")"
echo "PostgreSQL's backlog: $pg_txs txs, $((wal_bytes / 1048576)) MiB of WAL (PG_INDEX=${PG_INDEX:-0})"
