"""Every JSON error answer has one shape, `{"error": <kind>, "detail": <text>}`, with the
status of the one error table, the framework's own refusals included (unknown path,
wrong method, request validation, a body that is not JSON); the OpenAPI document says
so."""

from __future__ import annotations

import json

import pytest

from controparte.agent.service_api import _no_route
from controparte.errors import InvalidRequestError, MalformedError, response_for
from controparte.http.replies import invalid_request
from tests.http.conftest import Api

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "error", "detail"),
    [
        (
            "GET",
            "/v1/nothing-here",
            None,
            404,
            "UnsupportedError",
            "no such path: /v1/nothing-here (the API is described at /openapi.json)",
        ),
        (
            "PUT",
            "/v1/installations",
            None,
            405,
            "MethodNotAllowedError",
            "PUT is not allowed on /v1/installations",
        ),
        (
            "POST",
            "/v1/installations",
            b'{"code": "A-1", "label": "alpha", "port": "x"}',
            422,
            "InvalidRequestError",
            "body.port: Input should be a valid integer, unable to parse string as an integer",
        ),
        (
            "POST",
            "/v1/installations",
            b'{"label": 5, "port": 0}',
            422,
            "InvalidRequestError",
            "body.code: Field required; body.label: Input should be a valid string;"
            " body.port: Input should be greater than or equal to 1",
        ),
        (
            "POST",
            "/v1/links",
            b'{"a": "A-1", "b": "B-2", "features": [1]}',
            422,
            "InvalidRequestError",
            "body.features[0]: Input should be a valid string",
        ),
        (
            "GET",
            "/v1/installations?limit=0",
            None,
            422,
            "InvalidRequestError",
            "query.limit: Input should be greater than or equal to 1",
        ),
        (
            "POST",
            "/v1/installations",
            b'{"code": ',
            400,
            "MalformedError",
            "body: not valid JSON: Expecting value (at character 9)",
        ),
        (
            "POST",
            "/v1/installations",
            b'{"code": "\xff"}',
            400,
            "MalformedError",
            "body: not text (UTF-8, UTF-16 or UTF-32), so not JSON",
        ),
    ],
)
async def test_framework_refusals_have_the_one_shape(
    api: Api,
    method: str,
    path: str,
    body: bytes | None,
    status: int,
    error: str,
    detail: str,
) -> None:
    async with api.admin() as http:
        response = await http.request(
            method, path, content=body, headers={"content-type": "application/json"}
        )
        metrics = (await http.get("/metrics")).text.splitlines()
    assert response.status_code == status
    assert response.json() == {"error": error, "detail": detail}
    assert f'controparte_errors_total{{kind="{error}"}} 1' in metrics


async def test_a_wrong_method_names_the_allowed_one(api: Api) -> None:
    async with api.admin() as http:
        response = await http.get("/v1/installations/A-1/token")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json()["detail"] == "GET is not allowed on /v1/installations/A-1/token"


def test_pydantic_errors_become_the_trees_errors() -> None:
    invalid = invalid_request(
        [
            {"type": "missing", "loc": ("body",), "msg": "Field required"},
            {"type": "int_parsing", "loc": ("path", "code", 2), "msg": "Not a number"},
        ]
    )
    assert isinstance(invalid, InvalidRequestError)
    assert str(invalid) == "body: Field required; path.code[2]: Not a number"
    assert response_for(invalid).http_status == 422
    broken = invalid_request(
        [{"type": "json_invalid", "loc": ("body", 3), "msg": "JSON", "ctx": {"error": "Oops"}}]
    )
    assert isinstance(broken, MalformedError)
    assert str(broken) == "body: not valid JSON: Oops (at character 3)"
    assert response_for(broken).http_status == 400


async def test_the_openapi_document_describes_the_error_bodies(api: Api) -> None:
    async with api.client() as http:
        document = (await http.get("/openapi.json")).json()
    text = json.dumps(document)
    assert "HTTPValidationError" not in text
    assert document["components"]["schemas"]["ErrorOut"]["required"] == ["error", "detail"]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                schema = response.get("content", {}).get("application/json", {}).get("schema")
                if status.startswith("4") and schema is not None:
                    assert schema == {"$ref": "#/components/schemas/ErrorOut"}, (method, path)
    heartbeat = document["paths"]["/v1/installations/{code}/heartbeat"]["post"]
    assert {"400", "422"} <= set(heartbeat["responses"])


async def test_the_agent_tells_a_missing_route_from_a_missing_installation(api: Api) -> None:
    async with api.admin() as http:
        no_path = await http.get("/v1/nothing-here")
        wrong_method = await http.put("/v1/links")
        no_installation = await http.get("/v1/links", params={"code": "NOPE"})
    assert (no_path.status_code, wrong_method.status_code) == (404, 405)
    assert no_installation.status_code == 404
    assert _no_route(no_path)
    assert _no_route(wrong_method)
    assert not _no_route(no_installation)
