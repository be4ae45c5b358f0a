# The two entry points the README opens with. Both set up everything they need from a
# clean clone (a virtualenv under .venv, the pinned Python dependencies, the Rust
# extension built in release mode) and then run.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.jukisync-built

.PHONY: setup demo test test-tools test-cluster test-clocks lint bench bench-compare bench-scale clean

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet maturin==1.16.0

$(STAMP): $(PY) pyproject.toml Cargo.toml Cargo.lock $(shell find rust -name '*.rs' -o -name Cargo.toml)
	VIRTUAL_ENV=$(abspath $(VENV)) $(VENV)/bin/maturin develop --release --extras dev
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/jukisync demo

# tests/test_deploy.py needs promtool and systemd-analyze; without them those tests skip
# (fail under JUKISYNC_REQUIRE_BROKER=1). promtool is Debian's `prometheus` package:
# installed here when missing on a Debian machine where we may (root), as on CI.
test: setup test-tools
	cargo test --workspace --release
	$(PY) -m pytest tests

test-tools:
	@command -v promtool >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus \
		>/dev/null; } || echo "note: promtool is not installed (apt-get install prometheus)" >&2

# The suite at three other wall clocks (late night in Japan, the fiscal year's last
# second, 2032): tests must not depend on the hour or the year they run at.
# The cluster deployment: three RabbitMQ nodes of this machine started and stopped by
# scripts/rabbitmq-cluster (ports 5681-5683), nodes SIGKILLed mid-stream.
test-cluster: setup
	$(PY) -m pytest tests -m cluster

test-clocks: setup
	$(PY) tests/run_at_clocks.py

lint: setup
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	$(VENV)/bin/ruff check python tests bench
	$(VENV)/bin/ruff format --check python tests bench
	$(VENV)/bin/mypy
	$(PY) -m mypy.stubtest jukisync._core

# Each run is saved under .benchmarks/ (git-ignored) with its environment (machine_info
# "jukisync": CPU, load, versions, commit) and warnings; bench-compare shows the last two.
BENCH_STORAGE := file://.benchmarks
BENCH_COLUMNS := min,median,max,mean,rounds

bench: setup
	$(PY) -m pytest bench --benchmark-autosave --benchmark-storage=$(BENCH_STORAGE) \
		--benchmark-columns=$(BENCH_COLUMNS) --benchmark-sort=name

bench-compare: setup
	@runs="$$(ls -1 .benchmarks/*/*.json 2>/dev/null | sort | tail -n 2)"; \
	if [ "$$(echo "$$runs" | grep -c .)" -lt 2 ]; then \
		echo "bench-compare: needs two saved runs of make bench under .benchmarks/" >&2; exit 1; fi; \
	$(VENV)/bin/pytest-benchmark --storage $(BENCH_STORAGE) compare --group-by=name \
		--columns=$(BENCH_COLUMNS) --sort=name $$runs

# Issue 14's scale run: a store filled with RECORDS synthetic records streamed (never all
# in memory), then apply, get, get_many and bytes/record at that size beside lmdb
# baselines of the same run. Comma-separated sizes run one after the other (1 M and 10 M
# for the growth); stores go under SCALE_DIR (~2 KB a record: not a tmpfs) and are deleted.
RECORDS   ?= 10000000
SCALE_DIR ?= .
bench-scale: setup
	nice -n 5 $(PY) bench/scale.py --records $(RECORDS) --workdir $(SCALE_DIR)

clean:
	rm -rf $(VENV) target
