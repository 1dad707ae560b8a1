# Two entry points for a fresh machine: `make run` and `make test`.
# Each creates .venv/ when missing and installs the project into it.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test bench sysdeps sysdeps-test clean package

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev,edge]'
	@touch $(STAMP)

# A second Triton release, unpacked beside the venv (not installed into it): the tests serve the same
# repository with it to check that a server of another version works with this client.
OTHER_TRITON := $(VENV)/triton-other
$(OTHER_TRITON): | $(STAMP)
	rm -rf $@.partial
	$(PY) -m pip install --quiet --no-deps --target $@.partial nvidia-pytriton==0.5.0
	mv $@.partial $@

# The system libraries PySide6's Qt links (packaging/qt-libraries.tsv), and for the tests dcmtk, Xvfb, xdotool
# and xwd; installed only when missing (as root; otherwise the apt-get line is printed).
sysdeps:
	@sh packaging/linux-sysdeps.sh run

sysdeps-test:
	@sh packaging/linux-sysdeps.sh test

run: $(STAMP) sysdeps
	$(PY) main.py $(ARGS)

test: $(STAMP) $(OTHER_TRITON) sysdeps-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) bench/bench_loader.py
	QT_QPA_PLATFORM=offscreen $(PY) bench/bench_window_level.py
	$(PY) bench/bench_runtimes.py

# Desktop app as one folder (dist/MedEdgeViewer/) with PyInstaller, smoke-tested offscreen and on Xvfb
# (packaging/README.md).
package: $(STAMP) sysdeps-test
	bash packaging/desktop/build.sh

clean:
	rm -rf $(VENV) build dist *.egg-info
