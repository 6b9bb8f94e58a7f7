# smpctl: build, demo and test. GNU make; recipes run in bash with pipefail.
#   make deps    install missing Debian/Ubuntu build packages (scripts/install-deps.sh)
#   make build   debug build of everything
#   make demo    run Examples/hairline.json against the firmware simulator
#   make test    build with tests, fail on any compiler warning in Sources/ or Tests/, run XCTest,
#                then the hardware-in-the-loop rig (hil/run.sh). A machine that cannot boot it
#                says so loudly, and in CI (CI=true) that fails; SMP_SKIP_HIL=1 skips it, loudly.
#                Last the firmware image's scenarios in qemu-system-arm (hil/firmware-qemu.sh)
#   make test-tsan / test-asan   the whole XCTest suite under ThreadSanitizer / AddressSanitizer
#                (docs/reliability.md); each its own scratch path (.build-tsan, .build-asan)
#   make install / install-udev   PREFIX-aware install of the binary, completions, man pages / udev rule + rtprio limit
#   make hil     hardware-in-the-loop rig in a QEMU VM (docs/hil.md); make powercut: its power-cut
#                scenario (20 cuts of the records' disk, docs/reliability.md)
#   make soak    the fault soak (scripts/soak.py, docs/reliability.md): every simulator fault, kill -9
#                and power cycles, each trial checked against the simulator's ground truth (6 min quiet, 20 busy);
#                SOAK_QUICK=1 a ~10 s version, which `make test` runs
#   make fuzz / golden / check-gpiod / check-layers   fuzzers (decoder, firmware, link machine, machine file),
#                golden frames, libgpiod v1+v2 compile check, the module map (scripts/check-layers.py);
#                make fuzz-replay (CI): every fuzzer built and run once over its committed seeds
#   make check-embedded   compiles the firmware core (FirmwareProtocol + FirmwareCore) in Embedded Swift
#   make firmware         the Cortex-M4 firmware image (Firmware/, docs/firmware.md): the same core
#                         sources for armv7em-none-none-eabi, section sizes printed and budget-checked
#   make firmware-qemu    boots it in qemu-system-arm (mps2-an386), prints `firmware pty: /dev/pts/N`
#   make firmware-test    the firmware scenarios against it (hil/firmware-qemu.sh; also run by make test)
#   make clean   remove build products (keeps fetched packages)

SWIFT      ?= swift
SWIFTC     ?= swiftc
PREFIX     ?= /usr/local
DESTDIR    ?=
# Packages only the tests need: headless Chromium renders the SVG/HTML checks. Debian's
# `chromium` is a real package; Ubuntu's is a snap stub, so there the render tests skip.
TEST_PACKAGES ?= $(shell . /etc/os-release 2>/dev/null; [ "$$ID" = debian ] && echo chromium)
SWIFTFLAGS ?=
SCRATCH    ?= .build

SHELL       := bash
.SHELLFLAGS := -euo pipefail -c

BUILD_LOG := $(SCRATCH)/make-test-build.log
# Our own modules (Sources/*, Tests/*). Their object files are deleted before `make test` so
# every one of our files is compiled again and its warnings appear in the log: an incremental
# build stays silent about warnings in files it does not recompile.
OWN_OBJECTS := $(foreach m,$(notdir $(wildcard Sources/* Tests/*)),$(SCRATCH)/debug/$(m).build/*.o)
# A diagnostic from one of our files, not from a package under $(SCRATCH)/checkouts.
OWN_WARNING := ^$(CURDIR)/(Sources|Tests)/[^:]+:[0-9]+:[0-9]+: warning:

SWIFT_BUILD = $(SWIFT) build --scratch-path $(SCRATCH) $(SWIFTFLAGS)

.PHONY: firmware firmware-qemu firmware-test firmware-deps
.PHONY: deps test-deps build demo test soak powercut test-tsan test-asan clean fuzz fuzz-build fuzz-replay golden check-gpiod check-layers check-embedded install install-udev hil hil-selftest bench
.DEFAULT_GOAL := build

deps:
	@scripts/install-deps.sh

test-deps:
	@scripts/install-deps.sh $(TEST_PACKAGES)

build: deps
	$(SWIFT_BUILD)

demo: build
	"$$($(SWIFT_BUILD) --show-bin-path)/smpctl" run Examples/hairline.json --sim --yes

# XCTest only (--disable-swift-testing): Swift Testing would end the output with "0 tests".
test: test-deps check-layers check-gpiod check-embedded firmware
	@mkdir -p $(SCRATCH)
	@rm -f $(OWN_OBJECTS)
	$(SWIFT_BUILD) --build-tests 2>&1 | tee $(BUILD_LOG)
	@if grep -E '$(OWN_WARNING)' $(BUILD_LOG) | sort -u | grep .; then \
	    echo "make test: compiler warnings in our own code (above; full log: $(BUILD_LOG))" >&2; \
	    exit 1; \
	fi
	$(SWIFT) test --scratch-path $(SCRATCH) $(SWIFTFLAGS) --skip-build --disable-swift-testing
	SOAK_QUICK=1 scripts/soak.py --smpctl "$$($(SWIFT_BUILD) --show-bin-path)/smpctl" --work $(SCRATCH)/soak-quick
	@if [ "$${SMP_SKIP_HIL:-0}" = 1 ]; then \
	    echo "make test: *** SMP_SKIP_HIL=1: the hardware-in-the-loop rig was NOT run ***" >&2; \
	else \
	    status=0; hil/run.sh --smpctl "$$($(SWIFT_BUILD) --show-bin-path)/smpctl" || status=$$?; \
	    if [ $$status = 2 ] && [ "$${CI:-}" != true ]; then \
	        echo "make test: *** this machine cannot run the hardware-in-the-loop rig (above); NOT run. In CI this fails. ***" >&2; \
	    elif [ $$status != 0 ]; then exit $$status; fi; \
	fi
	hil/firmware-qemu.sh --smpctl "$$($(SWIFT_BUILD) --show-bin-path)/smpctl" --image $(FW_ELF) --client $(FW_CLIENT)

# The fault soak of issue 14 (docs/reliability.md, "Fault soak"): every simulator fault kind alone
# and in random combinations x 10 seeds, 72 kill -9 and 33 power-cycle trials, 5,000-dot plan,
# time scale 0; every trial compared with the simulator's ground truth; prints one table (and
# writes it to .build-soak/trials/table.md, every trial's log to trials.json). Not part of make test.
SOAK_QUICK ?= 0
soak: build
	SOAK_QUICK="$(SOAK_QUICK)" scripts/soak.py --smpctl "$$($(SWIFT_BUILD) --show-bin-path)/smpctl"

# The whole XCTest suite under a sanitizer (docs/reliability.md, "Sanitizers"): any sanitizer
# report from any process fails; a test failing without one is rerun once alone (scripts/).
test-tsan: test-deps
	SWIFT="$(SWIFT)" scripts/sanitizer-test.sh thread

test-asan: test-deps
	SWIFT="$(SWIFT)" scripts/sanitizer-test.sh address

# Benchmarks (docs/performance.md): Benchmarks/ is a package of its own, never built by `make test`.
# ~12 min on 2 cores (+~10 min first build). Results: Benchmarks/results/latest.{txt,md,json} (git-ignored).
#   make bench | make bench BENCH_ONLY="codec cpu" | make bench BENCH_QUICK=1
BENCH_ONLY  ?=
BENCH_QUICK ?= 0
bench: deps
	@scripts/install-deps.sh rt-tests stress-ng strace gcc
	SWIFT="$(SWIFT)" BENCH_ONLY="$(BENCH_ONLY)" BENCH_QUICK="$(BENCH_QUICK)" scripts/bench-run.sh

# Hardware-in-the-loop rig: smpctl over real USB CDC-ACM, udev, unplug and GPIO in a QEMU VM
# (docs/hil.md). SMP_HIL_DEVICE=/dev/... make hil runs the scenarios on a real applicator.
hil: build
	hil/run.sh --smpctl "$$($(SWIFT_BUILD) --show-bin-path)/smpctl"

# Power cuts of the records' disk during sessions, in the VM (docs/reliability.md, "Power cut"):
# 20 cut points (HIL_POWERCUT_POINTS), each checked and resumed to completion. Not in make test.
powercut: build
	hil/run.sh --only powercut --smpctl "$$($(SWIFT_BUILD) --show-bin-path)/smpctl"

# The rig must fail, clearly, when the udev rule does not match the device (wrong vendor id).
hil-selftest: build
	hil/run.sh --selftest-broken-rule --smpctl "$$($(SWIFT_BUILD) --show-bin-path)/smpctl"

# The module map of docs/architecture.md: dependencies point one way, exit codes only in the CLI.
check-layers:
	@SWIFT="$(SWIFT)" scripts/check-layers.py

# The GPIO shim must compile against libgpiod 1.6 (this system) and 2.x (headers fetched from
# Debian's bookworm-backports into .build-gpiod-v2/).
check-gpiod:
	@scripts/check-gpiod-v2.sh

# The firmware core must stay Embedded-Swift-clean (one source for the simulator and the
# microcontroller image): FirmwareProtocol and FirmwareCore compiled in Embedded mode for the host
# (the toolchain ships an Embedded stdlib for x86_64), each into an object, nothing linked.
# -Onone is enough: the Embedded restrictions are checked at every optimisation level, and
# -Werror EmbeddedRestrictions turns the ones reported as warnings (untyped throws) into errors.
EMBEDDED_DIR    := .build-embedded
EMBEDDED_TARGET ?= $(shell uname -m)-unknown-linux-gnu
EMBEDDED_FLAGS  := -target $(EMBEDDED_TARGET) -enable-experimental-feature Embedded -wmo -parse-as-library \
                   -Onone -Werror EmbeddedRestrictions
check-embedded:
	@mkdir -p $(EMBEDDED_DIR)
	$(SWIFTC) $(EMBEDDED_FLAGS) -module-name FirmwareProtocol -emit-module \
	    -emit-module-path $(EMBEDDED_DIR)/FirmwareProtocol.swiftmodule \
	    -c Sources/FirmwareProtocol/*.swift -o $(EMBEDDED_DIR)/FirmwareProtocol.o
	$(SWIFTC) $(EMBEDDED_FLAGS) -module-name FirmwareCore -I $(EMBEDDED_DIR) \
	    -c Sources/FirmwareCore/*.swift -o $(EMBEDDED_DIR)/FirmwareCore.o
	@echo "check-embedded: FirmwareProtocol and FirmwareCore compile in Embedded Swift ($(EMBEDDED_TARGET))"

# The firmware image for a Cortex-M4 (docs/firmware.md): Sources/FirmwareProtocol and
# Sources/FirmwareCore compiled unchanged in Embedded Swift for armv7em-none-none-eabi, each into a
# .swiftmodule (Embedded Swift carries the library code in the module; only the application's object
# is linked), the application Firmware/App (main loop, QEMU board), Firmware/Board/Support.c
# (vectors, reset, SysTick, allocator counters, semihosting), newlib-nano for malloc/free and mem*,
# libgcc for 64-bit division (no floating point is linked). Budget (checked here): flash (.text +
# .data image) <= 64 KB, .data + .bss < 16 KB; heap and stack high-water marks are measured at run
# time (firmware-test).
FW_DIR      := .build-firmware
FW_ELF      := $(FW_DIR)/firmware.elf
FW_CLIENT   := $(FW_DIR)/fwclient
FW_PACKAGES := qemu-system-arm gcc-arm-none-eabi libnewlib-arm-none-eabi
FW_SWIFT    := -target armv7em-none-none-eabi -enable-experimental-feature Embedded -wmo -parse-as-library \
               -Osize -Xfrontend -disable-stack-protector -Xfrontend -function-sections \
               -Xcc -mfloat-abi=soft -Xcc -mcpu=cortex-m4 -Xcc -mthumb
FW_CC       := clang --target=armv7em-none-eabi -mcpu=cortex-m4 -mthumb -mfloat-abi=soft -Os -ffreestanding \
               -ffunction-sections -fdata-sections -Wall -Wextra -Werror
FW_GCC      := arm-none-eabi-gcc -mcpu=cortex-m4 -mthumb -mfloat-abi=soft
FW_LIBS      = $$($(FW_GCC) -print-file-name=libc_nano.a) $$($(FW_GCC) -print-libgcc-file-name)
FW_SOURCES  := $(wildcard Sources/FirmwareProtocol/*.swift Sources/FirmwareCore/*.swift Firmware/App/*.swift Firmware/Board/*)
FW_RAM_BUDGET  := 16384
FW_TEXT_BUDGET := 65536

firmware-deps:
	@scripts/install-deps.sh $(FW_PACKAGES)

firmware: firmware-deps $(FW_ELF) $(FW_CLIENT)
	@scripts/firmware-size.sh $(FW_ELF) $(FW_TEXT_BUDGET) $(FW_RAM_BUDGET)

$(FW_ELF): $(FW_SOURCES)
	@mkdir -p $(FW_DIR)
	$(SWIFTC) $(FW_SWIFT) -module-name FirmwareProtocol -emit-module \
	    -emit-module-path $(FW_DIR)/FirmwareProtocol.swiftmodule Sources/FirmwareProtocol/*.swift
	$(SWIFTC) $(FW_SWIFT) -module-name FirmwareCore -I $(FW_DIR) -emit-module \
	    -emit-module-path $(FW_DIR)/FirmwareCore.swiftmodule Sources/FirmwareCore/*.swift
	$(SWIFTC) $(FW_SWIFT) -module-name SMPFirmware -I $(FW_DIR) -import-bridging-header Firmware/Board/Board.h \
	    -c Firmware/App/*.swift -o $(FW_DIR)/app.o 2>&1 | tee $(FW_DIR)/app.log
	@if grep -q 'warning:' $(FW_DIR)/app.log; then echo "make firmware: compiler warnings (above)" >&2; exit 1; fi
	$(FW_CC) -c Firmware/Board/Support.c -o $(FW_DIR)/support.o
	ld.lld -T Firmware/Board/mps2-an386.ld --gc-sections -nostdlib --wrap=malloc --wrap=calloc --wrap=realloc \
	    -Map $(FW_DIR)/firmware.map -o $@ $(FW_DIR)/app.o $(FW_DIR)/support.o $(FW_LIBS)

# The raw protocol client of the firmware scenarios (sends what smpctl never would), host build.
$(FW_CLIENT): Firmware/Tools/FirmwareClient.swift $(wildcard Sources/FirmwareProtocol/*.swift)
	@mkdir -p $(FW_DIR)
	$(SWIFTC) -O -parse-as-library -module-name FirmwareClient -o $@ Sources/FirmwareProtocol/*.swift $<

# Runs until stopped (Ctrl-C); any tool can attach to the pty, e.g.
#   smpctl run Examples/hairline.json --device /dev/pts/N
# FW_APPEND: the firmware's command line (time-scale-percent=N: physics at N % of real time).
FW_APPEND ?= time-scale-percent=100
firmware-qemu: firmware
	@hil/firmware-qemu.sh --boot-only --image $(FW_ELF) --append "$(FW_APPEND)"

firmware-test: firmware build
	hil/firmware-qemu.sh --smpctl "$$($(SWIFT_BUILD) --show-bin-path)/smpctl" --image $(FW_ELF) --client $(FW_CLIENT)

# libFuzzer (Fuzz/): the frame decoder; the firmware core fed arbitrary host bytes (no dot
# outside its limits, after a latch, twice from one frame, too soon or too close); the plan reader
# against the Foundation decoder (Fuzz/PlanReaderFuzz.swift, seeds Fuzz/corpus-plan); the host link
# machine against the firmware core over a wire the input corrupts, with fabricated device frames
# (no ARM/RESUME/CLEAR/DOT the host did not ask for, no dot done twice or returned once injected);
# the machine-configuration loader and the design reader (a clear refusal or in-range values). Each runs
# FUZZ_SECONDS with the committed seed corpus (the golden frames of firmware-protocol.md and a
# short session); FirmwareProtocol is built first as a module of its own.
FUZZ_SECONDS ?= 60
FUZZ_FLAGS := -sanitize=fuzzer,address -parse-as-library -O
# The plan reader's fast path and, for the differential, the Foundation decoder it stands in for.
PLAN_READER_FUZZ_SOURCES := $(addprefix Sources/SMPPlanReader/,PlanJSONReader.swift PlainNumber.swift PlanDecoding.swift JSONDuplicateKeys.swift)
# Fuzz/Package.swift: the fuzzers that need the package's modules (the link machine with the real
# firmware core; the machine-configuration loader with TOMLKit). -Xswiftc -sanitize=fuzzer gives
# every module coverage, not only the fuzzer's own.
FUZZ_PKG_BUILD := cd Fuzz && $(SWIFT) build -c release --sanitize fuzzer --sanitize address -Xswiftc -sanitize=fuzzer \
                  --scratch-path ../.build-fuzz-pkg
fuzz-build:
	@mkdir -p .build-fuzz/corpus-decoder .build-fuzz/corpus-firmware .build-fuzz/corpus-link .build-fuzz/corpus-machine
	cp Examples/machine.toml .build-fuzz/corpus-machine/example.toml
	cp packaging/deb/machine.toml .build-fuzz/corpus-machine/package.toml
	$(FUZZ_PKG_BUILD) --product link-machine-fuzz
	$(FUZZ_PKG_BUILD) --product machine-config-fuzz
	$(FUZZ_PKG_BUILD) --product design-fuzz
	mkdir -p .build-fuzz/corpus-design && cp Examples/design-*.json .build-fuzz/corpus-design/
	swiftc $(FUZZ_FLAGS) -o .build-fuzz/frame-decoder-fuzz Sources/FirmwareProtocol/*.swift Fuzz/FrameDecoderFuzz.swift
	swiftc $(FUZZ_FLAGS) -module-name FirmwareProtocol -emit-module -emit-module-path .build-fuzz/FirmwareProtocol.swiftmodule \
	    -emit-library -static -o .build-fuzz/libFirmwareProtocol.a Sources/FirmwareProtocol/*.swift
	swiftc $(FUZZ_FLAGS) -I .build-fuzz -L .build-fuzz -lFirmwareProtocol -module-name FirmwareFuzz \
	    -o .build-fuzz/firmware-fuzz Sources/FirmwareCore/*.swift Fuzz/FirmwareFuzz.swift
	swiftc $(FUZZ_FLAGS) -package-name smpctl -I .build-fuzz -module-name SMPPlan -emit-module \
	    -emit-module-path .build-fuzz/SMPPlan.swiftmodule -emit-library -static -o .build-fuzz/libSMPPlan.a Sources/SMPPlan/*.swift
	swiftc $(FUZZ_FLAGS) -package-name smpctl -I .build-fuzz -L .build-fuzz -lSMPPlan -lFirmwareProtocol -module-name PlanReaderFuzz \
	    -o .build-fuzz/plan-reader-fuzz $(PLAN_READER_FUZZ_SOURCES) Fuzz/PlanReaderFuzz.swift

# CI: every target built against today's sources and run once over its committed seeds (the
# regressions of docs/reliability.md among them), no mutation: deterministic, a few minutes. A
# target left unbuilt drifts from the code it covers (the link machine's did, fourth stop).
fuzz-replay: fuzz-build
	.build-fuzz/frame-decoder-fuzz -runs=0 Fuzz/corpus
	.build-fuzz/firmware-fuzz -runs=0 Fuzz/corpus
	.build-fuzz/plan-reader-fuzz -runs=0 -max_len=4096 Fuzz/corpus-plan
	.build-fuzz-pkg/release/link-machine-fuzz -runs=0 -max_len=512 Fuzz/corpus-link
	LSAN_OPTIONS=suppressions=$(CURDIR)/Fuzz/lsan-tomlkit.supp .build-fuzz-pkg/release/machine-config-fuzz \
	    -runs=0 -detect_leaks=1 Examples/machine.toml packaging/deb/machine.toml Fuzz/corpus-machine/*
	.build-fuzz-pkg/release/design-fuzz -runs=0 .build-fuzz/corpus-design

fuzz: fuzz-build
	.build-fuzz/frame-decoder-fuzz -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 .build-fuzz/corpus-decoder Fuzz/corpus
	.build-fuzz/firmware-fuzz -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 .build-fuzz/corpus-firmware Fuzz/corpus
	@mkdir -p .build-fuzz/corpus-plan
	.build-fuzz/plan-reader-fuzz -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 -dict=Fuzz/plan.dict -max_len=4096 \
	    .build-fuzz/corpus-plan Fuzz/corpus-plan
	.build-fuzz-pkg/release/link-machine-fuzz -max_total_time=$(FUZZ_SECONDS) -max_len=512 -print_final_stats=1 \
	    .build-fuzz/corpus-link Fuzz/corpus-link
	# TOMLKit leaks on every read, so libFuzzer's leak check would run after every input (40 runs/s,
	# not 600): fuzz without it, then run the whole corpus once with it (our own leaks stay checked).
	LSAN_OPTIONS=suppressions=$(CURDIR)/Fuzz/lsan-tomlkit.supp .build-fuzz-pkg/release/machine-config-fuzz \
	    -max_total_time=$(FUZZ_SECONDS) -detect_leaks=0 -dict=Fuzz/machine-config.dict -print_final_stats=1 \
	    .build-fuzz/corpus-machine Fuzz/corpus-machine
	LSAN_OPTIONS=suppressions=$(CURDIR)/Fuzz/lsan-tomlkit.supp .build-fuzz-pkg/release/machine-config-fuzz \
	    -runs=0 -detect_leaks=1 .build-fuzz/corpus-machine Fuzz/corpus-machine
	.build-fuzz-pkg/release/design-fuzz -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 .build-fuzz/corpus-design

# Prints the golden frames of firmware-protocol.md §8 as the codec encodes them; paste them
# between the golden markers after a deliberate protocol change (the test then checks them).
golden:
	SMP_PRINT_GOLDEN=1 $(SWIFT) test --scratch-path $(SCRATCH) --filter GoldenFrameTests 2>/dev/null | grep '^- `'

# Release build (static Swift runtime, stripped) to $(PREFIX)/bin, shell completions, man pages.
install: deps
	PREFIX="$(PREFIX)" DESTDIR="$(DESTDIR)" SWIFT="$(SWIFT)" SCRATCH="$(SCRATCH)" SWIFTFLAGS="$(SWIFTFLAGS)" scripts/install.sh bin

# The udev rule to $(PREFIX)/lib/udev/rules.d; as root also `groupadd smp` and a udev reload.
install-udev:
	PREFIX="$(PREFIX)" DESTDIR="$(DESTDIR)" scripts/install.sh udev

clean:
	$(SWIFT) package clean --scratch-path $(SCRATCH)
	rm -f $(BUILD_LOG)

# The Debian package for a clinic computer (scripts/build-deb.sh): .build-deb/smpctl_<version>_<arch>.deb.
# test-deb installs it on a fresh Debian 12 root (debootstrap, chroot; root needed), runs a
# simulated session as a member of group smp, upgrades, removes and purges it, and checks that the
# records survive (scripts/test-deb.sh; .ci/run runs it after make test).
.PHONY: deb test-deb
deb: deps
	@scripts/install-deps.sh dpkg-dev
	SWIFT="$(SWIFT)" SCRATCH="$(SCRATCH)" SWIFTFLAGS="$(SWIFTFLAGS)" scripts/build-deb.sh

test-deb: deb
	@scripts/install-deps.sh debootstrap lintian
	scripts/test-deb.sh .build-deb/smpctl_*.deb
