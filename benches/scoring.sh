#!/usr/bin/env bash
# Scoring throughput: the tract scorer against onnxruntime on the same ONNX
# file (models/default.onnx) and the same windows, in the same run, on this
# machine. Installs onnxruntime (PyPI, pinned) into a cache venv. Runs the
# two engines in alternation for ROUNDS rounds (default 3) of SECONDS per
# measurement (default 2), and prints the median windows/s and the ratio
# tract / onnxruntime. Usage: benches/scoring.sh   (BENCHMARKS.md)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${XDG_CACHE_HOME:-$HOME/.cache}/anomalyd-bench/venv"
if ! "$venv/bin/python" -c "import onnxruntime, numpy" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q onnxruntime==1.32.0 numpy==2.4.6
fi
out=target/bench
mkdir -p "$out"
rounds=${ROUNDS:-3}
seconds=${SECONDS_PER_POINT:-2}
cargo bench --bench scoring --no-run -q 2>/dev/null || cargo bench --bench scoring --no-run
: >"$out/scoring.jsonl"
for round in $(seq 1 "$rounds"); do
    echo "round $round of $rounds" >&2
    cargo bench -q --bench scoring -- --inputs "$out/windows.f32" --seconds "$seconds" >>"$out/scoring.jsonl"
    "$venv/bin/python" benches/onnxruntime_scoring.py models/default.onnx "$out/windows.f32" "$seconds" >>"$out/scoring.jsonl"
done
"$venv/bin/python" - "$out/scoring.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
def median(engine, batch, threads, key="network_windows_per_s"):
    values = [r[key] for r in rows if r["engine"].split()[0] == engine and r["batch"] == batch and r["threads"] == threads]
    return statistics.median(values)
ort_version = next(r["engine"] for r in rows if r["engine"].startswith("onnxruntime"))
print(f"| batch | threads | tract network (windows/s) | {ort_version} (windows/s) | tract / onnxruntime | tract whole scorer (windows/s) |")
print("|---|---|---|---|---|---|")
for batch in sorted({r["batch"] for r in rows}):
    for threads in (1, 2):
        t = median("tract", batch, threads)
        o = median("onnxruntime", batch, threads)
        w = median("tract", batch, threads, "scorer_windows_per_s")
        print(f"| {batch} | {threads} | {t:,.0f} | {o:,.0f} | {t / o:.2f} | {w:,.0f} |")
PY
