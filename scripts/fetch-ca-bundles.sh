#!/usr/bin/env bash
# The public CA bundles the functions verify the managed services with, into
# ca/ (shipped in CaBundleLayer on AWS, next to the bootstrap on FC):
#
#   scripts/fetch-ca-bundles.sh     # ca/rds-global-bundle.pem (every RDS region, RDS Proxy roots aside)
#
# ApsaraDB RDS has no download URL: put its CA, ApsaraDB-CA-Chain.pem from the
# console's "Download CA Certificate" (Data Security > SSL), in ca/ by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
die() { echo "fetch-ca-bundles: $*" >&2; exit 1; }
command -v curl >/dev/null 2>&1 || die "curl is missing: apt-get install curl"
RDS_URL="https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem"
tmp="$(mktemp)"
trap 'rm -f "$tmp"' EXIT
curl --fail --silent --show-error --location --proto '=https' "$RDS_URL" -o "$tmp" \
    || die "cannot download $RDS_URL"
grep -q -- '-----BEGIN CERTIFICATE-----' "$tmp" || die "$RDS_URL is not a PEM bundle"
install -m 0644 "$tmp" ca/rds-global-bundle.pem
echo "ca/rds-global-bundle.pem ($(grep -c -- '-----BEGIN CERTIFICATE-----' ca/rds-global-bundle.pem) certificates)"
