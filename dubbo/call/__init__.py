"""The life of one call as a state machine, without I/O: ``server_stream.ServerStream``
and ``client_stream.ClientStream`` are fed h2 events and user actions and return what to
send, so every way a call can end is one transition, tested with no socket or thread."""
