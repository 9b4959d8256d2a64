# The README's two commands: `make demo` and `make test`. Both create or refresh .venv first.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.conla-installed

.PHONY: demo test test-all test-fast lint venv clean

# Re-run the set-up whenever the declared dependencies or the set-up itself change.
$(STAMP): setup.py setup.cfg package.xml scripts/setup_venv.sh
	bash scripts/setup_venv.sh
	touch $(STAMP)

# The ament prefix inside the venv (`source .venv/setup.sh`), laid out again when a launch or
# config file is added or removed (its files are links to the checkout's, so edits need nothing).
PREFIX_STAMP := $(VENV)/share/conla_ros/.prefix
$(PREFIX_STAMP): $(STAMP) scripts/ament_prefix.sh scripts/ros_node_launcher.sh $(wildcard launch/*.launch.py config/*)
	bash scripts/ament_prefix.sh $(VENV)
	touch $(PREFIX_STAMP)

venv: $(STAMP) $(PREFIX_STAMP)

demo: $(STAMP) $(PREFIX_STAMP)
	$(VENV)/bin/conla demo

# The whole suite, as CI runs it (slow tests included while they fit CI's budget).
test: $(STAMP) $(PREFIX_STAMP)
	$(PY) -m pytest

# Everything but the tests marked slow, for quick iterations.
test-fast: $(STAMP) $(PREFIX_STAMP)
	$(PY) -m pytest -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) build install log .pytest_cache .ruff_cache .hypothesis
