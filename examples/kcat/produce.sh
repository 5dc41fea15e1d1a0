#!/usr/bin/env bash
# Send readings of one kind to citystream with kcat: single readings and a batch envelope, keyed
# by device_id, each reading with its per-device seq.
#
#   examples/kcat/produce.sh taxi|parking|environment [--validate]
#
# Environment: BOOTSTRAP (default $CITYSTREAM_KAFKA_BOOTSTRAP, else 127.0.0.1:9092), TOPIC (default
# the kind's topic), DEVICE (default one per kind), SEQ (the device's next seq, default 1),
# SCHEMAS (the JSON Schema folder, default schemas/json of this repository), and KCAT_OPTS for
# more librdkafka settings, e.g. "-X security.protocol=SASL_SSL -X sasl.mechanism=SCRAM-SHA-512
# -X sasl.username=... -X sasl.password=...".
#
# Sends three single readings and one batch envelope of three, one message per line as "key|value"
# (kcat -K '|'; a device_id never holds '|'). With --validate, every message is first checked
# against its JSON Schema with Python's jsonschema package (pip install jsonschema), and nothing is
# sent if one is invalid. Needs kcat (Debian: apt-get install kcat) and GNU date.
#
# The local stack's default broker, Tansu 0.6, answers librdkafka's ApiVersions v3 request in a way
# kcat 1.7.1 (librdkafka 2.0.2) cannot read ("Protocol read buffer underflow for ApiVersion v3"):
# try this script against Apache Kafka (`citystream local up --broker kafka` runs one locally).
set -euo pipefail

kind=${1:-}
validate=${2:-}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bootstrap=${BOOTSTRAP:-${CITYSTREAM_KAFKA_BOOTSTRAP:-127.0.0.1:9092}}
schemas=${SCHEMAS:-$here/../../schemas/json}
seq=${SEQ:-1}

case "$kind" in
    taxi) topic=city.taxi.adas.v1 device=${DEVICE:-taxi-0042} ;;
    parking) topic=city.parking.v1 device=${DEVICE:-70b3d57ed005a1b2} ;;
    environment) topic=city.env.v1 device=${DEVICE:-env-jung-03} ;;
    *)
        echo "usage: $0 taxi|parking|environment [--validate]" >&2
        exit 2
        ;;
esac
topic=${TOPIC:-$topic}
if [[ -n "$validate" && "$validate" != "--validate" ]]; then
    echo "usage: $0 taxi|parking|environment [--validate]" >&2
    exit 2
fi

# one reading of the kind; $1 its seq, $2 its event time in epoch milliseconds
reading() {
    local seq=$1 ms=$2
    # RFC 3339 with an offset (here UTC), or integer epoch milliseconds: both are accepted
    local rfc3339
    rfc3339=$(date -u -d "@$((ms / 1000)).$(printf %03d $((ms % 1000)))" +%Y-%m-%dT%H:%M:%S.%3NZ)
    case "$kind" in
        taxi) printf '{"device_id":"%s","ts":"%s","seq":%d,"lat":35.8714,"lon":128.6014,"speed_kmh":41.5,"heading_deg":92.0,"event":"NONE"}' \
            "$device" "$rfc3339" "$seq" ;;
        parking) printf '{"device_id":"%s","ts":%d,"seq":%d,"lot_id":"suseong-alpha-1","spot_id":"A-017","occupied":true,"kind":"change","battery_v":3.31}' \
            "$device" "$ms" "$seq" ;;
        environment) printf '{"device_id":"%s","ts":"%s","seq":%d,"district":"jung","pm10_ugm3":62.0,"pm25_ugm3":38.7,"temp_c":6.5}' \
            "$device" "$rfc3339" "$seq" ;;
    esac
}

now=$(date +%s%3N)
start=$((now - 6000)) # one reading a second, up to now
messages=()
for i in 0 1 2; do
    messages+=("$(reading $((seq + i)) $((start + 1000 * i)))")
done
messages+=("{\"batch\":[$(reading $((seq + 3)) $((start + 3000))),$(reading $((seq + 4)) $((start + 4000))),$(reading $((seq + 5)) $((start + 5000)))]}")

if [[ -n "$validate" ]]; then
    printf '%s\n' "${messages[@]}" | python3 -c '
import json, sys
from jsonschema import Draft202012Validator
folder, kind = sys.argv[1], sys.argv[2]
check = {
    name: Draft202012Validator(json.load(open(f"{folder}/{kind}-{name}.schema.json", encoding="utf-8")))
    for name in ("reading", "batch")
}
bad = 0
for number, line in enumerate(sys.stdin, 1):
    message = json.loads(line)
    for error in check["batch" if "batch" in message else "reading"].iter_errors(message):
        print(f"message {number}: {error.json_path}: {error.message}", file=sys.stderr)
        bad += 1
sys.exit(1 if bad else 0)
' "$schemas" "$kind"
fi

# -K '|': each line is key|value; -X acks=all is librdkafka's default (request.required.acks=-1)
# shellcheck disable=SC2086
for message in "${messages[@]}"; do
    printf '%s|%s\n' "$device" "$message"
done | kcat -P -b "$bootstrap" -t "$topic" -K '|' ${KCAT_OPTS:-}
echo "sent ${#messages[@]} messages to $topic, keyed $device"
