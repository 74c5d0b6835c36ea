.PHONY: run test test-quick lint vendor compose-check

run:  ## start Control Room on embedded defaults (Ctrl-C stops it)
	bash scripts/run.sh

test:  ## install everything and run the whole suite on SQLite and PostgreSQL
	bash scripts/test.sh

test-quick:  ## the inner loop: SQLite, no slow tests
	bash scripts/test.sh --quick

lint:
	.venv/bin/ruff check .

vendor:  ## refresh vendored front-end assets from the npm registry
	bash scripts/vendor_static.sh

compose-check:
	bash scripts/compose_check.sh
