# The two commands: `make run` serves the embedded default model, `make test`
# runs the whole suite. Both install missing Debian packages first
# (scripts/install-deps.sh) and build in $(BUILD_DIR).

BUILD_DIR ?= build
BUILD_TYPE ?= Release
JOBS ?= $(shell nproc)
HOST ?= 127.0.0.1
PORT ?= 50051
METRICS_PORT ?= 9090

.PHONY: all deps configure build run test bench image clean

all: build

deps:
	@bash scripts/install-deps.sh

configure: deps
	@cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) >/dev/null

build: configure
	@cmake --build $(BUILD_DIR) -j $(JOBS)

# Serves the embedded default model (built under $(BUILD_DIR)/models/default)
# until Ctrl-C. Try it from another shell:
#   $(BUILD_DIR)/client/skipserve generate "Once upon a time" --policy attn:last=33%
run: build
	$(BUILD_DIR)/server/skipserve-server --host=$(HOST) --port=$(PORT) \
	    --metrics_port=$(METRICS_PORT)

test: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS)

bench: build
	bash bench/run_cpu.sh $(BUILD_DIR)

# Builds the CPU container image, localhost/skipserve:cpu, with buildah on a
# Debian base image made here by mmdebstrap: no Docker engine, no registry
# (scripts/build-image.sh; docker/README.md). Options go in IMAGE_ARGS:
#   make image IMAGE_ARGS=--install-deps     # first install mmdebstrap, buildah, podman
image:
	bash scripts/build-image.sh $(IMAGE_ARGS)

clean:
	rm -rf $(BUILD_DIR)
