# The two entry points the README opens with. Both set up everything they need from a
# clean clone (a virtualenv under .venv, the pinned Python dependencies, the Rust
# extension built in release mode) and then run.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.jukisync-built

.PHONY: setup demo test test-cluster test-clocks lint bench clean

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet maturin==1.16.0

$(STAMP): $(PY) pyproject.toml Cargo.toml Cargo.lock $(shell find rust -name '*.rs' -o -name Cargo.toml)
	VIRTUAL_ENV=$(abspath $(VENV)) $(VENV)/bin/maturin develop --release --extras dev
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/jukisync demo

# tests/test_deploy.py needs promtool (Debian: `apt-get install prometheus`, which .ci/run
# does) and systemd-analyze; without them those tests skip (fail under
# JUKISYNC_REQUIRE_BROKER=1).
test: setup
	cargo test --workspace --release
	$(PY) -m pytest tests

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

bench: setup
	$(PY) -m pytest bench --benchmark-columns=min,mean,ops --benchmark-sort=name

clean:
	rm -rf $(VENV) target
