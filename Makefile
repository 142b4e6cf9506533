# The two commands: `make book` and `make test`. Each creates .venv when needed.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PROFILE ?= quick

.PHONY: book test data clean clean-runs

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

data: $(VENV)/.installed
	$(PY) -m vqstudy fetch-data

book: $(VENV)/.installed data
	$(PY) -m vqstudy book --profile $(PROFILE)
	@echo "open _build/html/index.html"

test: $(VENV)/.installed
	$(PY) -m pytest -q $(PYTEST_ARGS)

clean-runs:
	rm -rf runs

clean:
	rm -rf _build book/claims
