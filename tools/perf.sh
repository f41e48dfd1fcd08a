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
# The binary the .deb ships (Taskfile's package task): static, TPM store
# in, symbols out.
CGO_ENABLED=0 go build -trimpath -tags tpm -ldflags '-s -w' -o "$work/fleetprov-deb" ./cmd/fleetprov
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
echo "# $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(go version | cut -d' ' -f3); load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"

echo
echo "## fleetprov run, whole process (20 runs of each build, alternating, each after reset)"
"$fp" cloud init --dir "$work/run" --listen "127.0.0.1:$port" > /dev/null
serve "$work/run"
for i in $(seq 20); do
  for b in fleetprov fleetprov-deb; do
    "$fp" reset --config "$work/run/config.yaml" > /dev/null 2>&1 || true
    # A device provisions once, from a clean image: the copies each reset
    # keeps (NAME.bak-TIME) would otherwise pile up, forty by the end, in
    # the directories every run reads for killed runs' temporary files.
    find "$work/run" -name '*.bak-*' -delete
    # Wall time to the millisecond from the clock (time's own counts in
    # 10 ms steps), time's own start included; peak RSS from time.
    start=$(date +%s%N)
    /usr/bin/time -f "%M" -o "$work/rss.$b.$i" "$work/$b" run --config "$work/run/config.yaml" > /dev/null 2>&1
    echo $(( ($(date +%s%N) - start) / 1000000 )) > "$work/wall.$b.$i"
  done
done
median_max() { sort -n | awk '{v[NR]=$1} END {printf "median %s, max %s", v[int((NR+1)/2)], v[NR]}'; }
for b in fleetprov fleetprov-deb; do
  echo "$b: wall ms: $(cat "$work"/wall.$b.* | median_max); peak RSS KiB: $(cat "$work"/rss.$b.* | median_max)"
done
# How long any command takes to start and stop, here an unknown one.
for i in $(seq 20); do
  start=$(date +%s%N); "$fp" no-such-command > /dev/null 2>&1 || true
  echo $(( ($(date +%s%N) - start) / 1000000 )) > "$work/start.$i"
done
echo "start and exit alone (an unknown command) wall ms: $(cat "$work"/start.* | median_max)"
kill "$serve_pid"; wait "$serve_pid" 2>/dev/null || true

echo
echo "## cloud serve under loadtest (CSR flow, EC P-256)"
"$fp" cloud init --dir "$work/empty" --listen "127.0.0.1:$port" > /dev/null
serve "$work/empty"
echo "resident with an empty registry: $(rss_kib "$serve_pid" VmRSS) KiB"
kill "$serve_pid"; wait "$serve_pid" 2>/dev/null || true
for devices in 1000 10000; do
  for format in json cbor; do
    for conc in 20 50 100 200; do
      # 10,000 devices: JSON at 50, 100 and 200 at once, CBOR at 200.
      if [ "$devices" = 10000 ] && { [ "$conc" = 20 ] || { [ "$format" = cbor ] && [ "$conc" != 200 ]; }; }; then continue; fi
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
      # The last line: a run with failures exits 1, which time reports first.
      tail -1 "$work/lt.cpu" | awk -v n="$devices" '{printf "  loadtest CPU per device %.2f ms\n", ($1+$2)*1000/n}'
      grep -E '^ +total ' "$work/lt.out" | sed 's/^ */  device /'
      if [ "$devices" = 10000 ] && [ "$format" = json ] && [ "$conc" = 200 ]; then
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
echo
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$out/summary.txt"
