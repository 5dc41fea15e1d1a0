"""The ``citystream`` command. Each subcommand lives with the code it drives; this module joins them."""

from __future__ import annotations

import click

from streams import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="citystream")
def cli() -> None:
    """citystream: validate city sensor readings from Kafka, aggregate them and write them to InfluxDB.

    Settings come from CITYSTREAM_* environment variables and a .env file; see the README.
    """


def _register() -> None:
    from streams.tools.alertconsumer import alerts_command
    from streams.tools.bench import bench_command
    from streams.tools.bridge import bridge_command
    from streams.tools.deadletters import deadletters_command
    from streams.tools.demo import demo_command
    from streams.tools.jsonschemas import schemas_command
    from streams.tools.localstack import local_command
    from streams.tools.report import report_command
    from streams.tools.simulate import simulate_command
    from streams.tools.soak import soak_command
    from streams.tools.worker import worker_command

    cli.add_command(alerts_command)
    cli.add_command(bench_command)
    cli.add_command(bridge_command)
    cli.add_command(deadletters_command)
    cli.add_command(demo_command)
    cli.add_command(local_command)
    cli.add_command(report_command)
    cli.add_command(schemas_command)
    cli.add_command(simulate_command)
    cli.add_command(soak_command)
    cli.add_command(worker_command)


def main() -> None:
    _register()
    cli()


if __name__ == "__main__":  # python -m streams.tools.cli
    main()
