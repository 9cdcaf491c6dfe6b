"""`celora db studio`: a local web browser and editor for the Celora data (starlette-admin on Starlette).

app.py builds the ASGI app (no globals), views.py the generic per-model views, security.py the token / Host /
Origin / read-only guard, server.py binds the port and runs uvicorn.
"""
