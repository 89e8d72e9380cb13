# Two commands, each working on a fresh machine in either order:
#   make run    set up if needed, make sure Fashion-MNIST is on disk, train the main job
#   make test   set up if needed, run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.torchlab-installed
ARGS ?=
# Use the project's shared datasets when they sit beside the checkout.
SHARED_DATA := $(abspath $(wildcard ../shared/data))
export TORCHLAB_DATA ?= $(SHARED_DATA)

.PHONY: run test test-avx2 data browser tcmalloc clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# Fashion-MNIST without a network: on Debian/Ubuntu install the packaged copy when
# no dataset is found; elsewhere `torchlab train` downloads it through torchvision.
data: $(STAMP)
	@$(BIN)/torchlab data fashion-mnist --offline --quiet >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1; then \
	    SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	    echo "installing Debian's dataset-fashion-mnist"; \
	    $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	  fi; }

run: data tcmalloc
	$(BIN)/torchlab train fashion-mnist $(ARGS)

# The torchlab command preloads tcmalloc where the system has it: training measured 7-14% faster than with
# glibc's malloc (benchmarks/allocator.py). Debian's package when missing; without apt-get, glibc's stays.
tcmalloc:
	@ldconfig -p 2>/dev/null | grep -q libtcmalloc_minimal.so.4 || { \
	  if command -v apt-get >/dev/null 2>&1; then \
	    SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	    echo "installing Debian's libtcmalloc-minimal4 (a faster memory allocator for training)"; \
	    $$SUDO apt-get install -y -qq libtcmalloc-minimal4 >/dev/null 2>&1 \
	      || { $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq libtcmalloc-minimal4 >/dev/null; } \
	      || echo "warning: could not install libtcmalloc-minimal4; torchlab runs with glibc's malloc"; \
	  fi; }

# Headless Chromium for the browser tests (TensorBoard and reports): Debian's package when missing.
# Without apt-get (or a network) those tests are skipped, and say why.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1; then \
	    SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	    echo "installing Debian's chromium for the browser tests"; \
	    $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null \
	      || echo "warning: could not install chromium; the browser tests will be skipped"; \
	  fi; }

# The suite runs as the machine is, then again with the CPU features reduced to AVX2 (torch's own kernels,
# oneDNN's and MKL's), so that a machine with AVX-512 also proves that an AVX2-only one passes. On a CPU
# with nothing beyond AVX2 the reduced pass would repeat the first, so it is skipped (and says so);
# `make test-avx2` runs it anyway. It leaves out the tests marked isa_independent (servers, browsers,
# process handling, the allocator: about a minute that no instruction set can change).
REDUCED := ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2

# Two pytest workers (pytest-xdist): most tests wait on processes, servers, browsers and small tensors rather
# than on the CPU, so two at a time finish sooner even on 2 cores.
PYTEST := $(BIN)/python -m pytest -q -n 2

test: $(STAMP) browser tcmalloc
	$(PYTEST)
	@if $(BIN)/python -c "import sys; from torchlab import hardware; sys.exit(not hardware.beyond_avx2())"; then \
	  $(MAKE) --no-print-directory test-avx2; \
	else echo "reduced-feature pass skipped: this CPU has nothing beyond AVX2, so the pass above was an AVX2 pass"; fi

test-avx2: $(STAMP) browser tcmalloc
	@echo "== the suite again with the CPU features reduced to AVX2: $(REDUCED)"
	env $(REDUCED) $(PYTEST) -m "not isa_independent"

clean:
	rm -rf $(VENV) runs .pytest_cache
