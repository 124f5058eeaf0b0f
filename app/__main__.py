"""`python -m app`: Ctrl-C is noted from this module's first line, so an interrupt while the command is still
loading (app.cli's own imports included) ends it with one line instead of a traceback."""

import signal
import sys

interrupted_while_loading: list[int] = []
signal.signal(signal.SIGINT, lambda number, _frame: interrupted_while_loading.append(number))

from app.cli import main  # noqa: E402  (after the handler, on purpose)

sys.exit(main(interrupted_while_loading=interrupted_while_loading))
