# Moat: the only entry point for humans and CI. `make` (or `make help`) lists the targets.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

# Pinned tool versions, installed into ./bin by `make tools` (scripts read them from here too).
NATS_SERVER_VERSION        := v2.15.2
BUF_VERSION                := v1.75.0
PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
GRPC_GATEWAY_VERSION       := v2.33.0
GOLANGCI_LINT_VERSION      := v2.15.0
# npm package with the googleapis protos (google/api, google/rpc) copied into proto/google when imported.
GOOGLE_PROTO_FILES_VERSION := 6.0.1
export NATS_SERVER_VERSION BUF_VERSION PROTOC_GEN_GO_VERSION PROTOC_GEN_GO_GRPC_VERSION \
	GRPC_GATEWAY_VERSION GOLANGCI_LINT_VERSION GOOGLE_PROTO_FILES_VERSION

SERVICES := gateway identity config billing audit
MODULE   := github.com/moat-ai/moat
# Every package of every module in go.work; `./...` does not work at a root that is not a module.
GO_PKGS   = $(shell go list -m -f '{{.Path}}/...')
TEST_FLAGS := -race -shuffle=on -count=1

help: ## List targets.
	@awk 'BEGIN{FS=":.*## "} /^[a-z0-9_-]+:.*## /{printf "  %-18s %s\n",$$1,$$2}' $(MAKEFILE_LIST)

tools: ## Install the pinned tools into ./bin (skips those at the pinned version) and imported googleapis protos.
	./scripts/tools.sh

generate: tools ## Generate Go and OpenAPI code from proto/ with buf and the local plugins.
	PATH="$(CURDIR)/bin:$$PATH" ./bin/buf generate

check-generated: generate ## Fail if the committed code under proto/gen differs from a fresh generate.
	@changes="$$(git status --porcelain -- proto/gen)"; \
	if [[ -n "$$changes" ]]; then \
		printf '%s\n' "$$changes"; \
		echo "proto/gen is stale or uncommitted: run 'make generate' and commit the result"; \
		exit 1; \
	fi; \
	echo "proto/gen is up to date"

fmt: tools ## Format Go (gofmt -w) and proto (buf format -w) files.
	gofmt -w $$(go list -m -f '{{.Dir}}')
	./bin/buf format -w

lint: tools ## golangci-lint per module, buf lint, buf breaking against main, layout rules.
	./scripts/lint.sh

check-modules: ## Build every module on its own (GOWORK=off), proving its go.mod is complete.
	@for dir in $$(go list -m -f '{{.Dir}}'); do \
		echo "GOWORK=off go build ./... in $${dir#$(CURDIR)/}"; \
		(cd "$$dir" && GOWORK=off go build ./...) || exit 1; \
	done

build: ## Build the five service binaries, the mock provider and the demo bootstrap into ./bin.
	go build -o bin/ $(addprefix $(MODULE)/services/,$(SERVICES)) $(MODULE)/e2e/cmd/mockprovider $(MODULE)/e2e/cmd/demo

run: ## Run the whole platform in the foreground; Ctrl-C stops it. Data survives between runs.
	./scripts/run.sh

dev-up: ## Start PostgreSQL, NATS, the mock and the services in the background (MOAT_KEYCLOAK=1 adds Keycloak).
	./scripts/dev-up.sh

dev-down: ## Stop everything dev-up started (services, mock, Keycloak, NATS, PostgreSQL).
	./scripts/dev-down.sh

migrate: ## Run every service's database migrations against the local cluster.
	./scripts/migrate.sh

test: ## Everything CI runs: all tests (real PostgreSQL, NATS, Keycloak), lint, module and generated-code checks, e2e.
	./scripts/test.sh

bench: ## Measure the gateway against the mock (PERFORMANCE.md); writes .bench/<time>/results.{md,jsonl}.
	./scripts/bench.sh

test-unit: ## Unit tests only (-short), no PostgreSQL or NATS needed.
	go test $(TEST_FLAGS) -short $(GO_PKGS)

test-integration: ## All Go tests of every module against the local PostgreSQL (started if needed).
	./scripts/test.sh integration

e2e: ## Start a separate platform instance, run the black-box e2e suite against it, tear it down.
	./scripts/test.sh e2e

clean: ## Stop everything and delete ./bin, local data (.moat) and coverage/bench output.
	./scripts/dev-down.sh --purge
	rm -rf bin .bench coverage.out coverage.html

ci: test ## Exactly what CI runs (.ci/run calls `make test`).

.PHONY: bench help tools generate check-generated fmt lint check-modules build run dev-up dev-down migrate \
	test test-unit test-integration e2e clean ci
