#!/usr/bin/env bash
# Make sure Debian's headless-capable Chromium is installed for the report's browser test.
# Installs the `chromium` package with apt when it is missing and we are root; otherwise says
# why not and exits 0 (the browser test then skips with a reason, unless
# HYDRAGUARD_REQUIRE_BROWSER=1, as in CI, where a missing browser fails the test).
# Never downloads a browser build of its own: only Debian's package.
set -euo pipefail
for c in chromium chromium-browser; do
  if command -v "$c" >/dev/null 2>&1; then exit 0; fi
done
if [ "$(id -u)" != 0 ]; then
  echo "ensure-chromium: chromium is missing and we are not root: the browser test will be" \
    "skipped (install Debian's chromium package)" >&2
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-chromium: chromium is missing and there is no apt-get: the browser test will" \
    "be skipped" >&2
  exit 0
fi
echo "ensure-chromium: installing Debian's chromium package" >&2
export DEBIAN_FRONTEND=noninteractive
if ! (apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium) \
    >/tmp/ensure-chromium.log 2>&1; then
  echo "ensure-chromium: apt-get install chromium failed (see /tmp/ensure-chromium.log):" \
    "the browser test will be skipped" >&2
  tail -5 /tmp/ensure-chromium.log >&2 || true
fi
exit 0
