# Two commands set up a fresh machine: `make run` and `make test` (README.md).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test test-slow lint bench install system-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,lint]'
	touch $(STAMP)

install: $(STAMP)

# Debian packages the tests and benchmarks use (redis-server is the reference for
# differential tests, redis-benchmark drives the benchmark). Installed when missing.
system-deps:
	@command -v redis-server >/dev/null && command -v redis-benchmark >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq redis-server redis-tools >/dev/null; \
	  else echo "need redis-server and redis-tools: sudo apt-get install redis-server redis-tools" >&2; exit 1; fi; }

run: $(STAMP)
	mkdir -p data
	$(VENV)/bin/respkv-server conf/respkv.conf

# A 3-node local cluster on 127.0.0.1:7001-7003 (data, logs and secret in ./data/cluster);
# `.venv/bin/respkv-cluster status` / `down` inspect and stop it (README.md).
.PHONY: cluster
cluster: $(STAMP)
	$(VENV)/bin/respkv-cluster up

test: $(STAMP) system-deps
	$(PY) -m pytest -q

test-slow: $(STAMP) system-deps
	$(PY) -m pytest -q -m slow

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy engine cluster
	$(VENV)/bin/lint-imports

bench: $(STAMP) system-deps
	$(PY) -m bench.server_bench

# Storage engine against sqlite3, diskcache, lmdb and LevelDB (bench/engine_bench.py); installs
# the `bench` extra (plyvel, lmdb, diskcache) first.
.PHONY: bench-engine
BENCH_STAMP := $(VENV)/.installed-bench
$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install -q -e '.[bench]'
	touch $(BENCH_STAMP)

bench-engine: $(BENCH_STAMP)
	$(PY) -m bench.engine_bench

# A 3-node local cluster (N=3, R=W=2) against a single node, side by side, with
# redis-benchmark (bench/cluster_bench.py); writes docs/benchmarks.md's cluster section.
.PHONY: bench-cluster
bench-cluster: $(STAMP) system-deps
	$(PY) -m bench.cluster_bench

# Merkle-tree anti-entropy against a naive full key comparison (bench/repair_bench.py);
# writes docs/benchmarks.md's repair section.
.PHONY: bench-repair
bench-repair: $(STAMP)
	$(PY) -m bench.repair_bench

clean:
	rm -rf $(VENV) data

# A node joining a loaded 3-node cluster: streaming rate and client throughput during it
# (bench/join_bench.py); writes docs/benchmarks.md's join section.
bench-join: $(STAMP) system-deps
	$(PY) -m bench.join_bench
