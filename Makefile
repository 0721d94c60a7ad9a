# observe — the verbs. `make help` lists them.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(abspath $(VENV))/bin/python
STAMP  := $(VENV)/.installed
PROTO_FILES := $(wildcard proto/observe/v1/*.proto)
VENDORED_PROTOS := proto/buf/validate/validate.proto
PROTOBUF_INCLUDE = $(shell $(PY) -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')
BUF    := $(VENV)/bin/buf
GEN_DIR ?= gen

.DEFAULT_GOAL := help
.PHONY: help setup gen gen-check run test lint fmt bench clean

help: ## list the verbs
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP) ## create .venv and install observe with its dev tools

# grpcio-tools' protoc writes the messages and gRPC stubs, mypy-protobuf the
# type stubs; descriptors.binpb keeps the comments for OpenAPI. google/api protos come from googleapis-common-protos at run time,
# so only observe/v1 is generated (a copy would shadow the package); buf/validate (protovalidate's annotations, vendored)
# has no Python package of its own, so it is generated too.
gen: $(STAMP) ## regenerate gen/ from proto/ (grpcio-tools + mypy-protobuf)
	rm -rf $(GEN_DIR)/observe $(GEN_DIR)/buf && mkdir -p $(GEN_DIR)/observe/v1
	$(PY) -m grpc_tools.protoc -Iproto -I$(PROTOBUF_INCLUDE) \
	  --plugin=protoc-gen-mypy=$(abspath $(VENV))/bin/protoc-gen-mypy \
	  --python_out=$(GEN_DIR) --grpc_python_out=$(GEN_DIR) --mypy_out=$(GEN_DIR) \
	  --include_source_info --descriptor_set_out=$(GEN_DIR)/observe/v1/descriptors.binpb $(PROTO_FILES) $(VENDORED_PROTOS)
	rm -f $(GEN_DIR)/buf/validate/validate_pb2_grpc.py
	touch $(GEN_DIR)/observe/__init__.py $(GEN_DIR)/observe/v1/__init__.py $(GEN_DIR)/buf/__init__.py $(GEN_DIR)/buf/validate/__init__.py

gen-check: gen ## fail if gen/ is not what proto/ generates
	@git diff --exit-code --stat -- gen || (echo "gen/ is stale: run 'make gen' and commit it" && exit 1)

run: $(STAMP) ## serve REST + gRPC on the embedded SQLite default
	$(VENV)/bin/observe serve

test: $(STAMP) ## run the test suite (SQLite; PostgreSQL/Redis too when OBSERVE_TEST_* are set)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP) ## ruff, mypy, buf lint/format (and buf breaking against main when there is one)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(BUF) lint
	$(BUF) format --diff --exit-code
	@if git rev-parse --verify -q main >/dev/null && git cat-file -e main:buf.yaml 2>/dev/null; then \
	  echo "$(BUF) breaking --against .git#branch=main"; $(BUF) breaking --against '.git#branch=main'; fi

fmt: $(STAMP) ## apply ruff and buf formatting
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .
	$(BUF) format -w

bench: $(STAMP) ## benchmarks in bench/ (needs wrk and h2load: apt-get install wrk nghttp2-client)
	$(PY) -m bench.pipeline_overhead
	$(PY) -m bench.validator
	$(PY) -m bench.api_me
	$(PY) -m bench.checker_throughput
	$(PY) -m bench.monitors_scale
	$(PY) -m bench.alert_delivery
	$(PY) -m bench.incident_latency
	$(PY) -m bench.heartbeats
	$(PY) -m bench.status_pages
	$(PY) -m bench.logs
	$(PY) -m bench.collector

clean: ## remove the venv and local data
	rm -rf $(VENV) data build .mypy_cache .ruff_cache .pytest_cache
