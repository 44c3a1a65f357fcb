# The two set-up commands of the README: `make run` (main job) and `make test`.
# Both create .venv and install hwnas into it on first use (nothing else needed).
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: run test install

$(BIN)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,tensorboard]'
	touch $@

install: $(BIN)/.installed

run: $(BIN)/.installed
	$(BIN)/hwnas run

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q
