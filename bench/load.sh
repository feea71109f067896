#!/usr/bin/env bash
# Load benchmark for POST /api/v1/tickets on SQLite and PostgreSQL, beside a trivial endpoint
# (GET /api/live) of the same server in the same run. Prints accepted submissions per second,
# p50/p99 latency, the same at about half the peak rate, and the server's peak RSS.
#
#   bench/load.sh                 # both backends, 15 s per measurement
#   DURATION=30 bench/load.sh sqlite
#   DELIVERY=false bench/load.sh    # intake alone, without the delivery workers in the process
#
# Needs wrk (apt-get install wrk) and, for PostgreSQL, the local server on 127.0.0.1:5432.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-15}
# Group commit gains with concurrency: the peak is measured at each of these connection counts.
CONCURRENCY=${CONCURRENCY:-64 128}
CONNECTIONS=64
THREADS=${THREADS:-2}
PG_ADMIN=${PG_ADMIN:-postgres://postgres@127.0.0.1:5432/postgres}
export PGOPTIONS="-c client_min_messages=warning"
backends=${*:-sqlite postgres}

command -v wrk >/dev/null || { echo "bench: wrk is missing (apt-get install wrk)" >&2; exit 1; }
cargo build --release --locked --quiet
bin=target/release/intake
work=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
pid=

start_server() { # $1 = database url
  INTAKE_SERVER__WORKERS=${WORKERS:-0} INTAKE_SERVER__LISTEN=127.0.0.1:0 INTAKE_DATABASE__URL="$1" INTAKE_EMAIL__FILE_DIR="$work/outbox" \
    INTAKE_LOG__LEVEL=warn,intake::startup=info INTAKE_LOG__FORMAT=json \
    INTAKE_LIMITS__PER_IP=1000000000/second INTAKE_LIMITS__PER_EMAIL=1000000000/second \
    INTAKE_DELIVERY__ENABLED=${DELIVERY:-true} \
    "$bin" serve 2>"$work/server.log" &
  pid=$!
  for _ in $(seq 1 100); do
    port=$(grep -o '"port":[0-9]*' "$work/server.log" 2>/dev/null | head -1 | cut -d: -f2 || true)
    [ -n "$port" ] && return 0
    sleep 0.1
  done
  echo "bench: server did not start" >&2; cat "$work/server.log" >&2; exit 1
}

# wrk output -> "rate p50 p99 non2xx"
summarise() {
  local out=$1
  local rate p50 p99 bad
  rate=$(awk '/^Requests\/sec/ {print $2}' "$out")
  p50=$(awk '$1=="50%" {print $2}' "$out")
  p99=$(awk '$1=="99%" {print $2}' "$out")
  bad=$(awk '/Non-2xx or 3xx responses/ {print $5}' "$out")
  echo "${rate:-0} ${p50:-?} ${p99:-?} ${bad:-0}"
}

count_tickets() { # $1 backend, $2 url
  if [ "$1" = sqlite ]; then
    sqlite3 "${2#sqlite://}" 'SELECT COUNT(*) FROM tickets'
  else
    psql -qtA "$2" -c 'SELECT COUNT(*) FROM tickets'
  fi
}

printf '%-9s %-28s %10s %9s %9s %8s\n' backend measurement "req/s" p50 p99 non-2xx
for backend in $backends; do
  if [ "$backend" = sqlite ]; then
    url="sqlite://$work/bench.db"
  else
    name="intake_bench_$$"
    psql -qtA "$PG_ADMIN" -c "DROP DATABASE IF EXISTS $name" >/dev/null
    psql -qtA "$PG_ADMIN" -c "CREATE DATABASE $name" >/dev/null
    url="${PG_ADMIN%/*}/$name"
  fi
  start_server "$url"
  base="http://127.0.0.1:$port"

  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION"s --latency "$base/api/live" >"$work/live.txt"
  read -r rate p50 p99 bad < <(summarise "$work/live.txt")
  printf '%-9s %-28s %10s %9s %9s %8s\n' "$backend" "GET /api/live (trivial)" "$rate" "$p50" "$p99" "$bad"

  peak=0; peak_p50=1
  for c in $CONCURRENCY; do
    wrk -t"$THREADS" -c"$c" -d"$DURATION"s --latency -s bench/ticket.lua "$base/api/v1/tickets" >"$work/post.txt"
    read -r rate p50 p99 bad < <(summarise "$work/post.txt")
    printf '%-9s %-28s %10s %9s %9s %8s\n' "$backend" "POST tickets (peak, c=$c)" "$rate" "$p50" "$p99" "$bad"
    if awk -v a="$rate" -v b="$peak" 'BEGIN { exit !(a > b) }'; then
      peak=$rate
      peak_p50=$(awk -v l="$p50" 'BEGIN { v = l + 0; if (l ~ /us$/) v /= 1000; else if (l ~ /s$/ && l !~ /ms$/) v *= 1000; print v }')
    fi
  done

  # About half the peak rate: each of $CONNECTIONS connections waits before each request, so that
  # connections / (delay + latency) is half the peak.
  half_delay=$(awk -v c="$CONNECTIONS" -v r="$peak" -v l="$peak_p50" \
    'BEGIN { d = c * 1000 / (r / 2) - l / 2; printf "%d", (d < 1 ? 1 : d) }')
  BENCH_DELAY_MS=$half_delay wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION"s --latency -s bench/ticket.lua \
    "$base/api/v1/tickets" >"$work/half.txt"
  read -r rate p50 p99 bad < <(summarise "$work/half.txt")
  printf '%-9s %-28s %10s %9s %9s %8s\n' "$backend" "POST tickets (~half peak)" "$rate" "$p50" "$p99" "$bad"

  rss_kib=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  stored=$(count_tickets "$backend" "$url")
  printf '%-9s peak RSS %s MiB; tickets stored %s\n' "$backend" "$(awk -v k="$rss_kib" 'BEGIN {printf "%.1f", k/1024}')" "$stored"
  if [ "$backend" = postgres ]; then
    psql -qtA "$PG_ADMIN" -c "DROP DATABASE IF EXISTS $name WITH (FORCE)" >/dev/null
  fi
done
