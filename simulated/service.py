"""The providers' HTTP API: book and undo under an idempotency key, and the audit's read.

    POST /<leg>/book          Idempotency-Key, {"user_id", "item_id"} -> the Reservation
    POST /<leg>/undo          Idempotency-Key, {"user_id"}            -> the UndoReport
    GET  /<leg>/reservations  every row, held or not (operators only where keys are on)
    GET  /healthz             {"status": "ok"} once serving

`<leg>` is `car`, `hotel` or `flight`. The `Idempotency-Key` header is a quoted
string (draft-ietf-httpapi-idempotency-key-header), percent-encoded inside
the quotes; every attempt of one booking's step and of its undo sends the
same key. Errors are RFC 9457 problem details: a refusal is 422 (the
draft's answer to a key reused for another item too), 503 (with
Retry-After) an outage worth retrying; 409 is left to the draft's meaning,
a request under the same key still in flight, which this store never has.
"""

import asyncio
import json
import logging
import random
import re
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from http import HTTPStatus
from typing import Any, TypeVar
from urllib.parse import quote, unquote

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from api.access import ApiKeys, Unauthenticated, presented_key
from api.contract import Role
from shared import Leg
from simulated.faults import Simulation
from simulated.store import BookingRejectedError, KeyReusedError, ProviderStore

log = logging.getLogger("providers")

PROBLEM = "application/problem+json"
MAX_BODY = 16 * 1024
"""Largest request body accepted; a booking's is under 1 KiB."""
RETRY_AFTER = "1"
"""Seconds a caller should wait after a 503."""
IDEMPOTENCY_KEY = re.compile(r'"([\x21\x23-\x5b\x5d-\x7e]+)"')
"""A quoted string of visible ASCII without quotes or backslashes (the key is percent-encoded)."""
MAX_KEY = 4096
"""Longest key, percent-encoded: a booking id of 100 characters of any script fits."""
REMEMBERED_ASKS = 100_000
"""Booking keys the hotel remembers having been asked for (its first-ask outage)."""

STORES: web.AppKey[dict[Leg, ProviderStore]] = web.AppKey("stores", dict)
SIMULATION: web.AppKey[Simulation] = web.AppKey("simulation", Simulation)
KEYS: web.AppKey[ApiKeys | None] = web.AppKey("keys", ApiKeys)
ODDS: web.AppKey[random.Random] = web.AppKey("odds", random.Random)
ASKED: web.AppKey[dict[str, None]] = web.AppKey("asked", dict)

M = TypeVar("M", bound=BaseModel)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BookRequest(BaseModel):
    """The body of a booking call."""

    model_config = ConfigDict(extra="forbid", strict=True)
    user_id: str = Field(min_length=1, max_length=256)
    item_id: str = Field(min_length=1, max_length=256)


class UndoRequest(BaseModel):
    """The body of an undo call."""

    model_config = ConfigDict(extra="forbid", strict=True)
    user_id: str = Field(min_length=1, max_length=256)


class Refused(Exception):
    """A request the providers answer with a problem: a status and what went wrong."""

    def __init__(self, status: HTTPStatus, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def create_app(
    simulation: Simulation, stores: dict[Leg, ProviderStore], keys: ApiKeys | None = None
) -> web.Application:
    """Return the providers' app over their `stores`, misbehaving as `simulation` says."""
    app = web.Application(middlewares=[problems], client_max_size=MAX_BODY)
    app[STORES] = stores
    app[SIMULATION] = simulation
    app[KEYS] = keys
    app[ODDS] = random.Random(simulation.seed)
    app[ASKED] = {}
    app.router.add_post("/{leg}/book", book)
    app.router.add_post("/{leg}/undo", undo)
    app.router.add_get("/{leg}/reservations", reservations)
    app.router.add_get("/healthz", healthz)
    return app


async def book(request: web.Request) -> web.Response:
    """Hold the item under the key; the same key again answers the same reservation."""
    leg, key = leg_of(request), key_of(request)
    body = await parsed(request, BookRequest)
    simulation, odds = request.app[SIMULATION], request.app[ODDS]
    reach(request, leg)
    if leg is Leg.HOTEL and simulation.hotel_outage and first_ask(request.app[ASKED], key):
        raise Refused(HTTPStatus.SERVICE_UNAVAILABLE, "Hotel service is down")
    if chance(odds, simulation.of(leg).reject_rate):
        detail = f"the {leg} provider refused {body.item_id!r} (simulated)"
        raise Refused(HTTPStatus.UNPROCESSABLE_ENTITY, detail)
    store = request.app[STORES][leg]
    try:
        reservation = await asyncio.to_thread(store.reserve, key, body.user_id, body.item_id)
    except (BookingRejectedError, KeyReusedError) as err:
        raise Refused(HTTPStatus.UNPROCESSABLE_ENTITY, str(err)) from None
    return await answer(request, leg, asdict(reservation))


async def undo(request: web.Request) -> web.Response:
    """Release what the key holds; undoing twice releases once and answers the same."""
    leg, key = leg_of(request), key_of(request)
    body = await parsed(request, UndoRequest)
    reach(request, leg)
    if chance(request.app[ODDS], request.app[SIMULATION].of(leg).undo_reject_rate):
        detail = f"the {leg} provider refused to undo {key!r} (simulated)"
        raise Refused(HTTPStatus.UNPROCESSABLE_ENTITY, detail)
    store = request.app[STORES][leg]
    released = await asyncio.to_thread(store.release, key, body.user_id)
    return await answer(request, leg, {"leg": leg, "released": released})


async def reservations(request: web.Request) -> web.Response:
    """Return every row of one provider's store, for the audit."""
    leg = leg_of(request)
    keys = request.app[KEYS]
    if keys is not None:
        caller = keys.caller(presented_key(request.headers.get("Authorization")))
        if caller is None:
            raise Unauthenticated("this API key is not known", 'Bearer error="invalid_token"')
        if caller.role is not Role.OPERATOR:
            raise Refused(HTTPStatus.FORBIDDEN, "reading every reservation is for operators")
    rows = await asyncio.to_thread(request.app[STORES][leg].rows)
    return web.json_response({"reservations": [asdict(row) for row in rows]})


async def healthz(request: web.Request) -> web.Response:
    """Answer once serving: what a supervisor waits for."""
    return web.json_response({"status": "ok"})


def leg_of(request: web.Request) -> Leg:
    """Return the path's provider, or refuse one that does not exist."""
    name = request.match_info["leg"]
    if name not in tuple(Leg):
        raise Refused(HTTPStatus.NOT_FOUND, f"no provider named {name!r}: car, hotel or flight")
    return Leg(name)


def key_of(request: web.Request) -> str:
    """Return the request's idempotency key, decoded; refuse a request without one.

    The key must be percent-encoded as `urllib.parse.quote(key, safe="/")`
    writes it, so that one key has one spelling: `%2F` and `/`, or an
    undecodable byte and its replacement, never name the same reservation.
    """
    match = IDEMPOTENCY_KEY.fullmatch(request.headers.get("Idempotency-Key", ""))
    if match is None:
        detail = 'an Idempotency-Key header is required: a quoted string, as "jane-123456/car"'
        raise Refused(HTTPStatus.BAD_REQUEST, detail)
    encoded = match[1]
    if len(encoded) > MAX_KEY:
        raise Refused(HTTPStatus.BAD_REQUEST, f"the Idempotency-Key is over {MAX_KEY} characters")
    try:
        key = unquote(encoded, errors="strict")
    except UnicodeDecodeError:
        key = ""
    if quote(key, safe="/") != encoded:
        detail = "the Idempotency-Key must be percent-encoded UTF-8, as quote(key, safe='/')"
        raise Refused(HTTPStatus.BAD_REQUEST, detail)
    return key


async def parsed(request: web.Request, model: type[M]) -> M:
    """Return the JSON body as `model`, or refuse it saying what is wrong."""
    if request.content_type != "application/json":
        raise Refused(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "the body must be application/json")
    try:
        return model.model_validate_json(await request.read())
    except ValidationError as err:
        wrong = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in err.errors()
        )
        raise Refused(HTTPStatus.BAD_REQUEST, wrong) from None


def reach(request: web.Request, leg: Leg) -> None:
    """Fail as a provider that is down fails: before doing anything."""
    if chance(request.app[ODDS], request.app[SIMULATION].of(leg).outage_rate):
        raise Refused(HTTPStatus.SERVICE_UNAVAILABLE, f"the {leg} provider is down (simulated)")


async def answer(request: web.Request, leg: Leg, body: dict[str, Any]) -> web.Response:
    """Answer as the provider answers: late, and now and then not at all."""
    simulation = request.app[SIMULATION]
    delay = simulation.latency_seconds + simulation.of(leg).latency_seconds
    if delay:
        await asyncio.sleep(delay)
    # The work is done and committed; the caller never hears of it (if still there).
    lost = chance(request.app[ODDS], simulation.of(leg).lost_reply_rate)
    if lost and (transport := request.transport) is not None:
        transport.close()
    return web.json_response(body)


def first_ask(asked: dict[str, None], key: str) -> bool:
    """Return whether `key` is asked for the first time (remembering the latest asks only)."""
    if key in asked:
        return False
    asked[key] = None
    if len(asked) > REMEMBERED_ASKS:
        del asked[next(iter(asked))]
    return True


def chance(odds: random.Random, rate: float) -> bool:
    """Return True with probability `rate`."""
    return rate > 0 and odds.random() < rate


@web.middleware
async def problems(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer every failure as problem details; no traceback reaches a caller."""
    try:
        return await handler(request)
    except Refused as err:
        return problem(request, err.status, err.detail)
    except Unauthenticated as err:
        refused = problem(request, HTTPStatus.UNAUTHORIZED, err.detail)
        refused.headers["WWW-Authenticate"] = err.challenge
        return refused
    except web.HTTPException as err:
        if err.status < 400:
            raise
        refused = problem(request, HTTPStatus(err.status), err.reason)
        if "Allow" in err.headers:  # a 405 says which methods the route takes
            refused.headers["Allow"] = err.headers["Allow"]
        return refused
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return problem(request, HTTPStatus.INTERNAL_SERVER_ERROR, "the provider failed")


def problem(request: web.Request, status: HTTPStatus, detail: str) -> web.Response:
    """Return an RFC 9457 problem; a 503 says when to ask again."""
    body = {"title": status.phrase, "status": status, "detail": detail, "instance": request.path}
    response = web.Response(body=json.dumps(body).encode(), status=status, content_type=PROBLEM)
    if status == HTTPStatus.SERVICE_UNAVAILABLE:
        response.headers["Retry-After"] = RETRY_AFTER
    return response
