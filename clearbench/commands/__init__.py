"""CLI subcommands: one module each, with ``add_parser(subparsers)`` and ``run(args) -> int``.

The registry is a literal tuple filled by explicit imports (no auto-discovery).
"""
from clearbench.commands import (attack, claims, evaluate, export, finetune, generate, leaderboard, list as list_, pretrain, run,
                                 unlearn)

COMMANDS = (generate, pretrain, finetune, unlearn, evaluate, attack, leaderboard, claims, export, list_, run)
