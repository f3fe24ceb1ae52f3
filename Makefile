# `make book` builds the book's HTML from the outputs stored in the chapters (seconds);
# `make test` runs every test, including strict nbval, which re-executes every chapter and
# fails when a stored output no longer matches.  Both create a local virtual environment
# in .venv on first use.  Only Python and make are needed (no Node.js).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# pytest-xdist workers for the chapters under nbval: each chapter trains on one thread, so
# two run side by side on two cores (2 chapters: 193 s -> 143 s on the shared 2-core
# machine).  JOBS=0 runs them one after the other.
JOBS   ?= 2
XDIST  := $(if $(filter-out 0,$(JOBS)),-n $(JOBS) --dist loadfile)
# pytest-xdist workers for the unit tests (test-lib, test-slow).  Each test process trains on one
# torch thread (tests/conftest.py), so two workers share two cores; most of the time left is tests
# that start a `python -m amata_lib` (which imports torch) and wait for it, and two of those run
# side by side.  (Earlier, with two torch threads per worker, two workers were no faster.)
# TEST_JOBS=0 runs the tests in one process.
TEST_JOBS  ?= 2
TEST_XDIST := $(if $(filter-out 0,$(TEST_JOBS)),-n $(TEST_JOBS) --dist worksteal)
UNIT       := $(BIN)/python -m pytest tests --ignore=tests/test_browser.py
# `make book EXECUTE=1` re-executes every chapter in place first (as `make notebooks`).
EXECUTE ?= 0

.PHONY: install book test test-all test-lib test-slow test-notebooks test-portable test-browser notebooks clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[book,test,bench,autoattack]'
	touch $@

book: $(STAMP) $(if $(filter 1,$(EXECUTE)),notebooks)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/build_book.sh

# Lint and the unit tests not marked slow, strict nbval on every chapter, then the real-browser
# check of the built book (the book is built first when _build/html is missing).  The slow
# end-to-end tests run apart, in `make test-slow`; `make test-all` runs everything CI runs.
test: $(STAMP)
	$(MAKE) test-lib
	$(MAKE) test-notebooks
	$(MAKE) test-browser

test-all: $(STAMP)
	$(MAKE) test
	$(MAKE) test-slow
	$(MAKE) test-portable

# Lint and every unit test not marked slow.
test-lib: $(STAMP)
	$(BIN)/ruff check .
	$(UNIT) -m "not slow" $(TEST_XDIST)

# The unit tests marked slow (@pytest.mark.slow): end to end with real processes (kill -9, Ctrl-C,
# torchrun, gloo, a second process on a lock, a closed pipe, pytest itself), whole experiments,
# the benchmark script, bf16 training.  test-lib and test-slow together run every unit test, as a
# plain `pytest` does.
test-slow: $(STAMP)
	$(UNIT) -m slow $(TEST_XDIST)

# What a reader types, `pytest --nbval`: conftest.py adds --nbval-current-env,
# --nbval-sanitize-with book/nbval_sanitize.cfg and the chapters under book/.
test-notebooks: $(STAMP)
	$(BIN)/python -m pytest --nbval $(XDIST) -p no:cacheprovider

# The chapters as a reader's machine runs them: strict nbval on every chapter, against the outputs
# stored with this machine's native kernels, but with PyTorch's generic kernels
# (ATEN_CPU_CAPABILITY=default). Live training and attack numbers move with the kernels; the chapters
# print them as the stored value with a measured tolerance and check them (README, "On another machine").
test-portable: $(STAMP)
	ATEN_CPU_CAPABILITY=default $(BIN)/python -m pytest --nbval $(XDIST) -p no:cacheprovider

test-browser: $(STAMP)
	[ -f _build/html/index.html ] || $(MAKE) book
	$(BIN)/python -m pytest tests/test_browser.py

# Re-execute every notebook in place so stored outputs are fresh.
notebooks: $(STAMP)
	$(BIN)/python scripts/execute_notebooks.py

clean:
	rm -rf _build .build
