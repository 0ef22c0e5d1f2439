# pg_replication: the two commands a newcomer needs are `make demo` and `make test`.
# Both run as root on Debian 12 (the lab uses network and mount namespaces).

VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
PYTEST_ARGS ?=
BENCH_ARGS ?=
# `make test` runs two labs side by side: pytest-xdist workers, each with its own bridge and
# subnet (lab.hosts.worker_slot); --dist loadfile keeps a module's tests, which share its
# lab, in one worker. PYTEST_JOBS=0 runs everything in one process.
PYTEST_JOBS ?= 2

.PHONY: demo test lint unit functional integration bench bench-quick plot-switchover docs deps venv clean-lab

demo: deps venv  ## bring up the lab, apply the highstate, show the reference scenario
	$(PY) -m lab.demo --with-backup

# lab/testrun.py starts the lab's image builds in the background first, runs `make lint
# bench-quick`, then pytest; a SIGTERM or SIGHUP tears every lab down; its last line says
# where the time went.
test: deps venv  ## lint, the benchmarks' smoke run, then the whole suite (images built beside them)
	$(PY) -m lab.testrun --jobs $(PYTEST_JOBS) $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/yamllint -s .
	find pg_replication -name '*.sls' -print0 | xargs -0 $(VENV)/bin/salt-lint

unit: venv
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

functional: deps venv
	$(PY) -m pytest tests/functional $(PYTEST_ARGS)

integration: deps venv
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

docs: venv  ## regenerate docs/pillar.md, docs/modules.md, docs/states.md
	$(PY) docs/build.py

bench: deps venv  ## benchmarks (bench/): role/slot re-check vs Salt core and Ansible, re-apply, cold converge, backup, scale, switchover and failover vs Patroni; writes the table in docs/benchmarks.md
	$(PY) bench/run.py $(BENCH_ARGS)

# CI's smoke run of the benchmark code (bench/run.py and the role/slot re-check, small and
# once, no lab); the document is left alone.
bench-quick: deps venv
	$(PY) bench/run.py --quick --only roles_slots --no-write

# Not part of `make test`: a lab run (about 6 minutes) redrawing the README's switchover plot.
plot-switchover: deps venv  ## a switchover and back as the lab's Prometheus saw it: docs/switchover-prometheus.png
	$(PY) bench/switchover_plot.py

deps:  ## Debian packages the lab and the tests use (apt-get only when one is missing)
	bash lab/install-deps.sh

venv: $(VENV)/.installed

$(VENV)/.installed: requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements-dev.txt
	touch $@

clean-lab:  ## remove namespaces and bridge left by an interrupted run
	$(PY) -c 'from lab.hosts import Lab; Lab.cleanup_all()'
