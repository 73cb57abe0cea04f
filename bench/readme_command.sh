#!/usr/bin/env bash
# Times README command 1 (install + `tlops run` on the demo data) from a clean clone, as a new user would.
# Usage: bash bench/readme_command.sh [WORKDIR]      (run by hand; prints wall time and the demo's accuracy)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="${1:-$(mktemp -d)}"
git clone -q "$repo" "$work/tlops"
cd "$work/tlops"
command_line="$(grep -m1 'tlops run' README.md | sed 's/ *#.*$//')"
echo "+ $command_line"
start=$(date +%s)
bash -c "$command_line" > "$work/run.log" 2>&1
end=$(date +%s)
tail -n 9 "$work/run.log"
python3 - "$work/tlops/tlops-run/run_summary.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
print(f"test accuracy {s['metrics']['test_accuracy']:.4f}  macro-F1 {s['metrics']['test_macro_f1']:.4f}  strategy {s['strategy']}")
PY
echo "wall time: $((end - start)) s (install + run), log in $work/run.log"
