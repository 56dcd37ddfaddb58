#!/usr/bin/env bash
# System packages the tests use when they can have them: bubblewrap (the
# submission sandbox). Idempotent and quiet; never fatal (tests skip with a
# clear reason when a package is missing). `setup-system.sh sandbox` installs
# only bubblewrap (what `make demo` needs), not the test browser.
set -u
if ! command -v bwrap >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && apt-get install -y -qq bubblewrap) >/dev/null 2>&1 \
    || echo "note: could not install bubblewrap; itbench refuses to score submissions without it"
fi
if [ "${1:-}" = "sandbox" ]; then exit 0; fi
if [ -f .ci/install-browser.sh ]; then bash .ci/install-browser.sh || true; fi
exit 0
