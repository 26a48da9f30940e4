.PHONY: test lint serve

# The whole test suite: unit tests, the end-to-end conformance suite and the CLI tests.
test:
	cargo test --locked

# What CI checks besides the tests.
lint:
	cargo fmt --check
	cargo clippy --locked --all-targets -- -D warnings

# A throwaway daemon on 127.0.0.1:7878.
serve:
	cargo run --release -- serve --dev
