"""Router: admits a connect request, picks a relay node, has it open the WebSocket (FastAPI; Lambda via Mangum)."""
