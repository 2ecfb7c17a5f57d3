#!/usr/bin/env bash
# Issue 20's GPU check, one command on a machine with a CUDA GPU (called from anywhere: it runs from the
# repository root, so relative paths below are the root's):
#
#   bash benchmarks/gpu_check.sh                 # CUDA tests + every image config; <= 8 minutes
#   bash benchmarks/gpu_check.sh --cpu-smoke     # the same code path on the CPU, tiny (~10 s)
#
# Output: gpu_check.json, gpu_check.md, cuda_tests.log/.xml in --out DIR if given, else $OUT if set, else
# gpu_check_out in the repository root. Arguments go to benchmarks/gpu_check.py (--help lists them).
#
# Nothing is downloaded. The interpreter is $PYTHON, else .venv/bin/python, else python3; it needs
# torch and ebmlab's dependencies (pytest for the tests). ebmlab itself is always taken from this
# checkout's src/ (first on PYTHONPATH), installed or not. If $EBMLAB_WHEELS names a folder of wheels carried to the machine, they are installed
# first from that folder only (pip --no-index): nothing comes from the network.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${PYTHON:-}" ]; then
  py=$PYTHON
elif [ -x .venv/bin/python ]; then
  py=.venv/bin/python
else
  py=python3
fi
if [ -n "${EBMLAB_WHEELS:-}" ]; then
  "$py" -m pip install --no-index --find-links "$EBMLAB_WHEELS" "$EBMLAB_WHEELS"/*.whl
fi
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$py" benchmarks/gpu_check.py "$@"
