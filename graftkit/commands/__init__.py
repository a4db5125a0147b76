"""`graftkit <method> ...` subcommands, one module per method, each with register(subparsers)."""
