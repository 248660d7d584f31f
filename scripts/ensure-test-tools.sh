#!/usr/bin/env bash
# Installs the non-Python tools tests use (Node.js gRPC client, curl), when missing.
set -eu
if [ -f tests/polyglot/package.json ] && [ ! -d tests/polyglot/node_modules ]; then
  (cd tests/polyglot && npm ci --no-audit --no-fund --loglevel=error)
fi
if ! command -v curl >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq curl >/dev/null
fi
