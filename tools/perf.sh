#!/usr/bin/env bash
# Measures what docs/performance.md reports, on this machine: `fleetprov
# run` as a whole process, and `fleetprov cloud serve` under `fleetprov
# loadtest` at several concurrencies, in both payload formats, with 1,000
# and 10,000 devices. Writes docs/perf/*.json (one per loadtest) and
# docs/perf/summary.txt. Run from the repository root:
#   go tool -modfile=tools/go.mod task perf
# It takes several minutes; run it on a machine doing nothing else.
set -euo pipefail
cd "$(dirname "$0")/.."
out=docs/perf
mkdir -p "$out"
rm -f "$out"/*.json
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
go build -trimpath -o "$work/fleetprov" ./cmd/fleetprov
fp="$work/fleetprov"
port=$((20000 + RANDOM % 20000))

cpu_ms() { # utime+stime of a process, in milliseconds
  awk -v hz="$(getconf CLK_TCK)" '{print ($14+$15)*1000/hz}' "/proc/$1/stat"
}
rss_kib() { awk -v k="$2" '$1==k":" {print $2}' "/proc/$1/status"; }

serve() { # serve DIR: start the emulator on DIR, set $serve_pid
  "$fp" cloud serve --dir "$1" --log-level error > "$work/serve.out" 2>&1 &
  serve_pid=$!
  for _ in $(seq 2000); do grep -q listening "$work/serve.out" && return; sleep 0.005; done
  echo "serve did not start"; cat "$work/serve.out"; exit 1
}

{
echo "# $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(go version | cut -d' ' -f3)"

echo
echo "## fleetprov run, whole process (20 runs, each after reset)"
"$fp" cloud init --dir "$work/run" --listen "127.0.0.1:$port" > /dev/null
serve "$work/run"
for i in $(seq 20); do
  "$fp" reset --config "$work/run/config.yaml" > /dev/null 2>&1 || true
  /usr/bin/time -f "%e %M" -o "$work/time.$i" "$fp" run --config "$work/run/config.yaml" > /dev/null 2>&1
done
median_max() { sort -n | awk '{v[NR]=$1} END {printf "median %s, max %s", v[int((NR+1)/2)], v[NR]}'; }
echo "wall ms: $(cat "$work"/time.* | awk '{print $1*1000}' | median_max); peak RSS KiB: $(cat "$work"/time.* | awk '{print $2}' | median_max)"
kill "$serve_pid"; wait "$serve_pid" 2>/dev/null || true

echo
echo "## cloud serve under loadtest (CSR flow, EC P-256)"
"$fp" cloud init --dir "$work/empty" --listen "127.0.0.1:$port" > /dev/null
serve "$work/empty"
echo "resident with an empty registry: $(rss_kib "$serve_pid" VmRSS) KiB"
kill "$serve_pid"; wait "$serve_pid" 2>/dev/null || true
for devices in 1000 10000; do
  for format in json cbor; do
    if [ "$devices" = 10000 ] && [ "$format" = cbor ]; then continue; fi
    for conc in 20 50 100 200; do
      if [ "$devices" = 10000 ] && [ "$conc" != 200 ]; then continue; fi
      dir="$work/cloud-$devices-$format-$conc"
      "$fp" cloud init --dir "$dir" --listen "127.0.0.1:$port" > /dev/null
      serve "$dir"
      before=$(cpu_ms "$serve_pid")
      /usr/bin/time -f "%U %S" -o "$work/lt.cpu" "$fp" loadtest --dir "$dir" -n "$devices" -c "$conc" --format "$format" \
        --param "SerialNumber=perf-{n:06}" --out "$out/$devices-$format-c$conc.json" > "$work/lt.out" 2> /dev/null || true
      after=$(cpu_ms "$serve_pid")
      rss=$(rss_kib "$serve_pid" VmRSS); hwm=$(rss_kib "$serve_pid" VmHWM)
      sed -n 2p "$work/lt.out" | sed "s/^/$devices devices, $format, $conc at once: /"
      awk -v a="$after" -v b="$before" -v n="$devices" -v r="$rss" -v h="$hwm" \
        'BEGIN {printf "  serve CPU per device %.2f ms; RSS after %d KiB, peak %d KiB\n", (a-b)/n, r, h}'
      awk -v n="$devices" '{printf "  loadtest CPU per device %.2f ms\n", ($1+$2)*1000/n}' "$work/lt.cpu"
      grep -E '^ +total ' "$work/lt.out" | sed 's/^ */  device /'
      if [ "$devices" = 10000 ]; then
        # Every change of the run is in the log: a SIGKILL leaves it for
        # the next start to replay.
        kill -KILL "$serve_pid"; wait "$serve_pid" 2>/dev/null || true
        start=$(date +%s%N); serve "$dir"; end=$(date +%s%N)
        echo "  restart after a SIGKILL with 10,000 devices in the log: listening after $(( (end-start)/1000000 )) ms, $(cpu_ms "$serve_pid") ms CPU"
        kill "$serve_pid"; wait "$serve_pid" 2>/dev/null || true
        start=$(date +%s%N); serve "$dir"; end=$(date +%s%N)
        echo "  restart after a clean stop with 10,000 devices registered: listening after $(( (end-start)/1000000 )) ms, $(cpu_ms "$serve_pid") ms CPU"
        echo "  resident after the restart: $(rss_kib "$serve_pid" VmRSS) KiB"
      fi
      kill "$serve_pid"; wait "$serve_pid" 2>/dev/null || true
      rm -rf "$dir"
    done
  done
done
} | tee "$out/summary.txt"
