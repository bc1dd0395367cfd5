"""The OTP web app of ``examples/fastapi_app.py``, meant to run under several worker processes.

    export CASCADE_API_KEY=...  CASCADE_REDIS_URL=redis://localhost:6379/0
    uvicorn examples.multi_worker.app:app --workers 4          # or gunicorn -k uvicorn.workers.UvicornWorker -w 4

Each worker process builds its own ``CascadeClient`` in the app's lifespan. Nothing else is needed:
with ``CASCADE_REDIS_URL`` set and no ``rate_limit`` passed, every client shares one rate limit per
account (the key is a SHA-256 of the API key) with every other process using the same Redis, and
its ``send()`` calls are interactive: they go ahead of bulk jobs on the same account, such as

    cascade-async send big.jsonl --redis "$CASCADE_REDIS_URL"

which leaves the interactive reserve to the web app. See README.md next to this file.
"""

from __future__ import annotations

from examples.fastapi_app import create_app

app = create_app()
