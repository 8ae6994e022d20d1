"""Nothing the proxy prints shows a secret: mitmdump's flow lines, and every log line.

mitmdump's Dumper prints each flow (the method and the whole URL, query included) from its
``response`` and ``error`` hooks, which run after every ``-s`` script's. These hooks, the last
of ours, therefore replace the secrets in ``flow.request`` once it has gone upstream and been
recorded: secret query values, known secrets and key shapes in the URL, and secret request
header values (shown at ``flow_detail`` 2). The response is not touched: for a response that is
not streamed this hook runs before the client gets it. A filter on the log's handlers replaces
secrets in every log line, mitmproxy's own included (it echoes a malformed request line as it
came), and writes its control characters as visible escapes (``printable``): a path's ``%1B``,
decoded for the key, never reaches the terminal as ESC.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from mitmproxy import http

from proxy_addon.mitm.flow import flow_state
from proxy_addon.mitm.state import State
from proxy_addon.printable import printable
from proxy_addon.redaction import redact
from proxy_addon.redaction.secret_rules import REDACTED

_TRACEBACK = logging.Formatter()
_REDACTED = REDACTED.encode()


class _LogFilter(logging.Filter):
    """Replaces the secrets the proxy knows of in a log record before any handler prints it."""

    def __init__(self, state: State) -> None:
        super().__init__("cassette-secrets")
        self.state = state

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a record whose arguments do not format: left as it is
            return True
        folded = bool(record.exc_info)
        if folded:  # a traceback quotes the exception's text: it is filtered too
            message += "\n" + _TRACEBACK.formatException(record.exc_info)  # type: ignore[arg-type]
            record.exc_info = record.exc_text = None
        shown = printable(self.state.settings.rules.secrets.replace_in_log(message))
        if folded or shown != message:
            record.msg, record.args = shown, None
        return True


class OutputScrubber:
    def __init__(self, state: State) -> None:
        self.state = state
        self._filter = _LogFilter(state)

    def running(self) -> None:
        for handler in logging.getLogger().handlers:
            if self._filter not in handler.filters:
                handler.addFilter(self._filter)

    def done(self) -> None:
        for handler in logging.getLogger().handlers:
            handler.removeFilter(self._filter)

    def response(self, flow: http.HTTPFlow) -> None:
        self._scrub(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._scrub(flow)

    def _scrub(self, flow: http.HTTPFlow) -> None:
        st = flow_state(flow)
        secrets = st.secrets if st is not None else self.state.settings.rules.secrets
        request = flow.request
        if "?" in request.path or secrets.might_hold(request.path):
            shown = urlsplit(redact.redact_url(request.url, secrets))
            path = shown.path + (f"?{shown.query}" if shown.query else "")
            if path != request.path:
                request.path = path
        # the request has gone upstream; the response (not yet sent to the client when this
        # hook runs) is left as it is. Each secret header's value is replaced where it stands,
        # in one pass over the fields.
        secret = secrets.raw_headers
        fields = request.headers.fields
        if not secret.isdisjoint([k.lower() for k, _ in fields]):
            request.headers.fields = tuple(
                [(k, _REDACTED if k.lower() in secret else v) for k, v in fields]
            )
