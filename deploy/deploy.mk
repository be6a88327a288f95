# Deployment targets (issue 7). Included from the Makefile: `include deploy/deploy.mk`.
# Offline checks need only `make deploy-tools`; the deploy targets need an AWS account and refuse
# clearly without one (deploy/preflight.py).

DEPLOY_VENV := .venv-deploy
DEPLOY_PY := $(DEPLOY_VENV)/bin/python
DEPLOY_MAIN_PY ?= .venv/bin/python
DEPLOY_STAMP := $(DEPLOY_VENV)/.installed-$(shell cat requirements-deploy.txt constraints-deploy.txt deploy/npm/package-lock.json 2>/dev/null | sha256sum | cut -c1-12)
PROMETHEUS_URL ?= http://127.0.0.1:9090

.PHONY: deploy-tools check-deploy deploy-generate dashboards-png deploy-all deploy-models open-grafana

$(DEPLOY_STAMP): requirements-deploy.txt constraints-deploy.txt deploy/npm/package-lock.json
	@test -x $(DEPLOY_PY) || python3 -m venv $(DEPLOY_VENV)
	$(DEPLOY_VENV)/bin/pip install -q --upgrade pip
	$(DEPLOY_VENV)/bin/pip install -q -r requirements-deploy.txt -c constraints-deploy.txt
	cd deploy/npm && npm ci --no-audit --no-fund --loglevel=error
	@command -v promtool >/dev/null 2>&1 || { \
	  echo "installing Debian prometheus (promtool) --no-install-recommends"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus) >/dev/null; }
	@rm -f $(DEPLOY_VENV)/.installed-*; touch $@

# amtool (Alertmanager 0.25, Debian) validates and routes Alertmanager's config offline. Only the
# binary is taken out of the package: installing it would also enable an Alertmanager service.
AMTOOL := $(DEPLOY_VENV)/bin/amtool
$(AMTOOL): | $(DEPLOY_STAMP)
	@echo "extracting amtool from Debian's prometheus-alertmanager into $(DEPLOY_VENV)/bin"
	@rm -rf $(DEPLOY_VENV)/.amtool && mkdir -p $(DEPLOY_VENV)/.amtool
	@cd $(DEPLOY_VENV)/.amtool && { apt-get download prometheus-alertmanager >/dev/null 2>&1 || \
	  { apt-get update -qq && apt-get download prometheus-alertmanager >/dev/null 2>&1; }; } && \
	  dpkg-deb -x prometheus-alertmanager_*.deb root
	@cp $(DEPLOY_VENV)/.amtool/root/usr/bin/amtool $@ && rm -rf $(DEPLOY_VENV)/.amtool

deploy-tools: $(DEPLOY_STAMP) $(AMTOOL) ## offline deploy checkers in .venv-deploy (checkov, kubernetes-validate, hadolint, terraform, amtool, ...)

# Runs in .venv (it holds tritonserver and envoy, which some checks call); VENV_STAMP is the
# main Makefile's, empty when this file is used on its own.
check-deploy: $(DEPLOY_STAMP) $(AMTOOL) $(VENV_STAMP) ## all offline deployment checks (k8s, images, terraform, rules, dashboards, drift)
	PYTHONPATH=$(CURDIR) $(DEPLOY_MAIN_PY) -m pytest -q tests/deploy

deploy-generate: $(DEPLOY_STAMP) ## regenerate alert rules and dashboards from their sources
	PYTHONPATH=$(CURDIR) $(DEPLOY_PY) -m alerts.generate
	PYTHONPATH=$(CURDIR) $(DEPLOY_PY) -m dashboards.build

dashboards-png: $(DEPLOY_STAMP) ## render every dashboard to build/dashboards/*.png from PROMETHEUS_URL
	PYTHONPATH=$(CURDIR) $(DEPLOY_PY) -m dashboards.render_png --prometheus $(PROMETHEUS_URL) --out build/dashboards

deploy-all: ## AWS: terraform apply, build and push images, apply the k8s overlay (refuses without AWS)
	PYTHONPATH=$(CURDIR) $(DEPLOY_MAIN_PY) -m deploy.cli deploy-all

deploy-models: ## AWS: build each pool's model repository and sync it to S3 (refuses without AWS)
	PYTHONPATH=$(CURDIR) $(DEPLOY_MAIN_PY) -m deploy.cli deploy-models

open-grafana: ## AWS: port-forward the cluster's Grafana to 127.0.0.1:3000 (refuses without a cluster)
	PYTHONPATH=$(CURDIR) $(DEPLOY_MAIN_PY) -m deploy.cli open-grafana
