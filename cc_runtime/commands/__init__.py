"""``cc-runtime`` subcommands other than doctor and bench: each module has ``add_parser(sub)`` and
``main(args) -> int`` and is one entry in :data:`cc_runtime.cli.COMMANDS`."""
