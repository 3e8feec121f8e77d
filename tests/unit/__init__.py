"""Pure code, no I/O: no database, no sockets, no subprocess. The whole folder runs in seconds."""
