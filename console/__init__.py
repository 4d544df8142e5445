"""Console: WebSocket server, intake and read API, operator pages."""
