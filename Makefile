# Two commands: `make demo` and `make test`. Everything they need is set up here.
SHELL := /bin/bash
# Debian's interpreter: unlike a pyenv one under /root, another uid can run it, which the
# unprivileged test path needs.
PYTHON ?= $(shell if [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import sys, venv; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then echo /usr/bin/python3; else echo python3; fi)
VENV ?= .venv
BIN := $(VENV)/bin
SYSTEM_PACKAGES := gcc libc6-dev bubblewrap uidmap gnome-keyring libsecret-tools strace iproute2 curl dbus util-linux python3-venv systemd prometheus rsyslog rsyslog-gnutls gh
STAMP := $(VENV)/.installed

.PHONY: all test lint typecheck pytest demo system-deps venv clean bench reaper-asan

all: test

system-deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then echo "installing system packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; fi; \
	fi

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

# The session's pid 1 once its program runs (nonod/sandbox/_reaper.py): static, so that it
# needs nothing from the session's view. Without it the init stays a Python process.
REAPER := nonod/sandbox/nono-reaper
REAPER_SRC := $(wildcard nonod/sandbox/reaper*.c)
$(REAPER): $(REAPER_SRC) nonod/sandbox/reaper.h
	$(CC) -static -Os -s -Wall -Wextra -Werror -fstack-protector-strong -D_FORTIFY_SOURCE=2 \
	  -o $@ $(REAPER_SRC)

# A debug build for review only, never shipped: ASan + UBSan, dynamic (ASan has no static
# runtime), run by the tests when NONO_REAPER_BINARY names it (_reaper.load); `make test`
# builds it, so the test that starts it as a session's init runs on CI too.
REAPER_ASAN := nonod/sandbox/nono-reaper-asan
$(REAPER_ASAN): $(REAPER_SRC) nonod/sandbox/reaper.h
	$(CC) -g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all \
	  -Wall -Wextra -Werror -o $@ $(REAPER_SRC)
reaper-asan: $(REAPER_ASAN)

# A kept profile resolution's check in one call that gives up the GIL once
# (nonod/profiles/_fslook.py; without it the check is Python's, with the same answers).
LOOKS := nonod/profiles/libnonolooks.so
$(LOOKS): nonod/profiles/looks.c
	$(CC) -shared -fPIC -O2 -Wall -Wextra -Werror -fstack-protector-strong -D_FORTIFY_SOURCE=2 \
	  -o $@ $<

# The pump's wait and its tunnels' short messages in one call without the GIL
# (nonod/proxy/_pump.py; without it the pump's loop is Python's, relaying the same bytes).
RELAY := nonod/proxy/libnonorelay.so
$(RELAY): nonod/proxy/relay.c
	$(CC) -shared -fPIC -O2 -Wall -Wextra -Werror -fstack-protector-strong -D_FORTIFY_SOURCE=2 \
	  -o $@ $<

venv: $(STAMP) $(REAPER) $(LOOKS) $(RELAY)

lint: venv
	$(BIN)/ruff check nonod nonoctl tests bench examples
typecheck: venv
	$(BIN)/mypy

# The suite includes tests/cli/test_wheel_install.py: the wheel built from this tree, installed
# with its dependencies into a fresh venv, must list the built-in profiles and launch gitbot.
pytest: venv system-deps $(REAPER_ASAN)
	@# pytest exits 5 when it collected no test: that must fail, never pass silently.
	$(BIN)/python -m pytest -p no:cacheprovider $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc = 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

test: system-deps venv lint typecheck pytest

# The seed's gitbot story end to end (docs/demo.md): needs gnome-keyring, dbus and
# libsecret-tools (system-deps installs them as root) and trustme (in the venv's dev extra).
demo: system-deps venv
	@$(BIN)/python -m nonoctl.demo

bench: system-deps venv
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	$(BIN)/python bench/table.py

clean:
	rm -rf $(VENV) build *.egg-info $(REAPER) $(REAPER_ASAN) $(LOOKS)
