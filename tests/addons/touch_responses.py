"""Test-only addon: changes every response it sees, as a user's own addon may.

Loaded after the cassette addon with ``-s``. In the ``response`` hook it appends a header
``x-touched`` numbered by the response, removes ``x-request-id`` and appends ``!`` to the body:
a replay that shared one response object between hits would show the earlier changes in the
later answers (two ``x-touched`` values, a missing header, ``!!``). The runner's control
channel (``cassette.control``, whose ``/status`` answer is the start-up handshake) is left
alone, as an addon that changes API traffic would.
"""

from mitmproxy import http


class TouchResponses:
    def __init__(self) -> None:
        self.seen = 0

    def response(self, flow: http.HTTPFlow) -> None:
        if flow.response is None or flow.request.pretty_host == "cassette.control":
            return
        self.seen += 1
        flow.response.headers.add("x-touched", str(self.seen))
        flow.response.headers.pop("x-request-id", None)
        flow.response.content = (flow.response.content or b"") + b"!"


addons = [TouchResponses()]
