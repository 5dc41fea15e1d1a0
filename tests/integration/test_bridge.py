"""``citystream bridge mqtt`` end to end: uplinks published to a real Mosquitto, through the bridge
and a real worker, to InfluxDB and the dead-letter topic; and a bridge killed mid-stream.

Each test has a Kafka broker of its own (its topics hold only its uplinks) and runs on both brokers.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import orjson
import pytest

from schemas.timestamps import format_ms
from streams.settings import mqtt_address
from streams.tools.localstack import ManagedService, free_port
from streams.tools.workerprocess import BridgeProcess
from tests.integration.helpers import (
    WorkerProcess,
    count_points,
    create_topics,
    get,
    influx_rows,
    metric,
    now_ms,
    read_topic,
    scrape,
    unique,
    wait_for,
    worker_env,
)
from tests.unit.core.test_uplinks import CHIRPSTACK_UP, TTS_UP

pytestmark = pytest.mark.integration

PARKING, DEAD = "city.parking.v1", "city.deadletter.v1"
LOT = "bridge-lot-1"
MINUTE = 60_000


def chirpstack(dev_eui: str, f_cnt: int, ts: int, occupied: bool, **decoded: Any) -> tuple[str, bytes]:
    uplink = copy.deepcopy(CHIRPSTACK_UP)
    uplink["deviceInfo"]["devEui"] = dev_eui.upper()
    uplink["time"] = format_ms(ts).replace("Z", "+00:00")
    uplink["fCnt"] = f_cnt
    uplink["object"] = {"occupied": occupied, "battery_v": 3.6, **decoded}
    return f"application/{uplink['deviceInfo']['applicationId']}/device/{dev_eui}/event/up", orjson.dumps(uplink)


def tts(dev_eui: str, f_cnt: int, ts: int, occupied: bool, **decoded: Any) -> tuple[str, bytes]:
    uplink = copy.deepcopy(TTS_UP)
    uplink["end_device_ids"]["dev_eui"] = dev_eui.upper()
    uplink["uplink_message"]["received_at"] = format_ms(ts)
    uplink["uplink_message"]["f_cnt"] = f_cnt
    uplink["uplink_message"]["decoded_payload"] = {"occupied": occupied, **decoded}
    return f"v3/parking-daegu@ttn/devices/{dev_eui}/up", orjson.dumps(uplink)


def dev_eui(number: int) -> str:
    return f"70b3d57ed0{number:06x}"


def registry_yaml(sensors: int) -> str:
    lines = ["parking_lots:", f"  {LOT}: {{capacity: {sensors}}}", "parking_sensors:"]
    lines += [f"  {dev_eui(n)}: {{lot_id: {LOT}, spot_id: S-{n:03d}}}" for n in range(sensors)]
    return "\n".join(lines) + "\n"


async def publish(mqtt_url: str, messages: list[tuple[str, bytes]], *, burst: int = 1, pause_s: float = 0) -> None:
    """Publish each (topic, payload) with QoS 1 and wait for the broker's acknowledgements; ``burst``
    messages at once, with a pause after each burst."""
    host, port = mqtt_address(mqtt_url)
    async with aiomqtt.Client(host, port, identifier=unique("publisher"), max_inflight_messages=burst) as client:
        client.pending_calls_threshold = burst + 1
        for start in range(0, len(messages), burst):
            await asyncio.gather(*(client.publish(t, p, qos=1) for t, p in messages[start : start + burst]))
            if pause_s:
                await asyncio.sleep(pause_s)


def bridge_env(kafka: str, mqtt_url: str, registry: Path, client_id: str, **extra: str) -> dict[str, str]:
    env = {
        "CITYSTREAM_KAFKA_BOOTSTRAP": kafka,
        "CITYSTREAM_MQTT_URL": mqtt_url,
        "CITYSTREAM_MQTT_CLIENT_ID": client_id,
        "CITYSTREAM_REGISTRY": str(registry),
        "CITYSTREAM_WEB_PORT": str(free_port()),
        "CITYSTREAM_SOURCE_PARTITIONS": "4",
        "CITYSTREAM_STARTUP_TIMEOUT_S": "30",
    }
    env.update(extra)
    return env


def start_bridge(tmp_path: Path, env: dict[str, str]) -> BridgeProcess:
    bridge = BridgeProcess(tmp_path, env).start()
    port = env["CITYSTREAM_WEB_PORT"]
    wait_for(lambda: get(f"http://127.0.0.1:{port}/readyz")[0] == 200, 60, "the bridge's /readyz", bridge)
    return bridge


async def test_uplinks_of_both_formats_reach_influxdb(
    own_kafka: str, influx_url: str, mqtt_url: str, tmp_path: Path
) -> None:
    database = unique("bridge")
    registry = tmp_path / "registry.yaml"
    registry.write_text(registry_yaml(4))
    minute = now_ms() // MINUTE * MINUTE - 5 * MINUTE
    # ChirpStack: three sensors of the registry; The Things Stack: one placed by its payload
    uplinks = [
        chirpstack(dev_eui(0), 10, minute + 1_000, True),
        chirpstack(dev_eui(1), 20, minute + 2_000, True),
        chirpstack(dev_eui(2), 30, minute + 3_000, False, kind="heartbeat"),
        tts(dev_eui(100), 7, minute + 4_000, True, lot_id=LOT, spot_id="T-001", battery_v=3.3),
    ]
    repeat = chirpstack(dev_eui(0), 10, minute + 1_000, True)  # the same uplink again (a redelivery)
    later = chirpstack(dev_eui(1), 21, minute + 2 * MINUTE, False)  # the next minute: sensor 1 leaves
    unmappable = [
        chirpstack(dev_eui(3), 40, minute + 5_000, True)[0],
        tts(dev_eui(999), 1, minute + 5_000, True)[0],
    ]
    no_object = orjson.dumps({**CHIRPSTACK_UP, "object": None})
    unknown_device = tts(dev_eui(999), 1, minute + 5_000, True)[1]  # not in the registry, no lot in the payload
    binary = b"\x01\xff\x10 raw frame"
    contract = {"device_id": "pk-contract-1", "ts": minute + 6_000, "seq": 1, "lot_id": LOT, "spot_id": "C-1",
                "occupied": True}  # fmt: skip
    await create_topics(own_kafka)

    worker = WorkerProcess(
        tmp_path,
        worker_env(
            own_kafka,
            influx_url,
            database,
            CITYSTREAM_REGISTRY=str(registry),
            CITYSTREAM_WINDOW_GRACE_S="1",
            CITYSTREAM_CHECKPOINT_INTERVAL_S="0.5",
        ),
    ).start()
    env = bridge_env(
        own_kafka,
        mqtt_url,
        registry,
        unique("bridge"),
        CITYSTREAM_MQTT_TOPICS="chirpstack:application/+/device/+/event/up,tts:v3/+/devices/+/up,"
        "contract-parking:citytest/parking/#",
    )
    bridge = start_bridge(tmp_path, env)
    try:
        await publish(
            mqtt_url,
            [
                *uplinks,
                repeat,
                later,
                (unmappable[0], no_object),
                (unmappable[1], unknown_device),
                (unmappable[0], binary),
                ("citytest/parking/lot-1", orjson.dumps(contract)),
            ],
        )
        wait_for(lambda: count_points(influx_url, database, "parking", "occupied") == 6, 90, "6 raw points", worker)

        rows = {row["spot_id"]: row for row in influx_rows(influx_url, database, "SELECT * FROM parking GROUP BY *")}
        assert set(rows) == {"S-000", "S-001", "S-002", "T-001", "C-1"}  # S-001 twice: two minutes
        assert rows["S-000"]["time"] == minute + 1_000 and rows["S-000"]["occupied"] == 1
        assert rows["S-000"]["rssi_dbm"] == -87.0 and rows["S-000"]["snr_db"] == 7.25  # the strongest gateway
        assert rows["S-002"]["occupied"] == 0 and rows["S-000"]["battery_v"] == 3.6
        assert rows["T-001"]["lot_id"] == LOT and rows["T-001"]["battery_v"] == 3.3
        assert rows["T-001"]["rssi_dbm"] == -96.0

        # the lot's first minute: spots 0, 1 and T-001 occupied, and the contract reading's C-1
        wait_for(
            lambda: any(r["time"] == minute for r in influx_rows(influx_url, database, "SELECT * FROM parking_1m")),
            90,
            "the parking_1m window",
            worker,
        )
        window = next(r for r in influx_rows(influx_url, database, "SELECT * FROM parking_1m") if r["time"] == minute)
        assert window["occupied"] == 4 and window["capacity"] == 4

        readings = await read_topic(own_kafka, PARKING, expected=7, timeout=20)
        documents = [orjson.loads(r.value) for r in readings]
        assert len(documents) == 7  # the repeat reached Kafka too: the worker drops it by seq
        first = next(d for d in documents if d["device_id"] == dev_eui(0))
        assert first == {
            "device_id": dev_eui(0),
            "ts": format_ms(minute + 1_000),
            "seq": 10,
            "lot_id": LOT,
            "spot_id": "S-000",
            "occupied": True,
            "kind": "change",
            "battery_v": 3.6,
            "rssi_dbm": -87.0,
            "snr_db": 7.25,
        }
        assert next(d for d in documents if d["device_id"] == dev_eui(2))["kind"] == "heartbeat"
        keys = {r.key for r in readings}
        assert dev_eui(0).encode() in keys and b"pk-contract-1" in keys

        worker_port = int(worker.env["CITYSTREAM_WEB_PORT"])
        wait_for(
            lambda: metric(scrape(worker_port), "citystream_duplicates_total", kind="parking") >= 1,
            30,
            "the repeat counted as a duplicate",
            worker,
        )
        assert metric(scrape(worker_port), "citystream_duplicates_total", kind="parking") == 1

        letters = [orjson.loads(r.value) for r in await read_topic(own_kafka, DEAD, expected=3, timeout=30)]
        assert len(letters) == 3
        assert {letter["reason"] for letter in letters} == {"unmappable"}
        for letter in letters:
            assert letter["source"]["partition"] is None and letter["source"]["offset"] is None
            assert letter["source"]["topic"].startswith("mqtt:")
        assert sorted(letter["source"]["topic"] for letter in letters) == sorted(
            ["mqtt:" + unmappable[0], "mqtt:" + unmappable[1], "mqtt:" + unmappable[0]]
        )
        texts = {letter["payload"] for letter in letters}
        assert no_object.decode() in texts and unknown_device.decode() in texts
        binary_letter = next(letter for letter in letters if letter["payload"] is None)
        assert base64.b64decode(binary_letter["payload_b64"]) == binary
        assert "the message is not JSON" in binary_letter["errors"][0]["msg"]
        whys = sorted(letter["errors"][0]["msg"] for letter in letters)
        assert "no decoded payload" in whys[2] and "not in the registry's parking_sensors" in whys[0], whys

        series = scrape(int(env["CITYSTREAM_WEB_PORT"]))
        assert metric(series, "citystream_bridge_uplinks_total", format="chirpstack") == 7
        assert metric(series, "citystream_bridge_uplinks_total", format="tts") == 2
        assert metric(series, "citystream_bridge_uplinks_total", format="contract-parking") == 1
        assert metric(series, "citystream_bridge_readings_total", topic=PARKING) == 7
        assert metric(series, "citystream_bridge_dead_letters_total", reason="unmappable") == 3
        assert metric(series, "citystream_bridge_mqtt_connected") == 1
        assert get(f"http://127.0.0.1:{env['CITYSTREAM_WEB_PORT']}/healthz")[0] == 200
    finally:
        assert bridge.stop() == 0, bridge.log()[-3000:]
        assert worker.stop() == 0, worker.log()[-3000:]


async def test_a_killed_bridge_loses_no_uplink(
    own_kafka_service: ManagedService, influx_url: str, mqtt_url: str, tmp_path: Path
) -> None:
    """Uplinks published with QoS 1 while the bridge is SIGKILLed with uplinks on their way to a Kafka
    that does not answer (paused): the MQTT broker keeps what was not acknowledged in the bridge's
    persistent session, and the bridge started again with the same client id brings it all. The
    worker stores each uplink once."""
    own_kafka = own_kafka_service.address
    database = unique("bridge_kill")
    sensors, per_sensor = 100, 20
    registry = tmp_path / "registry.yaml"
    registry.write_text(registry_yaml(sensors))
    start = now_ms() - 60 * MINUTE
    uplinks = [
        chirpstack(dev_eui(n), f_cnt, start + f_cnt * MINUTE + n * 100, f_cnt % 2 == 0)
        for f_cnt in range(per_sensor)
        for n in range(sensors)
    ]
    total = len(uplinks)
    await create_topics(own_kafka)
    env = bridge_env(own_kafka, mqtt_url, registry, unique("bridge-kill"))
    bridge = start_bridge(tmp_path, env)
    worker = WorkerProcess(
        tmp_path, worker_env(own_kafka, influx_url, database, CITYSTREAM_REGISTRY=str(registry))
    ).start()
    port = int(env["CITYSTREAM_WEB_PORT"])

    def bridged(name: str, **labels: str) -> float:
        return metric(scrape(port), f"citystream_bridge_{name}", **labels)

    try:
        publishing = asyncio.create_task(publish(mqtt_url, uplinks, burst=200, pause_s=0.2))
        deadline = time.monotonic() + 60
        while bridged("readings_total", topic=PARKING) < total // 5:
            assert time.monotonic() < deadline, bridge.log()[-3000:]
            await asyncio.sleep(0.02)
        kafka_pid = own_kafka_service.pid
        assert kafka_pid is not None
        os.kill(kafka_pid, signal.SIGSTOP)  # Kafka stops answering: uplinks wait in the bridge for its ack
        try:
            deadline = time.monotonic() + 20
            while bridged("in_flight") < 20:
                assert time.monotonic() < deadline, "no uplinks waiting for Kafka in the bridge"
                await asyncio.sleep(0.02)
            killed = bridge
            killed.kill()  # mid-stream, with uplinks on their way to Kafka
        finally:
            os.kill(kafka_pid, signal.SIGCONT)
        assert not publishing.done(), "the publisher finished before the kill: publish more or pause longer"
        await asyncio.sleep(0.5)
        bridge = start_bridge(tmp_path, env)  # the same client id: the same session
        await publishing
        assert killed.process is not None and killed.process.returncode == -9

        records = await read_topic(own_kafka, PARKING, expected=total, timeout=60)
        sent = {(orjson.loads(r.value)["device_id"], orjson.loads(r.value)["seq"]) for r in records}
        assert len(sent) == total, f"{total - len(sent)} uplinks lost"
        assert len(records) >= total  # duplicates are allowed on Kafka
        wait_for(
            lambda: count_points(influx_url, database, "parking", "occupied") == total,
            120,
            f"{total} raw points",
            worker,
        )
        time.sleep(2)  # repeats would arrive after the last new reading
        assert count_points(influx_url, database, "parking", "occupied") == total
    finally:
        assert bridge.stop() == 0, bridge.log()[-3000:]
        assert worker.stop() == 0, worker.log()[-3000:]


async def test_simulated_parking_sensors_via_mqtt(own_kafka: str, mqtt_url: str, tmp_path: Path) -> None:
    """``citystream simulate --parking-via mqtt``: every parking reading it reports as sent arrives on
    the parking topic through the bridge, with a DevEUI as device_id; the other kinds go to Kafka."""
    from streams.settings import load_settings
    from streams.tools.simulate import SimulationOptions, run_simulation
    from streams.tools.simulate.mqtt import dev_eui_of

    await create_topics(own_kafka)
    env = bridge_env(own_kafka, mqtt_url, tmp_path / "none.yaml", unique("bridge-simulate"))
    del env["CITYSTREAM_REGISTRY"]
    bridge = start_bridge(tmp_path, env)
    try:
        options = SimulationOptions(
            duration_s=3,
            rate=400,
            taxis=0,
            lots=2,
            spots_per_lot=40,
            stations=4,
            speedup=60,
            invalid_share=0,
            duplicate_share=0,
            bootstrap=own_kafka,
            parking_via="mqtt",
            mqtt_url=mqtt_url,
        )
        report = await run_simulation(options, settings=load_settings(kafka_bootstrap=own_kafka, source_partitions=4))
        sent = report.readings_by_topic[PARKING]
        assert sent > 0 and not report.failed
        records = await read_topic(own_kafka, PARKING, expected=sent, timeout=60)
        assert len(records) == sent
        documents = [orjson.loads(r.value) for r in records]
        for document, record in zip(documents, records, strict=True):
            assert re.fullmatch(r"[0-9a-f]{16}", document["device_id"]) and record.key == document["device_id"].encode()
            assert isinstance(document["seq"], int) and document["kind"] in ("change", "heartbeat")
        assert len({d["lot_id"] for d in documents}) == 2  # the decoded payload's lots
        assert dev_eui_of("pk-x") != dev_eui_of("pk-y")
        assert report.readings_by_topic["city.env.v1"] > 0  # the stations still produce to Kafka
        series = scrape(int(env["CITYSTREAM_WEB_PORT"]))
        assert metric(series, "citystream_bridge_readings_total", topic=PARKING) == sent
        assert metric(series, "citystream_bridge_dead_letters_total", reason="unmappable") == -1  # none
    finally:
        assert bridge.stop() == 0, bridge.log()[-3000:]


async def test_bridges_of_a_share_group_split_the_uplinks(own_kafka: str, mqtt_url: str, tmp_path: Path) -> None:
    """Two bridges with CITYSTREAM_MQTT_SHARE_GROUP: each uplink reaches Kafka once, through one of them."""
    sensors = 20
    registry = tmp_path / "registry.yaml"
    registry.write_text(registry_yaml(sensors))
    await create_topics(own_kafka)
    group = unique("group")
    envs = [
        bridge_env(own_kafka, mqtt_url, registry, unique(f"bridge-{n}"), CITYSTREAM_MQTT_SHARE_GROUP=group)
        for n in range(2)
    ]
    bridges = [start_bridge(tmp_path, env) for env in envs]
    try:
        start = now_ms() - 10 * MINUTE
        uplinks = [chirpstack(dev_eui(n % sensors), n // sensors, start + n, True) for n in range(400)]
        await publish(mqtt_url, uplinks, burst=50)
        records = await read_topic(own_kafka, PARKING, expected=400, timeout=30)
        await asyncio.sleep(1)  # a copy would come now
        records = await read_topic(own_kafka, PARKING, expected=401, timeout=3)
        assert len(records) == 400
        counts = [metric(scrape(int(env["CITYSTREAM_WEB_PORT"])), "citystream_bridge_readings_total", topic=PARKING)
                  for env in envs]  # fmt: skip
        assert sum(counts) == 400 and min(counts) > 0, counts
    finally:
        for bridge in bridges:
            assert bridge.stop() == 0, bridge.log()[-3000:]


async def test_the_bridge_reconnects_after_the_mqtt_broker_restarts(
    own_kafka: str, mosquitto: ManagedService, tmp_path: Path
) -> None:
    """Mosquitto stops (its sessions saved) and starts again: the bridge reports it on /readyz,
    connects again by itself and brings the uplinks published meanwhile into its session."""
    registry = tmp_path / "registry.yaml"
    registry.write_text(registry_yaml(10))
    await create_topics(own_kafka)
    env = bridge_env(own_kafka, mosquitto.url, registry, unique("bridge-reconnect"))
    bridge = start_bridge(tmp_path, env)
    port = int(env["CITYSTREAM_WEB_PORT"])
    start = now_ms() - 10 * MINUTE
    try:
        await publish(mosquitto.url, [chirpstack(dev_eui(n), 1, start + n, True) for n in range(10)])
        await read_topic(own_kafka, PARKING, expected=10, timeout=30)
        mosquitto.stop()
        wait_for(lambda: get(f"http://127.0.0.1:{port}/readyz")[0] == 503, 30, "/readyz 503", bridge)
        assert b"mqtt" in get(f"http://127.0.0.1:{port}/readyz")[1]
        mosquitto.start()
        # published before the bridge is back: its persistent session holds them
        await publish(mosquitto.url, [chirpstack(dev_eui(n), 2, start + MINUTE + n, False) for n in range(10)])
        wait_for(lambda: get(f"http://127.0.0.1:{port}/readyz")[0] == 200, 60, "/readyz 200 again", bridge)
        records = await read_topic(own_kafka, PARKING, expected=20, timeout=60)
        assert {(orjson.loads(r.value)["device_id"], orjson.loads(r.value)["seq"]) for r in records} == {
            (dev_eui(n), seq) for n in range(10) for seq in (1, 2)
        }
        series = scrape(port)
        assert metric(series, "citystream_bridge_mqtt_connects_total") >= 2
        assert metric(series, "citystream_bridge_mqtt_errors_total") >= 1
    finally:
        assert bridge.stop() == 0, bridge.log()[-3000:]


def test_a_wrong_setting_stops_the_bridge_with_what_to_fix(tmp_path: Path) -> None:
    import subprocess
    import sys

    for env, problem in (
        ({"CITYSTREAM_MQTT_URL": "mqtt://citystream:hunter2-secret@broker"}, "CITYSTREAM_MQTT_URL"),
        ({"CITYSTREAM_MQTT_PASSWORD": "hunter2-secret", "CITYSTREAM_MQTT_TOPICS": "up/#"}, "CITYSTREAM_MQTT_TOPICS"),
    ):
        base = {k: v for k, v in os.environ.items() if not k.startswith("CITYSTREAM_")}
        result = subprocess.run(
            [sys.executable, "-m", "streams.tools.cli", "bridge", "mqtt"],
            env={**base, **env},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 2, result.stderr
        assert problem in result.stderr and "hunter2" not in result.stderr + result.stdout


async def test_the_mqtt_password_never_reaches_the_log(own_kafka: str, mqtt_url: str, tmp_path: Path) -> None:
    registry = tmp_path / "registry.yaml"
    registry.write_text(registry_yaml(1))
    secret = tmp_path / "mqtt-password"
    secret.write_text("hunter2-secret\n")
    env = bridge_env(
        own_kafka,
        mqtt_url,
        registry,
        unique("bridge-secret"),
        CITYSTREAM_MQTT_USERNAME="citystream",
        CITYSTREAM_MQTT_PASSWORD_FILE=str(secret),
        CITYSTREAM_LOG_LEVEL="debug",
    )
    bridge = start_bridge(tmp_path, env)  # Mosquitto's anonymous listener takes any password
    try:
        await publish(mqtt_url, [chirpstack(dev_eui(0), 1, now_ms() - MINUTE, True)])
        await read_topic(own_kafka, PARKING, expected=1, timeout=30)
    finally:
        assert bridge.stop() == 0, bridge.log()[-3000:]
    log = bridge.log()
    assert "connected to the MQTT broker" in log and "hunter2" not in log


async def test_a_stalled_kafka_delays_but_loses_nothing(
    own_kafka_service: ManagedService, mqtt_url: str, tmp_path: Path
) -> None:
    """Kafka stops answering for a few seconds while uplinks arrive: the bridge holds them
    unacknowledged and brings every one when Kafka answers again, without a restart."""
    own_kafka = own_kafka_service.address
    registry = tmp_path / "registry.yaml"
    registry.write_text(registry_yaml(50))
    await create_topics(own_kafka)
    env = bridge_env(own_kafka, mqtt_url, registry, unique("bridge-stall"))
    bridge = start_bridge(tmp_path, env)
    port = int(env["CITYSTREAM_WEB_PORT"])
    start = now_ms() - 20 * MINUTE
    uplinks = [chirpstack(dev_eui(n % 50), n // 50, start + n, n % 3 == 0) for n in range(1000)]
    kafka_pid = own_kafka_service.pid
    assert kafka_pid is not None
    try:
        await publish(mqtt_url, uplinks[:500], burst=100)
        os.kill(kafka_pid, signal.SIGSTOP)
        try:
            await publish(mqtt_url, uplinks[500:], burst=100)
            wait_for(lambda: metric(scrape(port), "citystream_bridge_in_flight") > 0, 20, "uplinks held", bridge)
            await asyncio.sleep(3)
            assert metric(scrape(port), "citystream_bridge_readings_total", topic=PARKING) < len(uplinks)
        finally:
            os.kill(kafka_pid, signal.SIGCONT)
        records = await read_topic(own_kafka, PARKING, expected=len(uplinks), timeout=90)
        assert len({(orjson.loads(r.value)["device_id"], orjson.loads(r.value)["seq"]) for r in records}) == 1000
        wait_for(
            lambda: metric(scrape(port), "citystream_bridge_readings_total", topic=PARKING) >= len(uplinks),
            60,
            "every reading acknowledged",
            bridge,
        )
    finally:
        assert bridge.stop() == 0, bridge.log()[-3000:]


@pytest.fixture
def tls_mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ManagedService, Path]]:
    """Mosquitto with a TLS listener (a self-signed certificate for 127.0.0.1) and a password file
    (user ``citystream``, password ``hunter2-secret``); yields it and the CA file."""
    import pwd
    import subprocess

    from streams.tools.localstack.install import debian_binary
    from streams.tools.localstack.ports import HOST, mqtt_answers

    folder = tmp_path_factory.mktemp("mosquitto-tls")
    cert, key, passwords = folder / "server.pem", folder / "server.key", folder / "passwords"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    passwords.write_text("")
    subprocess.run(
        [debian_binary("mosquitto_passwd", "mosquitto"), "-b", str(passwords), "citystream", "hunter2-secret"],
        check=True,
        capture_output=True,
    )

    def command(service: ManagedService) -> list[str]:
        config = service.workdir / "mosquitto.conf"
        config.write_text(
            f"listener {service.port} {HOST}\nallow_anonymous false\npassword_file {passwords}\n"
            f"certfile {cert}\nkeyfile {key}\nuser {pwd.getpwuid(os.geteuid()).pw_name}\n"
            "persistence false\nlog_dest stderr\nlog_type error\n"
        )
        return [debian_binary("mosquitto", "mosquitto"), "-c", str(config)]

    def answers(host: str, port: int) -> bool:  # TLS: a connection accepted is enough
        import socket

        try:
            socket.create_connection((host, port), timeout=1).close()
        except OSError:
            return False
        return not mqtt_answers(host, port)  # plain MQTT gets no CONNACK from a TLS listener

    service = ManagedService(
        "mosquitto-tls", "mosquitto", free_port(), folder, command=command, probe=answers, scheme="mqtts"
    )
    service.start(timeout=30)
    try:
        yield service, cert
    finally:
        service.stop()


async def test_mqtts_with_a_password(
    own_kafka: str, tls_mosquitto: tuple[ManagedService, Path], tmp_path: Path
) -> None:
    """mqtts:// with a CA file and a password (from a file) works; a wrong password is a 503 on
    /readyz naming the MQTT connection, and the bridge keeps trying."""
    import ssl

    broker, cafile = tls_mosquitto
    registry = tmp_path / "registry.yaml"
    registry.write_text(registry_yaml(1))
    secret = tmp_path / "mqtt-password"
    secret.write_text("hunter2-secret\n")
    await create_topics(own_kafka)
    env = bridge_env(
        own_kafka,
        broker.url,
        registry,
        unique("bridge-tls"),
        CITYSTREAM_MQTT_USERNAME="citystream",
        CITYSTREAM_MQTT_PASSWORD_FILE=str(secret),
        CITYSTREAM_MQTT_SSL_CAFILE=str(cafile),
    )
    bridge = start_bridge(tmp_path, env)
    try:
        topic, payload = chirpstack(dev_eui(0), 5, now_ms() - MINUTE, True)
        context = ssl.create_default_context(cafile=str(cafile))
        async with aiomqtt.Client(
            "127.0.0.1", broker.port, username="citystream", password="hunter2-secret", tls_context=context
        ) as client:
            await client.publish(topic, payload, qos=1)
        records = await read_topic(own_kafka, PARKING, expected=1, timeout=30)
        assert [orjson.loads(r.value)["seq"] for r in records] == [5]
    finally:
        assert bridge.stop() == 0, bridge.log()[-3000:]

    wrong = {k: v for k, v in env.items() if k != "CITYSTREAM_MQTT_PASSWORD_FILE"}
    wrong.update(CITYSTREAM_WEB_PORT=str(free_port()), CITYSTREAM_MQTT_PASSWORD="not-the-password")
    refused = BridgeProcess(tmp_path / "refused", wrong).start()
    try:
        port = wrong["CITYSTREAM_WEB_PORT"]
        wait_for(lambda: get(f"http://127.0.0.1:{port}/readyz")[0] == 503, 30, "/readyz 503", refused)
        wait_for(lambda: b"mqtt" in get(f"http://127.0.0.1:{port}/readyz")[1], 30, "the MQTT problem", refused)
        time.sleep(2)
        assert refused.alive(), refused.log()[-3000:]
        assert metric(scrape(int(port)), "citystream_bridge_mqtt_errors_total") >= 1
    finally:
        assert refused.stop() == 0, refused.log()[-3000:]
    assert "not-the-password" not in refused.log()
