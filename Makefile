# pgcloud — PGXS build. One shared library (pgcloud.so) serves every extension.
#
#   make               build pgcloud.so and the extension install scripts
#   make install       install the library, control files and scripts (root/sudo)
#   make installcheck  pg_regress against a running server (see README)
#   make generate      regenerate extension/*.control and deploy/* from registry/
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

PG_CPPFLAGS = -Isrc -Isrc/core -DEXTVERSION=\"$(EXTVERSION)\" $(shell pkg-config --cflags libnats libcurl 2>/dev/null)
PG_CFLAGS = -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers -Wno-sign-compare -Wno-cast-function-type
SHLIB_LINK = -lcurl -lnats -lcrypto

# Install scripts: pgcloud_<ext>--<version>.sql, concatenated from sql/<ext>/.
CORE_SQL = $(sort $(wildcard sql/core/*.sql)) sql/generated/subscriptions.sql
SCRIPTS = build/pgcloud_core--$(EXTVERSION).sql build/pgcloud--$(EXTVERSION).sql \
          $(foreach s,$(SERVICES),build/pgcloud_$(s)--$(EXTVERSION).sql)
UPGRADES = $(wildcard sql/upgrades/*.sql)

MODULEDIR = extension
DATA = $(wildcard extension/*.control) $(UPGRADES)
DATA_built = $(SCRIPTS)
EXTRA_CLEAN = build

REGRESS = $(patsubst test/sql/%.sql,%,$(sort $(wildcard test/sql/*.sql)))
# installcheck: against a running server with pgcloud in shared_preload_libraries
# (PGHOST/PGPORT/PGUSER as for psql); every extension is installed in order.
REGRESS_OPTS = --inputdir=build/regress --load-extension=pgcloud_core \
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

# pg_regress (PostgreSQL 15) reads <inputdir>/sql and <inputdir>/expected.
build/regress:
	@mkdir -p build/regress
	ln -sfn ../../test/sql build/regress/sql
	ln -sfn ../../expected build/regress/expected
installcheck: build/regress

.PHONY: generate check-generated demo test bench cluster-start cluster-stop
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
