# hotpatch — convenience entry points over CMake.
#
#   make            build everything into build/
#   make test       build, then run every test through CTest
#   make demo       build, then show the main job end to end on a running process
#   make bench      build, then run the benchmarks
#   make install PREFIX=/usr/local
#   make sanitize   ASan+UBSan build in build-asan/ and its tests;  make tsan: TSan in build-tsan/
#   make fuzz       libFuzzer (clang, ASan+UBSan) over the request path for FUZZ_SECONDS (60)
#   make deb        the Debian packages in build/deb/ (debhelper), checked with lintian
#
# Each target first checks the system packages it needs (scripts/deps.sh): as root it installs
# what is missing with apt-get; otherwise it prints the exact command to run.

BUILD   ?= build
PREFIX  ?= /usr/local
JOBS    ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_FLAGS ?=

.PHONY: all build deps test demo bench install sanitize tsan fuzz deb clean

all: build

deps:
	@scripts/deps.sh

build: deps
	@cmake -S . -B $(BUILD) $(CMAKE_FLAGS) >/dev/null
	@echo "Building into $(BUILD)/ (log: $(BUILD)/build.log)"
	@env -u MAKEFLAGS -u MAKELEVEL -u MFLAGS cmake --build $(BUILD) -j $(JOBS) >$(BUILD)/build.log 2>&1 \
	  || { cat $(BUILD)/build.log; echo "build failed"; exit 1; }

test: build
	cd $(BUILD) && ctest --output-on-failure -j 2 --repeat until-pass:2

demo: build
	@scripts/demo.sh $(BUILD)

bench: build
	@BUILD_DIR=$(BUILD) bench/run.sh

install: build
	cmake --install $(BUILD) --prefix $(PREFIX)

sanitize:
	$(MAKE) test BUILD=build-asan CMAKE_FLAGS="-DHOTPATCH_SANITIZE=address -DCMAKE_BUILD_TYPE=Debug"

tsan:
	$(MAKE) test BUILD=build-tsan CMAKE_FLAGS="-DHOTPATCH_SANITIZE=thread -DCMAKE_BUILD_TYPE=Debug"

FUZZ_SECONDS ?= 60
fuzz: deps
	@scripts/fuzz.sh $(FUZZ_SECONDS)

deb: deps
	@scripts/deb.sh $(BUILD)/deb

clean:
	rm -rf build build-asan build-tsan build-fuzz
