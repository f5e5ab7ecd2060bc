# The two set-up commands of the README: `make demo` and `make test`.
# Both create .venv when missing and install the project into it, offline-friendly.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
export YOLO_OFFLINE := 1
export YOLO_AUTOINSTALL := False

.PHONY: demo test lint typecheck unit install clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml constraints.txt
	$(PIP) install -q -c constraints.txt -e ".[dev,openvino,supervision,mcap,int8]"
	$(PIP) install -q --no-deps tensorrt-stubs
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/edge-sameo demo --out-dir out

SRC := edge_sameo engines train calib tests $(wildcard benchmarks)

lint: $(STAMP)
	$(VENV)/bin/ruff check $(SRC)
	$(VENV)/bin/ruff format --check $(SRC)

typecheck: $(STAMP)
	$(VENV)/bin/mypy edge_sameo

unit: $(STAMP)
	$(PY) -m pytest -q

test: lint typecheck unit

clean:
	rm -rf $(VENV) out .pytest_cache .mypy_cache .ruff_cache
