"""The one argument convention of every ``leuk-lightning`` tool: argparse, with each option also
accepted in the ``key=value`` spelling of training overrides.

``leuk-lightning predict --ckpt-path run/x.ckpt --input cells/`` and
``leuk-lightning predict ckpt_path=run/x.ckpt input=cells/`` are the same call: the second form is
rewritten to the first before argparse sees it, so both go through one parser, one ``--help``
(usage, every option with its default, examples) and one error path. An unknown option or key is
never ignored: it exits with status 2 and a "did you mean ..." suggestion.

Tools that rebuild a run (``eval``, ``explain``) also take dotted overrides of the run's config
(``paths.data_dir=/data``); :func:`leuk_lightning.utils.runs.load_run_config` rejects keys the run's
config does not have.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from leuk_lightning.errors import did_you_mean, user_error

_KEY_VALUE = re.compile(r"^([A-Za-z_][A-Za-z0-9_\-]*)=(.*)$", re.DOTALL)
_DOTTED = re.compile(r"^\+{0,2}~?[A-Za-z_][\w\-]*(\.[\w\-]+)+=")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Every option's default (or "required") after its help; description and examples as
    written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.required and action.option_strings:
            return f"{text} (required)"
        if not action.option_strings or action.default in (None, False, argparse.SUPPRESS):
            return text
        if action.default == []:
            return text
        return f"{text} (default: %(default)s)"


def optional_choice(*choices: str) -> Callable[[str], str | None]:
    """An argparse ``type``: one of ``choices``, or ``null``/``none`` for None."""

    def parse(value: str) -> str | None:
        if value.lower() in {"null", "none", ""}:
            return None
        if value not in choices:
            hint = did_you_mean(value, choices)
            raise argparse.ArgumentTypeError(f"{value!r} is not one of {choices} or null{hint}")
        return value

    parse.__name__ = "|".join(choices)
    return parse


class ToolParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` for one subcommand: ``key=value`` spelling, examples, suggestions.

    ``overrides=True`` collects dotted ``a.b=value`` tokens (config overrides of a rebuilt run)
    in ``args.overrides`` instead of rejecting them.
    """

    def __init__(
        self,
        command: str,
        description: str,
        examples: Sequence[str],
        overrides: bool = False,
        **kwargs: Any,
    ) -> None:
        epilog = "Every option can also be written key=value (ckpt_path=x for --ckpt-path x).\n"
        if overrides:
            epilog += "Dotted key=value arguments (paths.data_dir=/d) override the run's config.\n"
        epilog += "\nexamples:\n" + "\n".join(f"  {e}" for e in examples)
        super().__init__(
            prog=f"leuk-lightning {command}",
            description=description,
            epilog=epilog,
            formatter_class=_Formatter,
            allow_abbrev=False,
            **kwargs,
        )
        self.accepts_overrides = overrides

    # ----------------------------------------------------------------------------- parsing
    def _option_names(self) -> dict[str, str]:
        """``key`` spelling (dest-like, ``ckpt_path``) -> option string (``--ckpt-path``)."""
        names: dict[str, str] = {}
        for action in self._actions:
            for opt in action.option_strings:
                if opt.startswith("--"):
                    names[opt[2:].replace("-", "_")] = opt
        return names

    def _rewrite(self, argv: Sequence[str]) -> tuple[list[str], list[str]]:
        names = self._option_names()
        out: list[str] = []
        overrides: list[str] = []
        for token in argv:
            if token.startswith("-"):
                out.append(token)
                continue
            if self.accepts_overrides and _DOTTED.match(token):
                overrides.append(token)
                continue
            match = _KEY_VALUE.match(token)
            if match is None:
                out.append(token)
                continue
            key, value = match.group(1).replace("-", "_"), match.group(2)
            if key not in names:
                self.error(f"unknown option '{key}'{did_you_mean(key, names)}")
            action = next(a for a in self._actions if names[key] in a.option_strings)
            if action.nargs == 0:  # a switch: key=true/false
                if value.lower() in {"true", "1", "yes"}:
                    out.append(names[key])
                elif value.lower() not in {"false", "0", "no"}:
                    self.error(f"{key}={value}: expected true or false")
                continue
            out.append(f"{names[key]}={value}")
        return out, overrides

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        argv = list(sys.argv[1:] if args is None else args)
        rewritten, overrides = self._rewrite(argv)
        opts = [o for a in self._actions for o in a.option_strings]
        for token in rewritten:  # before argparse, whose first complaint may be another one
            name = token.split("=")[0]
            if token.startswith("--") and token != "--" and name not in opts:
                self.error(f"unknown option '{name}'{did_you_mean(name, opts)}")
        parsed, extras = self.parse_known_args(rewritten, namespace)
        if extras:
            self.error(f"unexpected argument '{extras[0]}'")
        if self.accepts_overrides:
            parsed.overrides = overrides
        return parsed

    def error(self, message: str) -> NoReturn:
        """One line on stderr (with the usage above it) and exit status 2."""
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def run_tool(
    parser: ToolParser,
    action: Callable[[argparse.Namespace], int | None],
    argv: Sequence[str] | None = None,
) -> int:
    """Parse ``argv`` and run ``action``; the exit status: 0, or 2 for bad options (argparse's
    message) and for a :class:`LeukError` (one line on stderr naming the file or setting)."""
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] %(message)s")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else 2
    try:
        return int(action(args) or 0)
    except Exception as exc:
        err = user_error(exc)
        if err is None:
            raise
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
