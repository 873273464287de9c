#!/usr/bin/env bash
# Fills fuzz/corpus/<target>/ (git-ignored) with the seeds: the AdmissionReviews and policies of tests/data and
# deploy/, plus the few hand-written seeds in fuzz/seeds/. Run from anywhere; idempotent.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p corpus/admission corpus/policy
cp ../tests/data/reviews/*.json corpus/admission/
cp seeds/admission/* corpus/admission/ 2>/dev/null || true
find ../deploy ../tests/data -name '*.yaml' -path '*polic*' | while read -r f; do
    cp "$f" "corpus/policy/$(echo "${f#../}" | tr / _)"
done
cp seeds/policy/* corpus/policy/ 2>/dev/null || true
echo "seeded: $(ls corpus/admission | wc -l) admission inputs, $(ls corpus/policy | wc -l) policies"
