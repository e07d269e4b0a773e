# walsync - build, test and install.  `make help` lists the targets.
PREFIX   ?= /usr/local
BINDIR   ?= $(PREFIX)/bin
MANDIR   ?= $(PREFIX)/share/man
DESTDIR  ?=
CXX      ?= g++
CXXFLAGS ?= -O2 -g
BUILD    ?= build

PKGS     := sqlite3 libcurl liblz4 libxxhash libcrypto
DEPFLAGS = $(shell pkg-config --cflags $(PKGS) CLI11 2>/dev/null)
DEPLIBS  = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
# The tools that never touch the network are linked statically: a shared
# library costs every process its relocated and touched pages (libstdc++,
# libc, libsqlite3: 10.8 MB peak RSS for wal-tail + ltx-encode dynamic, 6.3
# MB static, with no more PSS). `make STATIC=` links everything dynamically.
STATIC   ?= wal-tail ltx-encode ltx-apply ltx-checksum ltx-dump ltx-merge ltx-verify
STATICLIBS := -static -Wl,--gc-sections -lsqlite3 -llz4 -lxxhash -lm -ldl -lpthread
ALLFLAGS = -std=c++17 -Wall -Wextra -Wno-missing-field-initializers -Ilibltx/include $(DEPFLAGS) $(CXXFLAGS)

ifeq ($(V),1)
Q :=
else
Q := @
endif

LIB_SRC  := $(wildcard libltx/src/*.cpp)
LIB_OBJ  := $(LIB_SRC:libltx/src/%.cpp=$(BUILD)/obj/libltx/%.o)
TOOL_SRC := $(wildcard tools/*.cpp)
TOOLS    := $(TOOL_SRC:tools/%.cpp=$(BUILD)/bin/%)
SCRIPTS  := $(wildcard tools/*.sh)
UNIT_SRC := $(wildcard tests/unit/*.cpp)
MANPAGES := $(wildcard man/*.[1-8])
# libltx is compiled once, as position-independent code with hidden
# symbols: the tools link it statically (Debian's compiler makes PIE
# executables anyway), and the SQLite extension (man/walsync_vfs.7) links the
# same archive into a shared object that exports its entry point alone,
# --gc-sections dropping what the VFS does not reach.
VFS_SO   := $(BUILD)/lib/walsync_vfs.so
PICFLAGS := -fPIC -fvisibility=hidden -fvisibility-inlines-hidden -ffunction-sections -fdata-sections
LIBDIR   ?= $(PREFIX)/lib

.PHONY: all check unit bats install install-debug uninstall asan lint-man fuzz bench deps clean help demo chaos torture live-soak

all: $(TOOLS) $(BUILD)/bin/unit-tests $(VFS_SO)

help:
	@echo "targets: all check install install-debug uninstall asan lint-man fuzz bench deps demo torture chaos live-soak clean"

# Header dependencies as the compiler saw them (-MMD): a header change
# rebuilds only what includes it. Anything built without its .d file yet
# depends on every header.
-include $(wildcard $(BUILD)/obj/libltx/*.d $(BUILD)/dep/*.d)
$(foreach o,$(LIB_OBJ),$(if $(wildcard $(o:.o=.d)),,$(eval $(o): $(wildcard libltx/include/ltx/*.h))))
$(foreach t,$(TOOLS),$(if $(wildcard $(BUILD)/dep/$(notdir $(t)).d),,$(eval $(t): $(wildcard libltx/include/ltx/*.h tools/*.h))))

# (Its objects depend on the Makefile: a change of flags rebuilds them.)
$(BUILD)/obj/libltx/%.o: libltx/src/%.cpp Makefile
	@mkdir -p $(@D)
	@$(if $(Q),echo "  CXX     $<")
	$(Q)$(CXX) $(ALLFLAGS) $(PICFLAGS) -MMD -MP -c -o $@ $<

$(BUILD)/libltx.a: $(LIB_OBJ)
	@$(if $(Q),echo "  AR      $@")
	$(Q)rm -f $@ && ar rcs $@ $^

$(VFS_SO): vfs/walsync_vfs.cpp vfs/walsync_vfs.map $(BUILD)/libltx.a
	@mkdir -p $(@D) $(BUILD)/dep
	@$(if $(Q),echo "  LINK    $@")
	$(Q)$(CXX) $(ALLFLAGS) $(PICFLAGS) -shared -MMD -MP -MF $(BUILD)/dep/walsync_vfs.d -MT $@ -Itools -o $@ $< \
	  $(BUILD)/libltx.a -Wl,--version-script=vfs/walsync_vfs.map -Wl,--gc-sections -Wl,--no-undefined \
	  -Wl,--as-needed $(DEPLIBS) $(LDFLAGS)

$(BUILD)/bin/%: tools/%.cpp $(BUILD)/libltx.a
	@mkdir -p $(@D) $(BUILD)/dep
	@$(if $(Q),echo "  LINK    $@")
	$(Q)$(CXX) $(ALLFLAGS) -MMD -MP -MF $(BUILD)/dep/$*.d -MT $@ -Itools -o $@ $< $(BUILD)/libltx.a \
	  $(if $(filter $*,$(STATIC)),$(STATICLIBS),-Wl,--as-needed $(DEPLIBS)) $(LDFLAGS)

$(BUILD)/bin/unit-tests: $(UNIT_SRC) $(BUILD)/libltx.a $(wildcard libltx/include/ltx/*.h)
	@mkdir -p $(@D)
	@$(if $(Q),echo "  LINK    $@")
	$(Q)$(CXX) $(ALLFLAGS) -o $@ $(UNIT_SRC) $(BUILD)/libltx.a $(DEPLIBS) -lgtest_main -lgtest -pthread $(LDFLAGS)

# The whole suite: C++ unit tests, then every bats file with a local S3
# server (OpenStack Swift) started for the run and stopped afterwards.
check: all
	$(BUILD)/bin/unit-tests --gtest_brief=1
	WALSYNC_BIN=$(abspath $(BUILD)/bin) scripts/with-s3 bats $(BATSFLAGS) tests/

# wal-tail torture: a long writer with random checkpoints while the capture
# pipeline is killed -9 and restarted; the restore must equal the source.
TORTURE_TXNS ?= 6000
TORTURE_KILLS ?= 12
torture: all
	PATH=$(abspath $(BUILD)/bin):$$PATH tests/wal-tail-torture.sh $(BUILD)/torture $(TORTURE_TXNS) $(TORTURE_KILLS)

# ltx-apply --live reader soak: 4 readers check every state they see while a
# replica follows a busy primary for minutes (LIVE_NTXNS, LIVE_RATE per s).
live-soak: all
	LIVE_SOAK=1 WALSYNC_BIN=$(abspath $(BUILD)/bin) bats -f "4 readers" tests/ltx-apply-live.bats

# The suite under AddressSanitizer + UBSan, in its own build tree.
asan:
	$(MAKE) BUILD=build-asan STATIC= CXXFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" LDFLAGS="-fsanitize=address,undefined" check

lint-man:
	mandoc -Tlint -W warning $(MANPAGES)

# Coverage-guided fuzzing (clang libFuzzer, ASan + UBSan), FUZZ_SECONDS per
# target: fuzz-decode (LTX and WAL decoders, corpus tests/fuzz/corpus) and
# fuzz-walstream (the WAL stream reader and the encoder behind it, built
# from a program of records: tests/fuzz/corpus-walstream) and fuzz-s3 (the S3
# response parsers: tests/fuzz/corpus-s3, tests/fuzz/s3.dict).
FUZZ_SECONDS ?= 60
FUZZ_CXX = clang++ -std=c++17 -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -Ilibltx/include $(DEPFLAGS)
FUZZ_RUN = -max_total_time=$(FUZZ_SECONDS) -max_len=70000 -rss_limit_mb=512 -timeout=30
$(BUILD)/fuzz/obj/%.o: libltx/src/%.cpp $(wildcard libltx/include/ltx/*.h)
	@mkdir -p $(@D)
	$(FUZZ_CXX) -fsanitize=fuzzer-no-link -c -o $@ $<
$(BUILD)/fuzz/libltx.a: $(LIB_SRC:libltx/src/%.cpp=$(BUILD)/fuzz/obj/%.o)
	rm -f $@ && ar rcs $@ $^
$(BUILD)/fuzz/fuzz-%: tests/fuzz/fuzz_%.cpp $(BUILD)/fuzz/libltx.a
	$(FUZZ_CXX) -fsanitize=fuzzer -o $@ $< $(BUILD)/fuzz/libltx.a $(DEPLIBS)
fuzz: $(BUILD)/fuzz/fuzz-decode $(BUILD)/fuzz/fuzz-walstream $(BUILD)/fuzz/fuzz-s3
	mkdir -p $(BUILD)/fuzz/corpus $(BUILD)/fuzz/corpus-walstream $(BUILD)/fuzz/corpus-s3
	cp tests/fuzz/corpus/* $(BUILD)/fuzz/corpus/
	cp tests/fuzz/corpus-walstream/* $(BUILD)/fuzz/corpus-walstream/
	cp tests/fuzz/corpus-s3/* $(BUILD)/fuzz/corpus-s3/
	$(BUILD)/fuzz/fuzz-decode $(FUZZ_RUN) $(BUILD)/fuzz/corpus
	$(BUILD)/fuzz/fuzz-walstream $(FUZZ_RUN) $(BUILD)/fuzz/corpus-walstream
	$(BUILD)/fuzz/fuzz-s3 $(FUZZ_RUN) -dict=tests/fuzz/s3.dict $(BUILD)/fuzz/corpus-s3

bench: all
	bench/run

deps:
	scripts/deps

demo: all
	examples/demo.sh

# Installed binaries are stripped; their debug info goes to .debug files
# (objcopy --only-keep-debug) that the binaries name (--add-gnu-debuglink),
# installed by `make install-debug` where gdb looks for them:
# $(DEBUGDIR)$(BINDIR)/TOOL.debug.
DEBUGDIR ?= $(PREFIX)/lib/debug
OBJCOPY  ?= objcopy
STRIPPED := $(TOOLS:$(BUILD)/bin/%=$(BUILD)/stripped/%)
DEBUGINFO := $(TOOLS:$(BUILD)/bin/%=$(BUILD)/debug/%.debug)
.SECONDARY: $(DEBUGINFO)

$(BUILD)/debug/%.debug: $(BUILD)/bin/%
	@mkdir -p $(@D)
	$(Q)$(OBJCOPY) --only-keep-debug $< $@
	$(Q)chmod 644 $@

$(BUILD)/stripped/%: $(BUILD)/bin/% $(BUILD)/debug/%.debug
	@mkdir -p $(@D)
	@$(if $(Q),echo "  STRIP   $@")
	$(Q)cd $(BUILD)/debug && $(OBJCOPY) --strip-all --add-gnu-debuglink=$*.debug $(abspath $<) $(abspath $@).tmp
	$(Q)mv $@.tmp $@

install: $(STRIPPED) $(VFS_SO)
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man7
	install -m 755 $(STRIPPED) $(DESTDIR)$(BINDIR)/
	$(if $(SCRIPTS),for s in $(SCRIPTS); do install -m 755 $$s $(DESTDIR)$(BINDIR)/$$(basename $$s .sh); done)
	install -m 644 $(wildcard man/*.1) $(DESTDIR)$(MANDIR)/man1/
	install -m 644 $(wildcard man/*.5) $(DESTDIR)$(MANDIR)/man5/
	install -m 644 $(wildcard man/*.7) $(DESTDIR)$(MANDIR)/man7/
	install -d $(DESTDIR)$(LIBDIR)
	$(OBJCOPY) --strip-unneeded $(VFS_SO) $(DESTDIR)$(LIBDIR)/walsync_vfs.so
	chmod 755 $(DESTDIR)$(LIBDIR)/walsync_vfs.so

install-debug: $(DEBUGINFO)
	install -d $(DESTDIR)$(DEBUGDIR)$(BINDIR)
	install -m 644 $(DEBUGINFO) $(DESTDIR)$(DEBUGDIR)$(BINDIR)/

uninstall:
	rm -f $(addprefix $(DESTDIR)$(BINDIR)/,$(notdir $(TOOLS)) $(notdir $(SCRIPTS:.sh=)))
	rm -f $(addprefix $(DESTDIR)$(DEBUGDIR)$(BINDIR)/,$(notdir $(DEBUGINFO)))
	rm -f $(addprefix $(DESTDIR)$(MANDIR)/man1/,$(notdir $(wildcard man/*.1)))
	rm -f $(addprefix $(DESTDIR)$(MANDIR)/man5/,$(notdir $(wildcard man/*.5)))
	rm -f $(addprefix $(DESTDIR)$(MANDIR)/man7/,$(notdir $(wildcard man/*.7)))
	rm -f $(DESTDIR)$(LIBDIR)/walsync_vfs.so

clean:
	rm -rf build build-asan

# The chaos test of issue 5 against the local Swift server: CHAOS_SECONDS of
# writes while random stages are killed and the S3 server is taken away once.
CHAOS_SECONDS ?= 120
chaos: all
	WALSYNC_BIN=$(abspath $(BUILD)/bin) PATH=$(abspath $(BUILD)/bin):$$PATH scripts/with-s3 bash -c \
	  'tests/chaos.sh "s3://$$WALSYNC_TEST_BUCKET/chaos-$$$$" $(CHAOS_SECONDS) "$${TMPDIR:-/tmp}/walsync-chaos" \
	   "scripts/s3-server stop \"$${WALSYNC_S3_DIR:-$$PWD/.swift}\" $${WALSYNC_S3_PORT:-18080}; sleep 5; scripts/s3-server start \"$${WALSYNC_S3_DIR:-$$PWD/.swift}\" $${WALSYNC_S3_PORT:-18080}"'
