"""When a request matches a recording: the comparable form of a request and its key
(``canonical``), why a request differs from the nearest recording (``difference``), JSON paths,
normalisers, multipart fields and hosts.
"""
