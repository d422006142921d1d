#!/usr/bin/env bash
# What the end-to-end tests (tests/e2e) need from the machine: Debian's chromium, which Playwright drives
# headless (Playwright's own browser download is not used), and a Chinese font so that the screenshots
# are legible (fonts-wqy-microhei, 1.6 MB). Installs what is missing with apt-get (through sudo when not
# root). Never fails the build: without a chromium the e2e tests are skipped, each with the reason.
set -u
packages=()
have_browser=""
for candidate in "${E2E_CHROMIUM:-}" /usr/bin/chromium /usr/bin/chromium-browser; do
    if [ -n "$candidate" ] && [ -x "$candidate" ]; then
        have_browser=1
        break
    fi
done
[ -n "$have_browser" ] || packages+=(chromium)
if ! { command -v fc-list >/dev/null 2>&1 && [ -n "$(fc-list :lang=zh 2>/dev/null)" ]; }; then
    packages+=(fonts-wqy-microhei)
fi
[ ${#packages[@]} -eq 0 ] && exit 0

say() { echo "ensure_browser: $*" >&2; }
if [ "${E2E_NO_INSTALL:-}" = "1" ]; then
    say "missing ${packages[*]} and E2E_NO_INSTALL=1: not installing (without chromium the e2e tests are skipped)"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    say "missing ${packages[*]} and no apt-get: install them yourself (or set E2E_CHROMIUM);" \
        "without chromium the e2e tests are skipped"
    exit 0
fi
SUDO=()
if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO=(sudo -n)
    else
        say "missing ${packages[*]}, not root and no password-less sudo: run" \
            "'sudo apt-get install -y ${packages[*]}'; without chromium the e2e tests are skipped"
        exit 0
    fi
fi
say "installing ${packages[*]} for the end-to-end tests (apt-get)"
if ! { "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q \
       && "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${packages[@]}"; } >&2; then
    say "apt-get could not install ${packages[*]}; without chromium the e2e tests are skipped"
fi
exit 0
