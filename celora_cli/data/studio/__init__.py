"""`celora db studio`: a local web browser and editor for the Celora data (starlette-admin on Starlette).

app.py builds the ASGI app (no globals), views.py the generic per-model views, security.py the token / Host /
Origin / read-only guard, server.py binds the port and runs uvicorn. Beside the tables: console.py (the SQL
console), conflicts.py (a save never overwrites a newer change), history.py (a row's audit_log entries),
diagram.py (the schema as SVG), copy_rows.py (selected rows as CSV or Markdown), forms.py (form values the library
mis-reads).
"""
