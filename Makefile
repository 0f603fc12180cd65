# msgbilling — PGXS build
MODULE_big = msgbilling
OBJS = \
	src/msgbilling.o \
	src/config.o \
	src/convert.o \
	src/prices.o \
	src/claim.o \
	src/resume.o \
	src/billing.o \
	src/write.o \
	src/billing_api.o \
	src/wallet.o \
	src/report.o \
	src/guard.o \
	src/trigger.o \
	src/wake.o \
	src/worker.o \
	src/pace.o \
	src/yield.o \
	src/owner.o \
	src/access.o \
	src/retain.o \
	src/version.o \
	src/hold.o \
	src/spend.o

EXTENSION = msgbilling
DATA = msgbilling--1.0.sql msgbilling--1.0--1.1.sql
PGFILEDESC = "msgbilling - afterwards-billing of LLM messages"

REGRESS = attach wallet prices billing_bigint_uuid billing_uuid_text null_org \
	table_owner partitioned tenants retention attach_live tariffs token_columns holds alerts budgets \
	refund_retry report drain trigger privileges hostile search_path \
	create_conflict upgrade
REGRESS_OPTS = --inputdir=. --outputdir=results_regress
ISOLATION = concurrent_billers drain_vs_app max_messages retry_vs_biller \
	idempotent_topup refund_races trigger_vs_drain stranded_failures partitioned_order \
	holds_at_limit hold_vs_billing alerts_concurrent budget_rollover
ISOLATION_OPTS = --inputdir=. --outputdir=output_iso
# t/*.pl: TAP tests; each starts its own clusters (pg_cron, the worker,
# dump and restore).
# installcheck runs every suite defined: run one with the others emptied,
# e.g. make installcheck REGRESS= ISOLATION=   (TAP only).
TAP_TESTS = 1

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# PGXS tracks no header dependencies: rebuild everything when one changes.
$(OBJS): $(wildcard src/*.h)
