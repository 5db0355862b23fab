"""Messages a person must see even when the application configured no logging.

The library adds only a ``NullHandler`` to the ``cc_runtime`` logger (libraries must not configure
logging), and that handler also stops logging's last-resort stderr handler. So a warning sent only
through logging would vanish in a program that never called ``logging.basicConfig``: a patch that
failed, or an invalid setting, would go unnoticed. :func:`emit` logs when some real handler would
receive the record, and otherwise prints the one line on stderr itself (never both).
"""

from __future__ import annotations

import logging
import sys


def handled(logger: logging.Logger) -> bool:
    """Whether a record sent to ``logger`` reaches a handler other than a NullHandler."""
    current: logging.Logger | None = logger
    while current is not None:
        if any(not isinstance(h, logging.NullHandler) for h in current.handlers):
            return True
        current = current.parent if current.propagate else None
    return False


def emit(logger: logging.Logger, level: int, message: str) -> None:
    """Log ``message``; with no real handler configured, print it on stderr as one line instead."""
    if not logger.isEnabledFor(level):
        return  # a level chosen by the application or CC_RUNTIME_LOG_LEVEL: respected on both routes
    if handled(logger):
        logger.log(level, message)
    else:
        print(f"{logging.getLevelName(level)} {message}", file=sys.stderr)
