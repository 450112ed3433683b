"""``clinfuse view PATH``: a static, self-contained HTML site for a run, build or demo folder.

Pages are rendered with Jinja2 (autoescaping) and use one plain script and one style sheet
copied into ``<site>/assets``; nothing is loaded from the network. Images are linked by relative
path into the folder being viewed, so the site stays next to it (default ``<PATH>/site``).
``--serve`` serves that folder read-only on the loopback interface.
"""

from __future__ import annotations

import functools
import http.server
import logging
import os
from pathlib import Path

from clinfuse.report.view.site import build_site

log = logging.getLogger(__name__)

__all__ = ["build_site", "make_server"]


class _ReadOnlyHandler(http.server.SimpleHTTPRequestHandler):
    """GET and HEAD only (the base class answers 501 to anything else); no directory listings."""

    def list_directory(self, path: str | os.PathLike[str]) -> None:
        self.send_error(403, "directory listing is off")
        return None

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - base signature
        log.debug("view server: " + format, *args)


def make_server(root: str | Path, port: int = 0) -> http.server.ThreadingHTTPServer:
    """A read-only HTTP server of ``root`` bound to 127.0.0.1 (``port=0`` picks a free port)."""
    handler = functools.partial(_ReadOnlyHandler, directory=str(Path(root).resolve()))
    return http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
