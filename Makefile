# Set-up and entry points. Every target creates .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)
export TF_CPP_MIN_LOG_LEVEL ?= 2
PORT ?= 3000

.PHONY: run test serve ui install install-dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(VENV)/.installed $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

run: install
	$(BIN)/dvc repro
	@$(BIN)/dvc metrics show
	@echo
	@echo 'Metrics:  reports/metrics.json (dvc metrics show); loss curves: dvc plots show'
	@echo 'MLflow:   make ui, then open http://127.0.0.1:5000 (experiment mnist-gan)'
	@echo 'Serve:    make serve, then in another shell:'
	@echo '  curl -s -X POST http://127.0.0.1:$(PORT)/render -H "Content-Type: application/json" \'
	@echo '       -d "{\"z\": $$(python3 -c "print([0.0] * 100)")}" -o digit.png'

test: install-dev
	$(BIN)/python -m pytest

serve: install
	$(BIN)/bentoml serve serving.service:Generator --port $(PORT)

ui: install
	$(BIN)/mlflow ui --backend-store-uri "$${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlflow.db}"

clean:
	rm -rf data/prepared models reports export
