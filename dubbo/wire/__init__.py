"""The Triple/gRPC wire protocol without I/O: message framing, compression, deadlines,
metadata and flood limits. Nothing here opens a socket, starts a thread or imports h2,
so all of it is tested with plain function calls (as h11 is)."""
