#!/usr/bin/env bash
# litmus 0.13, all five suites (basic, copymove, props, locks, http), against
# `tessera up` (3 datanodes). Passes only if every test ran and passed: no
# failure, no skipped test.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
need litmus litmus

start
(cd "$work" && timeout 900 litmus -k "$url/" >"$work/litmus.out" 2>&1) || true
tr -d '\000' <"$work/litmus.out" >"$work/litmus.log"
stop
grep -a -E "summary for|skipped|WARNING" "$work/litmus.log" || true
bad=0
for suite in basic copymove props locks http; do
  line=$(grep -a "summary for \`$suite'" "$work/litmus.log" || true)
  if [ -z "$line" ]; then echo "FAIL: suite $suite did not run"; bad=1; continue; fi
  case $line in
    *" 0 failed. 100.0%"*) ;;
    *) echo "FAIL: $line"; bad=1 ;;
  esac
done
if grep -a -q "tests\? \(was\|were\) skipped" "$work/litmus.log"; then
  echo "FAIL: litmus skipped tests"; bad=1
fi
if [ "$bad" != 0 ]; then
  grep -a -E "FAIL|SKIPPED" "$work/litmus.log" | head -40
  exit 1
fi
passed=$(grep -a -o "of [0-9]* tests run: [0-9]* passed" "$work/litmus.log" | awk '{s+=$5} END {print s}')
warnings=$(grep -a -c "WARNING" "$work/litmus.log" || true)
echo "litmus: $passed passed, 0 failed, 0 skipped, $warnings warning(s)"
