# The two commands: `make run` and `make test`. Everything they need is installed on first use.
.PHONY: run test build bench deps clean

SWIFT_FLAGS ?=

deps:
	@scripts/install-deps.sh

build: deps
	swift build $(SWIFT_FLAGS) -c release --product markov

run: build
	.build/release/markov up $(ARGS)

test:
	@scripts/test.sh $(SWIFT_FLAGS)

bench: deps
	bench/run

clean:
	scripts/test-redis.sh stop || true
	rm -rf .build .redis-test
