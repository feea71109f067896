#!/usr/bin/env bash
# Flood benchmark (issue 4): one client hammers POST /api/v1/tickets far over its limits while
# customers submit at a normal rate. Prints
#   - the trivial endpoint's rate (GET /api/live), the yardstick,
#   - the rate at which the flood is turned away (429 per second),
#   - the normal customers' p50/p99 latency without and with the flood,
#   - RSS after 1,000,000 submissions from 100,000 distinct addresses through the trusted proxy
#     header, with the limiters' keys then alive. SPREAD=invalid (default): each is refused on its
#     fields after both limiters counted it (the limiters' memory alone); SPREAD=valid: valid ones,
#     five per address stored for the one email (per-email limits are per address and client).
# The service runs on embedded defaults (SQLite, file transport, delivery on) and its default
# limits (10/hour per address, 5/hour per email), behind a trusted proxy at 127.0.0.1.
#
#   bench/flood.sh
#   DURATION=20 RATE_MS=20 bench/flood.sh
#
# Needs wrk (apt-get install wrk).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-15}
# The normal customers: NORMAL_CONNECTIONS connections, each waiting RATE_MS between requests.
NORMAL_CONNECTIONS=${NORMAL_CONNECTIONS:-4}
RATE_MS=${RATE_MS:-40}
FLOOD_CONNECTIONS=${FLOOD_CONNECTIONS:-64}
REQUESTS=${REQUESTS:-1000000}
ADDRESSES=${ADDRESSES:-100000}

command -v wrk >/dev/null || { echo "bench: wrk is missing (apt-get install wrk)" >&2; exit 1; }
cargo build --release --locked --quiet
bin=target/release/intake

# The load generators run on the same cores as the server. By default they run at the lowest CPU
# priority (nice 19), as an attacker's machine does not take its CPU from ours; NICE=0 lets them
# compete as equals, PIN=1 gives the server CPU 0 and the generators CPU 1.
server_cpu=""; load_cpu="nice -n ${NICE:-19}"
if [ "${PIN:-0}" = 1 ]; then server_cpu="taskset -c 0"; load_cpu="taskset -c 1"; fi

work=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
pid=

INTAKE_SERVER__LISTEN=127.0.0.1:0 INTAKE_SERVER__TRUSTED_PROXIES='["127.0.0.1/32"]' \
  INTAKE_DATABASE__URL="sqlite://$work/flood.db" INTAKE_EMAIL__FILE_DIR="$work/outbox" \
  INTAKE_LOG__LEVEL=info INTAKE_LOG__FORMAT=json \
  $server_cpu "$bin" serve 2>"$work/server.log" &
pid=$!
for _ in $(seq 1 100); do
  port=$(grep -o '"port":[0-9]*' "$work/server.log" 2>/dev/null | head -1 | cut -d: -f2 || true)
  [ -n "$port" ] && break
  sleep 0.1
done
[ -n "$port" ] || { echo "bench: server did not start" >&2; cat "$work/server.log" >&2; exit 1; }
base="http://127.0.0.1:$port"

field() { # $1 = wrk output, $2 = what
  case $2 in
    rate) awk '/^Requests\/sec/ {print $2}' "$1" ;;
    p50) awk '$1=="50%" {print $2}' "$1" ;;
    p99) awk '$1=="99%" {print $2}' "$1" ;;
    requests) awk '/requests in/ {print $1}' "$1" ;;
    non2xx) awk '/Non-2xx or 3xx responses/ {print $5}' "$1" | grep . || echo 0 ;;
  esac
}
rss_mib() { awk -v f="$1" '$1==f":" {printf "%.1f", $2/1024}' "/proc/$pid/status"; }

$load_cpu wrk -t1 -c64 -d"${DURATION}s" --latency "$base/api/live" >"$work/live.txt"
printf '%-44s %10s req/s\n' "GET /api/live (trivial endpoint)" "$(field "$work/live.txt" rate)"

normal() { # $1 = output file, $2 = address offset
  FLOOD_ROLE=normal FLOOD_SEED=$2 FLOOD_DELAY_MS=$RATE_MS $load_cpu wrk -t1 -c"$NORMAL_CONNECTIONS" -d"${DURATION}s" --latency \
    -s bench/flood.lua "$base/api/v1/tickets" >"$1"
}

normal "$work/alone.txt" 0
printf '%-44s %10s req/s  p50 %s  p99 %s  non-2xx %s\n' "normal customers alone" \
  "$(field "$work/alone.txt" rate)" "$(field "$work/alone.txt" p50)" "$(field "$work/alone.txt" p99)" \
  "$(field "$work/alone.txt" non2xx)"

FLOOD_ROLE=flood $load_cpu wrk -t1 -c"$FLOOD_CONNECTIONS" -d"${DURATION}s" --latency -s bench/flood.lua \
  "$base/api/v1/tickets" >"$work/flood.txt" &
flood_pid=$!
normal "$work/beside.txt" 50000
wait "$flood_pid"
flood_refused=$(field "$work/flood.txt" non2xx)
printf '%-44s %10s req/s  429s %s (%s/s)  p99 %s\n' "flood (one client, c=$FLOOD_CONNECTIONS)" \
  "$(field "$work/flood.txt" rate)" "$flood_refused" \
  "$(awk -v n="$flood_refused" -v d="$DURATION" 'BEGIN {printf "%.0f", n/d}')" "$(field "$work/flood.txt" p99)"
printf '%-44s %10s req/s  p50 %s  p99 %s  non-2xx %s\n' "normal customers during the flood" \
  "$(field "$work/beside.txt" rate)" "$(field "$work/beside.txt" p50)" "$(field "$work/beside.txt" p99)" \
  "$(field "$work/beside.txt" non2xx)"

printf '%-44s %10s MiB\n' "RSS before the spread flood" "$(rss_mib VmRSS)"
rm -f "$work/spread.done"
started=$(date +%s.%N)
FLOOD_ROLE=spread FLOOD_SPREAD=${SPREAD:-invalid} FLOOD_REQUESTS=$REQUESTS FLOOD_ADDRESSES=$ADDRESSES FLOOD_DONE_FILE="$work/spread.done" \
  $load_cpu wrk -t1 -c64 -d3600s -s bench/flood.lua "$base/api/v1/tickets" >"$work/spread.txt" &
spread_pid=$!
while [ ! -e "$work/spread.done" ] && kill -0 "$spread_pid" 2>/dev/null; do sleep 0.2; done
took=$(awk -v s="$started" -v e="$(date +%s.%N)" 'BEGIN {printf "%.1f", e - s}')
kill -INT "$spread_pid" 2>/dev/null || true
wait "$spread_pid" 2>/dev/null || true
printf '%-44s %10s s\n' "$REQUESTS ${SPREAD:-invalid} requests from $ADDRESSES addresses" "$took"
printf '%-44s %10s MiB (peak %s MiB)\n' "RSS after them" "$(rss_mib VmRSS)" "$(rss_mib VmHWM)"
kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
stored=$(sqlite3 "$work/flood.db" 'SELECT COUNT(*) FROM tickets' 2>/dev/null || echo "?")
printf '%-44s %10s\n' "tickets stored in all" "$stored"
printf '%-44s %10s\n' "refusal lines logged" "$(grep -c 'refused a client' "$work/server.log" || true)"
