# jobsched: the two commands are `make run` and `make test`; both install what is missing first.
BUILD        ?= build
JOBS         ?= 2
GENERATOR    := $(shell command -v ninja >/dev/null 2>&1 && echo Ninja || echo "Unix Makefiles")
CMAKE_ARGS   ?=
FUZZ_SECONDS ?= 60

# ccache hits across checkouts in different folders (CI builds a fresh clone elsewhere).
export CCACHE_BASEDIR := $(CURDIR)
export CCACHE_NOHASHDIR := 1

.PHONY: all setup build run test test-asan test-tsan bench fuzz format clean

all: build

setup:
	@scripts/setup

# Configure once per build directory; later builds only compile what changed.
$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -G "$(GENERATOR)" $(CMAKE_ARGS)

build: $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j$(JOBS)

run: setup build
	@scripts/run-sample $(BUILD)

test: setup build
	scripts/run-tests $(BUILD)

test-asan: setup
	$(MAKE) --no-print-directory test BUILD=build-asan \
	  CMAKE_ARGS="-DCMAKE_BUILD_TYPE=Debug -DJOBSCHED_SANITIZE=address -DJOBSCHED_BENCH=OFF"

test-tsan: setup
	$(MAKE) --no-print-directory test BUILD=build-tsan \
	  CMAKE_ARGS="-DCMAKE_BUILD_TYPE=RelWithDebInfo -DJOBSCHED_SANITIZE=thread -DJOBSCHED_BENCH=OFF"

bench: setup build
	$(BUILD)/bin/cron_bench --benchmark_min_time=0.2

# libFuzzer targets (clang), each run for FUZZ_SECONDS on a scratch copy of its seed corpus.
fuzz: setup
	$(MAKE) --no-print-directory build-fuzz/CMakeCache.txt BUILD=build-fuzz \
	  CMAKE_ARGS="-DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo -DJOBSCHED_FUZZ=ON -DJOBSCHED_TESTS=OFF -DJOBSCHED_BENCH=OFF"
	cmake --build build-fuzz -j$(JOBS) --target cron_fuzz time_fuzz spec_fuzz config_fuzz
	scripts/run-fuzz build-fuzz $(FUZZ_SECONDS)

format:
	git ls-files '*.h' '*.cc' | xargs clang-format -i

clean:
	rm -rf build build-asan build-tsan build-fuzz
