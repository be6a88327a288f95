# One command to set up, one to test: `make demo` and `make test` (see README.md).
SHELL := /bin/bash
PY := .venv/bin/python
VENV_STAMP := .venv/.installed-$(shell cat requirements.txt constraints.txt 2>/dev/null | sha256sum | cut -c1-12)
MODELS_STAMP := build/models/.built
export PYTHONPATH := $(CURDIR)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.DEFAULT_GOAL := help
include deploy/deploy.mk
.PHONY: help setup system-deps models samples certs traces release-demo benchmark-release benchmark-batch benchmark-platform benchmark-edge benchmark-security benchmark-tracing benchmark-resilience benchmark-faults benchmark-overhead test-resilience test-batch-aws test test-fast lint typecheck demo demo-routing demo-real up status benchmark benchmark-foundation profile profile-check clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-20s %s\n", $$1, $$2}'

system-deps: ## Debian packages the tests need (prometheus); skipped when present
	@command -v prometheus >/dev/null 2>&1 || { \
	  echo "installing Debian prometheus (--no-install-recommends)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus) >/dev/null; }

$(VENV_STAMP): requirements.txt constraints.txt
	@test -x .venv/bin/python || python3 -m venv .venv
	.venv/bin/pip install -q --upgrade pip
	.venv/bin/pip install -q -r requirements.txt -c constraints.txt
	@# xds-protos ships its own, older copy of opentelemetry/proto/*; whichever wheel pip unpacks last
	@# wins, so opentelemetry-proto is laid down again on top (the exporter needs its newer messages).
	.venv/bin/pip install -q --force-reinstall --no-deps -c constraints.txt \
	  "$$(grep -E '^opentelemetry-proto==' requirements.txt)"
	.venv/bin/python -c "from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope; \
	  import opentelemetry.exporter.otlp.proto.http.trace_exporter, envoy.extensions.access_loggers.open_telemetry.v3.logs_service_pb2"
	@rm -f .venv/.installed-*; touch $@

setup: $(VENV_STAMP) system-deps models certs ## install everything (idempotent, cached)

certs: $(VENV_STAMP) ## local mTLS certificates in build/certs: a 7-day CA and Envoy/xDS/Triton certificates, kept while valid (docs/security.md)
	$(PY) -m xds_server.certs --out build/certs

models: $(VENV_STAMP) ## build the sample models (cached in build/models)
	$(PY) -m model_repository.build --out build/models

test: setup deploy-tools ## set up and run the whole test suite
	$(PY) -m pytest -q -p no:cacheprovider tests

test-fast: $(VENV_STAMP) ## unit tests only (no Triton, no Envoy)
	$(PY) -m pytest -q -m "not integration" tests

lint: $(VENV_STAMP) ## ruff
	.venv/bin/ruff check .

typecheck: $(VENV_STAMP) ## mypy on the pure core
	.venv/bin/mypy router_lib

demo: setup ## capacity follows demand: heterogeneous vs single-accelerator fleets on the same arrivals, cost and SLAs
	$(PY) -m local_platform demo

demo-routing: setup ## the routing demo: real CPU pool + emulated pools (synthetic outputs), mixed-tier load (fleet.demo.yaml)
	$(PY) -m local_platform demo-routing --fleet fleet.demo.yaml

demo-real: setup ## the routing demo with every emulated pool running the real model on this CPU (fleet.yaml)
	$(PY) -m local_platform demo-routing --fleet fleet.yaml

up: setup ## start the local platform and serve until Ctrl-C
	$(PY) -m local_platform up

status: $(VENV_STAMP) ## show pools, replicas, ports, health of a running platform
	$(PY) -m local_platform status

benchmark: setup ## the longer benchmarks; results under benchmarks/results
	$(PY) -m benchmarks.run_all

profile: setup ## profile the CPU pool for every model (writes profiles/*.cpu.yaml) and plot it
	$(PY) -m benchmarks.profiler.full_profile

profile-check: setup ## profiler throughput vs a plain tritonclient loop at the same concurrency
	$(PY) -m benchmarks.profiler.vs_plain_loop

benchmark-foundation: setup ## CPU pool: Triton vs raw ONNX Runtime throughput
	$(PY) -m benchmarks.foundation.triton_vs_ort

release-demo: setup ## canary releases end to end: slow and wrong candidates rolled back, a good one promoted (real Triton + Envoy); non-zero exit if not as stated
	$(PY) -m benchmarks.release.demo

benchmark-release: setup ## rollback time, mirroring overhead, model switching -> benchmarks/results/release
	$(PY) -m benchmarks.release.rollback --rollbacks 60
	$(PY) -m benchmarks.release.mirror_overhead --pairs 12 --requests 200
	$(PY) -m benchmarks.release.switch

benchmark-batch: setup ## batch jobs: 100k-row embedding job, gold p99 side by side, worker/control SIGKILLs
	$(PY) -m benchmarks.batch.run --repeats 3 --rows 100000

benchmark-platform: setup ## simulator vs the live stack (calibrate on stairs, validate on other shapes), planner-sized single-kind baselines (~38 min)
	$(PY) -m benchmarks.platform.load_bench --fleet fleet.demo.yaml

benchmark-overhead: setup ## Envoy vs direct with the shipped edge chain, and each filter's cost -> benchmarks/results/overhead
	$(PY) -m benchmarks.xds.envoy_overhead --seconds 1.5 --repeats 6 --tier silver

benchmark-edge: setup ## edge filters (JWT, entitlement, rate limit, validation): added latency -> benchmarks/results/edge
	$(PY) -m benchmarks.edge.latency --requests 400 --repeats 9

benchmark-security: setup ## what mTLS costs on the Envoy -> Triton gRPC hop -> benchmarks/results/security
	$(PY) -m benchmarks.security.mtls_overhead

benchmark-tracing: setup ## what tracing costs: off, 1% (the default), 1% + Triton, 100% -> benchmarks/results/tracing
	$(PY) -m benchmarks.tracing.overhead --seconds 3 --repeats 5

benchmark-resilience: setup ## overload by tier, priority vs FIFO, hung replica, admission cost, host-step priority, batcher wake-up -> benchmarks/results/resilience (~25 min)
	$(PY) -m benchmarks.resilience.run --repeats 3
	$(PY) -m benchmarks.resilience.host_step_priority --repeats 5 --seconds 20
	$(PY) -m benchmarks.resilience.batcher_wakeup --repeats 4 --seconds 40

benchmark-faults: setup ## faults under load (SIGKILL/SIGSTOP of each process kind, slow pool, full disk), then a soak (SOAK_S=1800) -> benchmarks/results/faults
	$(PY) -m benchmarks.faults.run --soak-s $(or $(SOAK_S),1800)

test-resilience: $(VENV_STAMP) ## overload by tier, hung replica, pool failover (real Envoy + Triton, ~1 min)
	$(PY) -m pytest -q -p no:cacheprovider tests/resilience

traces: setup ## a local OTLP receiver on :4318 (then OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 make up)
	$(PY) -m tracing receive --out build/traces.jsonl --port 4318

test-batch-aws: ## the AWS batch store (SQS/S3) against moto in server mode, in build/aws-venv (botocore needs python-dateutil<3)
	test -x build/aws-venv/bin/python || python3 -m venv build/aws-venv
	build/aws-venv/bin/pip install -q -r batch/requirements-aws.txt
	PYTHONPATH=. build/aws-venv/bin/python -m pytest -q -p no:cacheprovider tests/batch/test_store_aws.py

samples: $(VENV_STAMP) ## build the models to onboard (digits CNN, pretrained EfficientNet-Lite0; cached in build/samples)
	$(PY) -m model_repository.sample_cnn --out build/samples
	$(PY) -m model_repository.sample_efficientnet --out build/samples

clean: ## remove build outputs (keeps .venv)
	rm -rf build
