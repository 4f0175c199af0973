"""One module per `nfebench` subcommand: `add_arguments(parser)` and `run(args) -> int`."""
