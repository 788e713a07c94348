# diffusekit: everything the project needs is installed from here; a bare machine runs
#   make test   (the default pytest run)     make demo   (the headline job)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
EXTRAS ?= dev,bench,audio,image,text,molecules
# Debian packages the domains need (checked with dpkg, installed with apt-get when missing):
# flite and espeak-ng synthesise the audio domain's speech.
SYSTEM_PACKAGES := flite espeak-ng
STAMP  := $(VENV)/.installed-$(shell echo $(EXTRAS) | tr ',' '-')

.PHONY: venv test test-all demo benchmark clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt Makefile
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  echo "installing Debian packages:$$missing"; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt "torch==2.13.0"
	$(PIP) install -q -c constraints.txt -e ".[$(EXTRAS)]"
	touch $@

test: $(STAMP)
	$(PY) -m pytest -q

test-all: $(STAMP)
	$(PY) -m pytest -q -m "slow or not slow"

demo: $(STAMP)
	$(VENV)/bin/toolkit prepare --domain audio
	$(VENV)/bin/toolkit train --domain audio
	$(VENV)/bin/toolkit sample --run "$$(ls -d runs/audio/*/ | tail -n 1)" -n 8

benchmark: $(STAMP)
	$(PY) benchmarks/samplers.py

clean:
	rm -rf $(VENV) build *.egg-info
