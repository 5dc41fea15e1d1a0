"""``python -m streams.tools.localstack up|down|status|install``, as ``citystream local``."""

from streams.tools.localstack.cli import local_command

if __name__ == "__main__":
    local_command(prog_name="citystream local")
