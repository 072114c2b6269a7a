# ssl-viz: `make run` starts the app, `make test` runs every test. Both set up what is missing first.
# VENV can live outside the clone (CI keeps one per requirements hash under ~/.cache).
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8501
REQ_HASH := $(shell cat requirements.txt requirements-nodeps.txt | sha256sum | cut -c1-12)
STAMP := $(VENV)/.installed-$(REQ_HASH)
APT_PACKAGES := chromium dataset-fashion-mnist

.PHONY: run test venv system warm lint bench models clean screenshots

run: venv system warm ## start the app on http://$(HOST):$(PORT) (HOST=0.0.0.0 to serve a network; SSL_VIZ_PASSWORD=... to ask for a password)
	$(PY) -m ssl_viz.ui.serve --server.address $(HOST) --server.port $(PORT)

test: venv system warm ## unit tests, AppTests and the real-browser test
	$(PY) -m pytest

warm: venv ## compile UMAP's numba kernels into the cache once, so a fresh server draws its first map in seconds
	@$(PY) -m ssl_viz.analysis.projection

venv: $(STAMP)

$(STAMP): requirements.txt requirements-nodeps.txt
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -r requirements-nodeps.txt
	@rm -f $(VENV)/.installed-*
	@touch $@

system: ## Debian packages: chromium (browser test) and dataset-fashion-mnist (default data)
	@missing=""; \
	test -x /usr/bin/chromium || missing="$$missing chromium"; \
	test -d /usr/share/datasets/fashion-mnist || missing="$$missing dataset-fashion-mnist"; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    echo "installing$$missing with apt-get"; \
	    (apt-get install -y -q $$missing >/dev/null 2>&1 || (apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null)) \
	      || echo "warning: could not install$$missing; run: sudo apt-get install$$missing"; \
	  else \
	    echo "note: missing$$missing; run: sudo apt-get install$$missing (fashion-mnist falls back to digits)"; \
	  fi; \
	fi

lint: venv
	$(VENV)/bin/ruff check .

bench: venv system ## every CPU benchmark -> bench/RESULTS.md (BENCH_ARGS="--retrain" also reruns the 300 s training curves, ~45 min)
	$(PY) -m bench.report $(BENCH_ARGS)

models: venv system ## rebuild the shipped models (models/*): 300 s CPU runs; the ViTs want a GPU (ZOO_ARGS="--only NAME")
	$(PY) -m ssl_viz.zoo $(ZOO_ARGS)

screenshots: venv system ## refresh docs/screenshots/ from a real browser
	SSL_VIZ_SCREENSHOTS=docs/screenshots $(PY) -m pytest tests/test_browser.py -s

clean:
	rm -rf .pytest_cache .ruff_cache .cache
