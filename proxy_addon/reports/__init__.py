"""The run's report: one model of what a run did (``run.py``, built from the summary the proxy
writes, whose per-request records ``record.py`` makes), rendered as pure functions from that
model to text (``markdown``, ``github``, ``junit``, ``html``), and written only at the edge
(``publish.py``, called by the runners and by the addon when it stops)."""
