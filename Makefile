# Set-up and entry points. Every target creates .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)
export TF_CPP_MIN_LOG_LEVEL ?= 2
PORT ?= 3000
HOST ?= 127.0.0.1
UI_PORT ?= 5000
DOCS_PORT ?= 8000
# Material for MkDocs prints a banner about MkDocs 2 at every build otherwise.
export NO_MKDOCS_2_WARNING ?= 1
# What `make serve` and `make bento` take: champion (the registry's alias), latest, or a BentoML tag.
MODEL ?= champion
# The kind of generator champion and latest are of: digits, conditional (draws the digit
# asked for) or stacked; passed on as MNIST_GAN_KIND, which sets it too.
KIND ?= $(or $(MNIST_GAN_KIND),digits)
# The store every stage and `make ui` use (an absolute path, as the queue's copies need).
export MLFLOW_TRACKING_URI ?= sqlite:///$(CURDIR)/mlflow.db
# make grid: an arch x loss x seed grid of queued experiments, JOBS at a time; ARCHS and
# LOSSES default to every registered name (python -m pipeline.archs, python -m pipeline.losses).
ARCHS ?=
LOSSES ?=
SEEDS ?= 42
JOBS ?= 2
GRID_SET ?=

# Debian packages some features use: Graphviz draws the architecture
# diagrams, Chromium drives the browser test of the service's page, PostgreSQL
# is make stack's database.
DEBIAN_PACKAGES ?= graphviz chromium postgresql

.PHONY: run test test-fast serve ui grid exp compare install install-dev install-gpu install-team system-deps stack stack-down stack-env remote docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# An older venv's tensorflow-cpu shares every file with tensorflow: removed first,
# so that the two never overwrite each other's files.
DROP_TF_CPU = $(BIN)/python -m pip uninstall --quiet --yes tensorflow-cpu 2>/dev/null || true

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	@$(DROP_TF_CPU)
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	@$(DROP_TF_CPU)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(VENV)/.installed $@

# The same TensorFlow with NVIDIA's CUDA libraries (Linux, an NVIDIA driver).
install-gpu: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e ".[gpu]"

# Installs the missing Debian packages when it can (root with apt-get);
# otherwise, or when that fails, says what is missing and goes on.
system-deps:
	@missing=$$(for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian packages: $$missing"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; } \
			|| echo "note: could not install $$missing; going on without them"; \
	else \
		echo "note: missing Debian packages ($$missing); without them the diagrams are skipped, and make test names the tests that need them and skips them"; \
	fi

# A team's clients and server parts (PostgreSQL driver, S3 for MLflow and DVC).
install-team: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e ".[team]"

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# The train stage draws the architecture diagrams with Graphviz (skipped, with
# a warning, where it is missing and cannot be installed).
run: install
	@$(MAKE) --no-print-directory system-deps DEBIAN_PACKAGES=graphviz
	$(BIN)/dvc repro
	@$(BIN)/dvc metrics show
	@echo
	@echo 'Metrics:  reports/metrics.json (dvc metrics show); loss curves: dvc plots show'
	@echo 'MLflow:   make ui (it prints the URL of the runs)'
	@echo 'Serve:    make serve, then in another shell:'
	@echo '  curl -s -X POST http://127.0.0.1:$(PORT)/render -H "Content-Type: application/json" \'
	@echo '       -d "{\"z\": $$(python3 -c "print([0.0] * 100)")}" -o digit.png'

# The test files run on TEST_JOBS processes (pytest-xdist), each file whole on one, so
# that a module's fixtures (a tiny pipeline run, a grid) are built once. `make test` is
# the whole suite (CI's); `make test-fast` the unit tier, for the inner loop: no test
# marked slow (real processes, training), browser or network (pyproject.toml's markers).
# Files start in tests/conftest.py's order, the longest first.
TEST_JOBS ?= 2
PYTEST = $(BIN)/python -m pytest -n $(TEST_JOBS) --dist loadfile --no-loadscope-reorder
test: install-dev system-deps
	$(PYTEST)

test-fast: install-dev
	$(PYTEST) -m "not slow and not browser and not network"

# Serves the champion of KIND unless MODEL names another (latest, or a BentoML tag); says
# in one line what it serves and why, or why there is nothing to serve.
serve: install
	@MNIST_GAN_KIND=$(KIND) $(BIN)/python -m serving.selection $(MODEL)
	MNIST_GAN_KIND=$(KIND) $(BIN)/bentoml serve serving.service:Generator --host $(HOST) --port $(PORT) --arg model=$(MODEL)

# A Bento of the service and the generator MODEL and KIND name, packed by its stored tag;
# containerizing it (`bentoml containerize <tag>`) needs a Docker engine.
.PHONY: bento
bento: install
	@$(BIN)/python ops/serving_lock.py --check
	@MNIST_GAN_KIND=$(KIND) $(BIN)/python -m serving.selection $(MODEL)
	$(BIN)/bentoml build -f serving/bentofile.yaml --arg model=$$(MNIST_GAN_KIND=$(KIND) $(BIN)/python -m serving.selection --tag $(MODEL)) .

# The Bento's exact packages (serving/requirements.lock.txt), after a change to
# serving/requirements.txt or to BentoML's version.
.PHONY: lock
lock: install-dev
	$(BIN)/python ops/serving_lock.py

# The runs page of the experiment (MLflow 3 otherwise opens on its GenAI pages).
ui: install
	@case "$(MLFLOW_TRACKING_URI)" in \
	  http*) echo "MLflow UI: $$($(BIN)/python -m pipeline.tracking url $(MLFLOW_TRACKING_URI))"; exit 0;; \
	esac; \
	echo "MLflow UI: $$($(BIN)/python -m pipeline.tracking url http://127.0.0.1:$(UI_PORT))"; \
	$(BIN)/mlflow ui --backend-store-uri "$(MLFLOW_TRACKING_URI)" --host 127.0.0.1 --port $(UI_PORT)

# Queues one experiment per arch x loss x seed (dvc exp run --queue), runs JOBS at a
# time (dvc queue start), waits with progress, then shows them side by side.
grid: install
	@ARCHS="$(ARCHS)" LOSSES="$(LOSSES)" SEEDS="$(SEEDS)" JOBS="$(JOBS)" GRID_SET="$(GRID_SET)" bash ops/grid.sh
	@$(MAKE) --no-print-directory compare

# One experiment from recipes/$(RECIPE).yaml (params overrides), named after it.
exp: install
	@test -n "$(RECIPE)" || { echo "usage: make exp RECIPE=<name> (one of: $$(ls recipes | sed 's/\.yaml$$//' | tr '\n' ' '))"; exit 2; }
	@set -f; args=$$($(BIN)/python ops/recipe.py recipes/$(RECIPE).yaml) || exit 2; \
	echo "dvc exp run -n $(RECIPE) $$args"; $(BIN)/dvc exp run -n $(RECIPE) $$args

# The comparison report (reports/compare/) of the experiment's finished runs, or RUNS="a b".
compare: install
	$(BIN)/python -m pipeline.compare $(if $(RUNS),--runs $(RUNS))

# A tracking server on PostgreSQL and an S3-compatible store (moto), on loopback
# (ops/stack.py; docs/team.md). stack-down stops it; the database and the objects stay unless PURGE=1.
stack: install
	@$(MAKE) --no-print-directory system-deps DEBIAN_PACKAGES=postgresql
	@$(BIN)/python -c "import psycopg2, boto3, moto" 2>/dev/null || $(BIN)/python -m pip install --quiet -e ".[stack]"
	@$(BIN)/python ops/stack.py up

stack-down:
	@$(BIN)/python ops/stack.py down $(if $(PURGE),--purge)

# The exports that point this shell at the stack: eval "$$(make -s stack-env)".
stack-env:
	@$(BIN)/python ops/stack.py env

# The docs site (docs/, mkdocs.yml) with live reload; `mkdocs build --strict` runs in make test.
$(VENV)/.installed-docs: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[docs]"
	touch $(VENV)/.installed $@

docs: $(VENV)/.installed-docs
	$(BIN)/mkdocs serve --dev-addr 127.0.0.1:$(DOCS_PORT)

# The default DVC remote: make remote URL=s3://bucket/path [ENDPOINT=http://...] or URL=/a/folder.
remote: install
	@$(BIN)/python -c "import dvc_s3" 2>/dev/null || case "$(URL)" in s3://*) $(BIN)/python -m pip install --quiet -e ".[team]";; esac
	@bash ops/remote.sh "$(URL)" "$(ENDPOINT)"

clean:
	rm -rf data/prepared models reports export
