"""The `modhifi` command line.

Exit codes: 0 success, 2 bad input (one line on stderr naming the problem), 1 internal
failure. `--json` prints one JSON object on the last stdout line.
"""

from __future__ import annotations

import os
import sys

import typer

from flows.commands.evaluate import evaluate
from flows.commands.finetune import finetune
from flows.commands.init import init
from flows.commands.lineage import lineage
from flows.commands.pipeline import run, serve, stage, sweep
from flows.commands.prune import prune
from flows.commands.synthesize import synthesize
from flows.commands.train import train
from flows.commands.unlearn import unlearn

app = typer.Typer(
    name="modhifi",
    help="Modify trained networks without their training data: prune (ModHiFi-P), unlearn (ModHiFi-U), audit.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command()(init)
app.command()(train)
app.command()(evaluate)
app.command()(prune)
app.command()(run)
app.command()(stage)
app.command()(serve)
app.command()(lineage)
app.command()(sweep)
app.command()(synthesize)
app.command()(finetune)
app.command()(unlearn)


def main(argv: list[str] | None = None) -> None:
    """Entry point: a usage error and bad input raised by the engine exit 2 with one line,
    a Ctrl-C exits 130 (`interrupted`, once the command has put back what it was
    changing), anything else exits 1 with one line."""
    import pydantic

    from modhifi_core.errors import InputError
    from tasks.params import describe_validation_error

    # Hugging Face's loading/saving progress bars would break the one-line error contract.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    try:
        # not standalone: click's usage errors reach modhifi's one-line contract, not a box
        code = app(args=argv, prog_name="modhifi", standalone_mode=False)
    except typer.TyperException as exc:  # click's usage errors (exit 2) and file errors
        if type(exc).__name__ == "NoArgsIsHelpError":
            exc.show()  # `modhifi` or a group alone: its help
            sys.exit(2)
        ctx = getattr(exc, "ctx", None)
        where = f" (see {ctx.command_path} --help)" if ctx is not None else ""
        _fail(exc.format_message() + where, exc.exit_code)
    except typer.Abort:
        _fail("aborted", 1)
    except InputError as exc:
        _fail(str(exc), 2)
    except pydantic.ValidationError as exc:  # a config built from command-line values
        _fail(describe_validation_error(exc, as_option=True), 2)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except Exception as exc:  # noqa: BLE001 - the last line of defence
        if os.environ.get("MODHIFI_DEBUG"):
            raise
        _fail(f"internal failure: {type(exc).__name__}: {exc} (set MODHIFI_DEBUG=1 for the traceback)", 1)
    if code == 130:  # typer turns a KeyboardInterrupt into exit code 130, without a word
        _fail("interrupted", 130)
    if isinstance(code, int) and code:  # typer.Exit(N)
        sys.exit(code)


def _fail(message: str, code: int) -> None:
    first_line = message.strip().splitlines()[0] if message.strip() else "failed"
    print(f"error: {first_line}", file=sys.stderr)
    sys.exit(code)


if __name__ == "__main__":
    main()
