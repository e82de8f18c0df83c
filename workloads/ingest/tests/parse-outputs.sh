#!/usr/bin/env bash
# Writes what `kastell parse` makes of every Suricata, Zeek and Wazuh file of the corpora
# and of the ingest fixtures (events on stdout, rejects on stderr, with and without
# --keep-original) into DIR, one file per input and option. Run it with the binary built
# before and after a change to the parsers and `diff -r` the two directories: a change
# meant only to be faster must leave every file byte-identical.
#
#   workloads/ingest/tests/parse-outputs.sh KASTELL_BINARY DIR
set -euo pipefail
bin=$1
out=$2
repo=$(cd "$(dirname "$0")/../../.." && pwd)
corpora="$repo/../shared/corpora"
mkdir -p "$out"
inputs=()
if [ -d "$corpora" ]; then
    while IFS= read -r f; do inputs+=("$f"); done < <(
        find "$corpora/suricata" "$corpora/zeek" "$corpora/wazuh/alerts" -type f \
            \( -name '*.json' -o -name '*.jsonl' -o -name '*.log' -o -name '*.txt' \) \
            ! -name 'SOURCE.txt' ! -name 'eve-schema.json' | sort)
else
    echo "SKIPPED corpora: $corpora is absent" >&2
fi
while IFS= read -r f; do inputs+=("$f"); done < <(
    find "$repo/workloads/ingest/tests/fixtures" -type f ! -name 'SOURCE.txt' | sort)
for input in "${inputs[@]}"; do
    case "$input" in
        */suricata/*) format=suricata-eve ;;
        */zeek/*) format=zeek ;;
        */wazuh/*) format=wazuh-alerts ;;
        */greenbone/*) format=greenbone ;;
        *) continue ;;
    esac
    name=$(echo "${input#"$repo"/}" | tr '/' '_')
    for keep in "" --keep-original; do
        target="$out/$name${keep:+.original}"
        "$bin" parse --format "$format" $keep "$input" >"$target.out" 2>"$target.err" || true
    done
done
echo "$(ls "$out" | wc -l) outputs of ${#inputs[@]} inputs in $out"
