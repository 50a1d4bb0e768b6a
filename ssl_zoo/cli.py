"""`ssl-zoo` command line. Every user mistake ends in one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import importlib
import sys
from contextlib import nullcontext

from ssl_zoo.common import stopping
from ssl_zoo.common.closed_output import EXIT_READER_GONE, ReaderGone, guarded_output
from ssl_zoo.common.errors import UserError

EXIT_USER_ERROR = 2
EXIT_PREEMPTED = 3
EXIT_DIVERGED = 4

# Each verb lives in ssl_zoo/commands/<name>.py.
COMMANDS = ["train", "show", "status", "eval", "compare", "report", "export", "synthetic"]
# Verbs that write run files, and what a stop signal (SIGTERM, SIGUSR2, Ctrl-C) interrupts at once (None: training
# stops at a step boundary, ssl_zoo.common.stopping).
STOPPABLE = {"train": None, "eval": "stopped during the evaluation; results.json unchanged"}


class _Parser(argparse.ArgumentParser):
    argv: list[str] = []  # the command line being parsed (for the value after an unknown flag)

    def error(self, message: str):  # argparse's usage + message would be several lines
        flags = [t for t in message.removeprefix("unrecognized arguments: ").split() if t.startswith("--")]
        if message.startswith("unrecognized arguments:") and flags:  # `--epochs 3`: a key typed as a flag
            from ssl_zoo.config.compose import flag_hint

            after = self.argv[self.argv.index(flags[0]) + 1:] if flags[0] in self.argv else []
            message = flag_hint(flags[0], after[0] if after and not after[0].startswith("-") else None)
        print(f"ssl-zoo: error: {message} (see ssl-zoo --help)", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    from ssl_zoo import __version__

    try:
        return version("ssl-zoo")
    except PackageNotFoundError:  # imported from a source tree that was never installed
        return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ssl-zoo", description="Comparative self-supervised learning.")
    parser.add_argument("--version", action="version", version=f"ssl-zoo {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in COMMANDS:
        importlib.import_module(f"ssl_zoo.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Every verb, its output piped into a reader that may stop early (`| head`): see common.closed_output."""
    try:
        with guarded_output():
            return _main(argv)
    except ReaderGone:  # stdout's reader has gone (`| head`): a quiet end, its exit code says so (closed_output)
        return EXIT_READER_GONE


def _main(argv: list[str] | None) -> int:
    _Parser.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)  # inside: a Ctrl-C while the verbs import is one line too
        if args.command not in STOPPABLE:
            return args.func(args)
        # Stop signals end these verbs with exit 3 in every phase (ssl_zoo.common.stopping). The `ssl-zoo` process keeps
        # the handlers to its end (argv None); a caller in Python gets its own back.
        with stopping.handled(restore=argv is not None):
            message = STOPPABLE[args.command]
            with stopping.interruptible(message) if message else nullcontext():
                return args.func(args)
    except UserError as err:
        print(f"ssl-zoo: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Exception as err:
        if isinstance(err, stopping.Preempted):
            print(f"ssl-zoo: {err}; run the same command again to resume", file=sys.stderr)
            return EXIT_PREEMPTED
        # Diverged comes from the trainer, so it is imported when it is raised; verbs that never train (show,
        # status, compare, report) do not pay for importing it (timm, torchvision, dynamo).
        trainer = sys.modules.get("ssl_zoo.train.trainer")
        if trainer is not None and isinstance(err, trainer.Diverged):
            print(f"ssl-zoo: diverged: {err}; the last good checkpoint is kept", file=sys.stderr)
            return EXIT_DIVERGED
        raise
    except KeyboardInterrupt:  # a verb that does not save, or a second Ctrl-C while train/eval saves (stopping)
        print("ssl-zoo: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
