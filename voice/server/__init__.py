"""The WebSocket server: realtime protocol (sans-I/O), websockets shell and browser client."""
