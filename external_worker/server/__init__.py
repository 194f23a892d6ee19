"""The socket server and one handler per wire method."""
