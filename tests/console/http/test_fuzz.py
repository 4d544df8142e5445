"""Hostile input at the HTTP edge: every operation of our own OpenAPI document is fuzzed.

Schemathesis turns `/openapi.json` into Hypothesis strategies of valid and invalid requests; they
are sent to the real app, served by uvicorn on the real PostgreSQL, Redis and a Kafka producer on
the test broker, with valid credentials (so the fuzz reaches the handlers) and without. What must
hold for any request: no 5xx, nothing unhandled in the server, and every 4xx is JSON with `error`
and a `message` that names the problem.

Bounded and derandomized for CI. For a longer hunt: `FUZZ_EXAMPLES=2000` (examples per operation)
and `FUZZ_SEED=<n>` (a different, still repeatable, exploration); `FUZZ_VERBOSE=1` prints the
statuses each operation answered; `FUZZ_ONLY=/api/v1/rates` fuzzes only the matching operations.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import redis.asyncio as aioredis
import requests
import schemathesis
import uvicorn
from aiokafka import AIOKafkaProducer
from hypothesis import HealthCheck, given, seed
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.schemas import APIOperation

from console.auth import ApiKeys, Sessions
from console.http import PHOTO_TYPES, ConsoleServices, create_http_app
from console.intake import IntakeService
from console.passwords import hash_password
from console.registry import RegistryService
from contracts import topics
from devtools.seed import DEMO_API_KEYS, api_key_hash
from devtools.stack import free_port
from infra.db import create_pool
from infra.kafka import make_producer, start_producer
from infra.kafka_admin import create_topics
from infra.livestate import LiveState
from infra.settings import Settings

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "50"))
VERBOSE = bool(os.environ.get("FUZZ_VERBOSE"))  # print the statuses seen per operation
ONLY = os.environ.get("FUZZ_ONLY", "")  # fuzz only the operations whose "METHOD /path" contains it
SEED = os.environ.get("FUZZ_SEED")
BODY_LIMIT = 64 * 1024

# Which API key each key-protected path takes (anything else key-protected: the admin's).
KEY_FOR_PATH = {
    "/api/v1/intake/camera-alarms": "camera",
    "/api/v1/intake/hotline-tickets": "hotline",
    "/api/v1/intake/app-reports": "app",
    "/api/v1/intake/positions": "positions",
}
OPERATOR = ("fuzz-duty", "fuzz-duty-password")
ADMIN = ("fuzz-admin", "fuzz-admin-password")
RESPONDER = ("FUZZ-R1", "fuzz-responder-password")
CREDENTIAL_WORDS = ("x-api-key", "authorization", "bearer", "log in", "password", "token", "session")


class _Server(uvicorn.Server):
    """uvicorn without signal handlers: pytest owns the process."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass(frozen=True)
class Target:
    base_url: str
    schema: Any
    operator_token: str
    admin_token: str
    responder_token: str
    spare_token: str  # an operator's, for the logout route to end


async def _seed_callers(pool: asyncpg.Pool) -> None:
    """The demo API keys, one operator and one responder with a login (idempotent)."""
    await pool.execute(
        """INSERT INTO api_keys (key_hash, role, name)
           SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) ON CONFLICT DO NOTHING""",
        [api_key_hash(k) for k in DEMO_API_KEYS.values()],
        list(DEMO_API_KEYS),
        [f"fuzz {r}" for r in DEMO_API_KEYS],
    )
    await pool.execute(
        """INSERT INTO responders (responder_id, name, kind, org, on_duty)
           VALUES ($1, '模糊测试员', 'volunteer', '测试队', true) ON CONFLICT DO NOTHING""",
        RESPONDER[0],
    )
    for username, password, role, responder_id in (
        (*OPERATOR, "operator", None),
        (*ADMIN, "admin", None),
        (*RESPONDER, "responder", RESPONDER[0]),
    ):
        await pool.execute(
            """INSERT INTO users (username, display_name, role, password_hash, responder_id)
               VALUES ($1, $1, $2, $3, $4) ON CONFLICT (username) DO NOTHING""",
            username,
            role,
            hash_password(password),
            responder_id,
        )


@pytest.fixture(scope="module")
async def target(pg: asyncpg.Pool, redis: aioredis.Redis, settings: Settings) -> AsyncIterator[Target]:
    """The console's HTTP app wired the way console.main wires it, served on a free port."""
    # Tansu refuses idempotent producers; a small body limit lets a test overrun it cheaply.
    # The fuzz is about what each request holds, not how many: its thousands of requests on a few
    # sessions would otherwise meet the request limits (tested in test_access.py).
    s = replace(
        settings,
        kafka_idempotence=False,
        http_port=free_port(),
        max_body_bytes=BODY_LIMIT,
        account_requests_per_s=1e6,
        public_requests_per_s=1e6,
    )
    await create_topics(s)
    pool = await create_pool(s.database_url, max_size=5)
    await _seed_callers(pool)
    store_redis = aioredis.Redis.from_url(s.redis_url)
    producer: AIOKafkaProducer = make_producer(s)
    await start_producer(producer)
    live = LiveState(store_redis)

    async def send_command(command: dict[str, Any]) -> None:
        await producer.send_and_wait(
            topics.INCIDENTS_COMMANDS, key=command["incident_id"].encode(), value=orjson.dumps(command)
        )

    services = ConsoleServices(
        settings=s,
        pool=pool,
        api_keys=ApiKeys(pool),
        sessions=Sessions(pool, s.session_ttl_s),
        intake=IntakeService(pool, producer),
        registry=RegistryService(pool, producer, live),
        send_command=send_command,
        live=live,
    )
    app = create_http_app(services)
    server = _Server(
        uvicorn.Config(app, host="127.0.0.1", port=s.http_port, log_level="warning", lifespan="off")
    )
    serving = asyncio.create_task(server.serve())
    base_url = f"http://127.0.0.1:{s.http_port}"
    try:
        while not server.started:
            assert not serving.done(), "the HTTP server did not start"
            await asyncio.sleep(0.02)
        async with httpx.AsyncClient(base_url=base_url) as http:
            tokens = []
            # All logins before the fuzz, whose wrong passwords would soon throttle this client.
            for username, password in (OPERATOR, ADMIN, RESPONDER, OPERATOR):
                r = await http.post("/api/v1/auth/login", json={"username": username, "password": password})
                assert r.status_code == 200, r.text
                tokens.append(r.json()["token"])
        yield Target(base_url, schemathesis.openapi.from_dict(app.openapi()), *tokens)
    finally:
        server.should_exit = True
        await serving
        await producer.stop()
        await store_redis.aclose()
        await pool.close()


def _header_params(operation: APIOperation) -> set[str]:
    return {p.name.lower() for p in operation.headers}


def _credentials(target: Target, operation: APIOperation) -> dict[str, str]:
    """Valid credentials for this operation, as its parameters declare them."""
    headers = _header_params(operation)
    if "x-api-key" in headers:
        return {"x-api-key": DEMO_API_KEYS[KEY_FOR_PATH.get(operation.path, "admin")]}
    if "authorization" not in headers:
        return {}
    token = target.operator_token
    if operation.path.startswith("/api/v1/users") or operation.path == "/api/v1/auth/throttles":
        token = target.admin_token
    elif operation.path == "/api/v1/photos":
        token = target.responder_token
    elif operation.path == "/api/v1/auth/logout":
        token = target.spare_token
    return {"authorization": f"Bearer {token}"}


def _names(operation: APIOperation) -> set[str]:
    """Every name a message may use to point at the problem: parameters and body properties."""
    document = operation.schema.raw_schema
    names = {p.name.lower() for p in operation.iter_parameters()}
    request = document["paths"][operation.path][operation.method.lower()].get("requestBody", {})
    for media in request.get("content", {}).values():
        names |= _properties(document, media.get("schema", {}))
    return names | {"body", "content-type"}


def _properties(document: dict[str, Any], schema: dict[str, Any]) -> set[str]:
    """Property names of a body schema, nested objects and arrays included."""
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return _properties(document, document["components"]["schemas"][ref.rsplit("/", 1)[-1]])
    names = set()
    for name, sub in schema.get("properties", {}).items():
        names |= {name.lower(), *_properties(document, sub)}
    for key in ("items", "anyOf", "oneOf", "allOf"):
        subs = schema.get(key, [])
        for sub in [subs] if isinstance(subs, dict) else subs:
            names |= _properties(document, sub)
    return names


def _check(
    operation: APIOperation,
    request: str,
    status: int,
    content_type: str,
    content: bytes,
    sent: Iterable[str] = (),
) -> None:
    """The answer's contract; `sent` are the names of the query parameters the request had."""
    where = f"{request}\n -> {status}: {content.decode('utf-8', 'replace')[:500]}"
    assert status < 500, where
    if status < 400:
        return
    assert content_type.startswith("application/json"), where
    answer = orjson.loads(content)
    assert isinstance(answer, dict), where
    assert isinstance(answer.get("error"), str) and answer["error"], where
    message = answer.get("message")
    assert isinstance(message, str) and message.strip(), where
    lowered = message.lower()
    if "fields" in answer:
        assert answer["fields"], where
        for f in answer["fields"]:
            assert f["field"] and f["reason"] and f["field"].lower() in lowered, where
    if status == 401:
        assert any(w in lowered for w in CREDENTIAL_WORDS), where
    elif status in (400, 413, 415, 422) and "fields" not in answer:  # fields: each named above
        names = _names(operation) | {"json", "larger", "query", "path"} | {n.lower() for n in sent}
        assert any(re.search(rf"(?<!\w){re.escape(n)}(?!\w)", lowered) for n in names), where


def _strategy(target: Target, operation: APIOperation) -> st.SearchStrategy[Case]:
    """Valid and invalid requests with valid credentials, and invalid ones with whatever
    credentials the generator makes up."""
    auth = _credentials(target, operation)
    kinds = [operation.as_strategy(GenerationMode.POSITIVE, headers=auth)]
    has_input = bool(list(operation.iter_parameters())) or bool(list(operation.body))
    if has_input:
        kinds.append(operation.as_strategy(GenerationMode.NEGATIVE, headers=auth))
    if auth:
        kinds.append(operation.as_strategy(GenerationMode.NEGATIVE if has_input else GenerationMode.POSITIVE))
    return st.one_of(kinds)


def _fuzz(target: Target, operation: APIOperation) -> Counter[int]:
    """Run the bounded search for one operation (in a thread: the server runs on the loop);
    answers the statuses seen."""
    session = requests.Session()
    statuses: Counter[int] = Counter()

    def one(case: Case) -> None:
        response = case.call(base_url=target.base_url, session=session, timeout=15)
        statuses[response.status_code] += 1
        content_type = response.headers.get("content-type", [""])[0]
        sent = case.query or {}
        _check(operation, case.as_curl_command(), response.status_code, content_type, response.content, sent)

    def photo(kind: str, magic: bool, data: bytes, auth: bool) -> None:
        """The upload's body is the raw image, which the document cannot describe."""
        body = PHOTO_TYPES.get(kind, b"")[: 8 if magic else 0] + data
        headers = {"content-type": kind}
        if auth:
            headers |= _credentials(target, operation)
        r = session.post(f"{target.base_url}{operation.path}", data=body, headers=headers, timeout=15)
        statuses[r.status_code] += 1
        request = f"POST {operation.path} {headers} {body[:60]!r}"
        _check(operation, request, r.status_code, r.headers.get("content-type", ""), r.content)

    if operation.path == "/api/v1/photos" and operation.method.upper() == "POST":
        kinds = st.sampled_from([*PHOTO_TYPES, "image/gif", "text/plain", "image/jpeg; charset=x"])
        test = given(kinds, st.booleans(), st.binary(max_size=2048), st.booleans())(photo)
    else:
        test = given(case=_strategy(target, operation))(one)
    test = hypothesis_settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=SEED is None,
        database=None,
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )(test)
    if SEED is not None:
        test = seed(int(SEED))(test)
    try:
        test()
    finally:
        session.close()
    return statuses


def _describe(exc: BaseException) -> str:
    """Every failure Hypothesis found (it groups distinct ones)."""
    if isinstance(exc, BaseExceptionGroup):
        return "\n".join(_describe(e) for e in exc.exceptions)
    return f"{type(exc).__name__}: {exc}"


class _ServerErrors(logging.Handler):
    """Anything the server logged as an error (an exception uvicorn or FastAPI caught)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_every_operation_survives_the_fuzz(target: Target) -> None:
    """Every operation the OpenAPI document lists (a new route joins by itself); all failures are
    collected, each with the request that caused it, before the test fails."""
    operations = [op.ok() for op in target.schema.get_all_operations()]
    assert len(operations) >= 19
    operations = [op for op in operations if ONLY in op.label]
    errors = _ServerErrors()
    root = logging.getLogger()
    root.addHandler(errors)
    failures: list[str] = []
    shallow: dict[str, Counter[int]] = {}
    try:
        for operation in operations:
            try:
                statuses = await asyncio.to_thread(_fuzz, target, operation)
            except Exception as exc:
                failures.append(f"{operation.label}: {_describe(exc)}")
                continue
            if VERBOSE:
                print(operation.label, dict(sorted(statuses.items())))
            if not set(statuses) - {401, 403, 429}:
                shallow[operation.label] = statuses  # never got past the credentials check
    finally:
        root.removeHandler(errors)
    assert not failures, "\n\n".join(failures)
    assert not errors.records, [r.getMessage() for r in errors.records]
    assert not shallow, f"the fuzz never reached these handlers: {shallow}"


async def test_what_the_framework_refuses_is_answered_in_our_shape(target: Target) -> None:
    """Requests outside the document or found by the fuzz: unknown path, wrong method, a body
    that is not UTF-8, an oversized body sent without Content-Length (chunked), NUL characters."""
    app_key = {"X-Api-Key": DEMO_API_KEYS["app"], "Content-Type": "application/json"}
    bearer = {"Authorization": f"Bearer {target.operator_token}"}

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b" " * (BODY_LIMIT // 4)

    async with httpx.AsyncClient(base_url=target.base_url) as http:
        answers = [
            (await http.get("/api/v1/nowhere"), 404, "/api/v1/nowhere"),
            (await http.delete("/api/v1/intake/app-reports", headers=app_key), 405, "DELETE"),
            (await http.post("/api/v1/intake/app-reports", headers=app_key, content=b"\xff{}"), 400, "UTF-8"),
            # An iterator body goes chunked: no Content-Length for the limit to look at first.
            (await http.post("/api/v1/intake/app-reports", headers=app_key, content=chunks()), 413, "larger"),
            # Found by the fuzz: a far date overflowed the 三率 window arithmetic (a 500).
            (await http.get("/api/v1/rates", params={"to": "0001-01-01"}, headers=bearer), 422, "to"),
            # PostgreSQL text cannot hold U+0000: refused naming where it is, never a failed query.
            (await http.get("/api/v1/reports/A%00B"), 422, "path"),
            (
                await http.get("/api/v1/incidents", params={"status": "new\x00"}, headers=bearer),
                422,
                "status",
            ),
            (
                await http.post("/api/v1/auth/login", json={"username": "a\x00", "password": "x"}),
                422,
                "username",
            ),
        ]
    for response, status, words in answers:
        assert response.status_code == status, response.text
        assert response.json()["error"] and words in response.json()["message"], response.text
