# `make book` builds the book (executing every chapter); `make test` runs every test.
# Both create a local virtual environment in .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install book test test-lib test-notebooks test-browser notebooks clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[book,test,autoattack]'
	touch $@

book: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/build_book.sh

# Unit tests, strict nbval on every chapter, then the real-browser check of the built book
# (the book is built first when _build/html is missing).
test: $(STAMP)
	$(BIN)/python -m pytest tests --ignore=tests/test_browser.py
	$(MAKE) test-notebooks
	$(MAKE) test-browser

test-lib: $(STAMP)
	$(BIN)/python -m pytest tests --ignore=tests/test_browser.py

test-notebooks: $(STAMP)
	$(BIN)/python -m pytest --nbval --nbval-current-env --nbval-sanitize-with book/nbval_sanitize.cfg book -p no:cacheprovider

test-browser: $(STAMP)
	[ -f _build/html/index.html ] || $(MAKE) book
	$(BIN)/python -m pytest tests/test_browser.py

# Re-execute every notebook in place so stored outputs are fresh.
notebooks: $(STAMP)
	$(BIN)/python scripts/execute_notebooks.py

clean:
	rm -rf _build .build
