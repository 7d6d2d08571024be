# LungReview: two commands on a fresh machine with Python 3.11.
#   make run   install into .venv and start the dashboard on http://127.0.0.1:8501
#   make test  install into .venv (with test tools), check style and import contracts, run the whole test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: run test lint

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# OpenVINO's tools send usage telemetry unless opted out; LungReview never wants that.
OPT_OUT = $(BIN)/opt_in_out --opt_out >/dev/null

# The project itself is installed editable and without dependencies (requirements*.txt pin them):
# it puts core, db, services, models and dashboard on the path (no sys.path edits) and adds the
# one console script, `lungreview SUBCOMMAND` (lungreview.py; `lungreview --help` lists them).
INSTALL_SELF = $(BIN)/python -m pip install --quiet --no-deps -e .

$(VENV)/.runtime: requirements.txt pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(INSTALL_SELF)
	$(OPT_OUT)
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	$(INSTALL_SELF)
	$(OPT_OUT)
	touch $(VENV)/.runtime $@

run: $(VENV)/.runtime
	$(BIN)/python -m streamlit run dashboard/app.py --server.address 127.0.0.1 --server.port $${PORT:-8501}

test: $(VENV)/.dev
	$(BIN)/python -m ruff check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest

lint: $(VENV)/.dev
	$(BIN)/python -m ruff check .
	$(BIN)/lint-imports --no-cache
