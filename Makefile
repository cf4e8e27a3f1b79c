# CNI plugin suite: build, install, test, demo, bench.
# Run as root on Debian 12. `make test` installs what it needs first.

PREFIX  ?= /opt/cni/bin
DESTDIR ?=
CARGO   ?= cargo
PLUGINS := bridge portmap host none macvlan dns-alias host-local static

.PHONY: all build debug install test unit integration demo bench deps clean

all: build

## build: release binaries into target/release
build:
	$(CARGO) build --release --workspace --bins

## debug: debug binaries into target/debug (what the integration tests run)
debug:
	$(CARGO) build --workspace --bins

## install: copy the plugins into $(DESTDIR)$(PREFIX) (default /opt/cni/bin)
install: build
	install -d $(DESTDIR)$(PREFIX)
	for p in $(PLUGINS); do install -m 0755 target/release/$$p $(DESTDIR)$(PREFIX)/$$p; done

## deps: apt packages and the real cnitool (built offline from Debian's sources)
deps:
	scripts/install-deps.sh

## test: everything: unit tests, then integration tests against the real kernel
test: deps
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace --no-fail-fast

unit:
	$(CARGO) test --workspace --lib --bins

integration: debug
	$(CARGO) test -p integration --no-fail-fast

## demo: build, install into a temp dir, walk through the Docker networking story
demo: deps build
	scripts/demo.sh

## bench: ours vs the reference plugins, side by side; writes docs/benchmarks/
bench: deps build
	scripts/bench.sh

clean:
	$(CARGO) clean
