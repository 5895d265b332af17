#!/usr/bin/env bash
# Training speed: seconds per epoch of anomalyd's Burn training loop against
# PyTorch (CPU) on the same network, loss, windows and batch size, in the
# same run, on this machine. Installs torch (PyPI, pinned; about 3 GB with
# the CUDA libraries PyPI's Linux wheel depends on, though only the CPU is
# used) into a cache venv. Runs the two in alternation for ROUNDS rounds
# (default 3) of EPOCHS epochs (default 3) and prints the median seconds per
# epoch and the ratio of Burn's time to each. PyTorch runs twice a round:
# with its default threads (one per core) and with one thread.
# Usage: benches/training.sh   (BENCHMARKS.md)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${XDG_CACHE_HOME:-$HOME/.cache}/anomalyd-bench/torch-venv"
if ! "$venv/bin/python" -c "import torch, numpy" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q torch==2.15.0 numpy==2.4.6
fi
out=target/bench/training
mkdir -p "$out"
rounds=${ROUNDS:-3}
epochs=${EPOCHS:-3}
cargo bench --bench training --no-run -q 2>/dev/null || cargo bench --bench training --no-run
: >"$out/training.jsonl"
for round in $(seq 1 "$rounds"); do
    echo "round $round of $rounds" >&2
    cargo bench -q --bench training -- --epochs "$epochs" --write "$out" >>"$out/training.jsonl"
    "$venv/bin/python" benches/pytorch_training.py "$out" "$epochs" >>"$out/training.jsonl"
    "$venv/bin/python" benches/pytorch_training.py "$out" "$epochs" 1 >>"$out/training.jsonl"
done
"$venv/bin/python" - "$out/training.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
engines = sorted({r["engine"] for r in rows})
median = {e: statistics.median(r["seconds"] for r in rows if r["engine"] == e) for e in engines}
burn = next(e for e in engines if e.startswith("burn"))
windows = rows[0]["train_windows"]
print("| engine | epochs measured | median s / epoch | windows / s | Burn's time / this engine's |")
print("|---|---:|---:|---:|---:|")
for e in [burn] + [e for e in engines if e != burn]:
    n = sum(1 for r in rows if r["engine"] == e)
    print(f"| {e} | {n} | {median[e]:.2f} | {windows / median[e]:,.0f} | {median[burn] / median[e]:.2f} |")
PY
