"""The `cbworkflow` command (running.md § Command line).

Exit status: 0 done; 1 failed (a bad file, a missing record, a port in use); 2 bad usage (an unknown command or
option, a missing or malformed argument) or a bad setting. Every failure is one line on stderr,
`cbworkflow: <sentence>`, never a traceback (`CBW_LOG_LEVEL=DEBUG` logs it for an unexpected one).
"""

from __future__ import annotations

import logging
import re
import sys

from typer._click import exceptions as usage  # Typer's own copy of Click

from ..errors import CbwError
from ..settings import SettingsError
from ..store import UnsupportedStore
from . import (
    campaign,  # noqa: F401  (registers enrol and jobs on the app)
    contacts,  # noqa: F401  (registers contacts import and export)
    people,  # noqa: F401  (registers users create and list)
    simulation,  # noqa: F401  (registers simulate)
)
from .commands import app
from .files import CliError

__all__ = ["CliError", "app", "main"]

log = logging.getLogger("cbworkflow.cli")


def _say(message: str) -> None:
    print(f"cbworkflow: {' '.join(message.split())}", file=sys.stderr, flush=True)


def _unforeseen(exc: BaseException) -> str:
    """`Type: first line of the message`, without the driver's class name that SQLAlchemy puts first."""
    lines = str(exc).strip().splitlines()
    first = re.sub(r"^\([\w.]+\) ", "", lines[0]) if lines else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    """Run the command in `argv` (default: the process's arguments) and return its exit status."""
    import typer

    from ..services.transfer import TransferError

    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name="cbworkflow", standalone_mode=False)
    except usage.NoArgsIsHelpError as exc:  # `cbworkflow` or `cbworkflow tokens` alone: the help
        print(exc.ctx.get_help() if exc.ctx else "", file=sys.stderr)
        return 2
    except usage.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx else "cbworkflow"
        _say(f"{exc.format_message().rstrip('.')}; see '{where} --help'")
        return 2
    except usage.ClickException as exc:
        _say(exc.format_message())
        return 1
    except (typer.Abort, KeyboardInterrupt):
        _say("interrupted")
        return 130
    except (SettingsError, UnsupportedStore) as exc:
        _say(str(exc))
        return 2
    except (CliError, TransferError) as exc:
        _say(str(exc))
        return 1
    except CbwError as exc:
        _say(exc.detail)
        return 1
    except OSError as exc:
        log.debug("the command failed", exc_info=True)
        _say(f"{exc.filename}: {exc.strerror}" if exc.filename and exc.strerror else _unforeseen(exc))
        return 1
    except Exception as exc:  # a failure nobody foresaw: still one line, with the traceback in the debug log
        log.debug("the command failed", exc_info=True)
        _say(_unforeseen(exc))
        return 1
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
