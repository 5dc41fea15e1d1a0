"""The command-line tools above the pipeline: the CLI, simulator, report, dead letters, local stack, demo, bench, soak.

Nothing below imports them.
"""
