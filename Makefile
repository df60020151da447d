# The same commands locally and in CI; each bootstraps .venv from uv.lock first.
.PHONY: setup check test bench up

setup:
	scripts/bootstrap

check:
	scripts/check

test:
	scripts/test

bench:
	.venv/bin/python -m bench.log_pipeline --quick
	.venv/bin/python -m bench.spawn --quick
	.venv/bin/python -m bench.previews --quick
	.venv/bin/python -m bench.model_stream --quick
	.venv/bin/python -m bench.pipeline --quick

up:
	scripts/myyc up
