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
# machine).  JOBS=0 runs them one after the other.  The unit tests stay in one process:
# on two workers they were no faster there, and two workers once died under heavy load.
JOBS   ?= 2
XDIST  := $(if $(filter-out 0,$(JOBS)),-n $(JOBS) --dist loadfile)
# `make book EXECUTE=1` re-executes every chapter in place first (as `make notebooks`).
EXECUTE ?= 0

.PHONY: install book test test-lib test-notebooks test-portable test-browser notebooks clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[book,test,bench,autoattack]'
	touch $@

book: $(STAMP) $(if $(filter 1,$(EXECUTE)),notebooks)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/build_book.sh

# Unit tests, strict nbval on every chapter, then the real-browser check of the built book
# (the book is built first when _build/html is missing).
test: $(STAMP)
	$(MAKE) test-lib
	$(MAKE) test-notebooks
	$(MAKE) test-browser

test-lib: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest tests --ignore=tests/test_browser.py

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
