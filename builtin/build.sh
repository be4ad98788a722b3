#!/bin/sh
# Assemble testdata/guests/selftest.S into builtin/selftest.elf with the
# machine's GNU as and ld (Debian package binutils), exactly as the test
# guests are built (internal/guesttest.Build: keep the as/ld flags identical,
# so both produce the same bytes). The output is deterministic: no build ID,
# no timestamps, no paths (ld records only the object's base name,
# selftest.o, as Build names it too). Usage: build.sh [output] (default
# builtin/selftest.elf). internal/guesttest's TestBuiltinScriptMatchesBuild
# checks that this script and Build agree byte for byte.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
guests="$here/../testdata/guests"
out="${1:-$here/selftest.elf}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
as --64 -I "$guests" -o "$tmp/selftest.o" "$guests/selftest.S"
ld -m elf_x86_64 -static -nostdlib --build-id=none -z noexecstack -T "$guests/guest.ld" -o "$tmp/selftest.elf" "$tmp/selftest.o"
cp "$tmp/selftest.elf" "$out"
