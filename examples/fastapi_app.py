"""A FastAPI app that sends an OTP per request through one shared, coalescing client.

    pip install fastapi uvicorn
    CASCADE_API_KEY=... uvicorn examples.fastapi_app:app

Concurrent requests share batches (see the README), so a burst of 1,000 sign-ups makes about
1,000 / batch_size HTTP requests to the provider instead of 1,000.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from pydantic import BaseModel

from cascade_async import DEFAULT_BASE_URL, CascadeClient, CascadeError, Message, MessageType, ValidationError


class OtpRequest(BaseModel):
    phone: str


class OtpResponse(BaseModel):
    trackingId: str
    messageId: str


def cascade(request: Request) -> CascadeClient:
    """The dependency that hands the app's one client to a handler."""
    client: CascadeClient = request.app.state.cascade
    return client


def create_app(**client_options: Any) -> FastAPI:
    """``client_options`` go to ``CascadeClient`` (tests pass the sandbox's ``base_url``)."""
    client_options.setdefault("base_url", os.environ.get("CASCADE_BASE_URL", DEFAULT_BASE_URL))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # One client for the app's whole life: one pool, one rate limiter, shared batches.
        async with CascadeClient(**client_options) as client:
            app.state.cascade = client
            yield
        # leaving the block flushed every queued send before the pool closed

    app = FastAPI(lifespan=lifespan)

    @app.post("/otp")
    async def send_otp(body: OtpRequest, client: Annotated[CascadeClient, Depends(cascade)]) -> OtpResponse:
        code = f"{secrets.randbelow(10**6):06d}"
        try:
            message = Message(
                id=f"otp-{secrets.token_hex(8)}",
                from_name="MyApp",
                to_phone=body.phone,
                message_type=MessageType.TRANSACTION,
                text=f"Your code is {code}",
                ttl=300,
            )
        except ValidationError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from None
        try:
            result = await client.send(message)
        except CascadeError as exc:
            raise HTTPException(status_code=502, detail=f"message not sent: {exc}") from None
        assert result.message_id is not None
        return OtpResponse(trackingId=result.tracking_id, messageId=result.message_id)

    return app


app = create_app()
