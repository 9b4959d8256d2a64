# The README's two commands: `make demo` and `make test`. Both create or refresh .venv first.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.conla-installed

.PHONY: demo test test-all test-fast lint venv clean

# Re-run the set-up whenever the declared dependencies or the set-up itself change.
$(STAMP): setup.py setup.cfg package.xml scripts/setup_venv.sh
	bash scripts/setup_venv.sh
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/conla demo

# The whole suite, as CI runs it (slow tests included while they fit CI's budget).
test: $(STAMP)
	$(PY) -m pytest

# Everything but the tests marked slow, for quick iterations.
test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) build install log .pytest_cache .ruff_cache .hypothesis
