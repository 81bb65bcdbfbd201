# imafs — build, test, demo. Run as root for the integration tests and the demo.
export PATH := /usr/local/go/bin:$(PATH)
GO       ?= go
BIN      := bin/imafs
# A count, not a duration: go1.26's fuzz coordinator can fail a target with a
# spurious "context deadline exceeded" when a -fuzztime duration ends
# (golang/go#75804, fixed in go1.27); an execution count has no deadline.
FUZZTIME ?= 100000x

.PHONY: all build test unit integration fuzz-smoke vet kernel-test demo bench bpf clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN) ./cmd/imafs

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...

# The README's test command: static checks, unit and integration tests
# (integration/ needs root and the tools scripts/install-deps installs),
# and a short run of every fuzz target.
test: vet build
	$(GO) test -count=1 -timeout 18m ./...
	$(MAKE) fuzz-smoke

fuzz-smoke:
	@set -e; for spec in $$(grep -rl --include='*_test.go' '^func Fuzz' . | xargs grep -ho '^func Fuzz[A-Za-z0-9_]*' | sort -u | sed 's/^func //'); do \
		pkg=$$(dirname $$(grep -rl --include='*_test.go' "^func $$spec(" . | head -1)); \
		echo "fuzz $$spec in $$pkg for $(FUZZTIME)"; \
		$(GO) test -run='^$$' -fuzz="^$$spec$$" -fuzztime=$(FUZZTIME) -fuzzminimizetime=2s $$pkg; \
	done

# The imafs kernel series (run) and the mmap source's BPF LSM mechanism in a
# stock kernel that has it (run-bpf; this VM refuses BPF trampolines).
kernel-test: build
	kernel-patches/test/run --tpm --each-patch
	kernel-patches/test/run-bpf

demo: build
	scripts/demo

bench: build
	bench/run

# Regenerates the mmap source's BPF objects and Go loaders from
# mmapsrc/bpf/{mmap,lsm}.bpf.c with Debian's clang (scripts/install-deps installs
# clang and libbpf-dev). Both are committed, so `build` and `test` need no
# clang; commit what this changes.
bpf:
	cd mmapsrc && $(GO) generate ./

clean:
	rm -rf bin
