.PHONY: test lint serve

# The whole test suite: unit tests, the end-to-end conformance suite (sealed store, SoftHSM2,
# NSS's softoken as a second PKCS#11 token, and the metadata on etcd), the PKCS#11 and CLI
# tests. Installs SoftHSM2, NSS's softoken and tools, etcd and protoc (the `etcd` feature's
# build needs it) if needed and makes fresh tokens; installs grpcio for
# the stock Python gRPC client test (tests/cert_principals/), and boto3, the AWS CLI and the
# AWS Encryption SDK into target/aws-venv for the AWS-door tests (tests/python/aws-setup.sh),
# and Chromium, its WebDriver and Selenium for the console's browser test
# (tests/python/browser-setup.sh).
test:
	tests/etcd/setup.sh
	tests/python/setup.sh
	tests/python/browser-setup.sh >/dev/null
	rm -rf target/softhsm target/nss-token
	# The key-type tests check signatures, public keys and MACs with the openssl binary.
	command -v openssl >/dev/null || { apt-get update && apt-get install -y --no-install-recommends openssl; }
	tests/python/aws-setup.sh >/dev/null
	eval "$$(hsm-sim/setup.sh target/softhsm)" && eval "$$(hsm-sim/nss-setup.sh target/nss-token)" && cargo test --locked --features etcd

# What CI checks besides the tests (every feature, as CI does: the etcd feature needs protoc,
# which tests/etcd/setup.sh installs).
lint:
	cargo fmt --check
	tests/etcd/setup.sh
	cargo clippy --locked --all-targets --all-features -- -D warnings

# A throwaway daemon on 127.0.0.1:7878 (no etcd support needed: builds without protoc).
serve:
	cargo run --release -- serve --dev
