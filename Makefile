# The two commands: `make run` serves the embedded default model, `make test`
# runs the whole suite. Both install missing Debian packages first
# (scripts/install-deps.sh) and build in $(BUILD_DIR).

BUILD_DIR ?= build
BUILD_TYPE ?= Release
JOBS ?= $(shell nproc)
PROMPT ?= Once upon a time
POLICY ?= none

.PHONY: all deps configure build run test bench clean

all: build

deps:
	@bash scripts/install-deps.sh

configure: deps
	@cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) >/dev/null

build: configure
	@cmake --build $(BUILD_DIR) -j $(JOBS)

# Until the gRPC server lands, `make run` runs the engine's generate tool on
# the embedded default model.
run: build
	$(BUILD_DIR)/engine/skipserve-generate --prompt "$(PROMPT)" --policy "$(POLICY)"

test: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS)

bench: build
	bash bench/run_cpu.sh $(BUILD_DIR)

clean:
	rm -rf $(BUILD_DIR)
