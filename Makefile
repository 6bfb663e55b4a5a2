# pgcloud — PGXS build. One shared library (pgcloud.so) serves every extension.
#
#   make               build pgcloud.so and the extension install scripts
#   make install       install the library, control files and scripts (root/sudo)
#   make installcheck  pg_regress against a running server (see README)
#   make generate      regenerate extension/*.control, deploy/*, docs/services/* from registry/ and sql/
#   make freeze        copy this release's install scripts to sql/history/<version>/
#   make demo          set up a private cluster and run demo/demo.sql
#   make test          every test tier against private clusters (see scripts/test.sh)
#   make bench         every benchmark; rewrites bench/RESULTS.md (see bench/all.sh)

PG_CONFIG ?= pg_config

# The version is written once, in registry/services.conf.
EXTVERSION := $(shell sed -n 's/^version *= *//p' registry/services.conf | head -n 1)
SERVICES := $(shell sed -n 's/^\[service\.\([a-z_]*\)\]/\1/p' registry/services.conf)

MODULE_big = pgcloud
SRCS = $(sort $(wildcard src/*.c src/*/*.c bgworkers/*.c))
OBJS = $(SRCS:.c=.o)

# PostgreSQL's server headers are included as system headers (-isystem; GCC
# then ignores PGXS's -I for the same directories), so that their own
# warnings under -Wextra (unused parameters in ilist.h, sign comparisons in
# bufpage.h, ...) are not reported, and nothing is switched off for our code:
# all of -Wall -Wextra holds in src/ and bgworkers/.
PG_CPPFLAGS = -isystem $(includedir_server) -isystem $(includedir_internal) \
              -Isrc -Isrc/core -DEXTVERSION=\"$(EXTVERSION)\" $(shell pkg-config --cflags libnats libcurl libpq 2>/dev/null)
PG_CFLAGS = -Wall -Wextra -Werror
SHLIB_LINK = -lcurl -lnats -lcrypto -lpq

# The parsers of untrusted bytes (plain C, no PostgreSQL headers; each has a
# fuzz target in test/fuzz) are held to implicit-conversion warnings too.
UNTRUSTED_PARSERS = src/auth/jwt_parse.o src/core/base64.o src/core/safe_path.o src/core/sanitize.o \
                    src/payments/stripe_sig.o src/releases/sshcert.o src/releases/sshkey.o
$(UNTRUSTED_PARSERS): CFLAGS += -Wconversion -Wsign-conversion

# Install scripts: pgcloud_<ext>--<version>.sql, concatenated from sql/<ext>/.
CORE_SQL = $(sort $(wildcard sql/core/*.sql)) sql/generated/subscriptions.sql
SCRIPTS = build/pgcloud_core--$(EXTVERSION).sql build/pgcloud--$(EXTVERSION).sql \
          $(foreach s,$(SERVICES),build/pgcloud_$(s)--$(EXTVERSION).sql)
# Upgrades (docs/architecture.md, "Versions and upgrades"): the install scripts
# of earlier releases are frozen in sql/history/<version>/ and installed as
# they are; scripts/upgrade.py writes <ext>--<old>--$(EXTVERSION).sql for each,
# with the hand-written table changes of sql/upgrades/<ext>/.
OLD_VERSIONS := $(filter-out $(EXTVERSION),$(notdir $(wildcard sql/history/*)))
FROZEN = $(foreach v,$(OLD_VERSIONS),$(wildcard sql/history/$(v)/*--$(v).sql))
UPGRADES = $(foreach v,$(OLD_VERSIONS),$(patsubst sql/history/$(v)/%--$(v).sql,build/%--$(v)--$(EXTVERSION).sql,$(wildcard sql/history/$(v)/*--$(v).sql)))

MODULEDIR = extension
DATA = $(wildcard extension/*.control) $(FROZEN)
DATA_built = $(SCRIPTS) $(UPGRADES)
EXTRA_CLEAN = build

REGRESS = $(patsubst test/sql/%.sql,%,$(sort $(wildcard test/sql/*.sql)))
# installcheck: against a running server with pgcloud in shared_preload_libraries
# (PGHOST/PGPORT/PGUSER as for psql); every extension is installed in order.
# test/sql and test/expected sit side by side: pg_regress (PostgreSQL 15)
# reads <inputdir>/sql and <inputdir>/expected; results and regression.diffs
# go to build/regress.
REGRESS_OPTS = --inputdir=test --outputdir=build/regress --load-extension=pgcloud_core \
               $(foreach s,$(SERVICES),--load-extension=pgcloud_$(s)) --load-extension=pgcloud

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

.SECONDEXPANSION:

build/pgcloud_core--$(EXTVERSION).sql: $(CORE_SQL) Makefile scripts/build-script.sh
	@mkdir -p build
	scripts/build-script.sh core $@ $(CORE_SQL)

build/pgcloud--$(EXTVERSION).sql: Makefile scripts/build-script.sh
	@mkdir -p build
	scripts/build-script.sh meta $@

build/pgcloud_%--$(EXTVERSION).sql: $$(sort $$(wildcard sql/$$*/*.sql)) Makefile scripts/build-script.sh
	@mkdir -p build
	scripts/build-script.sh $* $@ $(sort $(wildcard sql/$*/*.sql))

$(UPGRADES) &: $(SCRIPTS) $(FROZEN) $(wildcard sql/upgrades/*/*.sql) scripts/upgrade.py scripts/sqlscan.py
	python3 scripts/upgrade.py build $(EXTVERSION) build

# The terminal relay and app runtime agent (termrelay/: C on libwebsockets,
# libssh, libpq; its page serves the vendored xterm.js).
all: termrelay
termrelay:
	$(MAKE) -C termrelay
clean: termrelay-clean
termrelay-clean:
	$(MAKE) -C termrelay clean

# Freezes this release's install scripts (docs/architecture.md, "Versions and upgrades").
freeze: $(SCRIPTS)
	mkdir -p sql/history/$(EXTVERSION)
	cp $(SCRIPTS) sql/history/$(EXTVERSION)/

.PHONY: freeze generate check-generated demo test bench cluster-start cluster-stop termrelay termrelay-clean
generate:
	python3 scripts/generate.py

check-generated:
	python3 scripts/generate.py --check

demo:
	scripts/demo.sh

test:
	scripts/test.sh

bench:
	bench/all.sh
