# kvmm build, run and test entry points. `make run` and `make test` are the
# two commands of the README's first screen.
GO          ?= go
BIN         := bin/kvmm
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
GUEST_DIR   := build/guest

.PHONY: all build run test vet staticcheck unit guest e2e builtin bench clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -o $(BIN) .

# Boot the built-in self-test guest: it reports over the serial port what it
# finds and powers off; kvmm's exit status is the verdict.
run: build
	./$(BIN) run --log-level info

test: vet staticcheck unit

vet:
	@unformatted=$$(gofmt -l . | grep -v '^testdata/'); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...

staticcheck:
	$(GO) run $(STATICCHECK) ./...

unit:
	$(GO) test -race -count=1 ./...

# Fetch Debian's cloud kernel and busybox and build an initramfs (build/guest).
guest:
	scripts/make-guest.sh $(GUEST_DIR)

# Linux end-to-end tests: boot the Debian guest. They probe the host first and
# skip with the reason where its KVM cannot run a stock kernel.
e2e: build guest
	KVMM_E2E=1 KVMM_GUEST_DIR=$(CURDIR)/$(GUEST_DIR) $(GO) test -count=1 -v ./e2e/

# Benchmarks (BENCHMARKS.md): kvmm vs QEMU -M microvm vs the bare-KVM floor
# (cmd/kvmm-floor) on the same test guests, each figure a median over rounds
# that alternate between the systems, plus the exit path's testing.B
# benchmarks. Installs QEMU (Debian's qemu-system-x86) when it is missing and
# we are root, prints the tables and rewrites the generated part of
# BENCHMARKS.md. BENCH_FLAGS adds options, e.g. BENCH_FLAGS="-rounds 20".
bench: build
	$(GO) build -o bin/kvmm-floor ./cmd/kvmm-floor
	$(GO) build -o bin/kvmm-bench ./cmd/kvmm-bench
	./bin/kvmm-bench -kvmm $(BIN) -floor bin/kvmm-floor -go $(GO) -out BENCHMARKS.md $(BENCH_FLAGS)

# Rebuild the embedded built-in guest from builtin/selftest.S.
builtin:
	$(GO) generate ./builtin/

clean:
	rm -rf bin build
