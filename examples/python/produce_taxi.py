"""Send taxi ADAS readings to citystream's city.taxi.adas.v1: single readings and batch envelopes.

    pip install aiokafka jsonschema
    python examples/python/produce_taxi.py --bootstrap kafka-1:9092 --validate

Every message is one JSON object keyed by the reading's device_id: a reading, or a batch envelope
{"batch": [...]} of 1 to 1000 readings of that device. Each reading carries seq, a counter per
device that the processor uses to spot duplicates. With --validate, each message is checked
against the JSON Schema files (schemas/json/ of the citystream repository, or --schemas DIR) before
it is sent, and the first invalid one stops the run. Add aiokafka's security_protocol, sasl_* and
ssl_context arguments to AIOKafkaProducer for a secured cluster.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

TOPIC = "city.taxi.adas.v1"
SCHEMAS = Path(__file__).resolve().parents[2] / "schemas" / "json"
READING_SCHEMA, BATCH_SCHEMA = "taxi-reading.schema.json", "taxi-batch.schema.json"
MAX_MESSAGE_BYTES = 1024 * 1024
KST = timezone(timedelta(hours=9))


def reading(device_id: str, seq: int, ts_ms: int, rng: random.Random) -> dict[str, Any]:
    """One taxi reading: its GPS fix in Daegu, speed, and now and then an ADAS warning."""
    event = rng.choice(["NONE"] * 8 + ["FCW", "LDW_L"])
    document: dict[str, Any] = {
        "device_id": device_id,
        # RFC 3339 with an offset, here Korea's; integer epoch milliseconds are accepted too
        "ts": datetime.fromtimestamp(ts_ms / 1000, KST).isoformat(timespec="milliseconds"),
        "seq": seq,
        "lat": round(35.8714 + rng.uniform(-0.05, 0.05), 6),
        "lon": round(128.6014 + rng.uniform(-0.05, 0.05), 6),
        "speed_kmh": round(rng.uniform(0, 80), 1),
        "heading_deg": round(rng.uniform(0, 359.9), 1),
        "event": event,
    }
    if event == "FCW":
        document["ttc_s"] = round(rng.uniform(0.5, 3.0), 2)
    return document


def load_checker(folder: Path) -> Any:
    """A function raising ValueError for a message its JSON Schema refuses."""
    from jsonschema import Draft202012Validator

    validators = {
        name: Draft202012Validator(json.loads((folder / name).read_text(encoding="utf-8")))
        for name in (READING_SCHEMA, BATCH_SCHEMA)
    }

    def check(message: dict[str, Any]) -> None:
        validator = validators[BATCH_SCHEMA if "batch" in message else READING_SCHEMA]
        for error in validator.iter_errors(message):
            raise ValueError(f"{'/'.join(map(str, error.absolute_path)) or 'message'}: {error.message}")

    return check


async def produce(args: argparse.Namespace) -> int:
    check = load_checker(args.schemas) if args.validate else None
    rng = random.Random(args.seed)
    producer = AIOKafkaProducer(bootstrap_servers=args.bootstrap, acks="all")
    await producer.start()
    sent = []
    try:
        for number in range(1, args.devices + 1):
            device_id = f"taxi-{number:04d}"
            first_seq = rng.randrange(1_000_000)  # a device's counter goes on from where it was
            total = args.readings + args.batch_size
            start_ms = time.time_ns() // 1_000_000 - 1000 * total  # one reading a second, up to now
            readings = [reading(device_id, first_seq + i, start_ms + 1000 * i, rng) for i in range(total)]
            singles, batch = readings[: args.readings], readings[args.readings :]
            messages = singles + ([{"batch": batch}] if batch else [])
            for message in messages:
                if check is not None:
                    check(message)
                value = json.dumps(message, separators=(",", ":")).encode()
                if len(value) > MAX_MESSAGE_BYTES:
                    raise ValueError(f"a message of {len(value)} bytes is over the 1 MiB limit: send smaller batches")
                sent.append(await producer.send(args.topic, value, key=device_id.encode()))
        await asyncio.gather(*sent)  # every message acknowledged by the broker
    finally:
        await producer.stop()
    return len(sent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--bootstrap",
        default=os.environ.get("CITYSTREAM_KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
        help="Kafka bootstrap servers, host:port[,...] (default: $CITYSTREAM_KAFKA_BOOTSTRAP, else 127.0.0.1:9092)",
    )
    parser.add_argument("--topic", default=TOPIC, help="default: %(default)s")
    parser.add_argument("--devices", type=int, default=3, help="taxis, each sending its own messages")
    parser.add_argument("--readings", type=int, default=5, help="single-reading messages per taxi")
    parser.add_argument("--batch-size", type=int, default=10, help="readings in each taxi's batch envelope (0: none)")
    parser.add_argument("--validate", action="store_true", help="check each message against the JSON Schema first")
    parser.add_argument("--schemas", type=Path, default=SCHEMAS, help="folder of the JSON Schema files")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    if not 0 <= args.batch_size <= 1000:
        parser.error("--batch-size is 0 to 1000")
    try:
        count = asyncio.run(produce(args))
    except ValueError as error:  # a message the schema refuses, or one over 1 MiB
        raise SystemExit(f"stopped: {error}") from None
    print(f"sent {count} messages to {args.topic}")


if __name__ == "__main__":
    main()
