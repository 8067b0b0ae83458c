"""Process entry helpers: run an async main with logging set up and a clean exit code."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable

from rft_common.logs import configure_logging
from rft_common.server import ServerConfig


def run_service(name: str, config: ServerConfig, main: Callable[[], Awaitable[None]]) -> None:
    """Configure logs, run `main()` on a fresh event loop, exit 0 after a graceful stop."""
    configure_logging(name, config.log_level, config.log_format)
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    except Exception:
        logging.getLogger(name).exception("%s failed", name)
        sys.exit(1)
