#!/usr/bin/env bash
# What the WebRTC peers' GC setting (rtc.TuneGC: at least 64 MiB of room
# above the live heap, unless GOGC is set) buys and costs in a training
# run, not just in the link benchmark: the quickstart model over WebRTC
# between two peer processes, no compression and no shaping (the most
# traffic, so the most garbage from pion), run alternately with the peers
# as shipped, at GOGC=100 and at GOGC=400. Prints tokens/s and each peer
# process's peak resident memory.
#
#   bash experiments/peer-gc.sh [ROUNDS] [STEPS]      (default 2 rounds, 40 steps)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
steps=${2:-40}
make -s build >/dev/null
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# peak_rss PID: the largest VmRSS (KiB) any child of PID reached, polled
# every 100 ms until PID exits; one line per child.
peak_rss() {
  local parent=$1
  declare -A peak
  while kill -0 "$parent" 2>/dev/null; do
    for c in $(pgrep -P "$parent" || true); do
      r=$(awk '/^VmRSS:/ {print $2}' "/proc/$c/status" 2>/dev/null || true)
      [ -n "$r" ] && [ "${peak[$c]:-0}" -lt "$r" ] && peak[$c]=$r
    done
    sleep 0.1
  done
  for c in "${!peak[@]}"; do echo "${peak[$c]}"; done | sort -n | tr '\n' ' '
}

printf '%-6s %-8s %12s %s\n' round GOGC tokens/s "peer peak RSS (MiB)"
for r in $(seq "$rounds"); do
  for gc in default 100 400; do
    env=()
    [ "$gc" != default ] && env=(GOGC="$gc")
    dir="$out/r$r-gc$gc"
    env "${env[@]}" ./bin/narrowband run experiments/quickstart.toml --out "$dir" \
      --set run.steps="$steps" --set pipeline.transport='"webrtc"' \
      --set compression.method='"none"' --set network.bandwidth_mbps=0 \
      --set network.latency_ms=0 --set web.addr='""' --set train.eval_interval=1000 \
      >"$dir.log" 2>&1 &
    pid=$!
    rss=$(peak_rss "$pid")
    wait "$pid" || { cat "$dir.log"; exit 1; }
    tps=$(grep -o '"tokens_per_second": *[0-9.]*' "$dir/summary.json" | grep -o '[0-9.]*$')
    mib=$(for k in $rss; do echo $((k / 1024)); done | tr "\n" " ")
    printf '%-6s %-8s %12.0f %s\n' "$r" "$gc" "$tps" "$mib"
  done
done
