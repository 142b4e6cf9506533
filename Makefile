# The two commands: `make book` and `make test`. Each creates .venv when needed.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PROFILE ?= quick

.PHONY: book test data bench record clean clean-runs

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

# Not a test: timings vs vector-quantize-pytorch and scikit-learn, measured into book/performance_results.json,
# then rendered into the book's Performance page (tables and figure). vector-quantize-pytorch is a
# regular dependency (the fixes chapter uses it too).
bench: $(VENV)/.installed
	$(PY) benchmarks/bench_quantizer.py --book $(BENCH_ARGS)
	$(PY) benchmarks/render_performance.py

# Not part of `make book`: the long schedules (hours on 2 cores), run once and committed under
# records/$(RECORD)/, part by part; the same command resumes. The book renders the record.
RECORD ?= long-cpu-$(shell date +%Y-%m-%d)
record: $(VENV)/.installed data
	$(PY) -m vqstudy record $(RECORD) --profile long $(RECORD_ARGS)

clean-runs: $(VENV)/.installed
	$(PY) -m vqstudy clean-runs

clean:
	rm -rf _build book/claims
