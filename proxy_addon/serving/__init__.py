"""What a replay sends: response bytes (``wire``), the loopback servers that pace a stream or
replay a WebSocket conversation, and the wording of a miss.
"""
