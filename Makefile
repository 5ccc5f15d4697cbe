# Set-up and entry points. Every target creates .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)
export TF_CPP_MIN_LOG_LEVEL ?= 2
PORT ?= 3000

# Debian packages some features use: Graphviz draws the architecture
# diagrams, Chromium drives the browser test of the service's page.
DEBIAN_PACKAGES ?= graphviz chromium

.PHONY: run test serve ui install install-dev system-deps clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(VENV)/.installed $@

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
		echo "note: missing Debian packages ($$missing); install them for architecture diagrams and the browser test"; \
	fi

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
	@echo 'MLflow:   make ui, then open http://127.0.0.1:5000 (experiment mnist-gan)'
	@echo 'Serve:    make serve, then in another shell:'
	@echo '  curl -s -X POST http://127.0.0.1:$(PORT)/render -H "Content-Type: application/json" \'
	@echo '       -d "{\"z\": $$(python3 -c "print([0.0] * 100)")}" -o digit.png'

test: install-dev system-deps
	$(BIN)/python -m pytest

serve: install
	$(BIN)/bentoml serve serving.service:Generator --port $(PORT)

# A Bento of the service and the latest stored generator; containerizing it
# (`bentoml containerize <tag>`) needs a Docker engine.
.PHONY: bento
bento: install
	$(BIN)/bentoml build -f serving/bentofile.yaml .

ui: install
	$(BIN)/mlflow ui --backend-store-uri "$${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlflow.db}"

clean:
	rm -rf data/prepared models reports export
