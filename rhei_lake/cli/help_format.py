"""Help text as ``sqlite3``/``git`` users read it: ``Usage: rh exec [OPTIONS] SQL``, no ``<str>`` placeholders.

Typer's help writes a required argument as ``{sql}`` in the usage line and a
value's type (``<str>``, ``<bool>``) after every option and argument. Here each
command's class is swapped for one that writes arguments as click always did
(``SQL``, ``[FILE]``) and options as ``--db PATH``. The help is plain text (no
rich markup), so ``[[tables]]`` and ``[serve]`` in it print as they are.
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperArgument, TyperCommand, TyperOption


class PlainHelpCommand(TyperCommand):
    """A command whose usage line and argument list name values, not types."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                pieces.append(argument_name(param, usage=True))
        return pieces

    def format_options(self, ctx: Any, formatter: Any) -> None:
        arguments, options = [], []
        for param in self.get_params(ctx):
            if getattr(param, "hidden", False):
                continue
            if isinstance(param, TyperArgument):
                required = "  [required]" if param.required else ""
                arguments.append((argument_name(param), (param.help or "") + required))
            else:
                record = param.get_help_record(ctx)
                if record is not None:
                    options.append(record)
        if arguments:
            with formatter.section("Arguments"):
                formatter.write_dl(arguments)
        if options:
            with formatter.section("Options"):
                formatter.write_dl(options)


def argument_name(param: TyperArgument, *, usage: bool = False) -> str:
    name = param.metavar or (param.name or "").upper()
    if param.nargs != 1:
        name += "..."
    return f"[{name}]" if usage and not param.required else name


def plain_help(command: Any) -> None:
    """Give ``command`` and its subcommands plain help (see the module docstring)."""
    for sub in getattr(command, "commands", {}).values():
        plain_help(sub)
    for param in getattr(command, "params", []):
        if isinstance(param, TyperOption) and param.metavar is None and not (param.is_flag or param.count):
            longest = max(param.opts, key=len)
            param.metavar = longest.lstrip("-").upper().replace("-", "_")
    if type(command) is TyperCommand:
        command.__class__ = PlainHelpCommand
