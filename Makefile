# The two commands a newcomer needs: `make test` and (later) `make demo`.
# Each installs what it needs (apt packages, a virtualenv, the package) and is idempotent.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
APT_PACKAGES := tor tcpdump tmux i2pd
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test lint typecheck unit integration benchmark benchmark-cover fuzz fuzz-corpus system-deps venv clean

# Two users, alice and bob, chatting over real onion services on a private Tor network.
demo: venv
	$(BIN)/python -m onionmsg.demo --dir demo

test: lint typecheck
	$(BIN)/pytest

unit: venv
	$(BIN)/pytest tests

integration: system-deps venv
	$(BIN)/pytest integration

benchmark: venv
	$(BIN)/python benchmarks/onion_rtt.py

# Cover traffic: latency, bytes/day and CPU per profile, one node with 1,000 contacts (~55 min).
benchmark-cover: venv
	$(BIN)/python benchmarks/cover.py --plot docs/cover-tradeoff.png

# Every fuzz target in turn for FUZZ_SECONDS each (run it for hours by raising it);
# new interesting inputs collect in .fuzz-work/, a crash stops the run (docs/architecture.md).
FUZZ_SECONDS ?= 600
FUZZ_TARGETS ?= cells messages handshake link noise envelope control address sam
fuzz: venv
	@mkdir -p .fuzz-work
	@for t in $(FUZZ_TARGETS); do \
		echo "== fuzz $$t for $(FUZZ_SECONDS) s (log: .fuzz-work/$$t.log)"; \
		$(BIN)/python -m fuzz.run $$t --seconds $(FUZZ_SECONDS) > .fuzz-work/$$t.log 2>&1 \
			|| { tail -n 40 .fuzz-work/$$t.log; exit 1; }; \
		grep "^stat::number_of_executed_units" .fuzz-work/$$t.log; \
	done

# Rewrite the seed corpus in fuzz/corpus/ from the real encoders.
fuzz-corpus: venv
	$(BIN)/python -m fuzz.make_corpus

lint: venv
	$(BIN)/ruff check onionmsg tests integration benchmarks fuzz
	$(BIN)/ruff format --check onionmsg tests integration benchmarks fuzz

typecheck: venv
	$(BIN)/mypy

system-deps:
	@missing=""; for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing system packages:$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

venv: system-deps $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis .fuzz-work demo
