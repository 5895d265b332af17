#!/usr/bin/env bash
# anomalyd beside the Python peer pipeline (peer.py: confluent-kafka,
# orjson, numpy, onnxruntime), same broker, records, model, window and
# stride, in the same run: the end-to-end bench with --peer. Installs the
# peer's packages (PyPI, pinned) into a cache venv.
# Usage: benches/peer.sh PEER_PY [ROUNDS]   e.g. benches/peer.sh ../shared/bench/peer/peer.py
# Extra arguments for the bench go in END_TO_END_ARGS (e.g. "--samples-per-entity 1000").
set -euo pipefail
peer=$(realpath "${1:?usage: benches/peer.sh PEER_PY [ROUNDS]}")
rounds=${2:-3}
cd "$(dirname "$0")/.."
venv="${XDG_CACHE_HOME:-$HOME/.cache}/anomalyd-bench/peer-venv"
if ! "$venv/bin/python" -c "import confluent_kafka, onnxruntime, orjson, numpy" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q confluent-kafka==2.16.2 onnxruntime==1.32.0 orjson==3.13.0 numpy==2.4.6
fi
# shellcheck disable=SC2086
cargo bench --bench end_to_end -- --peer "$venv/bin/python" --peer-script "$peer" \
    --rounds "$rounds" --no-latency ${END_TO_END_ARGS:-}
