#!/usr/bin/env bash
# Installs the non-Python tools tests use (Node.js gRPC client, curl), when missing.
set -eu
if [ -f tests/polyglot/package.json ] && [ ! -d tests/polyglot/node_modules ]; then
  (cd tests/polyglot && npm ci --no-audit --no-fund --loglevel=error)
fi
if ! command -v curl >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq curl >/dev/null
fi

# --- protoc and the Go plugins, for tests/test_proto_codegen.py (helper "protos") ---
# Debian packages: protoc itself, the well-known .proto files it imports, and the Go plugins.
if ! command -v protoc >/dev/null || ! command -v protoc-gen-go >/dev/null \
   || ! command -v protoc-gen-go-grpc >/dev/null || [ ! -f /usr/include/google/protobuf/struct.proto ]; then
  if command -v apt-get >/dev/null; then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
      protobuf-compiler libprotobuf-dev protoc-gen-go protoc-gen-go-grpc
  else
    echo "ensure-test-tools: no apt-get; install protoc, protoc-gen-go and protoc-gen-go-grpc" \
         "or tests/test_proto_codegen.py skips" >&2
  fi
fi
# --- end protoc ---

# The web console's tests: its npm packages, and Debian's Chromium + ChromeDriver for the
# browser tests (tests/console/).
if [ -f console/package.json ] && [ ! -f console/node_modules/.package-lock.json ]; then
  (cd console && npm ci --no-audit --no-fund --loglevel=error)
fi
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
fi

# --- tests/mcp: a third-party MCP server from npm (@modelcontextprotocol/server-filesystem) ---
if [ -f tests/mcp/package.json ] && [ ! -f tests/mcp/node_modules/.package-lock.json ]; then
  (cd tests/mcp && npm ci --no-audit --no-fund --loglevel=error)
fi
# --- end tests/mcp ---
