# narrowband — see README.md.
GO      ?= go
BIN     := bin/narrowband
# Where `make run` writes; one folder per run name.
OUT     ?= runs
CONFIG  ?= experiments/quickstart.toml

.PHONY: all build wasm run test test-short bench fuzz deps clean vet

all: build

deps:
	$(GO) mod download

build: deps wasm
	$(GO) build -o $(BIN) ./cmd/narrowband

# The stage peer for a visitor's browser tab ([web] contribute = true):
# built for js/wasm into web/static/wasm, which the binary embeds, with the
# Go runtime's wasm_exec.js of the same Go (lib/wasm since Go 1.24).
WASM := web/static/wasm
wasm: deps
	mkdir -p $(WASM)
	GOOS=js GOARCH=wasm $(GO) build -trimpath -ldflags=-s -o $(WASM)/narrowband.wasm ./cmd/nbwasm
	cp "$$($(GO) env GOROOT)/lib/wasm/wasm_exec.js" $(WASM)/wasm_exec.js

# The main job: a real run on the default data (the Go standard library's source),
# each time into a folder of its own (a run never writes into another run's folder).
RUNDIR ?= $(OUT)/quickstart-$(shell date +%Y%m%d-%H%M%S)
run: build
	./$(BIN) run $(CONFIG) --out $(RUNDIR)

# Every test, as CI runs it: vet, the tests, then each fuzz target briefly.
test: deps
	$(GO) mod tidy -diff
	$(GO) vet ./...
	$(GO) test -timeout 30m ./...
	bash .ci/fuzz

fuzz: deps
	FUZZTIME=60s bash .ci/fuzz

test-short: deps
	$(GO) test -short ./...

bench: deps
	$(GO) test -run '^$$' -bench . -benchtime 2x ./stages/... ./compression/... ./internal/...

clean:
	rm -rf bin
