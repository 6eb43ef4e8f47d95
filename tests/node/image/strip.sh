#!/usr/bin/env bash
# strip.sh ROOTFS VENV: drop what the image never runs, as operator/Dockerfile does
# (no __pycache__, no pip cache), plus the test suites the big scientific packages
# ship inside themselves. Only packages known not to import their tests/ at run
# time are listed: evidently, for one, has a real `evidently.tests` module.
set -euo pipefail
root=$1
venv=$root$2
site=$(echo "$venv"/lib/python3*/site-packages)
[ -d "$site" ] || { echo "strip.sh: no site-packages under $venv" >&2; exit 1; }

before=$(du -sm "$root" | cut -f1)
find "$root" -xdev -name __pycache__ -type d -prune -exec rm -rf {} +
find "$root" -xdev -name '*.py[co]' -type f -delete
for pkg in pandas numpy scipy sklearn pyarrow matplotlib skops statsmodels sqlalchemy \
  networkx plotly; do
  if [ -d "$site/$pkg" ]; then
    find "$site/$pkg" -type d \( -name tests -o -name testing_data \) -prune -exec rm -rf {} +
  fi
done
# Headers and static libraries are for compiling against these packages.
find "$site" -type d -name include -path '*/numpy/*' -prune -exec rm -rf {} +
find "$site" -name '*.a' -type f -delete
rm -rf "$root"/root/.cache "$root"/var/cache/apt/archives/*.deb
echo "strip.sh: ${before} MB -> $(du -sm "$root" | cut -f1) MB" >&2
